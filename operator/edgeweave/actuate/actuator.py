"""The only code that changes the cluster. Every change is dry-runnable, rate-limited, PDB-aware and
leaves an Event on the object it touched."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import events
from .ratelimit import SlidingWindow

log = logging.getLogger(__name__)

TAINT_KEY = "edgeweave.io/context-breach"


class Outcome(StrEnum):
    Done = "Done"
    DryRun = "DryRun"
    NotFound = "NotFound"
    BlockedByPDB = "BlockedByPDB"
    RateLimited = "RateLimited"
    Conflict = "Conflict"
    Failed = "Failed"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str = ""
    obj: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.Done, Outcome.DryRun, Outcome.NotFound)


@dataclass
class Actuator:
    api_client: Any
    dry_run: bool = False
    limiter: SlidingWindow = field(default_factory=SlidingWindow)

    # -- limits -------------------------------------------------------------------------------
    def allow(self, key: str, limit: int, interval: float) -> bool:
        return self.limiter.try_acquire(key, limit, interval)

    # -- pods ---------------------------------------------------------------------------------
    def _core(self):
        from kubernetes import client
        return client.CoreV1Api(self.api_client)

    def create_pod(self, namespace: str, manifest: dict[str, Any], *, reason: str, message: str) -> Result:
        name = manifest["metadata"].get("name", "")
        if self.dry_run:
            return Result(Outcome.DryRun, f"would create pod {namespace}/{name}")
        from kubernetes.client.exceptions import ApiException
        try:
            pod = self._core().create_namespaced_pod(namespace, manifest)
        except ApiException as e:
            if e.status == 409:
                return Result(Outcome.Conflict, f"pod {namespace}/{name} exists")
            return Result(Outcome.Failed, f"create pod {namespace}/{name}: {e.status} {e.reason}")
        events.post(self.api_client, events.pod_ref(namespace, pod.metadata.name, pod.metadata.uid), "Normal",
                    reason, message)
        return Result(Outcome.Done, obj=pod)

    def delete_pod(self, namespace: str, name: str, *, reason: str, message: str,
                   uid: str | None = None, grace_seconds: int | None = None) -> Result:
        if self.dry_run:
            return Result(Outcome.DryRun, f"would delete pod {namespace}/{name}")
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        events.post(self.api_client, events.pod_ref(namespace, name, uid), "Normal", reason, message)
        # A uid precondition: never delete a newer pod that reused the name.
        opts = client.V1DeleteOptions(grace_period_seconds=grace_seconds,
                                      preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            self._core().delete_namespaced_pod(name, namespace, body=opts)
        except ApiException as e:
            if e.status == 404:
                return Result(Outcome.NotFound, f"pod {namespace}/{name} already gone")
            if e.status == 409:
                return Result(Outcome.Conflict, f"pod {namespace}/{name} was replaced (uid changed)")
            return Result(Outcome.Failed, f"delete pod {namespace}/{name}: {e.status} {e.reason}")
        return Result(Outcome.Done)

    def evict_pod(self, namespace: str, name: str, *, reason: str, message: str,
                  uid: str | None = None) -> Result:
        """Evict through the Eviction API, so PodDisruptionBudgets are enforced by the API server."""
        if self.dry_run:
            return Result(Outcome.DryRun, f"would evict pod {namespace}/{name}")
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            delete_options=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None))
        try:
            self._core().create_namespaced_pod_eviction(name, namespace, body)
        except ApiException as e:
            if e.status == 404:
                return Result(Outcome.NotFound, f"pod {namespace}/{name} already gone")
            if e.status == 429:
                events.post(self.api_client, events.pod_ref(namespace, name, uid), "Warning", "EvictionBlocked",
                            f"{message}: blocked by a PodDisruptionBudget")
                return Result(Outcome.BlockedByPDB, f"evicting {namespace}/{name} would violate its PDB")
            if e.status == 409:
                return Result(Outcome.Conflict, f"pod {namespace}/{name} was replaced (uid changed)")
            return Result(Outcome.Failed, f"evict {namespace}/{name}: {e.status} {e.reason}")
        events.post(self.api_client, events.pod_ref(namespace, name, uid), "Normal", reason, message)
        return Result(Outcome.Done)

    # -- nodes --------------------------------------------------------------------------------
    def set_taint(self, node: str, present: bool, *, value: str = "", message: str = "") -> Result:
        """Add or remove our NoSchedule taint; other taints on the node are left exactly as they are."""
        from kubernetes.client.exceptions import ApiException
        core = self._core()
        try:
            obj = core.read_node(node)
        except ApiException as e:
            return Result(Outcome.NotFound if e.status == 404 else Outcome.Failed, str(e.reason))
        taints = [t for t in (obj.spec.taints or []) if t.key != TAINT_KEY]
        had = len(taints) != len(obj.spec.taints or [])
        if had == present:
            return Result(Outcome.Done, "unchanged")
        if self.dry_run:
            return Result(Outcome.DryRun, f"would {'add' if present else 'remove'} taint {TAINT_KEY} on {node}")
        new = [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]
        if present:
            new.append({"key": TAINT_KEY, "value": value, "effect": "NoSchedule"})
        # resourceVersion makes this a compare-and-swap: a concurrent taint change is not overwritten.
        patch = {"metadata": {"resourceVersion": obj.metadata.resource_version}, "spec": {"taints": new or None}}
        try:
            core.patch_node(node, patch)
        except ApiException as e:
            return Result(Outcome.Conflict if e.status == 409 else Outcome.Failed, str(e.reason))
        events.post(self.api_client, events.node_ref(node), "Warning" if present else "Normal",
                    "EdgeweaveTainted" if present else "EdgeweaveUntainted", message)
        return Result(Outcome.Done)
