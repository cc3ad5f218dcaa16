"""Remediation targets on the real cluster: 20 workloads leave a breached device for several good ones,
not the first device with room, and a dependent pair (a declared dependency) stays together."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from kubernetes import client

from .conftest import Cluster, OperatorProcess, PromStack, wait_for
from .test_aggregation import GROUP, VERSION, condition, deployment, wg_status
from .test_remediation import NODES, all_batteries, battery
from .test_remediation import clean_batteries as clean_batteries  # noqa: F401 - the fixture, by name

pytestmark = pytest.mark.integration
APPS = [f"w{i:02d}" for i in range(18)] + ["api", "cache"]


@pytest.fixture
def cordoned(cluster: Cluster) -> Iterator[list[str]]:
    """Every device but the first cordoned, so that all 20 workloads start on it; uncordoned after."""
    others = NODES[1:]
    try:
        yield others
    finally:
        for n in others:
            cluster.core.patch_node(n, {"spec": {"unschedulable": None}})


def placed(cluster: Cluster, ns: str) -> dict[str, str]:
    out = {}
    for p in cluster.core.list_namespaced_pod(ns).items:
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp and p.spec.node_name:
            out[p.metadata.labels["app"]] = p.spec.node_name
    return out


@pytest.mark.usefixtures("clean_batteries")
def test_twenty_workloads_spread_over_good_devices_and_a_pair_stays_together(
        cluster: Cluster, operator: OperatorProcess, prometheus: PromStack, namespace: str,
        cordoned: list[str]) -> None:
    bad = NODES[0]
    all_batteries(prometheus, 100)
    for n in cordoned:
        cluster.core.patch_node(n, {"spec": {"unschedulable": True}})
    apps = client.AppsV1Api(cluster.api)
    for a in APPS:
        apps.create_namespaced_deployment(namespace, deployment(a, "fleet", cpu="100m"))
    wait_for(lambda: (p := placed(cluster, namespace)) and len(p) == 20 and set(p.values()) == {bad}, 90,
             "20 workloads Running on one device")
    for n in cordoned:
        cluster.core.patch_node(n, {"spec": {"unschedulable": None}})
    spec = {"selector": {"edgeweave.io/group": "fleet"}, "mode": "Enforce", "aggregation": {"enabled": False},
            "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
            "dependencies": [{"source": "api", "target": "cache"}],
            "limits": {"maxMovesPerInterval": 50, "maxInFlight": 20},
            "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": "40",
                              "gracePeriodSeconds": 0, "hysteresis": 10}]}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "fleet"}, "spec": spec})
    wait_for(lambda: condition(wg_status(cluster, namespace, "fleet"), "ContextSatisfied").get("reason")
             == "Satisfied", 60, "ContextSatisfied=True")
    battery(prometheus, bad, 10)
    try:
        final = wait_for(lambda: (p := placed(cluster, namespace)) and len(p) == 20 and bad not in p.values() and p,
                         180, "every workload Running off the breached device")
    except AssertionError:
        raise AssertionError(f"placed={placed(cluster, namespace)} status={wg_status(cluster, namespace, 'fleet')}"
                             ) from None
    per = Counter(final.values())
    # Spread: no device takes more than a third (name order put them all on the first device with room).
    assert len(per) >= 4 and max(per.values()) <= 7, per
    assert final["api"] == final["cache"], final
    plan = wg_status(cluster, namespace, "fleet")["plan"]
    assert plan["kind"] == "Remediation"
    moves = {m["pod"].split("/")[1].rsplit("-", 2)[0]: m for m in plan["moves"]}
    assert "co-dependent" in moves["api"]["reason"] and "co-dependent" in moves["cache"]["reason"], moves["api"]
