"""EdgeSite status from the inventory (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..api.edgesite import EdgeSiteSpec, NodeState
from .inventory import Device, PodInfo, requested_on, selector_matches


def site_devices(spec: EdgeSiteSpec, devices: Iterable[Device]) -> list[Device]:
    names = set(spec.node_names)
    return sorted(
        (d for d in devices
         if d.name in names or (spec.node_selector and selector_matches(spec.node_selector, d.labels))),
        key=lambda d: d.name,
    )


def site_summary(spec: EdgeSiteSpec, devices: Iterable[Device],
                 pods_by_node: Mapping[str, Iterable[PodInfo]]) -> dict:
    """The status fields that describe the site's nodes, capacity and utilisation."""
    members = site_devices(spec, devices)
    states: list[NodeState] = []
    for d in members:
        pods = [p for p in pods_by_node.get(d.name, ()) if p.active]
        cpu, mem, _ = requested_on(pods)
        states.append(NodeState(name=d.name, ready=d.ready, cpu_capacity=d.cpu, memory_capacity_bytes=d.memory,
                                gpu_capacity=d.gpus, cpu_requested=round(cpu, 3),
                                memory_requested_bytes=mem, pods=len(pods)))
    cpu_cap = sum(s.cpu_capacity for s in states)
    cpu_req = sum(s.cpu_requested for s in states)
    return {
        "nodes": [s.wire() for s in states],
        "nodeCount": len(states),
        "readyNodes": sum(1 for s in states if s.ready),
        "cpuCapacity": cpu_cap,
        "cpuRequested": round(cpu_req, 3),
        "cpuUtilisationPercent": int(round(100 * cpu_req / cpu_cap)) if cpu_cap else 0,
        "gpuCapacity": sum(s.gpu_capacity for s in states),
    }
