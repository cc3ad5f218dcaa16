from __future__ import annotations

from edgeweave.api.edgesite import EdgeSiteSpec
from edgeweave.placement.inventory import device_from_node, pod_info, pod_requests
from edgeweave.placement.sites import site_summary
from edgeweave.sim.fleet import FleetShape, node_manifest


def _pod(name: str, node: str, cpu: str, phase: str = "Running", init_cpu: str | None = None) -> dict:
    spec = {"nodeName": node, "containers": [{"name": "a", "resources": {"requests": {"cpu": cpu}}}]}
    if init_cpu:
        spec["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": init_cpu}}}]
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": spec, "status": {"phase": phase}}


def test_device_parsing_reads_allocatable_and_gpus() -> None:
    node = node_manifest(FleetShape(gpu_every=1, gpus_per_node=2), 0, 0)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    d = device_from_node(node)
    assert d.cpu == 4 and d.memory == 8 * 1024**3 and d.gpus == 2 and d.ready and d.site == "site-000"


def test_requests_take_the_larger_of_init_and_main() -> None:
    cpu, _, _ = pod_requests(_pod("p", "n", "250m", init_cpu="1")["spec"])
    assert cpu == 1.0
    cpu, _, _ = pod_requests(_pod("p", "n", "1500m", init_cpu="1")["spec"])
    assert cpu == 1.5


def test_site_summary_ignores_finished_pods_and_foreign_nodes() -> None:
    shape = FleetShape()
    devices = [device_from_node(node_manifest(shape, s, i)) for s in range(2) for i in range(2)]
    pods = {"edge-000-0": [pod_info(_pod("a", "edge-000-0", "2")), pod_info(_pod("b", "edge-000-0", "1",
                                                                                    phase="Succeeded"))],
            "edge-001-0": [pod_info(_pod("c", "edge-001-0", "3"))]}
    spec = EdgeSiteSpec.model_validate({"nodeSelector": {"edgeweave.io/site": "site-000"}})
    s = site_summary(spec, devices, pods)
    assert s["nodeCount"] == 2 and s["cpuRequested"] == 2.0 and s["cpuUtilisationPercent"] == 25
    assert s["pods"] == 1 and s["readyNodes"] == 0
    # kwok manifests carry no Ready condition: both devices are listed as needing attention, by name.
    assert [n["name"] for n in s["unhealthyNodes"]] == ["edge-000-0", "edge-000-1"]
    assert s["unhealthyNodes"][0]["pods"] == 1 and s["unhealthyNodes"][0]["cpuRequested"] == 2.0


def _ready_devices(sites: int, per_site: int) -> list:
    shape = FleetShape(nodes_per_site=per_site)
    out = []
    for s in range(sites):
        for i in range(per_site):
            node = node_manifest(shape, s, i)
            node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            out.append(device_from_node(node))
    return out


def test_site_summary_counts_healthy_devices_and_lists_only_unhealthy_ones() -> None:
    devices = _ready_devices(1, 10)
    spec = EdgeSiteSpec.model_validate({"nodeSelector": {"edgeweave.io/site": "site-000"}})
    s = site_summary(spec, devices, {})
    assert s["nodeCount"] == 10 and s["readyNodes"] == 10 and s["unhealthyNodes"] == [] and s["breachedNodes"] == 0
    s = site_summary(spec, devices, {}, {"edge-000-3": ["LatencyMs<=50", "LatencyMs<=50"], "edge-999-0": ["x"]})
    assert s["breachedNodes"] == 1
    assert s["unhealthyNodes"] == [{**s["unhealthyNodes"][0], "name": "edge-000-3", "ready": True,
                                    "breached": ["LatencyMs<=50"]}]


def test_site_summary_lists_a_bounded_number_of_devices() -> None:
    from edgeweave.api.edgesite import MAX_LISTED_NODES

    devices = _ready_devices(1, MAX_LISTED_NODES + 8)
    spec = EdgeSiteSpec.model_validate({"nodeSelector": {"edgeweave.io/site": "site-000"}})
    s = site_summary(spec, devices, {}, {d.name: ["LossPercent<=1"] for d in devices})
    assert len(s["unhealthyNodes"]) == MAX_LISTED_NODES and s["unlistedUnhealthyNodes"] == 8
    assert s["breachedNodes"] == MAX_LISTED_NODES + 8
