"""Baselines the aggregation planner is measured against, on the same input. Each returns a placement
(pod key -> node); compare them with DependencyGraph.cross_device_traffic.

- no_action: leave everything where it is.
- low_node_utilisation: descheduler's LowNodeUtilization plugin followed by kube-scheduler's default
  LeastAllocated scoring for the evicted pods: utilisation-only, blind to dependencies.
- random_feasible: every movable pod on a random device that has room and meets its requirements.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from .fit import EPS
from .model import DeviceState, WorkloadState

RequirementsOk = Callable[[WorkloadState, DeviceState], bool]


def no_action(workloads: Iterable[WorkloadState]) -> dict[str, str]:
    return {w.key: w.node for w in workloads}


class _Free:
    def __init__(self, devices: Iterable[DeviceState]) -> None:
        self.devices = {d.name: d for d in sorted(devices, key=lambda d: d.name)}
        self.cpu = {d.name: d.cpu_free for d in self.devices.values()}
        self.mem = {d.name: d.memory_free for d in self.devices.values()}
        self.ext = {d.name: dict(d.extended_free) for d in self.devices.values()}

    def fits(self, w: WorkloadState, node: str) -> bool:
        d = self.devices[node]
        return (d.schedulable and w.cpu <= self.cpu[node] + EPS and w.memory <= self.mem[node] + EPS
                and all(v <= self.ext[node].get(k, 0.0) + EPS for k, v in w.extended.items()))

    def add(self, w: WorkloadState, node: str, sign: float) -> None:
        if node not in self.cpu:
            return
        self.cpu[node] -= sign * w.cpu
        self.mem[node] -= sign * w.memory
        for k, v in w.extended.items():
            self.ext[node][k] = self.ext[node].get(k, 0.0) - sign * v

    def usage(self, node: str) -> tuple[float, float]:
        d = self.devices[node]
        cpu = 1.0 - self.cpu[node] / d.cpu_capacity if d.cpu_capacity else 1.0
        mem = 1.0 - self.mem[node] / d.memory_capacity if d.memory_capacity else 1.0
        return cpu, mem


def low_node_utilisation(devices: Iterable[DeviceState], workloads: Iterable[WorkloadState], *,
                         thresholds: float = 0.2, target_thresholds: float = 0.5,
                         requirements_ok: RequirementsOk | None = None) -> dict[str, str]:
    """descheduler LowNodeUtilization (thresholds 20%, targetThresholds 50% of CPU and memory requests).

    Nodes under `thresholds` on every resource are underutilised, nodes over `target_thresholds` on any
    are overutilised. Evictable pods leave overutilised nodes (fullest node first) while the node is
    still over target and the underutilised nodes still have room below target; kube-scheduler then
    places each on the feasible node with the most free share (LeastAllocated). Pods that may not
    move (local storage: the descheduler's default is not to evict them) stay.
    """
    free = _Free(devices)
    workloads = sorted(workloads, key=lambda w: w.key)
    placement = {w.key: w.node for w in workloads}
    names = [n for n in free.devices if free.devices[n].schedulable]
    under = [n for n in names if all(u < thresholds for u in free.usage(n))]
    over = [n for n in names if any(u > target_thresholds for u in free.usage(n))]
    if not under or not over:
        return placement

    def headroom() -> tuple[float, float]:
        cpu = sum(max(0.0, target_thresholds * free.devices[n].cpu_capacity - (free.devices[n].cpu_capacity
                                                                             - free.cpu[n])) for n in under)
        mem = sum(max(0.0, target_thresholds * free.devices[n].memory_capacity
                      - (free.devices[n].memory_capacity - free.mem[n])) for n in under)
        return cpu, mem

    by_node: dict[str, list[WorkloadState]] = {}
    for w in workloads:
        by_node.setdefault(w.node, []).append(w)
    over.sort(key=lambda n: (-sum(free.usage(n)), n))
    for node in over:
        for w in by_node.get(node, []):
            if not any(u > target_thresholds for u in free.usage(node)):
                break
            cpu_room, mem_room = headroom()
            if cpu_room <= EPS or mem_room <= EPS:
                return placement
            if not w.movable:
                continue
            # evicted; the scheduler picks the least allocated feasible node (possibly the same one)
            free.add(w, node, -1.0)
            candidates = [n for n in names if free.fits(w, n) and (
                requirements_ok is None or requirements_ok(w, free.devices[n]))]
            if not candidates:
                free.add(w, node, 1.0)
                continue
            target = max(candidates, key=lambda n: (-sum(free.usage(n)), n))
            free.add(w, target, 1.0)
            placement[w.key] = target
    return placement


def random_feasible(devices: Iterable[DeviceState], workloads: Iterable[WorkloadState], *, seed: int = 0,
                    requirements_ok: RequirementsOk | None = None) -> dict[str, str]:
    """Every movable, not cooling-down pod on a uniformly random device with room that meets its requirements."""
    rng = random.Random(seed)
    free = _Free(devices)
    workloads = sorted(workloads, key=lambda w: w.key)
    placement = {w.key: w.node for w in workloads}
    movable = [w for w in workloads if w.movable and not w.cooling_down and w.node in free.devices]
    for w in movable:
        free.add(w, w.node, -1.0)
    rng.shuffle(movable)
    names = list(free.devices)

    def ok(w: WorkloadState, n: str) -> bool:
        return free.fits(w, n) and (requirements_ok is None or requirements_ok(w, free.devices[n]))

    for w in movable:
        # rejection sampling is uniform over the feasible devices and avoids scanning the fleet per pod
        target = None
        for _ in range(64):
            n = rng.choice(names)
            if ok(w, n):
                target = n
                break
        if target is None:
            feasible = [n for n in names if ok(w, n)]
            target = rng.choice(feasible) if feasible else w.node
        free.add(w, target, 1.0)
        placement[w.key] = target
    return placement
