"""Aggregation on the real cluster: telemetry from a real Prometheus, moves through the Eviction API and
the steering webhook, status as the record of every step."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from .conftest import Cluster, OperatorProcess, PromStack, fresh_namespace, start_operator, wait_for

pytestmark = pytest.mark.integration
GROUP, VERSION = "edgeweave.io", "v1alpha1"
LABEL = "edgeweave.io/group"


def deployment(name: str, group: str, cpu: str = "250m", avoid: str | None = None) -> dict:
    """A Deployment as a user keeps it in Git. A soft anti-affinity makes the scheduler place the pair
    on different devices at first — the split the operator is there to repair."""
    labels = {"app": name, LABEL: group}
    spec: dict = {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                  "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    if avoid:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                 "labelSelector": {"matchLabels": {"app": avoid}}}}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def group(name: str, mode: str = "Enforce", **spec: object) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": name},
            "spec": {"selector": {LABEL: name}, "mode": mode, "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
                     "aggregation": {"gainThreshold": 0.2, "cooldownSeconds": 600}, **spec}}


def running_pods(cluster: Cluster, ns: str, app: str) -> list:
    return [p for p in cluster.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def nodes_of(cluster: Cluster, ns: str, *apps: str) -> dict[str, str]:
    out = {}
    for app in apps:
        pods = running_pods(cluster, ns, app)
        if len(pods) != 1:
            return {}
        out[app] = pods[0].spec.node_name
    return out


def split_pair(cluster: Cluster, ns: str, grp: str, cpu: str = "250m") -> dict[str, str]:
    apps = cluster.api
    from kubernetes import client

    appsv1 = client.AppsV1Api(apps)
    appsv1.create_namespaced_deployment(ns, deployment("api", grp, cpu))
    wait_for(lambda: nodes_of(cluster, ns, "api"), 60, "api Running")
    appsv1.create_namespaced_deployment(ns, deployment("cache", grp, cpu, avoid="api"))
    placed = wait_for(lambda: nodes_of(cluster, ns, "api", "cache"), 60, "api and cache Running")
    assert placed["api"] != placed["cache"], "the scheduler put the pair together; the test needs it split"
    return placed


def traffic(prom: PromStack, ns: str, rate: float, src: str = "api", dst: str = "cache") -> None:
    prom.series.set_rate("edgeweave_flow_bytes_total",
                         {"namespace": ns, "source_workload": src, "destination_workload": dst}, rate)


def wg_status(cluster: Cluster, ns: str, name: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", name).get("status") or {}


def condition(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), {})


def test_split_pair_is_aggregated_without_touching_the_deployments(cluster: Cluster, operator: OperatorProcess,
                                                                   prometheus: PromStack, namespace: str) -> None:
    from kubernetes import client

    before = split_pair(cluster, namespace, "shop")
    deploy_before = {d.metadata.name: (d.metadata.generation, d.spec.template.to_dict())
                     for d in client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items}
    traffic(prometheus, namespace, 5e6)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", group("shop"))

    together = wait_for(lambda: (n := nodes_of(cluster, namespace, "api", "cache")) and n["api"] == n["cache"] and n,
                        120, "api and cache Running on one device")
    assert together["api"] in before.values()
    st = wait_for(lambda: (s := wg_status(cluster, namespace, "shop")).get("movesTotal") == 1 and s, 30,
                  "status to record the finished move")
    plan = st["plan"]
    assert plan["kind"] == "Aggregation" and plan["mode"] == "Enforce"
    # rate() over a young series reads low; what matters is that the plan saw the traffic and removes it.
    assert plan["crossDeviceTrafficBefore"] > 1e4 and plan["crossDeviceTrafficAfter"] == 0
    (move,) = plan["moves"]
    assert move["phase"] == "Done" and move["toNode"] == together["api"]
    assert "cache" in move["reason"] or "api" in move["reason"]
    # GitOps-safe: the Deployments are exactly as the user wrote them.
    after = {d.metadata.name: (d.metadata.generation, d.spec.template.to_dict())
             for d in client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items}
    assert after == deploy_before
    reasons = {e.reason for e in cluster.core.list_namespaced_event(namespace).items}
    assert {"EdgeweaveMove", "PlanCreated", "MoveDone"} <= reasons
    # Stable: another rounds later, nothing moves again.
    time.sleep(12)
    assert wg_status(cluster, namespace, "shop")["movesTotal"] == 1
    assert nodes_of(cluster, namespace, "api", "cache") == together


def test_pair_that_fits_nowhere_is_left_alone_with_a_condition(cluster: Cluster, operator: OperatorProcess,
                                                                prometheus: PromStack, namespace: str) -> None:
    before = split_pair(cluster, namespace, "big", cpu="3")  # nodes have 4 CPUs: 6 never fit on one
    uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items}
    traffic(prometheus, namespace, 5e6)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", group("big"))
    cond = wait_for(lambda: (c := condition(wg_status(cluster, namespace, "big"), "Aggregated")).get(
        "reason") == "CannotPlace" and c, 60, "Aggregated=False CannotPlace")
    assert cond["status"] == "False" and "CPU" in cond["message"]
    time.sleep(6)
    assert {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items} == uids
    assert nodes_of(cluster, namespace, "api", "cache") == before


def test_pdb_that_forbids_the_move_blocks_it(cluster: Cluster, operator: OperatorProcess, prometheus: PromStack,
                                             namespace: str) -> None:
    from kubernetes import client

    before = split_pair(cluster, namespace, "guarded")
    client.PolicyV1Api(cluster.api).create_namespaced_pod_disruption_budget(namespace, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {LABEL: "guarded"}}}})
    wait_for(lambda: client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget(
        "guarded", namespace).status.expected_pods == 2, 30, "PDB to observe both pods")
    uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items}
    traffic(prometheus, namespace, 5e6)
    # minAvailable 1 of 2 would allow one eviction; make it strict: both must stay.
    client.PolicyV1Api(cluster.api).patch_namespaced_pod_disruption_budget(
        "guarded", namespace, {"spec": {"minAvailable": 2}})
    wait_for(lambda: client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget(
        "guarded", namespace).status.disruptions_allowed == 0, 30, "PDB to allow no disruption")
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", group("guarded"))
    move = wait_for(lambda: [m for m in (wg_status(cluster, namespace, "guarded").get("plan") or {}).get("moves", [])
                             if m["phase"] == "Failed"], 60, "the move to fail on the PDB")[0]
    assert "PodDisruptionBudget" in move["message"]
    assert {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items} == uids
    assert nodes_of(cluster, namespace, "api", "cache") == before
    assert any(e.reason == "EvictionBlocked" for e in cluster.core.list_namespaced_event(namespace).items)


def test_dry_run_records_the_plan_and_changes_nothing(cluster: Cluster, operator: OperatorProcess,
                                                      prometheus: PromStack, namespace: str) -> None:
    before = split_pair(cluster, namespace, "dry")
    uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items}
    traffic(prometheus, namespace, 5e6)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups",
                                                   group("dry", mode="DryRun"))
    plan = wait_for(lambda: (wg_status(cluster, namespace, "dry").get("plan") or {}).get("moves") and
                    wg_status(cluster, namespace, "dry")["plan"], 60, "a recorded dry-run plan")
    assert plan["mode"] == "DryRun" and len(plan["moves"]) == 1
    assert plan["moves"][0]["phase"] == "Planned" and "dry run" in plan["moves"][0]["message"]
    time.sleep(10)
    assert {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items} == uids
    assert nodes_of(cluster, namespace, "api", "cache") == before
    assert any(e.reason == "PlanDryRun" for e in cluster.core.list_namespaced_event(namespace).items)


def test_prometheus_down_means_no_move(cluster: Cluster, operator: OperatorProcess, prometheus: PromStack,
                                       namespace: str) -> None:
    before = split_pair(cluster, namespace, "blind")
    uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items}
    prometheus.stop()
    try:
        traffic(prometheus, namespace, 5e6)
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", group("blind"))
        cond = wait_for(lambda: (c := condition(wg_status(cluster, namespace, "blind"), "TelemetryFresh")) and c,
                        60, "TelemetryFresh condition")
        assert cond["status"] == "False" and cond["reason"] == "PrometheusUnavailable"
        assert "no migration" in cond["message"]
        time.sleep(8)
        assert {p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items} == uids
        assert nodes_of(cluster, namespace, "api", "cache") == before
        assert not (wg_status(cluster, namespace, "blind").get("plan") or {}).get("moves")
    finally:
        prometheus.start()
    # With Prometheus back, the retry plans and the pair comes together.
    wait_for(lambda: (n := nodes_of(cluster, namespace, "api", "cache")) and n["api"] == n["cache"], 120,
             "aggregation after Prometheus is back")


@pytest.fixture
def restart_namespace(cluster: Cluster) -> Iterator[str]:
    yield from fresh_namespace(cluster, "r")  # outside the session operator's t-* scope


def test_operator_killed_mid_move_completes_it_exactly_once(cluster: Cluster, prometheus: PromStack,
                                                            restart_namespace: str, tmp_path) -> None:
    from .conftest import free_port

    ns = restart_namespace
    before = split_pair(cluster, ns, "phoenix")
    original_uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(ns).items}
    traffic(prometheus, ns, 5e6)
    args = ("--prometheus-url", prometheus.url, "--namespace", ns, "--webhook-port", str(free_port()),
            "--webhook-config", "restart-test.edgeweave.io")
    first = start_operator(cluster, tmp_path, *args, name="first")
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", group("phoenix"))
    try:
        def moving() -> str | None:
            moves = (wg_status(cluster, ns, "phoenix").get("plan") or {}).get("moves", [])
            return next((m["phase"] for m in moves if m["phase"] != "Planned"), None)

        killed_at = wait_for(moving, 60, "a move to start", interval=0.05)
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    second = start_operator(cluster, tmp_path, *args, name="second")
    try:
        try:
            st = wait_for(lambda: (s := wg_status(cluster, ns, "phoenix")).get("movesTotal") == 1 and s, 120,
                          f"the move (killed in phase {killed_at}) to complete after restart")
        except AssertionError:
            pods = [(p.metadata.name, p.spec.node_name, p.status.phase)
                    for p in cluster.core.list_namespaced_pod(ns).items]
            raise AssertionError(f"status={wg_status(cluster, ns, 'phoenix')} pods={pods}") from None
        assert [m["phase"] for m in st["plan"]["moves"]] == ["Done"]
        together = wait_for(lambda: (n := nodes_of(cluster, ns, "api", "cache")) and n["api"] == n["cache"] and n,
                            60, "pair together")
        assert together["api"] in before.values()
        # Exactly once: one of the two original pods was replaced, once; the other is untouched.
        now = [p for p in cluster.core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]
        assert len(now) == 2
        assert len({p.metadata.uid for p in now} & original_uids) == 1
        time.sleep(8)
        assert wg_status(cluster, ns, "phoenix")["movesTotal"] == 1
        done_events = [e for e in cluster.core.list_namespaced_event(ns).items if e.reason == "MoveDone"]
        assert len(done_events) == 1
    finally:
        second.stop()


def test_moved_stateful_member_recovers_its_memory_first(cluster: Cluster, operator: OperatorProcess,
                                                         prometheus: PromStack, namespace: str) -> None:
    """memoryRecovery: the replacement pod (not the Deployment) gets the recovery init container."""
    from kubernetes import client

    core = cluster.core
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-baselines"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "hostPath": {"path": f"/tmp/{namespace}"}, "storageClassName": "",
                 "claimRef": {"namespace": namespace, "name": "baselines"}}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "baselines"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{namespace}-baselines",
                 "resources": {"requests": {"storage": "1Gi"}}}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "region-token"},
                                              "stringData": {"token": "s3cret"}})
    try:
        wait_for(lambda: core.read_namespaced_persistent_volume_claim("baselines", namespace).status.phase == "Bound",
                 60, "PVC bound")
        split_pair(cluster, namespace, "stateful")
        before = {d.metadata.name: d.metadata.generation
                  for d in client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items}
        traffic(prometheus, namespace, 5e6)
        wg = group("stateful")
        wg["spec"]["memoryRecovery"] = {"enabled": True, "storeClaim": "baselines", "tokenSecret": "region-token"}
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", wg)
        try:
            st = wait_for(lambda: (s := wg_status(cluster, namespace, "stateful")).get("movesTotal") == 1 and s,
                          120, "the move to finish")
        except AssertionError:
            pods = [(p.metadata.name, p.spec.node_name, p.status.phase, [c.message for c in p.status.conditions or []])
                    for p in core.list_namespaced_pod(namespace).items]
            evs = [(e.reason, e.message[:300]) for e in core.list_namespaced_event(namespace).items
                   if e.type == "Warning"]
            raise AssertionError(f"pods={pods} warnings={evs}") from None
        move = st["plan"]["moves"][0]
        pod = core.read_namespaced_pod(move["newPod"], namespace)
        init = pod.spec.init_containers[0]
        assert init.name == "edgeweave-memory-recover"
        script = init.command[-1]
        # The source agent keys the region by the failed (evicted) pod's UID: namespace/pod-uid/workload.
        assert move["podUid"] and f"--region {namespace}/{move['podUid']}/{move['workload']}" in script, script
        assert "memory-recover" in script
        assert "--source 10.244.0.1:7470" in script  # the source device's InternalIP (kwok's)
        claims = {v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim}
        assert claims == {"baselines"}
        assert pod.spec.node_name == move["toNode"]
        after = {d.metadata.name: d.metadata.generation
                 for d in client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items}
        assert after == before
        for d in client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items:
            assert not d.spec.template.spec.init_containers
    finally:
        core.delete_persistent_volume(f"{namespace}-baselines")


def test_replacement_after_node_failure_recovers_memory_first(cluster: Cluster, operator: OperatorProcess,
                                                              namespace: str) -> None:
    from kubernetes import client

    core = cluster.core
    core.create_namespaced_secret(namespace, {"metadata": {"name": "region-token"}, "stringData": {"token": "t"}})
    client.AppsV1Api(cluster.api).create_namespaced_deployment(namespace, deployment("db", "failover"))
    node = wait_for(lambda: nodes_of(cluster, namespace, "db").get("db"), 60, "db Running")
    wg = group("failover")
    wg["spec"]["aggregation"] = {"enabled": False}
    wg["spec"]["memoryRecovery"] = {"enabled": True, "storeClaim": "baselines", "tokenSecret": "region-token"}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", wg)
    wait_for(lambda: wg_status(cluster, namespace, "failover").get("members") == 1, 30, "group sees db")
    # The device fails: kwok stops reporting it Ready (what a dead kubelet looks like to the control plane).
    core.patch_node(node, {"metadata": {"annotations": {"kwok.x-k8s.io/status": "custom"}}})
    try:
        core.patch_node_status(node, {"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "test: device down",
             "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        wait_for(lambda: "replacement will recover memory first" in operator.log(), 30,
                 "the operator to prepare the failover")
        # Taint-based eviction would delete the pod after its toleration; do it now.
        (old,) = running_pods(cluster, namespace, "db")
        core.delete_namespaced_pod(old.metadata.name, namespace, grace_period_seconds=0)
        new = wait_for(lambda: [p for p in core.list_namespaced_pod(namespace, label_selector="app=db").items
                                if p.metadata.uid != old.metadata.uid], 60, "the replacement pod")[0]
        init = new.spec.init_containers[0]
        assert init.name == "edgeweave-memory-recover"
        script = init.command[-1]
        assert f"--region {namespace}/{old.metadata.uid}/db" in script, script  # the failed pod's UID
        assert "--source 10.244.0.1:7470" in script
        assert not new.spec.affinity or not new.spec.affinity.node_affinity  # no placement forced on a failover
    finally:
        core.patch_node(node, {"metadata": {"annotations": {"kwok.x-k8s.io/status": None}}})
        wait_for(lambda: any(c.type == "Ready" and c.status == "True"
                             for c in core.read_node(node).status.conditions or []), 60, "node Ready again")


def test_overlapping_groups_get_a_conflict_and_the_older_keeps_the_pod(cluster: Cluster, operator: OperatorProcess,
                                                                       namespace: str) -> None:
    from kubernetes import client

    client.AppsV1Api(cluster.api).create_namespaced_deployment(namespace, deployment("api", "shop"))
    client.AppsV1Api(cluster.api).create_namespaced_deployment(namespace, deployment("cache", "shop"))
    wait_for(lambda: nodes_of(cluster, namespace, "api", "cache"), 60, "api and cache Running")
    older = group("shop")
    older["spec"]["aggregation"] = {"enabled": False}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", older)
    wait_for(lambda: wg_status(cluster, namespace, "shop").get("members") == 2, 30, "the older group's members")
    # Creation times have one-second resolution (a tie goes to the name): make the second group younger.
    created = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", "shop")[
        "metadata"]["creationTimestamp"]
    wait_for(lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > created, 5, "the next second")
    younger = group("api-only")
    younger["spec"]["selector"] = {"app": "api"}
    younger["spec"]["aggregation"] = {"enabled": False}
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", younger)
    mine = wait_for(lambda: (c := condition(wg_status(cluster, namespace, "api-only"), "Conflict")).get(
        "status") == "True" and c, 30, "Conflict on the younger group")
    assert "shop" in mine["message"] and "older group" in mine["message"]
    theirs = wait_for(lambda: (c := condition(wg_status(cluster, namespace, "shop"), "Conflict")).get(
        "status") == "True" and c, 30, "Conflict on the older group")
    assert "api-only" in theirs["message"]
    assert wg_status(cluster, namespace, "shop")["members"] == 2
    assert wg_status(cluster, namespace, "api-only")["members"] == 0
    # The round's Events follow its status write: poll for them, do not read once.
    wait_for(lambda: any(e.reason == "Conflict" for e in cluster.core.list_namespaced_event(namespace).items), 30,
             "a Conflict Event")


@pytest.fixture
def steering_namespace(cluster: Cluster) -> Iterator[str]:
    yield from fresh_namespace(cluster, "s")  # outside the session operator's t-* scope


def test_no_eviction_without_steering_then_moves_complete_when_it_is_back(
        cluster: Cluster, prometheus: PromStack, steering_namespace: str, tmp_path) -> None:
    """Webhook off: the mover proves steering is not live, raises SteeringUnavailable and evicts nothing.
    An operator with the webhook then completes the same plan."""
    from .conftest import free_port

    ns = steering_namespace
    before = split_pair(cluster, ns, "landing")
    uids = {p.metadata.uid for p in cluster.core.list_namespaced_pod(ns).items}
    traffic(prometheus, ns, 5e6)
    blind = start_operator(cluster, tmp_path, "--prometheus-url", prometheus.url, "--namespace", ns, name="blind")
    try:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", group("landing"))
        cond = wait_for(lambda: (c := condition(wg_status(cluster, ns, "landing"), "SteeringUnavailable")).get(
            "status") == "True" and c, 60, "SteeringUnavailable=True")
        assert "without the steering patch" in cond["message"]
        (move,) = wg_status(cluster, ns, "landing")["plan"]["moves"]
        assert move["phase"] == "Planned" and "steering" in move["message"]
        # Several sweeps later (0.25 s each): still nothing evicted.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert {p.metadata.uid for p in cluster.core.list_namespaced_pod(ns).items} == uids
            time.sleep(0.5)
        assert nodes_of(cluster, ns, "api", "cache") == before
        events = [e for e in cluster.core.list_namespaced_event(ns).items]
        assert any(e.reason == "SteeringUnavailable" and e.type == "Warning" for e in events)
        assert not any(e.reason == "EdgeweaveMove" for e in events)
    finally:
        blind.stop()
    steered = start_operator(cluster, tmp_path, "--prometheus-url", prometheus.url, "--namespace", ns,
                             "--webhook-port", str(free_port()), "--webhook-config", "steer-test.edgeweave.io",
                             name="steered")
    try:
        wait_for(lambda: wg_status(cluster, ns, "landing").get("movesTotal") == 1, 120,
                 "the move to complete with steering back")
        together = wait_for(lambda: (n := nodes_of(cluster, ns, "api", "cache")) and n["api"] == n["cache"] and n,
                            60, "pair together")
        assert together["api"] in before.values()
        wait_for(lambda: condition(wg_status(cluster, ns, "landing"), "SteeringUnavailable").get("status") == "False",
                 30, "SteeringUnavailable=False")
    finally:
        steered.stop()
