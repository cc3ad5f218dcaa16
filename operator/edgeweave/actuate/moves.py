"""Carry out one move, one persisted step at a time.

`advance` performs at most one side effect and returns the move's next state; the caller writes that
state to the WorkloadGroup's status before calling again. So an operator killed at any point restarts
from the recorded phase: it finishes the move or rolls it back, and never moves a workload twice.

Controller-owned pods (ReplicaSet, StatefulSet): register the target for the admission webhook,
evict through the Eviction API (PDBs enforced by the API server), wait for the replacement to be
Ready on the target. Bare pods: make-before-break — copy onto the target, wait Ready, delete the
original.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..api.base import now_rfc3339
from ..api.workloadgroup import MemoryRecovery, MovePhase
from ..memory.podpatch import recovery_patch, recovery_report, region_name
from .actuator import Actuator, Outcome
from .steering import STEERING, SteeringTable, affinity_patch

log = logging.getLogger(__name__)

STEERABLE_OWNERS = ("ReplicaSet", "StatefulSet")
STEERED_ANNOTATION = "edgeweave.io/steered-by-move"
MAX_RESTEERS = 1
COPY_ANNOTATION = "edgeweave.io/moved-from"


@dataclass
class MoveContext:
    actuator: Actuator
    core: Any  # kubernetes.client.CoreV1Api
    group: str  # namespace/name of the WorkloadGroup (for messages)
    ready_timeout: float = 180.0
    steering: SteeringTable = STEERING
    memory: MemoryRecovery | None = None  # the group's settings: replacements recover their region first
    image: str = "ghcr.io/edgeweave/edgeweave:0.1.0"


def _node_address(core: Any, node: str) -> str | None:
    try:
        addresses = core.read_node(node).status.addresses or []
    except Exception:  # noqa: BLE001 - no address means recovery from the baseline alone, said in its report
        return None
    return next((a.address for a in addresses if a.type == "InternalIP"), None)


def _spec_patch(move: dict[str, Any], namespace: str, ctx: MoveContext) -> Callable[[dict], dict] | None:
    if ctx.memory is None or not ctx.memory.enabled:
        return None
    settings, region = ctx.memory, region_name(namespace, move["workload"])
    source, image = _node_address(ctx.core, move["fromNode"]), ctx.image
    return lambda spec: recovery_patch(spec, settings, region, source, image)


def _parse_time(ts: str) -> float:
    try:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (ValueError, TypeError):
        return time.time()


def _set(move: dict[str, Any], phase: MovePhase, message: str = "", **extra: Any) -> dict[str, Any]:
    return {**move, **extra, "phase": phase.value, "message": message, "updatedAt": now_rfc3339()}


def _pod_ready(pod: Any) -> bool:
    return bool(pod.status and pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])))


def _get_pod(core: Any, namespace: str, name: str) -> Any | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def copy_name(pod_name: str, move_id: str) -> str:
    base = pod_name[: 63 - 9]
    return f"{base}-mv{hashlib.sha1(move_id.encode()).hexdigest()[:6]}"


def copy_manifest(pod: Any, to_node: str, move_id: str, api_client: Any) -> dict[str, Any]:
    """The original pod's spec, bound to the target, with a deterministic name (a retry is a 409)."""
    raw = api_client.sanitize_for_serialization(pod)
    meta = raw["metadata"]
    spec = dict(raw["spec"])
    spec.pop("nodeName", None)
    spec["affinity"] = affinity_patch(spec.get("affinity"), to_node)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": copy_name(meta["name"], move_id), "namespace": meta["namespace"],
                     "labels": meta.get("labels", {}),
                     "annotations": {**(meta.get("annotations") or {}), COPY_ANNOTATION: meta["name"]}},
        "spec": spec,
    }


def owner_of(pod: Any) -> str:
    for ref in pod.metadata.owner_references or []:
        if ref.controller:
            return f"{ref.kind}/{ref.name}"
    return ""


