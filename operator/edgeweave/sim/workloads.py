"""Generated fleets for planner tests and benchmarks: devices, microservice apps, traffic, placement.

Each app is a handful of services wired the way microservice systems are (a call chain, a gateway
fanning out to backends, backends with a cache or a database), with heavy-tailed traffic per edge: a
few edges carry most of the bytes. Apps arrive one after another and a default-scheduler-like
placement (filter on requests, score LeastAllocated on a sample of feasible nodes, spread replicas)
puts them on devices, which scatters the services of an app over several devices, as real clusters
do. A slice of devices joins after the apps are placed (empty), which gives a utilisation rebalancer
something to do.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..placement.model import DeviceState, Edge, WorkloadState

GIB = 2.0**30
MIB = 2.0**20
POWER = "PowerSource"

DEVICE_SIZES = ((2.0, 4 * GIB), (4.0, 8 * GIB), (8.0, 16 * GIB), (16.0, 32 * GIB))
DEVICE_WEIGHTS = (0.15, 0.4, 0.3, 0.15)
SERVICE_NAMES = ("gateway", "api", "auth", "cart", "checkout", "catalog", "search", "orders", "payments",
                 "inventory", "shipping", "reviews", "cache", "db", "queue", "worker", "media", "notify")
CPU_REQUESTS = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0)
CPU_WEIGHTS = (0.15, 0.25, 0.2, 0.2, 0.15, 0.05)


@dataclass(frozen=True)
class FleetSpec:
    devices: int = 50
    workloads_per_device: float = 10.0
    seed: int = 0
    cpu_utilisation: float = 0.5  # share of all CPU the apps request
    new_device_fraction: float = 0.1  # devices that join empty after the apps are placed
    replica_fraction: float = 0.1  # services that run two replicas
    pinned_fraction: float = 0.03  # pods that may not move (local volumes)
    battery_device_fraction: float = 0.15
    grid_only_app_fraction: float = 0.1  # apps whose group requires PowerSource=Grid
    median_bytes_per_second: float = 20_000.0
    sigma: float = 1.6  # lognormal spread of edge rates: the heavy tail


@dataclass
class SimFleet:
    devices: list[DeviceState]
    workloads: list[WorkloadState]
    edges: list[Edge]
    requirements: dict[str, dict[str, str]] = field(default_factory=dict)  # group -> context it needs

    def requirements_ok(self, w: WorkloadState, d: DeviceState) -> bool:
        need = self.requirements.get(w.group)
        return not need or all(d.context.get(k) == v for k, v in need.items())

    def placement(self) -> dict[str, str]:
        return {w.key: w.node for w in self.workloads}

    def apply(self, placement: Mapping[str, str], cooling: frozenset[str] = frozenset()) -> SimFleet:
        """The fleet after pods moved to `placement`; pods in `cooling` are marked cooling down."""
        return with_placement(self, placement, cooling)


def with_placement(fleet: SimFleet, placement: Mapping[str, str], cooling: frozenset[str] = frozenset()) -> SimFleet:
    cpu = {d.name: d.cpu_capacity for d in fleet.devices}
    mem = {d.name: d.memory_capacity for d in fleet.devices}
    workloads = []
    for w in fleet.workloads:
        node = placement.get(w.key, w.node)
        cpu[node] -= w.cpu
        mem[node] -= w.memory
        if node != w.node or (w.key in cooling) != w.cooling_down:
            w = w.model_copy(update={"node": node, "cooling_down": w.key in cooling})
        workloads.append(w)
    devices = [d.model_copy(update={"cpu_free": cpu[d.name], "memory_free": mem[d.name]}) for d in fleet.devices]
    return SimFleet(devices=devices, workloads=workloads, edges=fleet.edges, requirements=fleet.requirements)


def _app_edges(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """Service-call shape of one app: chain, fan-out, or a tree in between, plus the odd shortcut."""
    shape = rng.choices(("chain", "fanout", "tree"), weights=(0.3, 0.3, 0.4))[0]
    edges = []
    for i in range(1, n):
        if shape == "chain":
            parent = i - 1
        elif shape == "fanout":
            parent = 0 if i < max(2, n - 2) else rng.randrange(1, i)  # backends, then their stores
        else:
            parent = rng.randrange(0, i)
        edges.append((parent, i))
    if n >= 4 and rng.random() < 0.3:
        a, b = sorted(rng.sample(range(n), 2))
        if (a, b) not in edges:
            edges.append((a, b))
    return edges


def generate_fleet(spec: FleetSpec) -> SimFleet:
    """A fleet of spec.devices devices with about workloads_per_device pods each, placed as a scheduler would."""
    rng = random.Random(spec.seed)
    names = [f"edge-{i:04d}" for i in range(spec.devices)]
    sizes = rng.choices(DEVICE_SIZES, weights=DEVICE_WEIGHTS, k=spec.devices)
    power = {n: ("Battery" if rng.random() < spec.battery_device_fraction else "Grid") for n in names}
    target_pods = int(round(spec.devices * spec.workloads_per_device))

    # apps and their pods (requests scaled afterwards to the target utilisation)
    pods: list[dict] = []
    edges: list[Edge] = []
    requirements: dict[str, dict[str, str]] = {}
    app = 0
    while len(pods) < target_pods:
        n = rng.choices((2, 3, 4, 5, 6, 7, 8), weights=(0.1, 0.2, 0.2, 0.2, 0.15, 0.1, 0.05))[0]
        ns = f"team-{app % 25:02d}"
        group = f"{ns}/app-{app:04d}"
        services = rng.sample(SERVICE_NAMES, n)
        wnames = [f"app{app:04d}-{s}" for s in services]
        if rng.random() < spec.grid_only_app_fraction:
            requirements[group] = {POWER: "Grid"}
        for wname in wnames:
            replicas = 2 if rng.random() < spec.replica_fraction else 1
            cpu = rng.choices(CPU_REQUESTS, weights=CPU_WEIGHTS)[0]
            memory = rng.choice((64, 128, 256, 512, 1024)) * MIB
            for r in range(replicas):
                pods.append({"key": f"{ns}/{wname}-{r}", "workload": wname, "group": group, "cpu": cpu,
                             "memory": memory, "movable": rng.random() >= spec.pinned_fraction})
        for a, b in _app_edges(rng, n):
            rate = spec.median_bytes_per_second * math.exp(rng.gauss(0.0, spec.sigma))
            if rng.random() < 0.3:  # a trigger dependency: requests, little payload
                edges.append(Edge(source=wnames[a], target=wnames[b], requests_per_second=rate / 2048.0,
                                  group=group))
            else:
                edges.append(Edge(source=wnames[a], target=wnames[b], bytes_per_second=rate,
                                  requests_per_second=rate / 20_000.0, group=group))
        app += 1
    pods = pods[:target_pods]

    total_cpu = sum(c for c, _ in sizes)
    requested = sum(p["cpu"] for p in pods) or 1.0
    scale = spec.cpu_utilisation * total_cpu / requested
    for p in pods:
        p["cpu"] = round(max(0.01, p["cpu"] * scale), 3)

    # default-scheduler-like placement on the devices that exist when the apps arrive
    n_new = int(spec.devices * spec.new_device_fraction)
    early = names[: spec.devices - n_new]
    cap = {n: s for n, s in zip(names, sizes, strict=True)}
    free_cpu = {n: cap[n][0] for n in names}
    free_mem = {n: cap[n][1] for n in names}
    on: dict[str, set[str]] = {n: set() for n in names}
    # kube-scheduler scores at least 100 feasible nodes, else an adaptive share (percentageOfNodesToScore)
    sample = max(100, int(len(early) * max(5.0, 50.0 - len(early) / 125) / 100))
    workloads: list[WorkloadState] = []
    for p in pods:
        need = requirements.get(p["group"], {})
        feasible = [n for n in early if free_cpu[n] >= p["cpu"] and free_mem[n] >= p["memory"]
                    and all(power[n] == v for v in need.values())]
        if not feasible:
            feasible = [n for n in names if free_cpu[n] >= p["cpu"] and free_mem[n] >= p["memory"]
                        and all(power[n] == v for v in need.values())]
        if not feasible:
            continue  # stays Pending: not part of the snapshot
        if len(feasible) > sample:
            feasible = rng.sample(feasible, sample)

        def score(n: str, p: dict = p) -> float:
            least = (free_cpu[n] / cap[n][0] + free_mem[n] / cap[n][1]) / 2
            spread = 0.5 if p["workload"] in on[n] else 0.0
            return least - spread + rng.random() * 0.02

        node = max(feasible, key=score)
        free_cpu[node] -= p["cpu"]
        free_mem[node] -= p["memory"]
        on[node].add(p["workload"])
        workloads.append(WorkloadState(key=p["key"], workload=p["workload"], group=p["group"], node=node,
                                       cpu=p["cpu"], memory=p["memory"], movable=p["movable"]))
    devices = [DeviceState(name=n, cpu_capacity=cap[n][0], memory_capacity=cap[n][1], cpu_free=free_cpu[n],
                           memory_free=free_mem[n], context={POWER: power[n]}) for n in names]
    return SimFleet(devices=devices, workloads=workloads, edges=edges, requirements=requirements)


def placement_violations(fleet: SimFleet, placement: Mapping[str, str]) -> list[str]:
    """What is wrong with moving the fleet's pods to `placement`: overcommitted requests, broken
    context requirements, pods moved that may not move. Empty when the placement is valid."""
    devices = {d.name: d for d in fleet.devices}
    cpu = {n: d.cpu_free for n, d in devices.items()}
    mem = {n: d.memory_free for n, d in devices.items()}
    out = []
    for w in fleet.workloads:  # free capacity with none of the fleet's pods placed
        cpu[w.node] += w.cpu
        mem[w.node] += w.memory
    for w in fleet.workloads:
        node = placement.get(w.key, w.node)
        cpu[node] -= w.cpu
        mem[node] -= w.memory
        if node == w.node:
            continue
        if not fleet.requirements_ok(w, devices[node]):
            out.append(f"{w.key} placed on {node} against its requirements")
        if not w.movable or w.cooling_down:
            out.append(f"{w.key} may not move but was moved to {node}")
        if not devices[node].schedulable:
            out.append(f"{w.key} placed on unschedulable {node}")
    out += [f"{n} overcommitted ({cpu[n]:.3f} CPU, {mem[n]:.0f} B memory free)"
            for n in devices if cpu[n] < -1e-6 or mem[n] < -1e-3]
    return out
