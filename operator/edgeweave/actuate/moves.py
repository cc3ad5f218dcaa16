"""Carry out one move, one persisted step at a time: observe -> decide (pure) -> act.

`observe_move` reads what the move's phase needs (the pod, its replacement, a stray replacement);
`next_move(move, observation)` decides, without I/O, the state to record and at most one `Action`;
`carry_out` performs the action through the Actuator; `resolve(move, action, result)` (pure) turns the
action's outcome into the state to record. The caller writes that state to the WorkloadGroup's status
before the next step, so an operator killed at any point restarts from the recorded phase: it finishes
the move or rolls it back, and never moves a workload twice.

Controller-owned pods (ReplicaSet, StatefulSet): register the target for the admission webhook, evict
through the Eviction API (PDBs enforced by the API server), wait for the replacement to be Ready on the
target. Nothing is evicted unless steering is proven live (see `steering_probe`): a replacement that
cannot be steered lands wherever the scheduler puts it, and the next plan would evict it again. Bare
pods: make-before-break — copy onto the target, wait Ready, delete the original.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..api.base import parse_rfc3339, rfc3339
from ..api.workloadgroup import STEERABLE_OWNERS, MemoryRecovery, MovePhase, MoveStatus
from ..memory.initcontainer import source_region
from ..memory.podpatch import recovery_patch, recovery_report
from .actuator import Actuator, Outcome, Result
from .kubeapi import read_or_none
from .steering import STEERED_ANNOTATION, STEERING, SteeringTable, affinity_patch

log = logging.getLogger(__name__)

MAX_RESTEERS = 1
COPY_ANNOTATION = "edgeweave.io/moved-from"
READY_TIMEOUT = 180.0
WAITING_FOR_STEERING = "waiting: the steering webhook is not live, nothing is evicted"
# (namespace, owner) -> UIDs of members whose memory region a replacement already took (a move's, a
# failover's, a standing registration's): a later new pod of the owner never recovers it again.
_CLAIMED: dict[tuple[str, str], set[str]] = {}


# -- what a step sees ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    node: str | None
    owner: str = ""  # Kind/name of the controller
    deleting: bool = False
    ready: bool = False
    created_at: float = 0.0
    steered_by: str = ""  # the move id the webhook stamped on it
    recovery: dict[str, str] | None = None


@dataclass(frozen=True)
class MoveObservation:
    now: float
    pod: PodView | None = None  # the pod being moved (Planned, Copying)
    replacement: PodView | None = None  # on the target (WaitingReady)
    stray: PodView | None = None  # a replacement elsewhere no webhook steered (WaitingReady)
    steering_live: bool = True
    ready_timeout: float = READY_TIMEOUT


class ActionKind(StrEnum):
    Nothing = "Nothing"
    Steer = "Steer"  # register the target with the admission webhook (in-process)
    Evict = "Evict"  # evict the original (steering registered first)
    EvictStray = "EvictStray"  # evict an unsteered replacement so the controller makes a steered one
    CreateCopy = "CreateCopy"  # bare pod: create the copy on the target
    DeleteOriginal = "DeleteOriginal"
    DeleteCopy = "DeleteCopy"  # roll back a bare-pod move
    Release = "Release"  # stop steering


@dataclass(frozen=True)
class Action:
    kind: ActionKind = ActionKind.Nothing
    pod: str = ""
    uid: str | None = None

    @property
    def changes_cluster(self) -> bool:
        return self.kind not in (ActionKind.Nothing, ActionKind.Steer, ActionKind.Release)


NOTHING = Action()


def _set(move: MoveStatus, phase: MovePhase, message: str, now: float, **extra: Any) -> MoveStatus:
    return move.model_copy(update={**extra, "phase": phase, "message": message, "updated_at": rfc3339(now)})


def _msg(move: MoveStatus) -> str:
    return f"edgeweave moves {move.workload} from {move.from_node} to {move.to_node} ({move.reason})"


# -- decide (pure) -------------------------------------------------------------------------------
def next_move(move: MoveStatus, obs: MoveObservation) -> tuple[MoveStatus, Action]:
    """The state to record and the one action to take, from the recorded move and what was observed."""
    now = obs.now
    if move.phase is MovePhase.Planned:
        pod = obs.pod
        if pod is None or (move.pod_uid and pod.uid != move.pod_uid) or pod.deleting:
            return _set(move, MovePhase.Failed, "the pod is gone or was replaced before the move started", now), NOTHING
        if pod.node != move.from_node:
            return _set(move, MovePhase.Failed, f"the pod is now on {pod.node}, not {move.from_node}", now), NOTHING
        kind = pod.owner.split("/")[0]
        if kind in STEERABLE_OWNERS:
            if not obs.steering_live:
                waited = now - (parse_rfc3339(move.updated_at) or now)
                if waited > obs.ready_timeout:
                    # Give the plan up (the workload backs off) rather than hold the group forever.
                    return (_set(move, MovePhase.Failed, f"the steering webhook was not live for {waited:.0f}s; "
                                 "nothing was evicted", now), NOTHING)
                if move.message == WAITING_FOR_STEERING:
                    return move, NOTHING
                return move.model_copy(update={"message": WAITING_FOR_STEERING}), NOTHING
            started = {"pod_uid": pod.uid, "owner": pod.owner, "started_at": rfc3339(now)}
            return (_set(move, MovePhase.Evicting, "evicting; the replacement is steered to the target", now,
                         **started), Action(ActionKind.Steer))
        if pod.owner:
            return (_set(move, MovePhase.Failed, f"pods owned by {kind} are not moved", now, pod_uid=pod.uid,
                         owner=pod.owner), NOTHING)
        return (_set(move, MovePhase.Copying, "bare pod: copying to the target before deleting the original", now,
                     pod_uid=pod.uid, started_at=rfc3339(now)), NOTHING)

    if move.phase is MovePhase.Evicting:
        if not obs.steering_live:
            if move.message == WAITING_FOR_STEERING:
                return move, NOTHING
            return move.model_copy(update={"message": WAITING_FOR_STEERING}), NOTHING
        return move, Action(ActionKind.Evict, move.pod_name, move.pod_uid or None)

    if move.phase is MovePhase.Copying:
        if obs.pod is None:
            return _set(move, MovePhase.Failed, "the original pod disappeared before it could be copied", now), NOTHING
        return move, Action(ActionKind.CreateCopy, copy_name(move.pod_name, move.id))

    if move.phase is MovePhase.WaitingReady:
        replacement, stray = obs.replacement, obs.stray
        if replacement is None and stray is not None:
            # The controller made the replacement while no webhook steered it (the operator was down).
            # The move is still the same move: re-steer and evict the stray once, then give up.
            if move.attempts >= MAX_RESTEERS:
                return _rollback(move, f"the replacement landed on {stray.node}", now)
            if not obs.steering_live:
                return _rollback(move, f"the replacement landed on {stray.node} and steering is not live", now)
            return (_set(move, MovePhase.WaitingReady,
                         f"the replacement landed on {stray.node} while unsteered; evicted it to re-steer", now,
                         attempts=move.attempts + 1), Action(ActionKind.EvictStray, stray.name, stray.uid))
        if replacement is not None and replacement.ready:
            if move.owner:
                return (_set(move, MovePhase.Done, f"running on {move.to_node} as {replacement.name}", now,
                             new_pod=replacement.name, recovery=replacement.recovery), Action(ActionKind.Release))
            return _set(move, MovePhase.DeletingOriginal, "copy Ready; deleting the original", now,
                        new_pod=replacement.name), NOTHING
        waited = now - (parse_rfc3339(move.updated_at) or now)
        if waited > obs.ready_timeout:
            return _rollback(move, f"no Ready replacement on {move.to_node} after {waited:.0f}s", now)
        return move, NOTHING

    if move.phase is MovePhase.DeletingOriginal:
        return move, Action(ActionKind.DeleteOriginal, move.pod_name, move.pod_uid or None)

    return move, NOTHING


def _rollback(move: MoveStatus, why: str, now: float) -> tuple[MoveStatus, Action]:
    if move.owner:
        # The original is already evicted; its controller keeps the replica count. Nothing to undo.
        return (_set(move, MovePhase.RolledBack, f"{why}; the controller placed the replacement elsewhere", now),
                Action(ActionKind.Release))
    if move.new_pod:
        return (_set(move, MovePhase.RolledBack, f"{why}; the copy is removed, the original keeps running", now),
                Action(ActionKind.DeleteCopy, move.new_pod))
    return _set(move, MovePhase.RolledBack, f"{why}; the original keeps running", now), NOTHING


def resolve(move: MoveStatus, action: Action, result: Result, now: float) -> MoveStatus:
    """The state to record after `action` ran with `result` (pure)."""
    o = result.outcome
    if action.kind is ActionKind.Evict:
        if o in (Outcome.Done, Outcome.NotFound, Outcome.Conflict):
            return _set(move, MovePhase.WaitingReady, "evicted; waiting for the replacement on the target", now)
        if o is Outcome.BlockedByPDB:
            return _set(move, MovePhase.Failed, "blocked: evicting would violate the PodDisruptionBudget", now)
        if o is Outcome.DryRun:
            return _set(move, MovePhase.Done, result.message, now)
        return _set(move, MovePhase.Evicting, f"eviction failed, will retry: {result.message}", now)
    if action.kind is ActionKind.EvictStray:
        if o is Outcome.BlockedByPDB:
            return _set(move, MovePhase.Failed,
                        "blocked: re-steering the replacement would violate the PodDisruptionBudget", now)
        return move
    if action.kind is ActionKind.CreateCopy:
        if o in (Outcome.Done, Outcome.Conflict):
            return _set(move, MovePhase.WaitingReady, "copy created; waiting for it to be Ready", now,
                        new_pod=action.pod)
        if o is Outcome.DryRun:
            return _set(move, MovePhase.Done, result.message, now)
        return _set(move, MovePhase.Copying, f"copy failed, will retry: {result.message}", now)
    if action.kind is ActionKind.DeleteOriginal:
        if result.ok or o is Outcome.Conflict:
            return _set(move, MovePhase.Done, f"running on {move.to_node} as {move.new_pod}", now)
        return _set(move, MovePhase.DeletingOriginal, f"delete failed, will retry: {result.message}", now)
    return move


# -- observe and act ------------------------------------------------------------------------------
@dataclass
class MoveContext:
    actuator: Actuator
    core: Any  # kubernetes.client.CoreV1Api
    group: str  # namespace/name of the WorkloadGroup (for messages)
    ready_timeout: float = READY_TIMEOUT
    steering: SteeringTable = field(default_factory=lambda: STEERING)
    memory: MemoryRecovery | None = None  # the group's settings: replacements recover their region first
    image: str = "ghcr.io/edgeweave/edgeweave:0.1.0"


def _owner(meta: Any) -> str:
    for ref in meta.owner_references or []:
        if ref.controller:
            return f"{ref.kind}/{ref.name}"
    return ""


def owner_of(pod: Any) -> str:
    return _owner(pod.metadata)


def pod_view(pod: Any, api_client: Any | None = None) -> PodView:
    status = pod.status
    ready = bool(status and status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in (status.conditions or [])))
    recovery = None
    if api_client is not None and status is not None:
        report = recovery_report(api_client.sanitize_for_serialization(status))
        if report:
            recovery = {k: str(v) for k, v in report.items()
                        if k in ("mode", "epoch", "pages", "bytes", "duration_s", "ok")}
    meta = pod.metadata
    return PodView(name=meta.name, uid=meta.uid, node=pod.spec.node_name, owner=_owner(meta),
                   deleting=meta.deletion_timestamp is not None, ready=ready,
                   created_at=meta.creation_timestamp.timestamp() if meta.creation_timestamp else 0.0,
                   steered_by=(meta.annotations or {}).get(STEERED_ANNOTATION, ""), recovery=recovery)


def observe_move(move: MoveStatus, ctx: MoveContext, *, steering_live: bool, now: float) -> MoveObservation:
    """Read what this move's phase needs, and nothing else."""
    ns = move.namespace
    base = {"now": now, "steering_live": steering_live, "ready_timeout": ctx.ready_timeout}
    if move.phase in (MovePhase.Planned, MovePhase.Copying):
        pod = read_or_none(lambda: ctx.core.read_namespaced_pod(move.pod_name, ns))
        return MoveObservation(pod=pod_view(pod) if pod is not None else None, **base)
    if move.phase is MovePhase.WaitingReady:
        if not move.owner:
            copy = read_or_none(lambda: ctx.core.read_namespaced_pod(move.new_pod, ns)) if move.new_pod else None
            return MoveObservation(replacement=pod_view(copy) if copy is not None else None, **base)
        raw = {p.metadata.uid: p for p in ctx.core.list_namespaced_pod(ns).items}
        replacement, stray = find_replacement(move, [pod_view(p) for p in raw.values()])
        if replacement is not None and replacement.ready:  # its memory-recovery report goes into the record
            replacement = pod_view(raw[replacement.uid], ctx.actuator.api_client)
        return MoveObservation(replacement=replacement, stray=stray, **base)
    return MoveObservation(**base)


