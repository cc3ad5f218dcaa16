"""Exact placement of one neighbourhood with CP-SAT (OR-Tools): the aggregation planner's optimiser.

A neighbourhood is a set of pods that may move (variables) and the devices they may use; every
other pod stays where it is and counts as a constant. The model:

- x[p, d] = 1 when pod p ends on device d; each pod on exactly one of its allowed devices (allowed:
  capacity-independent filters the caller ran: context requirements, anti-affinity against pods that
  stay put);
- capacity: requests per device (CPU, memory, each extended resource) within what is free there;
- spread: at most `limit` replicas of a workload per device (counting replicas that stay put), and
  pairs of pods that may not share a device (required or respected anti-affinity) never do;
- moves: pod p moved when it is not on its origin device; their number within the move budget;
- objective: traffic kept on-device (pairs of workloads, traffic spread evenly over their pod pairs,
  as graph.DependencyGraph counts it) minus moveCost per move, minus tie-breaks (two units per
  move, one per pod off the warm start) so equal-traffic plans prefer fewer moves and fewer changes.

Search is deterministic (one worker, deterministic time limit, full LP linearisation), warm-started from the greedy
placement, so the same snapshot gives the same plan. The caller replays the answer through its own
checks before it adopts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ortools.sat.python import cp_model


@dataclass(frozen=True)
class SolverPod:
    key: str
    workload: int  # index into Problem.workloads
    requests: tuple[int, ...]  # scaled integers, one per resource dimension
    allowed: tuple[int, ...]  # device indices
    origin: int | None  # device index of where it ran at the snapshot, None if outside the neighbourhood
    current: int  # device index of the warm start
    group: str = ""


@dataclass
class Problem:
    devices: list[str]
    free: list[tuple[int, ...]]  # per device: capacity left for the neighbourhood's pods
    pods: list[SolverPod]
    workloads: int  # number of workloads
    limit: list[int]  # per workload: max pods per device (0: no limit)
    fixed: dict[tuple[int, int], int]  # (workload, device) -> pods that stay there
    pairs: list[tuple[int, int, float]]  # (workload a, workload b, traffic per pod pair) with a != b
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # pod index pairs kept apart
    move_cost: float = 0.0
    budget: int | None = None  # moves allowed in this neighbourhood
    group_budget: dict[str, int] = field(default_factory=dict)
    # placements that cannot all happen (a swap between full devices has no order in which each
    # move fits): at least one of each list's (pod, device) must not be chosen
    nogoods: list[list[tuple[int, int]]] = field(default_factory=list)


@dataclass(frozen=True)
class Solution:
    placement: dict[str, str]  # pod key -> device
    objective: float  # traffic kept local minus move cost, in the problem's units (bytes/s)
    optimal: bool
    work: float  # deterministic time the search used (CP-SAT's machine-independent clock)


def solve(pr: Problem, *, deterministic_time: float = 1.0, wall_time: float = 5.0,
          workers: int = 1) -> Solution | None:
    """Best placement of the neighbourhood within the limits; None when none was found."""
    if not pr.pods:
        return None
    top = max([abs(u) for _, _, u in pr.pairs] + [pr.move_cost, 1.0])
    scale = 1e6 / top  # coefficients up to 1e6: exact enough, far from int64 overflow

    m = cp_model.CpModel()
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    by_device: dict[int, list[int]] = {}
    for i, p in enumerate(pr.pods):
        vs = []
        for d in p.allowed:
            v = m.new_bool_var(f"x{i}_{d}")
            x[i, d] = v
            vs.append(v)
            by_device.setdefault(d, []).append(i)
            m.add_hint(v, d == p.current)
        m.add_exactly_one(vs)
    for d, pods in by_device.items():
        for r, cap in enumerate(pr.free[d]):
            terms = [(pr.pods[i].requests[r], x[i, d]) for i in pods if pr.pods[i].requests[r]]
            if terms:
                m.add(sum(c * v for c, v in terms) <= cap)

    # X[w, d]: pods of workload w (variables only) on d, with its upper bound
    members: dict[int, list[int]] = {}
    for i, p in enumerate(pr.pods):
        members.setdefault(p.workload, []).append(i)
    count: dict[tuple[int, int], tuple[object, int]] = {}
    for w, idx in members.items():
        for d in {d for i in idx for d in pr.pods[i].allowed}:
            vs = [x[i, d] for i in idx if (i, d) in x]
            ub = len(vs)
            if pr.limit[w] > 0:
                room = max(0, pr.limit[w] - pr.fixed.get((w, d), 0))
                # never worse than now: a device already over the limit keeps what it has
                now = sum(1 for i in idx if pr.pods[i].current == d)
                room = max(room, min(now, ub))
                if room < ub:
                    m.add(sum(vs) <= room)
                    ub = room
            count[w, d] = (sum(vs) if len(vs) > 1 else vs[0], ub)
    for i, j in pr.conflicts:
        for d in set(pr.pods[i].allowed) & set(pr.pods[j].allowed):
            m.add_bool_or([x[i, d].Not(), x[j, d].Not()])

    for ng in pr.nogoods:
        m.add_bool_or([x[i, d].Not() for i, d in ng if (i, d) in x])
    obj = []
    for a, b, u in pr.pairs:
        coef = u * scale
        if coef <= 0:
            continue
        devices = {d for (w, d) in count if w in (a, b)}
        for d in devices:
            ca, cb = count.get((a, d)), count.get((b, d))
            fa, fb = pr.fixed.get((a, d), 0), pr.fixed.get((b, d), 0)
            if ca is not None and fb:
                obj.append(round(coef * fb) * ca[0])
            if cb is not None and fa:
                obj.append(round(coef * fa) * cb[0])
            if ca is None or cb is None or not ca[1] or not cb[1]:
                continue
            if ca[1] == 1 and cb[1] == 1:
                z = m.new_bool_var("")
                m.add(z <= ca[0])
                m.add(z <= cb[0])
            else:
                ia, ib = m.new_int_var(0, ca[1], ""), m.new_int_var(0, cb[1], "")
                m.add(ia == ca[0])
                m.add(ib == cb[0])
                z = m.new_int_var(0, ca[1] * cb[1], "")
                m.add_multiplication_equality(z, [ia, ib])
            obj.append(round(coef) * z)

    moved = []
    per_group: dict[str, list] = {}
    for i, p in enumerate(pr.pods):
        if p.origin is None:
            continue  # not movable from here: only pods whose origin is in the neighbourhood are counted
        if (i, p.origin) in x:
            mv = x[i, p.origin].Not()
        else:
            mv = 1
        moved.append(mv)
        per_group.setdefault(p.group, []).append(mv)
    unit = round(pr.move_cost * scale) + 2
    # and one unit per pod placed off its warm start, so of equal plans the one closest to the
    # greedy's wins: no gratuitous reshuffles of interchangeable replicas
    obj += [-1 * x[i, p.current].Not() for i, p in enumerate(pr.pods) if (i, p.current) in x]
    if pr.budget is not None:
        m.add(sum(moved) <= pr.budget)
    for g, mvs in per_group.items():
        if g in pr.group_budget:
            m.add(sum(mvs) <= pr.group_budget[g])
    m.maximize(sum(obj) - unit * sum(moved))

    s = cp_model.CpSolver()
    s.parameters.num_workers = workers
    s.parameters.max_deterministic_time = deterministic_time
    s.parameters.max_time_in_seconds = wall_time
    s.parameters.random_seed = 0
    # the LP relaxation of the co-location terms is what closes these models: with full
    # linearisation one worker proves optimality on small fleets in milliseconds (without it, not
    # within seconds)
    s.parameters.linearization_level = 2
    status = s.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    work = s.response_proto.deterministic_time
    out = {}
    for i, p in enumerate(pr.pods):
        for d in p.allowed:
            if s.boolean_value(x[i, d]):
                out[p.key] = pr.devices[d]
                break
    return Solution(placement=out, objective=s.objective_value / scale, optimal=status == cp_model.OPTIMAL,
                    work=work)

