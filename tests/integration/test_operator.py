"""The operator against the real control plane: status from the API server, conditions, Events,
probes and metrics, peering."""

from __future__ import annotations

import time
import urllib.request

import pytest

from .conftest import Cluster, OperatorProcess, start_operator, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION = "edgeweave.io", "v1alpha1"


def _pod(name: str, node: str, cpu: str, labels: dict[str, str], resources: dict | None = None) -> dict:
    requests = {"cpu": cpu, "memory": "64Mi", **(resources or {})}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [
            {"name": "app", "image": "registry.invalid/app:1", "resources": {"requests": requests}}]},
    }


def _status(cluster: Cluster, plural: str, name: str, namespace: str | None = None) -> dict:
    if namespace:
        obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    else:
        obj = cluster.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
    return obj.get("status") or {}


def _condition(status: dict, ctype: str) -> dict | None:
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), None)


def test_edgesite_status_shows_nodes_capacity_and_utilisation(cluster: Cluster, operator: OperatorProcess,
                                                              namespace: str) -> None:
    # site-001's nodes are edge-001-0/1, 4 CPUs each. Put 3 CPUs of requests on edge-001-0.
    for i, cpu in enumerate(["1", "2"]):
        cluster.core.create_namespaced_pod(namespace, _pod(f"load-{i}", "edge-001-0", cpu, {"app": "load"}))

    def site_reports_load() -> dict | None:
        st = _status(cluster, "edgesites", "site-001")
        return st if st.get("cpuRequested") == 3.0 else None

    st = wait_for(site_reports_load, 60, "site-001 status to show 3 CPUs requested")
    assert st["nodeCount"] == 2 and st["readyNodes"] == 2
    assert st["cpuCapacity"] == 8.0
    assert st["cpuUtilisationPercent"] == round(100 * 3 / 8)
    assert st["pods"] >= 2
    # Healthy devices are counted, not listed: a site's status stays small at any number of devices.
    assert st.get("unhealthyNodes", []) == [] and "nodes" not in st
    ready = _condition(st, "Ready")
    assert ready and ready["status"] == "True" and ready["reason"] == "NodesReady"
    assert ready["observedGeneration"] >= 1
    # The GPU site advertises its GPUs.
    assert _status(cluster, "edgesites", "site-002")["gpuCapacity"] == 2
    out = cluster.kubectl("get", "edgesites", "site-001", "--no-headers").stdout.split()
    assert out[1:5] == ["2", "2", "38", "0"]


def test_edgesite_without_nodes_is_not_ready(cluster: Cluster, operator: OperatorProcess) -> None:
    name = "empty-site"
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "edgesites", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeSite", "metadata": {"name": name},
        "spec": {"nodeSelector": {"edgeweave.io/site": "nowhere"}}})
    try:
        cond = wait_for(lambda: _condition(_status(cluster, "edgesites", name), "Ready"), 30, "Ready condition")
        assert cond["status"] == "False" and cond["reason"] == "NoNodes"
    finally:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "edgesites", name)


def test_workloadgroup_counts_members_and_devices(cluster: Cluster, operator: OperatorProcess,
                                                  namespace: str) -> None:
    labels = {"edgeweave.io/group": "shop"}
    cluster.core.create_namespaced_pod(namespace, _pod("api", "edge-000-0", "100m", {**labels, "app": "api"}))
    cluster.core.create_namespaced_pod(namespace, _pod("db", "edge-000-1", "100m", {**labels, "app": "db"}))
    cluster.core.create_namespaced_pod(namespace, _pod("other", "edge-000-1", "100m", {"app": "other"}))
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "shop"},
        "spec": {"selector": labels, "mode": "DryRun"}})
    st = wait_for(lambda: (s := _status(cluster, "workloadgroups", "shop", namespace)).get("members") == 2 and s,
                  60, "WorkloadGroup members=2")
    assert st["devices"] == 2
    ready = _condition(st, "Ready")
    assert ready and ready["status"] == "True" and "mode DryRun" in ready["message"]