def find_replacement(move: MoveStatus, pods: list[PodView]) -> tuple[PodView | None, PodView | None]:
    """(the replacement on the target, a replacement elsewhere that no webhook steered). Only pods of the
    owner made after the move started count: another replica already on the target is not this move's
    replacement."""
    started = parse_rfc3339(move.started_at) or 0.0
    on_target = stray = None
    for p in pods:
        if p.uid == move.pod_uid or p.deleting or p.owner != move.owner:
            continue
        new = p.created_at >= started - 1 or p.steered_by == move.id
        if not new:
            continue
        if p.node == move.to_node:
            on_target = p
        elif p.node and p.steered_by != move.id:
            stray = p
    return on_target, stray


def _node_address(core: Any, node: str) -> str | None:
    try:
        addresses = core.read_node(node).status.addresses or []
    except Exception:  # noqa: BLE001 - no address means recovery from the baseline alone, said in its report
        return None
    return next((a.address for a in addresses if a.type == "InternalIP"), None)


def _spec_patch(workload: str, from_node: str, namespace: str, source_uid: str,
                ctx: MoveContext) -> Callable[[dict], dict] | None:
    if ctx.memory is None or not ctx.memory.enabled:
        return None
    # The source agent keys the region by the *failed* pod's UID (namespace/pod-uid/name); the
    # workload names its region after the workload. Without the UID the source refuses every read.
    try:
        region = source_region(namespace, source_uid, workload)
    except ValueError as e:
        log.warning("%s/%s: no memory recovery for the replacement: %s", namespace, workload, e)
        return None
    settings, source, image = ctx.memory, _node_address(ctx.core, from_node), ctx.image
    return lambda spec: recovery_patch(spec, settings, region, source, image)


