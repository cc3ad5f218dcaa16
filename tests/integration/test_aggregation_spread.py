"""Availability kept while aggregating, on the real cluster: replicated services pair up replica by
replica, and a user's required anti-affinity is never overridden."""

from __future__ import annotations

import time

import pytest

from .conftest import Cluster, OperatorProcess, PromStack, wait_for

pytestmark = pytest.mark.integration
GROUP, VERSION = "edgeweave.io", "v1alpha1"
LABEL = "edgeweave.io/group"
HOST = "kubernetes.io/hostname"


def deployment(name: str, group: str, replicas: int, *, prefer_apart_from: tuple[str, ...] = (),
               require_apart_from: str | None = None) -> dict:
    labels = {"app": name, LABEL: group}
    spec: dict = {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                  "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}
    anti: dict = {}
    if prefer_apart_from:
        anti["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": 100, "podAffinityTerm": {"topologyKey": HOST,
                                                 "labelSelector": {"matchLabels": {"app": a}}}}
            for a in prefer_apart_from]
    if require_apart_from:
        anti["requiredDuringSchedulingIgnoredDuringExecution"] = [
            {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": require_apart_from}}}]
    if anti:
        spec["affinity"] = {"podAntiAffinity": anti}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def group(name: str, **aggregation: object) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": name},
            "spec": {"selector": {LABEL: name}, "mode": "Enforce",
                     "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
                     "aggregation": {"gainThreshold": 0.2, "cooldownSeconds": 600, **aggregation}}}


def placement(cluster: Cluster, ns: str, *apps: str) -> dict[str, list[str]] | None:
    """app -> nodes of its Running, not-terminating pods (None while any app has pods in flight)."""
    out: dict[str, list[str]] = {}
    for app in apps:
        pods = cluster.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
        live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if len(live) != len(pods) or not live:
            return None
        out[app] = sorted(p.spec.node_name for p in live)
    return out


def traffic(prom: PromStack, ns: str, rate: float, src: str, dst: str) -> None:
    prom.series.set_rate("edgeweave_flow_bytes_total",
                         {"namespace": ns, "source_workload": src, "destination_workload": dst}, rate)


def wg_status(cluster: Cluster, ns: str, name: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", name).get("status") or {}


def two_pairs(p: dict[str, list[str]] | None) -> bool:
    return bool(p) and len(p["api"]) == 2 and len(set(p["api"])) == 2 and p["api"] == p["cache"]


def test_replicated_api_and_cache_end_as_two_co_located_pairs(cluster: Cluster, operator: OperatorProcess,
                                                              prometheus: PromStack, namespace: str) -> None:
    from kubernetes import client

    appsv1 = client.AppsV1Api(cluster.api)
    # the user's preferred anti-affinity scatters all four pods at first; edgeweave treats those as
    # scheduling hints it may override (spread.respectPreferred defaults to false), while the group's
    # spread policy (default: one replica of a workload per device) keeps each service's replicas apart
    appsv1.create_namespaced_deployment(namespace, deployment("api", "pairs", 2, prefer_apart_from=("api",)))
    wait_for(lambda: (p := placement(cluster, namespace, "api")) and len(p["api"]) == 2, 60, "api Running")
    appsv1.create_namespaced_deployment(namespace, deployment("cache", "pairs", 2,
                                                              prefer_apart_from=("api", "cache")))
    before = wait_for(lambda: (p := placement(cluster, namespace, "api", "cache")) and len(p["cache"]) == 2 and p,
                      60, "api and cache Running")
    assert not two_pairs(before), f"the scheduler already paired them; the test needs them split: {before}"
    traffic(prometheus, namespace, 5e6, "api", "cache")
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups",
                                                   group("pairs"))
    after = wait_for(lambda: (p := placement(cluster, namespace, "api", "cache")) and two_pairs(p) and p, 180,
                     "two devices, each with one api and one cache replica")
    # never two replicas of one service on a device, at any point we can see, and it stays so
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        p = placement(cluster, namespace, "api", "cache")
        if p:
            assert len(set(p["api"])) == len(p["api"]) and len(set(p["cache"])) == len(p["cache"]), p
        time.sleep(0.5)
    assert placement(cluster, namespace, "api", "cache") == after


def test_required_anti_affinity_is_never_overridden(cluster: Cluster, operator: OperatorProcess,
                                                    prometheus: PromStack, namespace: str) -> None:
    from kubernetes import client

    appsv1 = client.AppsV1Api(cluster.api)
    appsv1.create_namespaced_deployment(namespace, deployment("api", "apart", 1))
    wait_for(lambda: placement(cluster, namespace, "api"), 60, "api Running")
    appsv1.create_namespaced_deployment(namespace, deployment("cache", "apart", 1, require_apart_from="api"))
    before = wait_for(lambda: placement(cluster, namespace, "api", "cache"), 60, "api and cache Running")
    assert before["api"] != before["cache"]
    uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items}
    traffic(prometheus, namespace, 5e7, "api", "cache")  # heavy: the most any aggregation could want
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", group("apart"))
    # the operator plans (it sees the traffic) and says why the pair stays apart
    plan = wait_for(lambda: (pl := wg_status(cluster, namespace, "apart").get("plan") or {}).get(
        "crossDeviceTrafficBefore", 0) > 0 and pl, 90, "a recorded plan that saw the traffic")
    assert not plan.get("moves"), plan
    skipped = " ".join(s.get("reason", "") for s in plan.get("skipped", []))
    assert "anti-affinity" in skipped, plan
    time.sleep(10)  # three more resyncs: still nothing evicted
    assert {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items} == uids
    assert placement(cluster, namespace, "api", "cache") == before
