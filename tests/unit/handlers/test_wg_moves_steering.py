"""Only a step that evicts a controller-owned pod depends on the steering webhook (a bare pod is copied):
the mover probes steering, and may raise SteeringUnavailable, for those steps only."""

from __future__ import annotations

import pytest

from edgeweave.actuate.moves import MoveObservation, PodView
from edgeweave.api.base import parse_rfc3339, rfc3339
from edgeweave.api.workloadgroup import MovePhase, MoveStatus
from edgeweave.handlers.wg_moves import needs_steering

NOW = parse_rfc3339("2026-01-01T00:10:00Z")


def move(phase: MovePhase, owner: str = "") -> MoveStatus:
    return MoveStatus(id="m1", workload="api", pod="ns/api-1", from_node="a", to_node="b", reason="r", phase=phase,
                      updated_at=rfc3339(NOW), owner=owner)


def seen(owner: str | None) -> MoveObservation:
    return MoveObservation(now=NOW, pod=None if owner is None else PodView(name="api-1", uid="u1", node="a",
                                                                          owner=owner))


@pytest.mark.parametrize(("phase", "recorded_owner", "pod_owner", "needs"), [
    (MovePhase.Planned, "", "", False),  # bare pod: copied, never evicted
    (MovePhase.Planned, "", "ReplicaSet/api-7d9", True),
    (MovePhase.Planned, "", "StatefulSet/db", True),
    (MovePhase.Planned, "", "Job/once", False),  # not moved at all (next_move fails it)
    (MovePhase.Planned, "", None, False),  # the pod is gone: the move fails without a probe
    (MovePhase.Copying, "", "", False),
    (MovePhase.Evicting, "ReplicaSet/api-7d9", None, True),
    (MovePhase.WaitingReady, "ReplicaSet/api-7d9", None, True),  # a stray replacement may need re-steering
    (MovePhase.WaitingReady, "", None, False),  # the bare pod's copy
    (MovePhase.DeletingOriginal, "", None, False),
])
def test_needs_steering(phase: MovePhase, recorded_owner: str, pod_owner: str | None, needs: bool) -> None:
    assert needs_steering(move(phase, recorded_owner), seen(pod_owner)) is needs