def register_failover(namespace: str, owner: str, workload: str, failed_node: str, ctx: MoveContext) -> bool:
    """A member's device failed (NotReady): whatever replacement its controller creates, anywhere, recovers
    the region from the failed device (or, unreachable, from the baseline alone) before it starts."""
    if ctx.memory is None or not ctx.memory.enabled or owner.split("/")[0] not in STEERABLE_OWNERS:
        return False
    if ctx.steering.lookup(namespace, owner) is not None:  # already prepared, or a move owns it
        return False
    failover_id = f"failover-{failed_node}"
    move = {"workload": workload, "fromNode": failed_node}
    ctx.steering.register(namespace, owner, None, failover_id, spec_patch=_spec_patch(move, namespace, ctx))
    return True


def register_inflight(move: dict[str, Any], namespace: str, steering: SteeringTable = STEERING) -> None:
    """On restart: steer replacements of moves that were mid-flight when the operator stopped."""
    if move.get("phase") in (MovePhase.Evicting.value, MovePhase.WaitingReady.value) and move.get("owner"):
        steering.register(namespace, move["owner"], move["toNode"], move["id"])


def advance(move: dict[str, Any], ctx: MoveContext) -> dict[str, Any]:
    namespace, name = move["pod"].split("/", 1)
    phase = MovePhase(move["phase"])
    msg = f"edgeweave moves {move['workload']} from {move['fromNode']} to {move['toNode']} ({move['reason']})"

    if phase == MovePhase.Planned:
        pod = _get_pod(ctx.core, namespace, name)
        if pod is None or (move.get("podUid") and pod.metadata.uid != move["podUid"]) or pod.metadata.deletion_timestamp:
            return _set(move, MovePhase.Failed, "the pod is gone or was replaced before the move started")
        if pod.spec.node_name != move["fromNode"]:
            return _set(move, MovePhase.Failed, f"the pod is now on {pod.spec.node_name}, not {move['fromNode']}")
        owner = owner_of(pod)
        extra = {"podUid": pod.metadata.uid, "owner": owner, "startedAt": now_rfc3339()}
        if owner.split("/")[0] in STEERABLE_OWNERS:
            ctx.steering.register(namespace, owner, move["toNode"], move["id"],
                                  spec_patch=_spec_patch(move, namespace, ctx))
            return _set(move, MovePhase.Evicting, "evicting; the replacement is steered to the target", **extra)
        if owner:
            return _set(move, MovePhase.Failed, f"pods owned by {owner.split('/')[0]} are not moved", **extra)
        return _set(move, MovePhase.Copying, "bare pod: copying to the target before deleting the original",
                    **extra)

    if phase == MovePhase.Evicting:
        if ctx.steering.lookup(namespace, move["owner"]) is None:  # resumed after a restart
            ctx.steering.register(namespace, move["owner"], move["toNode"], move["id"])
        res = ctx.actuator.evict_pod(namespace, name, uid=move.get("podUid") or None, reason="EdgeweaveMove",
                                     message=msg)
        if res.outcome in (Outcome.Done, Outcome.NotFound, Outcome.Conflict):
            return _set(move, MovePhase.WaitingReady, "evicted; waiting for the replacement on the target")
        if res.outcome == Outcome.BlockedByPDB:
            ctx.steering.release(namespace, move["owner"], move["id"])
            return _set(move, MovePhase.Failed, "blocked: evicting would violate the PodDisruptionBudget")
        if res.outcome == Outcome.DryRun:
            return _set(move, MovePhase.Done, res.message)
        return _set(move, MovePhase.Evicting, f"eviction failed, will retry: {res.message}")

    if phase == MovePhase.Copying:
        pod = _get_pod(ctx.core, namespace, name)
        if pod is None:
            return _set(move, MovePhase.Failed, "the original pod disappeared before it could be copied")
        manifest = copy_manifest(pod, move["toNode"], move["id"], ctx.actuator.api_client)
        res = ctx.actuator.create_pod(namespace, manifest, reason="EdgeweaveMoveCopy", message=msg)
        if res.outcome in (Outcome.Done, Outcome.Conflict):
            return _set(move, MovePhase.WaitingReady, "copy created; waiting for it to be Ready",
                        newPod=manifest["metadata"]["name"])
        if res.outcome == Outcome.DryRun:
            return _set(move, MovePhase.Done, res.message)
        return _set(move, MovePhase.Copying, f"copy failed, will retry: {res.message}")

    if phase == MovePhase.WaitingReady:
        replacement, stray = _find_replacement(move, namespace, ctx)
        if replacement is None and stray is not None:
            # The controller made the replacement while no webhook steered it (the operator was down).
            # The move is still the same move: re-steer and evict the stray once, then give up.
            if move.get("attempts", 0) >= MAX_RESTEERS:
                return _rollback(move, namespace, ctx, f"the replacement landed on {stray.spec.node_name}")
            ctx.steering.register(namespace, move["owner"], move["toNode"], move["id"])
            res = ctx.actuator.evict_pod(namespace, stray.metadata.name, uid=stray.metadata.uid,
                                         reason="EdgeweaveMove", message=f"{msg} (re-steering the replacement)")
            if res.outcome == Outcome.BlockedByPDB:
                return _set(move, MovePhase.Failed,
                            "blocked: re-steering the replacement would violate the PodDisruptionBudget")
            return _set(move, MovePhase.WaitingReady,
                        f"the replacement landed on {stray.spec.node_name} while unsteered; evicted it to re-steer",
                        attempts=move.get("attempts", 0) + 1)
        if replacement is not None and _pod_ready(replacement):
            if move.get("owner"):
                ctx.steering.release(namespace, move["owner"], move["id"])
                extra: dict[str, Any] = {"newPod": replacement.metadata.name}
                report = recovery_report(ctx.actuator.api_client.sanitize_for_serialization(replacement.status))
                if report:
                    extra["recovery"] = {k: str(v) for k, v in report.items()
                                         if k in ("mode", "epoch", "pages", "bytes", "duration_s", "ok")}
                return _set(move, MovePhase.Done, f"running on {move['toNode']} as {replacement.metadata.name}",
                            **extra)
            return _set(move, MovePhase.DeletingOriginal, "copy Ready; deleting the original",
                        newPod=replacement.metadata.name)
        waited = time.time() - _parse_time(move.get("updatedAt", ""))
        if waited > ctx.ready_timeout:
            return _rollback(move, namespace, ctx, f"no Ready replacement on {move['toNode']} after {waited:.0f}s")
        return move

    if phase == MovePhase.DeletingOriginal:
        res = ctx.actuator.delete_pod(namespace, name, uid=move.get("podUid") or None, reason="EdgeweaveMove",
                                      message=f"{msg}: the copy {move.get('newPod')} is Ready")
        if res.ok or res.outcome == Outcome.Conflict:
            return _set(move, MovePhase.Done, f"running on {move['toNode']} as {move.get('newPod')}")
        return _set(move, MovePhase.DeletingOriginal, f"delete failed, will retry: {res.message}")

    return move


