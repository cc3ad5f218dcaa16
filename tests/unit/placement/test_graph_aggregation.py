from __future__ import annotations

import pytest

from edgeweave.api.workloadgroup import Dependency
from edgeweave.placement.graph import DependencyGraph, cross_device_traffic, edges_with_declared, human_rate
from edgeweave.placement.model import Edge, WorkloadState

G = "ns/shop"


def pod(name: str, node: str, workload: str | None = None, group: str = G) -> WorkloadState:
    return WorkloadState(key=f"ns/{name}", workload=workload or name, group=group, node=node, cpu=0.5)


def test_weight_combines_bytes_and_requests_and_both_directions() -> None:
    ws = [pod("api", "d1"), pod("db", "d2")]
    edges = [Edge(source="api", target="db", bytes_per_second=1000, requests_per_second=2),
             Edge(source="db", target="api", bytes_per_second=500)]
    g = DependencyGraph(ws, edges, bytes_per_request=100)
    assert g.weight((G, "api"), (G, "db")) == pytest.approx(1000 + 2 * 100 + 500)
    assert g.weight((G, "db"), (G, "api")) == g.weight((G, "api"), (G, "db"))
    assert g.cross_device_traffic() == pytest.approx(1700)
    assert g.cross_device_traffic({"ns/api": "d2", "ns/db": "d2"}) == 0.0


def test_cross_traffic_counts_only_pairs_on_different_devices() -> None:
    ws = [pod("a", "d1"), pod("b", "d1"), pod("c", "d2")]
    edges = [Edge(source="a", target="b", bytes_per_second=10), Edge(source="b", target="c", bytes_per_second=7),
             Edge(source="a", target="c", bytes_per_second=3)]
    assert cross_device_traffic(ws, edges) == pytest.approx(10)
    assert cross_device_traffic(ws, edges, placement={"ns/a": "d1", "ns/b": "d2", "ns/c": "d2"}) == pytest.approx(13)


def test_replicas_split_traffic_evenly_over_pod_pairs() -> None:
    ws = [pod("web-0", "d1", "web"), pod("web-1", "d2", "web"), pod("db", "d1")]
    g = DependencyGraph(ws, [Edge(source="web", target="db", bytes_per_second=100)])
    # half of web's traffic comes from the replica on d2
    assert g.cross_device_traffic() == pytest.approx(50)
    aff = g.pod_affinity("ns/db", g.counts())
    assert aff == {"d1": pytest.approx(50), "d2": pytest.approx(50)}
    assert g.pod_traffic("ns/db") == pytest.approx(100)
    assert g.pod_traffic("ns/web-0") == pytest.approx(50)


def test_components_are_connected_groups_of_two_or_more() -> None:
    ws = [pod(n, "d1") for n in ("a", "b", "c", "x", "y", "lonely")]
    edges = [Edge(source="a", target="b", bytes_per_second=1), Edge(source="c", target="b", bytes_per_second=1),
             Edge(source="x", target="y", requests_per_second=1), Edge(source="a", target="a", bytes_per_second=9),
             Edge(source="x", target="ghost", bytes_per_second=5), Edge(source="lonely", target="y")]
    g = DependencyGraph(ws, edges)
    assert g.components() == [((G, "a"), (G, "b"), (G, "c")), ((G, "x"), (G, "y"))]


def test_edges_never_join_workloads_of_different_groups() -> None:
    ws = [pod("api", "d1", group="ns/one"), pod("db", "d2", group="ns/one"),
          WorkloadState(key="other/api", workload="api", group="ns/two", node="d1"),
          WorkloadState(key="other/db", workload="db", group="ns/two", node="d2")]
    g = DependencyGraph(ws, [Edge(source="api", target="db", bytes_per_second=10, group="ns/one")])
    assert g.components() == [(("ns/one", "api"), ("ns/one", "db"))]
    # an edge without a group applies inside each group that has both names, never across
    g2 = DependencyGraph(ws, [Edge(source="api", target="db", bytes_per_second=10)])
    assert g2.components() == [(("ns/one", "api"), ("ns/one", "db")), (("ns/two", "api"), ("ns/two", "db"))]
    assert g2.cross_device_traffic() == pytest.approx(20)


def test_declared_dependencies_fill_in_only_where_telemetry_is_silent() -> None:
    observed = [Edge(source="db", target="api", bytes_per_second=5000)]
    deps = [Dependency(source="api", target="db", weight=3), Dependency(source="api", target="cache", weight=2)]
    merged = edges_with_declared(observed, deps, group=G, declared_bytes_per_second=100)
    assert len(merged) == 2
    declared = merged[1]
    assert (declared.source, declared.target, declared.declared, declared.group) == ("api", "cache", True, G)
    assert declared.weight(2048) == pytest.approx(200)


def test_human_rate() -> None:
    assert human_rate(1_234_567) == "1.2 MB/s"
    assert human_rate(999) == "999 B/s"
    assert human_rate(45_600) == "45.6 kB/s"
