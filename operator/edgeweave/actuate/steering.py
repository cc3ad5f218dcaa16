"""Where replacement pods must land while a move is in flight, read by the admission webhook.

In-process, because the move executor must register a target *before* it evicts, and the webhook
must see it within the milliseconds the ReplicaSet controller takes to create the replacement (a
watch-fed index would race). Only the acting replica executes moves (peering), and on restart the
table is rebuilt from the moves recorded in WorkloadGroup status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

STEERED_ANNOTATION = "edgeweave.io/steered-by-move"  # the move id the webhook stamps on a pod it steered


@dataclass(frozen=True)
class Steer:
    to_node: str | None  # None: no placement to enforce, only the spec patch (failover after a node failure)
    move_id: str
    expires_at: float
    # Extra pod-spec fields for the replacement (the memory-recovery init container and its volumes),
    # computed at admission from the incoming pod's own spec: its volumes (the ServiceAccount token's
    # among them) are only known then.
    spec_patch: Callable[[dict], dict | None] | None = None
    # A patch that returns None has nothing to do for this pod *yet*: the webhook asks it again for up
    # to this long (a standing failover waits for the pod index to show which member was lost).
    pending_s: float = 0.0


class SteeringTable:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Steer] = {}
        self._lock = threading.Lock()

    def register(self, namespace: str, owner: str, to_node: str | None, move_id: str, ttl: float = 600,
                 spec_patch: Callable[[dict], dict | None] | None = None, pending_s: float = 0.0) -> None:
        now = time.monotonic()
        with self._lock:
            # Standing registrations are refreshed every round: an owner that went away (a ReplicaSet
            # replaced by a rollout, a deleted group) is never looked up again, so its entry expires here.
            for key in [k for k, e in self._entries.items() if e.expires_at < now]:
                del self._entries[key]
            self._entries[(namespace, owner)] = Steer(to_node, move_id, now + ttl, spec_patch, pending_s)

    def release(self, namespace: str, owner: str, move_id: str) -> None:
        with self._lock:
            entry = self._entries.get((namespace, owner))
            if entry and entry.move_id == move_id:
                del self._entries[(namespace, owner)]

    def lookup(self, namespace: str, owner: str) -> Steer | None:
        with self._lock:
            entry = self._entries.get((namespace, owner))
            if entry and entry.expires_at < time.monotonic():
                del self._entries[(namespace, owner)]
                return None
            return entry


STEERING = SteeringTable()


def affinity_patch(existing_affinity: dict | None, to_node: str) -> dict:
    """The pod's affinity with the target device required on top of what the user required.

    The hostname term is ANDed into each of the user's required node terms (terms are ORed, so
    replacing them would let the pod onto a device the user excluded), and pod (anti-)affinity and
    everything else stay as they were: the scheduler still enforces them, so a steered replacement
    never lands where the user's own rules forbid (it stays Pending and the move rolls back).
    """
    affinity = dict(existing_affinity or {})
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    host = {"key": "kubernetes.io/hostname", "operator": "In", "values": [to_node]}
    required = (node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = [t for t in required.get("nodeSelectorTerms") or [] if t]
    kept = [{**t, "matchExpressions": [e for e in t.get("matchExpressions") or [] if not _ours(e)] + [host]}
            for t in terms]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        **required, "nodeSelectorTerms": kept or [{"matchExpressions": [host]}]}
    affinity["nodeAffinity"] = node_affinity
    return affinity


def _ours(expr: dict) -> bool:
    """A single-device hostname pin: what an earlier steer wrote (a bare pod's copy carries it)."""
    return (expr.get("key") == "kubernetes.io/hostname" and expr.get("operator") == "In"
            and len(expr.get("values") or []) == 1)
