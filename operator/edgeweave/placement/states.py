"""Turn the inventory and a group's spec/status into the planners' inputs (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..api.base import parse_rfc3339
from .inventory import Device, PodInfo, requested_on
from .model import DeviceState, WorkloadState

# A declared dependency with no telemetry behind it counts as this much traffic per unit of weight,
# so declared pairs are aggregated even where Prometheus sees nothing.
DECLARED_BYTES_PER_WEIGHT = 1_000_000.0
MOVABLE_OWNERS = (None, "ReplicaSet", "StatefulSet")


def device_states(devices: Iterable[Device], pods_by_node: Mapping[str, Iterable[PodInfo]],
                  context: Mapping[str, dict[str, str]] | None = None) -> list[DeviceState]:
    out = []
    for d in devices:
        cpu, mem, ext = requested_on(pods_by_node.get(d.name, ()))
        blocked = any(effect in ("NoSchedule", "NoExecute") for _, _, effect in d.taints)
        out.append(DeviceState(
            name=d.name, site=d.site, cpu_capacity=d.cpu, memory_capacity=d.memory,
            cpu_free=d.cpu - cpu, memory_free=d.memory - mem,
            extended_free={k: v - ext.get(k, 0.0) for k, v in d.extended.items()},
            schedulable=d.ready and not d.unschedulable and not blocked,
            context=dict((context or {}).get(d.name, {})), labels=dict(d.labels),
        ))
    return sorted(out, key=lambda s: s.name)


def workload_states(members: Iterable[PodInfo], workload_label: str, group: str,
                    last_moved: Mapping[str, str], cooldown_seconds: float, now: float) -> list[WorkloadState]:
    out = []
    for p in members:
        if not p.node or not p.active:
            continue
        workload = p.labels.get(workload_label) or p.name
        moved = parse_rfc3339(last_moved.get(workload, ""))
        out.append(WorkloadState(
            key=p.key, workload=workload, group=group, node=p.node, cpu=p.cpu, memory=p.memory,
            extended=p.extended, movable=p.owner_kind in MOVABLE_OWNERS and p.ready,
            cooling_down=moved is not None and now - moved < cooldown_seconds,
            labels=p.labels, constraints=p.constraints,
        ))
    return sorted(out, key=lambda w: w.key)
