"""Small fleets where the optimum can be computed, and that optimum: the aggregation planner's yardstick.

The generator is ours and independent of the planner: 6-12 devices of mixed size, 24-60 workloads in
microservice-shaped apps (some services with two replicas; some pairs kept apart by required pod
anti-affinity; a few pinned pods), placed the way kube-scheduler would (LeastAllocated, replicas
spread), plus a move cap.

The reference is a different model solved by a different solver than the product uses: a MILP with
one variable per pod pair and device (SCIP, through OR-Tools' linear solver), maximising cross-device
traffic removed minus moveCost per move, under capacity, the move cap, the spread policy (no second
replica of a workload on a device that did not already have two) and the anti-affinity. It ignores
the order moves run in (the product must also find an order where each move fits), so it can only be
optimistic: the ratio it gives is a lower bound on how close the product comes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from edgeweave.placement.graph import DependencyGraph
from edgeweave.placement.model import DeviceState, Edge, WorkloadState
from edgeweave.placement.spread import HOSTNAME, conflicts, pod_constraints

GIB = 2.0**30
MIB = 2.0**20
SERVICES = ("gateway", "api", "auth", "cart", "catalog", "search", "orders", "cache", "db", "queue", "worker")


@dataclass
class SmallFleet:
    devices: list[DeviceState]
    workloads: list[WorkloadState]
    edges: list[Edge]
    max_moves: int
    seed: int


def generate(seed: int) -> SmallFleet:
    rng = random.Random(seed)
    n_dev = rng.randint(6, 12)
    target = rng.randint(24, 60)
    sizes = [rng.choice(((2.0, 4 * GIB), (4.0, 8 * GIB), (4.0, 8 * GIB), (8.0, 16 * GIB))) for _ in range(n_dev)]
    names = [f"d{i:02d}" for i in range(n_dev)]
    specs: list[dict] = []
    edges: list[Edge] = []
    app, n_workloads = 0, 0
    while n_workloads < target:
        k = rng.choice((2, 3, 3, 4, 4, 5, 6))
        ns, group = f"team-{app % 3}", f"team-{app % 3}/app-{app:02d}"
        svcs = [f"a{app:02d}-{s}" for s in rng.sample(SERVICES, k)]
        apart = tuple(rng.sample(svcs, 2)) if rng.random() < 0.2 else ()
        for s in svcs:
            replicas = 2 if rng.random() < 0.2 else 1
            cpu = rng.choice((0.1, 0.25, 0.25, 0.5, 0.5, 1.0))
            spec = {}
            if s in apart:
                other = apart[1] if s == apart[0] else apart[0]
                spec = {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": HOSTNAME, "labelSelector": {"matchLabels": {"app": other}}}]}}}
            for r in range(replicas):
                specs.append({"key": f"{ns}/{s}-{r}", "workload": s, "group": group, "cpu": cpu,
                              "memory": rng.choice((128, 256, 512)) * MIB, "movable": rng.random() > 0.05,
                              "labels": {"app": s}, "constraints": pod_constraints(spec)})
        # a chain plus a few extra edges, heavy-tailed rates
        for i in range(1, k):
            j = rng.randrange(i)
            edges.append(Edge(source=svcs[j], target=svcs[i], group=group,
                              bytes_per_second=20_000.0 * math.exp(rng.gauss(0, 1.4))))
        n_workloads += k
        app += 1
    # scale requests to 55-75% of the fleet's CPU, then place like kube-scheduler (LeastAllocated, spread)
    total = sum(c for c, _ in sizes)
    scale = rng.uniform(0.55, 0.75) * total / sum(s["cpu"] for s in specs)
    for s in specs:
        s["cpu"] = round(max(0.05, s["cpu"] * scale), 2)
    free = {n: [c, m] for n, (c, m) in zip(names, sizes, strict=True)}
    on: dict[str, list[WorkloadState]] = {n: [] for n in names}
    workloads = []
    rng.shuffle(specs)
    for s in specs:
        w = WorkloadState(key=s["key"], workload=s["workload"], group=s["group"], node="", cpu=s["cpu"],
                          memory=s["memory"], movable=s["movable"], labels=s["labels"], constraints=s["constraints"])
        feasible = [n for n in names if free[n][0] >= w.cpu - 1e-9 and free[n][1] >= w.memory
                    and conflicts(w, on[n], respect_preferred=True) is None
                    and not any(o.workload == w.workload for o in on[n])]
        if not feasible:
            continue
        node = max(feasible, key=lambda n: (free[n][0] / dict(zip(names, sizes, strict=True))[n][0]
                                            + rng.random() * 0.3))
        w = w.model_copy(update={"node": node})
        free[node][0] -= w.cpu
        free[node][1] -= w.memory
        on[node].append(w)
        workloads.append(w)
    devices = [DeviceState(name=n, cpu_capacity=c, memory_capacity=m, cpu_free=free[n][0], memory_free=free[n][1])
               for n, (c, m) in zip(names, sizes, strict=True)]
    present = {w.workload for w in workloads}
    edges = [e for e in edges if e.source in present and e.target in present]
    return SmallFleet(devices=devices, workloads=sorted(workloads, key=lambda w: w.key), edges=edges,
                      max_moves=rng.randint(3, 10), seed=seed)


@dataclass
class Reference:
    placement: dict[str, str]
    traffic_after: float
    moves: int
    optimal: bool


def optimum(f: SmallFleet, *, move_cost: float, max_replicas_per_device: int = 1,
            time_limit_s: float = 120.0) -> Reference:
    """The placement maximising traffic removed minus move_cost per move (see the module doc)."""
    g = DependencyGraph(f.workloads, f.edges)
    devs = [d.name for d in f.devices if d.schedulable]
    pods = list(g.pods)
    solver = pywraplp.Solver.CreateSolver("SCIP")
    solver.SetTimeLimit(int(time_limit_s * 1000))
    x = {}
    for p in pods:
        w = g.pods[p]
        allowed = devs if w.movable else [w.node]
        for d in allowed:
            x[p, d] = solver.BoolVar("")
        solver.Add(sum(x[p, d] for d in allowed) == 1)
    for dv in f.devices:
        d = dv.name
        here = [p for p in pods if (p, d) in x]
        cpu_cap = dv.cpu_free + sum(g.pods[p].cpu for p in pods if g.pods[p].node == d)
        mem_cap = dv.memory_free + sum(g.pods[p].memory for p in pods if g.pods[p].node == d)
        solver.Add(sum(g.pods[p].cpu * x[p, d] for p in here) <= cpu_cap + 1e-6)
        solver.Add(sum(g.pods[p].memory * x[p, d] for p in here) <= mem_cap + 1e-3)
        for _k, members in g.members.items():
            if len(members) > 1 and max_replicas_per_device > 0:
                now = sum(1 for p in members if g.pods[p].node == d)
                vs = [x[p, d] for p in members if (p, d) in x]
                if vs:
                    solver.Add(sum(vs) <= max(max_replicas_per_device, now))
        for i, p in enumerate(here):
            for q in here[i + 1:]:
                if conflicts(g.pods[p], [g.pods[q]], respect_preferred=True) is not None or \
                        conflicts(g.pods[q], [g.pods[p]], respect_preferred=True) is not None:
                    solver.Add(x[p, d] + x[q, d] <= 1)
    moved = [1 - x[p, g.pods[p].node] for p in pods if (p, g.pods[p].node) in x]
    solver.Add(sum(moved) <= f.max_moves)
    local = []
    for a, b, w in g.pairs():
        u = w / (len(g.members[a]) * len(g.members[b]))
        for p in g.members[a]:
            for q in g.members[b]:
                for d in devs:
                    if (p, d) in x and (q, d) in x:
                        y = solver.BoolVar("")
                        solver.Add(y <= x[p, d])
                        solver.Add(y <= x[q, d])
                        local.append(u * y)
    solver.Maximize(sum(local) - move_cost * sum(moved))
    status = solver.Solve()
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise RuntimeError(f"reference solver failed on fleet {f.seed} (status {status})")
    placement = {p: next(d for d in devs + [g.pods[p].node] if (p, d) in x and x[p, d].solution_value() > 0.5)
                 for p in pods}
    return Reference(placement=placement, traffic_after=g.cross_device_traffic(placement),
                     moves=sum(1 for p in pods if placement[p] != g.pods[p].node),
                     optimal=status == pywraplp.Solver.OPTIMAL)


def violations(f: SmallFleet, placement: dict[str, str], max_replicas_per_device: int = 1) -> tuple[int, int]:
    """(capacity violations, spread violations) of a placement: devices over their requests; pods
    sharing a device against anti-affinity, or replicas piled beyond the policy where they were not."""
    g = DependencyGraph(f.workloads, f.edges)
    cap = 0
    for d in f.devices:
        cpu = d.cpu_free + sum(w.cpu for w in f.workloads if w.node == d.name)
        mem = d.memory_free + sum(w.memory for w in f.workloads if w.node == d.name)
        cpu -= sum(w.cpu for w in f.workloads if placement[w.key] == d.name)
        mem -= sum(w.memory for w in f.workloads if placement[w.key] == d.name)
        cap += cpu < -1e-6 or mem < -1e-3
    spread = 0
    by_node: dict[str, list[WorkloadState]] = {}
    for w in f.workloads:
        by_node.setdefault(placement[w.key], []).append(w)
    for n, ws in by_node.items():
        for w in ws:
            if conflicts(w, ws, respect_preferred=True) is not None:
                spread += 1
        for _k, members in g.members.items():
            if len(members) > 1 and max_replicas_per_device > 0:
                now = sum(1 for p in members if g.pods[p].node == n)
                after = sum(1 for p in members if placement[p] == n)
                spread += after > max(max_replicas_per_device, now)
    return cap, spread
