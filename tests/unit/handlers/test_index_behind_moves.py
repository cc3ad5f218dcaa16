"""A group does not plan on a pod index that does not show its last moves yet (planning then undid the move:
the other pod went to the moved pod's old device)."""

from __future__ import annotations

import pytest

from edgeweave.api.base import rfc3339
from edgeweave.api.workloadgroup import MovePhase, MoveStatus
from edgeweave.handlers.wg_round import INDEX_LAG_SECONDS, index_behind_moves
from edgeweave.placement.inventory import PodInfo

NOW = 1_800_000_000.0


def pod(name: str, uid: str, node: str) -> PodInfo:
    return PodInfo(namespace="ns", name=name, uid=uid, node=node, phase="Running", ready=True)


def move(phase: MovePhase = MovePhase.Done, ended: float = NOW - 3, owner: str = "") -> MoveStatus:
    return MoveStatus(id="m1", workload="cache", pod="ns/cache", pod_uid="u-orig", owner=owner, from_node="d1",
                      to_node="d2", reason="co-locate", phase=phase, new_pod="cache-mv1", updated_at=rfc3339(ended))


API = pod("api", "u-api", "d2")
ORIGINAL = pod("cache", "u-orig", "d1")
COPY = pod("cache-mv1", "u-copy", "d2")


@pytest.mark.parametrize(("moves", "members", "behind"), [
    ([move()], [API, COPY], False),  # the index shows the move: plan
    ([move()], [API, ORIGINAL, COPY], True),  # the original is still there (its delete not seen yet)
    ([move()], [API, ORIGINAL], True),  # the copy not seen yet either
    ([move()], [API], True),  # original gone, copy not seen yet
    ([move(owner="Deployment/cache")], [API], False),  # a controller names its own replacement: uid only
    ([move(phase=MovePhase.WaitingReady)], [API, ORIGINAL], False),  # in flight: the mover's business
    ([move(phase=MovePhase.RolledBack)], [API, ORIGINAL], False),  # nothing moved
    ([move(ended=NOW - INDEX_LAG_SECONDS - 1)], [API], False),  # the copy went since: news, plan on it
    ([], [API, ORIGINAL], False),
])
def test_index_behind_moves(moves: list[MoveStatus], members: list[PodInfo], behind: bool) -> None:
    assert index_behind_moves(moves, members, NOW) is behind