def steer(move: MoveStatus, ctx: MoveContext) -> None:
    if move.pod_uid and move.owner:  # its region goes to the move's replacement, never to a later pod
        _CLAIMED.setdefault((move.namespace, move.owner), set()).add(move.pod_uid)
    ctx.steering.register(move.namespace, move.owner, move.to_node, move.id,
                          spec_patch=_spec_patch(move.workload, move.from_node, move.namespace, move.pod_uid, ctx))


def carry_out(move: MoveStatus, action: Action, ctx: MoveContext) -> Result:
    """Perform one action. `move` is the state already decided (and, for cluster changes, the state the
    action starts from, which the caller has recorded)."""
    ns, act, msg = move.namespace, ctx.actuator, _msg(move)
    if action.kind is ActionKind.Steer:
        steer(move, ctx)
    elif action.kind is ActionKind.Release:
        ctx.steering.release(ns, move.owner, move.id)
    elif action.kind is ActionKind.Evict:
        if ctx.steering.lookup(ns, move.owner) is None:  # resumed after a restart
            steer(move, ctx)
        res = act.evict_pod(ns, action.pod, uid=action.uid, reason="EdgeweaveMove", message=msg)
        if res.outcome is Outcome.BlockedByPDB:
            ctx.steering.release(ns, move.owner, move.id)
        return res
    elif action.kind is ActionKind.EvictStray:
        steer(move, ctx)
        res = act.evict_pod(ns, action.pod, uid=action.uid, reason="EdgeweaveMove",
                            message=f"{msg} (re-steering the replacement)")
        if res.outcome is Outcome.BlockedByPDB:
            ctx.steering.release(ns, move.owner, move.id)
        return res
    elif action.kind is ActionKind.CreateCopy:
        pod = read_or_none(lambda: ctx.core.read_namespaced_pod(move.pod_name, ns))
        if pod is None:
            return Result(Outcome.NotFound, "the original pod disappeared before it could be copied")
        manifest = copy_manifest(pod, move.to_node, move.id, act.api_client)
        return act.create_pod(ns, manifest, reason="EdgeweaveMoveCopy", message=msg)
    elif action.kind is ActionKind.DeleteOriginal:
        return act.delete_pod(ns, action.pod, uid=action.uid, reason="EdgeweaveMove",
                              message=f"{msg}: the copy {move.new_pod} is Ready")
    elif action.kind is ActionKind.DeleteCopy:
        return act.delete_pod(ns, action.pod, reason="EdgeweaveMoveRolledBack",
                              message="the move rolled back; removing the copy, the original keeps running")
    return Result(Outcome.Done)


