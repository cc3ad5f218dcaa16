"""next_move and resolve, table-driven: every phase, every observation that changes the outcome, and
resume after a restart (the recorded phase alone decides what comes next)."""

from __future__ import annotations

import pytest

from edgeweave.actuate.actuator import Outcome, Result
from edgeweave.actuate.moves import (
    WAITING_FOR_STEERING,
    Action,
    ActionKind,
    MoveObservation,
    PodView,
    copy_name,
    find_replacement,
    next_move,
    resolve,
)
from edgeweave.api.base import parse_rfc3339, rfc3339
from edgeweave.api.workloadgroup import MovePhase, MoveStatus

NOW = parse_rfc3339("2026-01-01T00:10:00Z")
STARTED = rfc3339(NOW - 20)
RS = "ReplicaSet/api-7d9"


def move(phase: MovePhase = MovePhase.Planned, **kw) -> MoveStatus:
    base = {"id": "m1", "workload": "api", "pod": "ns/api-1", "from_node": "a", "to_node": "b", "reason": "r",
            "phase": phase, "updated_at": rfc3339(NOW - 5)}
    if phase is not MovePhase.Planned:
        base.update(pod_uid="u1", started_at=STARTED)
    return MoveStatus(**{**base, **kw})


def pod(name: str = "api-1", uid: str = "u1", node: str | None = "a", owner: str = RS, **kw) -> PodView:
    return PodView(name=name, uid=uid, node=node, owner=owner, **kw)


def obs(**kw) -> MoveObservation:
    return MoveObservation(now=NOW, **kw)


