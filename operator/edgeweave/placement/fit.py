"""Capacity bookkeeping shared by every planner: does a set of workloads fit on a device?"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .model import DeviceState, WorkloadState

EPS = 1e-9


class CapacityLedger:
    """Free capacity per device, updated as a planner tentatively moves workloads.

    Requests, not observed use, decide fit: the scheduler admits by requests, so a plan that fits by
    use alone would leave replacement pods Pending.
    """

    def __init__(self, devices: Iterable[DeviceState]) -> None:
        self.devices = {d.name: d for d in devices}
        self.cpu = {d.name: d.cpu_free for d in self.devices.values()}
        self.mem = {d.name: d.memory_free for d in self.devices.values()}
        self.ext = {d.name: dict(d.extended_free) for d in self.devices.values()}

    def fits(self, node: str, workloads: Iterable[WorkloadState],
             where: Callable[[WorkloadState], str] | None = None) -> bool:
        """Whether the workloads not already on `node` fit its free capacity. `where` gives a workload's
        current device when a planner has moved it tentatively (default: where it runs now)."""
        dev = self.devices.get(node)
        if dev is None or not dev.schedulable:
            return False
        cpu = mem = 0.0
        ext: dict[str, float] = {}
        for w in workloads:
            if (where(w) if where else w.node) == node:
                continue
            cpu += w.cpu
            mem += w.memory
            for k, v in w.extended.items():
                ext[k] = ext.get(k, 0.0) + v
        if cpu > self.cpu[node] + EPS or mem > self.mem[node] + EPS:
            return False
        return all(v <= self.ext[node].get(k, 0.0) + EPS for k, v in ext.items())

    def move(self, w: WorkloadState, to: str, frm: str | None = None) -> None:
        """Book w's requests from `frm` (default: where it runs now) to `to`."""
        frm = w.node if frm is None else frm
        if frm == to:
            return
        for node, sign in ((frm, 1.0), (to, -1.0)):
            if node in self.cpu:
                self.cpu[node] += sign * w.cpu
                self.mem[node] += sign * w.memory
                for k, v in w.extended.items():
                    self.ext[node][k] = self.ext[node].get(k, 0.0) + sign * v