def step(move: MoveStatus, ctx: MoveContext, *, steering_live: bool, now: float) -> MoveStatus:
    """One observe -> decide -> act -> resolve step."""
    obs = observe_move(move, ctx, steering_live=steering_live, now=now)
    decided, action = next_move(move, obs)
    result = carry_out(decided, action, ctx)
    return resolve(decided, action, result, now)


# -- manifests and restart ---------------------------------------------------------------------------
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


def register_failover(namespace: str, owner: str, workload: str, failed_node: str, ctx: MoveContext,
                      failed_uid: str = "") -> bool:
    """A member's device failed (NotReady): whatever replacement its controller creates, anywhere, recovers
    the region of the failed pod (`failed_uid`) from the failed device (or, unreachable, from the baseline
    alone) before it starts."""
    if ctx.memory is None or not ctx.memory.enabled or owner.split("/")[0] not in STEERABLE_OWNERS:
        return False
    entry = ctx.steering.lookup(namespace, owner)
    if entry is not None and not entry.move_id.startswith(STANDING_PREFIX):  # already prepared, or a move owns it
        return False
    if failed_uid:
        _CLAIMED.setdefault((namespace, owner), set()).add(failed_uid)
    ctx.steering.register(namespace, owner, None, f"failover-{failed_node}",
                          spec_patch=_spec_patch(workload, failed_node, namespace, failed_uid, ctx))
    return True