NEW = NOW - 10  # created after the move started
# (case, move, observation, expected phase, expected action, text in the message)
TABLE = [
    ("planned: pod gone", move(), obs(pod=None), MovePhase.Failed, ActionKind.Nothing, "gone"),
    ("planned: pod replaced (uid)", move(pod_uid="old"), obs(pod=pod()), MovePhase.Failed, ActionKind.Nothing, "gone"),
    ("planned: pod deleting", move(), obs(pod=pod(deleting=True)), MovePhase.Failed, ActionKind.Nothing, "gone"),
    ("planned: pod moved elsewhere", move(), obs(pod=pod(node="c")), MovePhase.Failed, ActionKind.Nothing, "now on c"),
    ("planned: controller-owned, steering live", move(), obs(pod=pod()), MovePhase.Evicting, ActionKind.Steer,
     "steered"),
    ("planned: controller-owned, steering down", move(), obs(pod=pod(), steering_live=False), MovePhase.Planned,
     ActionKind.Nothing, WAITING_FOR_STEERING),
    ("planned: steering down too long", move(updated_at=rfc3339(NOW - 500)), obs(pod=pod(), steering_live=False),
     MovePhase.Failed, ActionKind.Nothing, "nothing was evicted"),
    ("planned: owned by a Job", move(), obs(pod=pod(owner="Job/x")), MovePhase.Failed, ActionKind.Nothing,
     "not moved"),
    ("planned: bare pod", move(), obs(pod=pod(owner="")), MovePhase.Copying, ActionKind.Nothing, "copying"),
    ("planned: bare pod needs no steering", move(), obs(pod=pod(owner=""), steering_live=False), MovePhase.Copying,
     ActionKind.Nothing, "copying"),
    ("evicting: evict", move(MovePhase.Evicting, owner=RS), obs(), MovePhase.Evicting, ActionKind.Evict, ""),
    ("evicting (resumed) with steering down: wait", move(MovePhase.Evicting, owner=RS), obs(steering_live=False),
     MovePhase.Evicting, ActionKind.Nothing, WAITING_FOR_STEERING),
    ("copying: original gone", move(MovePhase.Copying), obs(pod=None), MovePhase.Failed, ActionKind.Nothing,
     "disappeared"),
    ("copying: create the copy", move(MovePhase.Copying), obs(pod=pod(owner="")), MovePhase.Copying,
     ActionKind.CreateCopy, ""),
    ("waiting: replacement Ready on target", move(MovePhase.WaitingReady, owner=RS),
     obs(replacement=pod("api-2", "u2", "b", ready=True, created_at=NEW)), MovePhase.Done, ActionKind.Release,
     "as api-2"),
    ("waiting: replacement not Ready yet", move(MovePhase.WaitingReady, owner=RS),
     obs(replacement=pod("api-2", "u2", "b", created_at=NEW)), MovePhase.WaitingReady, ActionKind.Nothing, ""),
    ("waiting: stray, first time: re-steer", move(MovePhase.WaitingReady, owner=RS),
     obs(stray=pod("api-2", "u2", "c", created_at=NEW)), MovePhase.WaitingReady, ActionKind.EvictStray, "landed on c"),
    ("waiting: stray again: roll back", move(MovePhase.WaitingReady, owner=RS, attempts=1),
     obs(stray=pod("api-3", "u3", "c", created_at=NEW)), MovePhase.RolledBack, ActionKind.Release, "landed on c"),
    ("waiting: stray, steering down: roll back, no eviction", move(MovePhase.WaitingReady, owner=RS),
     obs(stray=pod("api-2", "u2", "c", created_at=NEW), steering_live=False), MovePhase.RolledBack,
     ActionKind.Release, "steering is not live"),
    ("waiting: timeout, owned", move(MovePhase.WaitingReady, owner=RS, updated_at=rfc3339(NOW - 200)), obs(),
     MovePhase.RolledBack, ActionKind.Release, "after 200s"),
    ("waiting: timeout, bare copy removed", move(MovePhase.WaitingReady, new_pod="api-1-mvx",
                                                 updated_at=rfc3339(NOW - 200)), obs(),
     MovePhase.RolledBack, ActionKind.DeleteCopy, "copy is removed"),
    ("waiting: bare copy Ready", move(MovePhase.WaitingReady, new_pod="api-1-mvx"),
     obs(replacement=pod("api-1-mvx", "u9", "b", owner="", ready=True)), MovePhase.DeletingOriginal,
     ActionKind.Nothing, "deleting the original"),
    ("deleting original", move(MovePhase.DeletingOriginal, new_pod="api-1-mvx"), obs(), MovePhase.DeletingOriginal,
     ActionKind.DeleteOriginal, ""),
    ("done stays done", move(MovePhase.Done), obs(), MovePhase.Done, ActionKind.Nothing, ""),
    ("failed stays failed", move(MovePhase.Failed), obs(), MovePhase.Failed, ActionKind.Nothing, ""),
    ("rolled back stays", move(MovePhase.RolledBack), obs(), MovePhase.RolledBack, ActionKind.Nothing, ""),
]


@pytest.mark.parametrize(("case", "m", "o", "phase", "action", "text"), TABLE, ids=[t[0] for t in TABLE])
def test_next_move(case: str, m: MoveStatus, o: MoveObservation, phase: MovePhase, action: ActionKind,
                   text: str) -> None:
    nxt, act = next_move(m, o)
    assert nxt.phase is phase, case
    assert act.kind is action, case
    assert text in nxt.message, (case, nxt.message)


def test_planned_records_what_resume_needs() -> None:
    nxt, _ = next_move(move(), obs(pod=pod()))
    assert (nxt.pod_uid, nxt.owner, nxt.started_at) == ("u1", RS, rfc3339(NOW))


def test_evict_and_delete_carry_the_uid_precondition() -> None:
    _, act = next_move(move(MovePhase.Evicting, owner=RS), obs())
    assert (act.pod, act.uid) == ("api-1", "u1")
    _, act = next_move(move(MovePhase.Copying), obs(pod=pod(owner="")))
    assert act.pod == copy_name("api-1", "m1")