def _find_replacement(move: dict[str, Any], namespace: str, ctx: MoveContext) -> tuple[Any | None, Any | None]:
    """(replacement on the target, a stray replacement elsewhere that no webhook steered)."""
    if not move.get("owner"):
        return (_get_pod(ctx.core, namespace, move["newPod"]) if move.get("newPod") else None), None
    kind, owner_name = move["owner"].split("/", 1)
    started = _parse_time(move.get("startedAt", ""))
    on_target = stray = None
    for pod in ctx.core.list_namespaced_pod(namespace).items:
        if pod.metadata.uid == move.get("podUid") or pod.metadata.deletion_timestamp:
            continue
        if not any(r.controller and r.kind == kind and r.name == owner_name
                   for r in pod.metadata.owner_references or []):
            continue
        if pod.spec.node_name == move["toNode"]:
            on_target = pod
        elif (pod.spec.node_name and pod.metadata.creation_timestamp.timestamp() >= started - 1
              and (pod.metadata.annotations or {}).get(STEERED_ANNOTATION) != move["id"]):
            stray = pod
    return on_target, stray


def _rollback(move: dict[str, Any], namespace: str, ctx: MoveContext, why: str) -> dict[str, Any]:
    if move.get("owner"):
        # The original is already evicted; its controller keeps the replica count. Nothing to undo.
        ctx.steering.release(namespace, move["owner"], move["id"])
        return _set(move, MovePhase.Failed, f"{why}; the controller placed the replacement elsewhere")
    if move.get("newPod"):
        ctx.actuator.delete_pod(namespace, move["newPod"], reason="EdgeweaveMoveRolledBack",
                                message=f"{why}; removing the copy, the original keeps running")
    return _set(move, MovePhase.RolledBack, f"{why}; the original keeps running")