STANDING_PREFIX = "standing-"
STANDING_WAIT_S = 2.0  # how long admission waits for the pod index to show the lost member


@dataclass(frozen=True)
class Member:
    uid: str
    node: str
    workload: str


def lost_member(members: list[Member], live_uids: set[str], claimed: set[str]) -> Member | None:
    """The member a new pod of the same controller replaces: one the controller had that is no longer live
    (deleted, deleting, failed) and whose region no earlier replacement took. None: a new pod that
    replaces nobody (a scale-up), or the pod index has not seen the loss yet."""
    return next((m for m in members if m.uid not in live_uids and m.uid not in claimed), None)


def register_standing(namespace: str, owner: str, members: list[Member], ctx: MoveContext,
                      live_uids: Callable[[], set[str]]) -> bool:
    """Members on healthy devices: a pod killed (SIGKILL, a force delete, a crash that deletes it) is
    replaced by its controller at once, faster than any round, so the registration stands before the
    loss. At admission the new pod takes the region of the member it replaces (`lost_member`, read from
    the live pod index), pulled from that member's device. Moves and device failovers take precedence.
    Returns whether the member set is new (the caller logs it)."""
    if ctx.memory is None or not ctx.memory.enabled or owner.split("/")[0] not in STEERABLE_OWNERS or not members:
        return False
    move_id = STANDING_PREFIX + hashlib.sha1(",".join(sorted(m.uid for m in members)).encode()).hexdigest()[:10]
    entry = ctx.steering.lookup(namespace, owner)
    if entry is not None and not entry.move_id.startswith(STANDING_PREFIX):
        return False
    if entry is not None and entry.move_id == move_id:  # the same members: keep the patch (and its claims)
        ctx.steering.register(namespace, owner, None, move_id, spec_patch=entry.spec_patch, pending_s=entry.pending_s)
        return False
    settings, image = ctx.memory, ctx.image
    addresses = {n: _node_address(ctx.core, n) for n in {m.node for m in members}}
    # A member still terminating stays in the set; its region, once taken, is never given to another pod.
    key = (namespace, owner)
    claimed = _CLAIMED.pop(key, set()) & {m.uid for m in members}  # kept only while it holds a claim
    if claimed:
        _CLAIMED[key] = claimed

    def patch(spec: dict) -> dict | None:
        m = lost_member(members, live_uids(), claimed)
        if m is None:
            return None
        claimed.add(m.uid)
        _CLAIMED[key] = claimed
        try:
            region = source_region(namespace, m.uid, m.workload)
        except ValueError as e:
            log.warning("%s/%s: no memory recovery for the replacement: %s", namespace, m.workload, e)
            return {}
        log.info("%s/%s: the new pod of %s replaces %s: it recovers %s from %s first", namespace, m.workload, owner,
                 m.uid, region, m.node)
        return recovery_patch(spec, settings, region, addresses.get(m.node), image)

    ctx.steering.register(namespace, owner, None, move_id, spec_patch=patch, pending_s=STANDING_WAIT_S)
    return True


def register_inflight(move: MoveStatus, steering: SteeringTable = STEERING) -> None:
    """On restart: steer replacements of moves that were mid-flight when the operator stopped."""
    if move.phase in (MovePhase.Evicting, MovePhase.WaitingReady) and move.owner:
        steering.register(move.namespace, move.owner, move.to_node, move.id)


__all__ = ["STEERED_ANNOTATION", "Action", "ActionKind", "MoveContext", "MoveObservation", "PodView", "carry_out", "copy_manifest",
           "find_replacement", "next_move", "observe_move", "register_failover", "register_standing", "lost_member",
           "Member",
           "register_inflight", "resolve", "step"]