RESOLVE = [
    (ActionKind.Evict, Outcome.Done, MovePhase.WaitingReady),
    (ActionKind.Evict, Outcome.NotFound, MovePhase.WaitingReady),  # resumed: evicted before the restart
    (ActionKind.Evict, Outcome.Conflict, MovePhase.WaitingReady),  # resumed: the uid is gone
    (ActionKind.Evict, Outcome.BlockedByPDB, MovePhase.Failed),
    (ActionKind.Evict, Outcome.Failed, MovePhase.Evicting),  # retried next sweep
    (ActionKind.Evict, Outcome.DryRun, MovePhase.Done),
    (ActionKind.EvictStray, Outcome.BlockedByPDB, MovePhase.Failed),
    (ActionKind.EvictStray, Outcome.Done, MovePhase.WaitingReady),
    (ActionKind.CreateCopy, Outcome.Done, MovePhase.WaitingReady),
    (ActionKind.CreateCopy, Outcome.Conflict, MovePhase.WaitingReady),  # resumed: the copy exists
    (ActionKind.CreateCopy, Outcome.Failed, MovePhase.Copying),
    (ActionKind.DeleteOriginal, Outcome.Done, MovePhase.Done),
    (ActionKind.DeleteOriginal, Outcome.NotFound, MovePhase.Done),  # resumed: deleted before the restart
    (ActionKind.DeleteOriginal, Outcome.Failed, MovePhase.DeletingOriginal),
]


@pytest.mark.parametrize(("kind", "outcome", "phase"), RESOLVE)
def test_resolve(kind: ActionKind, outcome: Outcome, phase: MovePhase) -> None:
    start = {ActionKind.Evict: MovePhase.Evicting, ActionKind.EvictStray: MovePhase.WaitingReady,
             ActionKind.CreateCopy: MovePhase.Copying, ActionKind.DeleteOriginal: MovePhase.DeletingOriginal}[kind]
    m = move(start, owner=RS if kind in (ActionKind.Evict, ActionKind.EvictStray) else "")
    out = resolve(m, Action(kind, "x"), Result(outcome, "why"), NOW)
    assert out.phase is phase
    if kind is ActionKind.CreateCopy and phase is MovePhase.WaitingReady:
        assert out.new_pod == "x"


def test_resume_after_restart_walks_a_move_to_done_once() -> None:
    """What a restarted operator does from each recorded phase: the same steps, no repeated eviction."""
    m = move(MovePhase.Evicting, owner=RS)  # killed after recording Evicting, maybe after evicting
    m, act = next_move(m, obs())
    assert act.kind is ActionKind.Evict
    m = resolve(m, act, Result(Outcome.NotFound), NOW)  # the eviction had happened
    assert m.phase is MovePhase.WaitingReady
    m, act = next_move(m, obs(replacement=pod("api-2", "u2", "b", ready=True, created_at=NEW)))
    assert (m.phase, act.kind) == (MovePhase.Done, ActionKind.Release)
    assert next_move(m, obs())[1].kind is ActionKind.Nothing


def test_a_replica_already_on_the_target_is_not_the_replacement() -> None:
    m = move(MovePhase.WaitingReady, owner=RS)
    old_replica = pod("api-0", "u0", "b", ready=True, created_at=NOW - 3600)
    assert find_replacement(m, [old_replica]) == (None, None)
    fresh = pod("api-2", "u2", "b", ready=True, created_at=NEW)
    assert find_replacement(m, [old_replica, fresh])[0] == fresh
    steered_early = pod("api-3", "u3", "b", created_at=NOW - 3600, steered_by="m1")
    assert find_replacement(m, [steered_early])[0] == steered_early
    stray = pod("api-4", "u4", "c", created_at=NEW)
    assert find_replacement(m, [stray]) == (None, stray)
    other_owner = pod("web-1", "u5", "b", owner="ReplicaSet/web", created_at=NEW)
    assert find_replacement(m, [other_owner, pod(uid="u1", node="a")]) == (None, None)