def _events_for(cluster: Cluster, namespace: str, name: str) -> list:
    return [e for e in cluster.core.list_namespaced_event(namespace).items if e.involved_object.name == name]


def test_gpujob_with_no_such_resource_is_unschedulable(cluster: Cluster, operator: OperatorProcess,
                                                       namespace: str) -> None:
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "gpujobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": "mig"},
        "spec": {"kernel": {"builtin": "saxpy"}, "grid": [1024], "block": [256],
                 "vgpu": {"resource": "nvidia.com/mig-1g.10gb", "count": 1}}})
    st = wait_for(lambda: (s := _status(cluster, "gpujobs", "mig", namespace)).get("phase") == "Unschedulable"
                  and s, 60, "phase Unschedulable")
    cond = _condition(st, "Schedulable")
    assert cond and cond["status"] == "False" and "nvidia.com/mig-1g.10gb" in cond["message"]
    events = wait_for(lambda: [e for e in _events_for(cluster, namespace, "mig") if e.reason == "Unschedulable"],
                      30, "Unschedulable Warning Event")
    assert events[0].type == "Warning"


def test_gpujob_with_gpu_nodes_is_schedulable(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "gpujobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": "ok"},
        "spec": {"kernel": {"builtin": "saxpy"}, "grid": [1024], "block": [256]}})
    cond = wait_for(lambda: _condition(_status(cluster, "gpujobs", "ok", namespace), "Schedulable"), 60,
                    "Schedulable condition")
    assert cond["status"] == "True" and "2 node(s)" in cond["message"]


def test_probes_and_metrics(operator: OperatorProcess) -> None:
    base = f"http://127.0.0.1:{operator.probe_port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
        assert r.status == 200

    def scrape() -> str | None:
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        return text if 'edgeweave_site_nodes{site="site-000"} 2.0' in text else None

    text = wait_for(scrape, 30, "site metrics")
    assert "edgeweave_reconciles_total" in text


def test_start_log_says_what_it_watches(operator: OperatorProcess) -> None:
    log = operator.log()
    assert "watching edgesites.edgeweave.io (cluster-scoped)" in log
    assert "steering webhook=https://127.0.0.1:" in log


def _acted(log: str) -> int:
    """Handler runs a replica logged (kopf logs every handler and timer it executes)."""
    return sum(1 for line in log.splitlines()
               if "kopf.objects" in line and ("Timer '" in line or "Handler '" in line or "is processed" in line))


def test_two_replicas_never_act_at_once(cluster: Cluster, tmp_path) -> None:
    """A lower-priority replica stays paused while a higher one lives, and takes over when it goes."""
    peering = "edgeweave-peering-test"
    scope = ("--verbose",)  # routine handler successes are DEBUG lines; this test counts them
    high = start_operator(cluster, tmp_path, "--priority", "200", *scope, peering=peering, name="high")
    low = None
    try:
        wait_for(lambda: _acted(high.log()) > 0, 60, "the high-priority replica to act")
        low = start_operator(cluster, tmp_path, "--priority", "100", *scope, peering=peering, name="low")
        peers = wait_for(lambda: len((p := cluster.custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", peering)).get("status") or {}) == 2 and p, 30, "two peers")
        assert sorted(p["priority"] for p in peers["status"].values()) == [100, 200]
        # Timers fire every 10 s for each EdgeSite: 15 s is ample time to act, had it not been paused.
        high_before = _acted(high.log())
        time.sleep(15)
        assert _acted(low.log()) == 0, "the paused replica ran handlers:\n" + low.log()[-3000:]
        assert _acted(high.log()) > high_before
        high.stop()
        wait_for(lambda: "Resuming operations after the pause" in low.log(), 60, "the low replica to resume")
        wait_for(lambda: _acted(low.log()) > 0, 60, "the low replica to act after taking over")
    finally:
        if low:
            low.stop()
        high.stop()
