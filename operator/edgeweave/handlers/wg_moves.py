"""Drive a recorded Enforce plan's moves, one persisted step per move per sweep."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..actuate.actuator import REFUSAL_MESSAGES, Refusal
from ..actuate.moves import (
    STEERABLE_OWNERS,
    MoveContext,
    MoveObservation,
    carry_out,
    next_move,
    observe_move,
    resolve,
)
from ..api.base import rfc3339
from ..api.workloadgroup import ActuationLimits, MovePhase, MoveStatus, WorkloadGroupStatus
from .wg_decide import backoff_after

SWEEPS = 8
# A group's moves' API calls at once (the group's maxInFlight bounds how many are under way). 8 left a
# breach of 20 devices sending its evictions (each with its Event) in three waves.
PARALLEL = 20


def needs_steering(move: MoveStatus, obs: MoveObservation) -> bool:
    """Whether this step depends on the steering webhook: only evicting a controller-owned pod does (its
    controller makes the replacement). A bare pod is copied to the target: no probe, no condition."""
    if move.phase is MovePhase.Evicting:
        return True
    if move.phase is MovePhase.WaitingReady:
        return bool(move.owner)
    if move.phase is MovePhase.Planned:
        return obs.pod is not None and obs.pod.owner.split("/")[0] in STEERABLE_OWNERS
    return False


class _SweepReads:
    """The core API as one sweep's observations see it: a namespace's pod list is read once per sweep,
    whichever move asks first. Every move waiting for its replacement lists the namespace: 20 of them
    were 20 lists of the same pods (and 20 deserialisations of each), on the loaded operator whose
    admission webhook the replacements are waiting on. Where the sweep reads several moves' pods in one
    namespace (a breach's 20 moves starting), the same list answers them: one request instead of 20."""

    def __init__(self, core: Any, batched: frozenset[str] = frozenset()) -> None:
        self._core = core
        self._batched = batched  # namespaces where this sweep reads several moves' pods: one list serves them
        self._lock = threading.Lock()
        self._lists: dict[str, Any] = {}

    def read_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Any:
        if kwargs or namespace not in self._batched:
            return self._core.read_namespaced_pod(name, namespace, **kwargs)
        # None reads as "gone" (as a 404 would): the list is as fresh as a read, from the same server.
        return next((p for p in self.list_namespaced_pod(namespace).items if p.metadata.name == name), None)

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        if kwargs:
            return self._core.list_namespaced_pod(namespace, **kwargs)
        with self._lock:
            if namespace not in self._lists:
                self._lists[namespace] = self._core.list_namespaced_pod(namespace)
            return self._lists[namespace]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


STARTING = (MovePhase.Planned, MovePhase.Evicting, MovePhase.Copying)
BATCH_READS = 3  # from this many pod reads in one namespace, a sweep lists the namespace once instead


@dataclass(frozen=True)
class DriveResult:
    in_flight: int
    steering: tuple[bool, str] | None  # probed this round (None: no move needed it)


def drive_moves(ctx: MoveContext, status: WorkloadGroupStatus, limits: ActuationLimits, key: str,
                involved: dict[str, str], write: Callable[[dict[str, Any]], None], *,
                start_only: bool = False) -> DriveResult:
    """Sweeps: every move takes at most one step per sweep, and each sweep is persisted in one status write
    before the next. A step's side effect always follows the write of the phase it starts from, so a
    restart at any point resumes from what was done; the group's moves run in parallel. `start_only`:
    stop once no move is still starting (every eviction sent); the group's next rounds carry on."""
    plan = status.plan
    assert plan is not None
    act = ctx.actuator
    moves = list(plan.moves)
    last_moved = dict(status.last_moved)
    backoff = dict(status.backoff)
    total = status.moves_total
    namespace = key.split("/", 1)[0]
    steering: tuple[bool, str] | None = None

    probe = threading.Lock()

    def live() -> bool:
        nonlocal steering
        with probe:  # one probe per round, whichever move asks first
            if steering is None:
                steering = act.steering_live(namespace)
            return steering[0]

    def observe(m: MoveStatus, now: float, reads: MoveContext) -> MoveObservation:
        obs = observe_move(m, reads, steering_live=True, now=now)
        return dataclasses.replace(obs, steering_live=live()) if needs_steering(m, obs) else obs

    pool = ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(moves))), thread_name_prefix="edgeweave-move")
    try:
        for _ in range(SWEEPS):
            changed = False
            now = time.time()
            # Each move's reads and its API action are its own (another pod, another node): they run side by
            # side. What depends on order (in-flight count, rate limit) is decided in plan order in between.
            # Measured: 20 moves one after another took 27 s to start on a loaded 2-core machine.
            active, in_flight = [], sum(1 for x in moves if not x.terminal and x.phase is not MovePhase.Planned)
            for i, m in enumerate(moves):
                if m.terminal:
                    continue
                if m.phase is MovePhase.Planned:
                    refusal = act.would_refuse(key, limits, plan.mode, in_flight)
                    if refusal is not None:
                        changed |= _refused(moves, i, refusal)
                        continue
                active.append(i)
            reading = [moves[i].namespace for i in active if moves[i].phase in (MovePhase.Planned, MovePhase.Copying)]
            batched = frozenset(ns for ns in set(reading) if reading.count(ns) >= BATCH_READS)
            reads = dataclasses.replace(ctx, core=_SweepReads(ctx.core, batched))
            observed = dict(zip(active, pool.map(lambda i, at=now, r=reads: observe(moves[i], at, r), active),
                                strict=True))
            todo = []
            starting = sum(1 for x in moves if not x.terminal and x.phase is not MovePhase.Planned)
            for i in active:
                m = moves[i]
                decided, action = next_move(m, observed[i])
                if m.phase is MovePhase.Planned and decided.phase is not MovePhase.Planned and not decided.terminal:
                    refusal = act.may_start_move(key, limits, plan.mode, starting)
                    if refusal is not None:
                        changed |= _refused(moves, i, refusal)
                        continue
                    starting += 1
                todo.append((i, decided, action))
            results = list(pool.map(lambda t: carry_out(t[1], t[2], ctx), todo))
            for (i, decided, action), result in zip(todo, results, strict=True):
                m = moves[i]
                nxt = resolve(decided, action, result, now)
                if nxt == m:
                    continue
                moves[i] = nxt
                changed = True
                if nxt.terminal:
                    act.move_finished(involved, plan.kind, nxt, now)
                    if nxt.phase is MovePhase.Done:
                        last_moved[nxt.workload] = rfc3339(now)
                        total += 1
                    b = backoff_after(backoff.get(nxt.workload), nxt, now)
                    if b is None:
                        backoff.pop(nxt.workload, None)
                    else:
                        backoff[nxt.workload] = b
            if not changed:
                break
            write({"plan": plan.model_copy(update={"moves": moves}).wire(), "lastMoved": last_moved,
                   "movesTotal": total, "backoff": {w: b.wire() for w, b in backoff.items()}})
            if start_only and not any(not m.terminal and m.phase in STARTING for m in moves):
                break
    finally:
        pool.shutdown(wait=True)
    in_flight = sum(1 for m in moves if not m.terminal)
    metrics.MOVES_IN_FLIGHT.labels(*key.split("/", 1)).set(in_flight)
    return DriveResult(in_flight, steering)


def _refused(moves: list[MoveStatus], i: int, refusal: Refusal) -> bool:
    message = REFUSAL_MESSAGES[refusal]
    if moves[i].message == message:
        return False
    moves[i] = moves[i].model_copy(update={"message": message})
    return True
