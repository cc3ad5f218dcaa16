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
    fleet_group(namespace, cluster, dependencies=[{"source": "api", "target": "cache"}],
                limits={"maxMovesPerInterval": 50, "maxInFlight": 20})
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


# -- the pod's own node rules ------------------------------------------------------------------------
POOL = "ewt-rem-pool"


@pytest.fixture
def pool_labels(cluster: Cluster) -> Iterator[dict[str, str]]:
    """Two devices labelled pool=a, one pool=b; the labels are removed after."""
    pools = {NODES[0]: "a", NODES[1]: "a", NODES[2]: "b"}
    for n, v in pools.items():
        cluster.core.patch_node(n, {"metadata": {"labels": {POOL: v}}})
    try:
        yield pools
    finally:
        for n in pools:
            cluster.core.patch_node(n, {"metadata": {"labels": {POOL: None}}})


def affine(name: str, values: list[str]) -> dict:
    """One replica that requires pool In values (required node affinity, as a user writes it)."""
    d = deployment(name, "fleet", cpu="100m")
    d["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": POOL, "operator": "In", "values": values}]}]}}}
    return d


def fleet_group(namespace: str, cluster: Cluster, **extra: object) -> None:
    """The group "fleet" (battery >= 40, grace 0; `extra` adds spec fields), once it judges its context."""
    spec = {"selector": {"edgeweave.io/group": "fleet"}, "mode": "Enforce", "aggregation": {"enabled": False},
            "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
            "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": "40",
                              "gracePeriodSeconds": 0, "hysteresis": 10}], **extra}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "fleet"}, "spec": spec})
    wait_for(lambda: condition(wg_status(cluster, namespace, "fleet"), "ContextSatisfied").get("reason")
             == "Satisfied", 60, "ContextSatisfied=True")


def running(cluster: Cluster, ns: str, app: str) -> list:
    return [p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


@pytest.mark.usefixtures("clean_batteries")
def test_required_node_affinity_excludes_the_best_scored_device(
        cluster: Cluster, operator: OperatorProcess, prometheus: PromStack, namespace: str,
        pool_labels: dict[str, str]) -> None:
    """pos may run only in pool a. Its device breaches; the other pool-a device is a poor target (battery 60,
    just past the recovery bound of 50) while every other device is at 100. The move goes to the pool-a device:
    a steered replacement elsewhere would stay Pending and the move roll back."""
    all_batteries(prometheus, 100)
    client.AppsV1Api(cluster.api).create_namespaced_deployment(namespace, affine("pos", ["a"]))
    (pod,) = wait_for(lambda: (r := running(cluster, namespace, "pos")) and r, 60, "pos Running in pool a")
    src = pod.spec.node_name
    (allowed,) = [n for n, v in pool_labels.items() if v == "a" and n != src]
    fleet_group(namespace, cluster)
    battery(prometheus, allowed, 60)
    battery(prometheus, src, 10)
    try:
        moved = wait_for(lambda: (r := running(cluster, namespace, "pos")) and r[0].metadata.uid != pod.metadata.uid
                         and r[0], 90, "pos Running again after the move")
    except AssertionError:
        raise AssertionError(f"status={wg_status(cluster, namespace, 'fleet')}") from None
    assert moved.spec.node_name == allowed, (moved.spec.node_name, wg_status(cluster, namespace, "fleet")["plan"])
    (move,) = wait_for(lambda: (m := wg_status(cluster, namespace, "fleet")["plan"]["moves"]) and m[0]["phase"]
                       in ("Done", "Failed", "RolledBack") and m, 60, "the move to finish")
    assert move["fromNode"] == src and move["toNode"] == allowed and move["phase"] == "Done", move


@pytest.mark.usefixtures("clean_batteries")
def test_no_device_the_affinity_allows_means_a_condition_an_event_and_no_eviction(
        cluster: Cluster, operator: OperatorProcess, prometheus: PromStack, namespace: str,
        pool_labels: dict[str, str]) -> None:
    """pos may run only in pool b, which has one device: it breaches, and every device that meets the
    requirement is outside pool b. The group says so (condition + Warning Event naming the affinity) and
    evicts nothing."""
    all_batteries(prometheus, 100)
    client.AppsV1Api(cluster.api).create_namespaced_deployment(namespace, affine("pos", ["b"]))
    (pod,) = wait_for(lambda: (r := running(cluster, namespace, "pos")) and r, 60, "pos Running in pool b")
    fleet_group(namespace, cluster)
    battery(prometheus, pod.spec.node_name, 10)
    cond = wait_for(lambda: (c := condition(wg_status(cluster, namespace, "fleet"), "Remediating")).get(
        "reason") == "NoValidTarget" and c, 60, "Remediating=False NoValidTarget")
    assert cond["status"] == "False" and f"its required node affinity needs ({POOL} In b)" in cond["message"], cond
    events = wait_for(lambda: [e for e in cluster.core.list_namespaced_event(namespace).items
                               if e.reason == "NoValidTarget"], 30, "a NoValidTarget Warning Event")
    assert events[0].type == "Warning" and "required node affinity" in events[0].message, events[0].message
    # The breach is real and recorded; the group just has nowhere to put pos.
    state = wg_status(cluster, namespace, "fleet")["breachState"]
    assert [r["phase"] for r in state] == ["Breached"], state
    assert [p.metadata.uid for p in running(cluster, namespace, "pos")] == [pod.metadata.uid]
    assert not wg_status(cluster, namespace, "fleet").get("plan"), "no plan, so no eviction"
