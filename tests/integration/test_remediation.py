"""Context-breach remediation on the real cluster: context from a real Prometheus, offload through the
shared actuation layer, breach taints, conditions and Events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from edgeweave.actuate.actuator import TAINT_OWNERS_ANNOTATION, Actuator, parse_owners
from edgeweave.api.base import rfc3339

from .conftest import (
    FLEET_NODES_PER_SITE,
    FLEET_SITES,
    Cluster,
    OperatorProcess,
    PromStack,
    start_operator,
    wait_for,
)
from .test_aggregation import GROUP, LABEL, VERSION, condition, running_pods, wg_status

pytestmark = pytest.mark.integration
TAINT = "edgeweave.io/context-breach"
NODES = [f"edge-{s:03d}-{i}" for s in range(FLEET_SITES) for i in range(FLEET_NODES_PER_SITE)]


def battery(prom: PromStack, node: str, percent: float) -> None:
    prom.series.set_gauge("edgeweave_battery_percent", {"node": node}, percent)


def all_batteries(prom: PromStack, percent: float) -> None:
    for n in NODES:
        battery(prom, n, percent)


def pos_deployment(cpu: str = "250m") -> dict:
    labels = {"app": "pos", LABEL: "pay"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pos", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "app", "image": "registry.invalid/pos:1",
                          "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}}}}


def pay_group(grace: int, hysteresis: float = 10) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "metadata": {"name": "pay"},
            "spec": {"selector": {LABEL: "pay"}, "aggregation": {"enabled": False},
                     "telemetry": {"resyncSeconds": 5, "maxAgeSeconds": 60},
                     "requirements": [{"element": "BatteryPercent", "operator": "Gte", "value": "40",
                                       "gracePeriodSeconds": grace, "hysteresis": hysteresis}]}}


def taints_on(cluster: Cluster, node: str) -> list[str]:
    return [t.key for t in cluster.core.read_node(node).spec.taints or []]


def pos_node(cluster: Cluster, ns: str) -> str | None:
    pods = running_pods(cluster, ns, "pos")
    return pods[0].spec.node_name if len(pods) == 1 and pods[0].status.phase == "Running" else None


def start_pos(cluster: Cluster, ns: str, prom: PromStack, grace: int) -> str:
    all_batteries(prom, 100)
    client.AppsV1Api(cluster.api).create_namespaced_deployment(ns, pos_deployment())
    node = wait_for(lambda: pos_node(cluster, ns), 60, "pos Running")
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", pay_group(grace))
    wait_for(lambda: condition(wg_status(cluster, ns, "pay"), "ContextSatisfied").get("reason") == "Satisfied",
             60, "ContextSatisfied=True")
    return node


@pytest.fixture
def clean_batteries(prometheus: PromStack):
    yield
    all_batteries(prometheus, 100)


def test_battery_drop_offloads_within_grace_plus_actuation(cluster: Cluster, operator: OperatorProcess,
                                                           prometheus: PromStack, namespace: str,
                                                           clean_batteries: None) -> None:
    grace = 3
    node = start_pos(cluster, namespace, prometheus, grace)
    t0 = time.monotonic()
    battery(prometheus, node, 20)
    new_node = wait_for(lambda: (n := pos_node(cluster, namespace)) and n != node and n, 60,
                        "pos Running on another device")
    elapsed = time.monotonic() - t0
    # Grace + one scrape (1 s) + one context read (1 s) + eviction and rescheduling on kwok: well under 30 s.
    assert grace <= elapsed < grace + 27, elapsed
    assert TAINT in taints_on(cluster, node), "the breached device must be tainted"
    assert TAINT not in taints_on(cluster, new_node)
    st = wait_for(lambda: (s := wg_status(cluster, namespace, "pay")).get("movesTotal") == 1 and s, 30,
                  "status to record the finished move")
    plan = st["plan"]
    assert plan["kind"] == "Remediation"
    assert [m["phase"] for m in plan["moves"]] == ["Done"] and plan["moves"][0]["contextChangedAt"]
    # The workload now runs where the requirement holds.
    wait_for(lambda: condition(wg_status(cluster, namespace, "pay"), "ContextSatisfied").get("status") == "True",
             30, "ContextSatisfied=True on the new device")
    reasons = {e.reason for e in cluster.core.list_namespaced_event(namespace).items}
    assert {"Remediating", "EdgeweaveMove", "MoveDone"} <= reasons
    site = f"site-{node.split('-')[1]}"
    es = wait_for(lambda: (s := cluster.custom.get_cluster_custom_object(GROUP, VERSION, "edgesites", site)["status"])
                  and condition(s, "Breached").get("status") == "True" and s, 30, "EdgeSite Breached=True")
    # The breached device is listed (healthy ones are only counted), with the reading behind the breach.
    listed = {n["name"]: n for n in es.get("unhealthyNodes", [])}
    assert node in listed and listed[node]["breached"], es
    assert es["breachedNodes"] >= 1
    assert any(o["element"] == "BatteryPercent" and o["node"] == node for o in es.get("context", []))

    # Recovery inside the hysteresis band (40..50) keeps the taint; above it, the taint goes. The group's
    # breach record names the value it judged: wait until the operator has evaluated the 45 reading.
    battery(prometheus, node, 45)
    rec = wait_for(lambda: next((r for r in wg_status(cluster, namespace, "pay").get("breachState", [])
                                 if r["device"] == node and "is 45" in r["detail"]), None), 30,
                   "the operator to judge the 45 % reading")
    assert rec["phase"] == "Breached" and "recovers at 50" in rec["detail"], rec
    assert TAINT in taints_on(cluster, node)
    battery(prometheus, node, 90)
    wait_for(lambda: TAINT not in taints_on(cluster, node), 30, "the taint to be removed after recovery")


def test_blip_shorter_than_grace_moves_nothing(cluster: Cluster, operator: OperatorProcess, prometheus: PromStack,
                                               namespace: str, clean_batteries: None) -> None:
    node = start_pos(cluster, namespace, prometheus, grace=15)
    uid = running_pods(cluster, namespace, "pos")[0].metadata.uid
    battery(prometheus, node, 20)
    wait_for(lambda: condition(wg_status(cluster, namespace, "pay"), "ContextSatisfied").get(
        "reason") == "BreachPending", 30, "the breach to be seen (pending its grace period)")
    time.sleep(3)
    battery(prometheus, node, 100)
    wait_for(lambda: condition(wg_status(cluster, namespace, "pay"), "ContextSatisfied").get(
        "reason") == "Satisfied", 30, "the blip to pass")
    time.sleep(15)
    pods = running_pods(cluster, namespace, "pos")
    assert [p.metadata.uid for p in pods] == [uid] and pods[0].spec.node_name == node
    assert TAINT not in taints_on(cluster, node)
    assert not (wg_status(cluster, namespace, "pay").get("plan") or {}).get("moves")


def test_only_valid_device_full_means_condition_and_no_eviction(cluster: Cluster, operator: OperatorProcess,
                                                                prometheus: PromStack, namespace: str,
                                                                clean_batteries: None) -> None:
    node = start_pos(cluster, namespace, prometheus, grace=0)
    uid = running_pods(cluster, namespace, "pos")[0].metadata.uid
    spare = next(n for n in NODES if n != node)
    # Fill the one device that will still satisfy the requirement.
    cluster.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "filler"},
        "spec": {"nodeName": spare, "containers": [{"name": "f", "image": "registry.invalid/f:1",
                                                    "resources": {"requests": {"cpu": "3900m"}}}]}})
    wait_for(lambda: cluster.core.read_namespaced_pod("filler", namespace).status.phase == "Running", 30, "filler")
    for n in NODES:
        battery(prometheus, n, 100 if n == spare else 20)
    cond = wait_for(lambda: (c := condition(wg_status(cluster, namespace, "pay"), "Remediating")).get(
        "reason") == "NoValidTarget" and c, 60, "Remediating=False NoValidTarget")
    assert cond["status"] == "False" and "BatteryPercent" in cond["message"]
    events = wait_for(lambda: [e for e in cluster.core.list_namespaced_event(namespace).items
                               if e.reason == "NoValidTarget"], 30, "a NoValidTarget Warning Event")
    assert events[0].type == "Warning"
    time.sleep(6)
    pods = running_pods(cluster, namespace, "pos")
    assert [p.metadata.uid for p in pods] == [uid], "nothing may be evicted into nowhere"
    assert condition(wg_status(cluster, namespace, "pay"), "ContextSatisfied")["status"] == "False"


def test_dry_run_and_foreign_groups_never_taint_and_a_deleted_group_releases(
        cluster: Cluster, operator: OperatorProcess, prometheus: PromStack, namespace: str,
        clean_batteries: None) -> None:
    """Two namespaces. A DryRun group that finds its device breached taints nothing; a group in another
    namespace taints only devices its own members run on; an Enforce group's taint carries its name and
    goes when the group is deleted."""
    from .conftest import fresh_namespace

    all_batteries(prometheus, 100)
    apps = client.AppsV1Api(cluster.api)
    apps.create_namespaced_deployment(namespace, pos_deployment())
    node = wait_for(lambda: pos_node(cluster, namespace), 60, "pos Running")
    dry = pay_group(grace=0)
    dry["spec"]["mode"] = "DryRun"
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", dry)
    other_gen = fresh_namespace(cluster, "t")
    other = next(other_gen)
    try:
        elsewhere = pos_deployment()
        elsewhere["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node]}]}]}}}
        apps.create_namespaced_deployment(other, elsewhere)
        their_node = wait_for(lambda: pos_node(cluster, other), 60, "the other team's pos Running")
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, other, "workloadgroups", pay_group(grace=0))
        wait_for(lambda: condition(wg_status(cluster, other, "pay"), "ContextSatisfied").get("reason") == "Satisfied",
                 60, "the other group Satisfied")

        battery(prometheus, node, 10)
        wait_for(lambda: condition(wg_status(cluster, namespace, "pay"), "ContextSatisfied").get(
            "reason") == "Breached", 60, "the DryRun group to see its device breached")
        # Taint claims are acted on before the round writes status: this is the state after that round.
        wait_for(lambda: (wg_status(cluster, namespace, "pay").get("plan") or {}).get("mode") == "DryRun", 30,
                 "the DryRun remediation plan")
        assert all(TAINT not in taints_on(cluster, n) for n in NODES), "DryRun must change nothing"
        assert condition(wg_status(cluster, other, "pay"), "ContextSatisfied")["reason"] == "Satisfied"
        assert pos_node(cluster, namespace) == node  # and nothing moved

        # Enforce, taints on, remediation off (so the member stays): the device is tainted, with its owner.
        cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", "pay", {
            "spec": {"mode": "Enforce", "remediation": {"enabled": False, "taintBreachedDevices": True}}})
        wait_for(lambda: TAINT in taints_on(cluster, node), 30, "the Enforce group's taint")
        owners = cluster.core.read_node(node).metadata.annotations.get("edgeweave.io/context-breach-owners")
        assert owners == f"{namespace}/pay"
        assert all(TAINT not in taints_on(cluster, n) for n in NODES if n != node)
        assert TAINT not in taints_on(cluster, their_node)

        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups", "pay")
        wait_for(lambda: TAINT not in taints_on(cluster, node), 30, "the deleted group's taint to go")
        assert not (cluster.core.read_node(node).metadata.annotations or {}).get("edgeweave.io/context-breach-owners")
    finally:
        next(other_gen, None)


@pytest.fixture
def own_namespace(cluster: Cluster) -> Iterator[str]:
    from .conftest import fresh_namespace

    yield from fresh_namespace(cluster, "rb")  # outside the session operator's t-* scope


def claims_of(cluster: Cluster, key: str) -> list[str]:
    """The devices whose breach-taint owners annotation names `key`, read from the API (not a cache)."""
    return [n.metadata.name for n in cluster.core.list_node().items
            if key in parse_owners((n.metadata.annotations or {}).get(TAINT_OWNERS_ANNOTATION))]


def assert_no_claim(cluster: Cluster, key: str, timeout: float) -> None:
    """No claim of the deleted group `key` remains (polled up to `timeout`). On failure the claim is lifted
    through the same actuator first, so later tests do not inherit a tainted device, and the test fails."""
    deadline = time.monotonic() + timeout
    while (claimed := claims_of(cluster, key)) and time.monotonic() < deadline:
        time.sleep(0.25)
    if claimed:
        Actuator(cluster.api).release_taints(key, claimed)
        raise AssertionError(f"{key} still claims the breach taint on {claimed} after its deletion")


def release_group(cluster: Cluster, ns: str) -> None:
    """Delete the group while its operator still runs: its finalizer releases the breach taint it claimed, so
    no later test finds a device tainted by a group whose operator is gone."""
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "pay")
    except ApiException as err:
        if err.status != 404:
            raise
    wait_for(lambda: not cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups")["items"],
             60, "the group (and its taint claims) gone")
    # The finalizer released before the group went: nothing may claim for it afterwards, not even a replica
    # that was still finishing a round (a claim whose group is gone is never lifted by anyone).
    assert_no_claim(cluster, f"{ns}/pay", 10)


def breach_record(cluster: Cluster, ns: str, node: str) -> dict | None:
    return next((r for r in wg_status(cluster, ns, "pay").get("breachState", []) if r["device"] == node), None)


def test_killed_half_way_through_the_grace_offloads_at_the_original_deadline(
        cluster: Cluster, operator: OperatorProcess, prometheus: PromStack, own_namespace: str, tmp_path: Path,
        clean_batteries: None) -> None:
    """Grace 30 s. The first process sees a breach start and end (a recovery), then a second breach; it is
    SIGKILLed 15 s into the second. The new process must complete the second breach at its original deadline
    (within one resync), not 30 s after it started, and must not resume the first, recovered one.
    The session's operator (scoped to t-*) runs beside it on purpose: it once stripped the group's finalizer,
    so the group's delete handler never ran and its taint claim outlived it (finalizer_scope)."""
    from .conftest import free_port

    ns, grace, resync = own_namespace, 30, 5
    args = ("--prometheus-url", prometheus.url, "--namespace", ns, "--webhook-port", str(free_port()),
            "--webhook-config", "rem-restart.edgeweave.io")
    first = start_operator(cluster, tmp_path, *args, name="first")
    try:
        node = start_pos(cluster, ns, prometheus, grace)
        battery(prometheus, node, 20)
        early = wait_for(lambda: (r := breach_record(cluster, ns, node)) and r["phase"] == "Pending" and r, 30,
                         "the first breach to be seen")
        battery(prometheus, node, 100)
        wait_for(lambda: breach_record(cluster, ns, node) is None and condition(
            wg_status(cluster, ns, "pay"), "ContextSatisfied").get("reason") == "Satisfied", 30,
            "the first process to see the recovery")
        # Input timing, not synchronisation: the second breach starts >= 10 s after the first, so the first
        # breach's deadline (if the recovery were forgotten) is told apart from the second's by 2 resyncs.
        wait_for(lambda: time.time() >= early["since"] + 10, 20, "10 s after the first breach")
        battery(prometheus, node, 20)
        rec = wait_for(lambda: (r := breach_record(cluster, ns, node)) and r["phase"] == "Pending" and r, 30,
                       "the second breach to be recorded")
        since = rec["since"]
        assert since >= early["since"] + 10, (early, rec)
        wait_for(lambda: time.time() >= since + grace / 2, grace, "half-way through the grace period",
                 interval=0.1)
        killed_at = time.time()
        first.sigkill()
    finally:
        first.stop()
    second = start_operator(cluster, tmp_path, *args, name="second")  # a new process, as after a crash
    try:
        done = wait_for(lambda: (r := breach_record(cluster, ns, node)) and r["phase"] == "Breached" and r, 90,
                        "the new process to complete the breach")
        deadline = since + grace
        error = done["changedAt"] - deadline
        assert done["since"] == since, "the breach keeps its original start"
        # Never early (the grace holds), and within one resync of the original deadline: not a full grace
        # after the restart (that would be killed_at + 30, at least 15 s late).
        assert -0.5 <= error <= resync, (error, done, killed_at)
        st = wait_for(lambda: (s := wg_status(cluster, ns, "pay")).get("plan") and s, 30, "the remediation plan")
        plan = st["plan"]
        assert plan["kind"] == "Remediation" and plan["moves"][0]["fromNode"] == node
        assert plan["moves"][0]["contextChangedAt"] == rfc3339(since)
        wait_for(lambda: (n := pos_node(cluster, ns)) and n != node, 60, "pos Running on another device")
    finally:
        try:
            release_group(cluster, ns)
        finally:
            second.stop()


def test_peering_hand_over_keeps_the_grace_clock(cluster: Cluster, operator: OperatorProcess, prometheus: PromStack,
                                                 own_namespace: str, tmp_path: Path, clean_batteries: None) -> None:
    """Two replicas under kopf peering. The active one sees a breach start; it stops half-way through the
    grace period; the standby resumes and completes the breach at the original deadline (within one resync).
    Deleted, the group releases its claim: with the session's operator (scoped elsewhere) running beside the
    replicas, as when this leaked (finalizer_scope)."""
    from .conftest import free_port

    ns, grace, resync, peering = own_namespace, 20, 5, "ewt-remediation-peering"
    common = ("--prometheus-url", prometheus.url, "--namespace", ns)
    active = start_operator(cluster, tmp_path, *common, "--priority", "200", "--webhook-port", str(free_port()),
                            "--webhook-config", "rem-active.edgeweave.io", peering=peering, name="active")
    standby = None
    try:
        standby = start_operator(cluster, tmp_path, *common, "--priority", "100", "--webhook-port", str(free_port()),
                                 "--webhook-config", "rem-standby.edgeweave.io", peering=peering, name="standby")
        wait_for(lambda: len(cluster.custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", peering).get("status") or {}) == 2, 30, "two peers")
        assert "Resuming operations" not in standby.log()
        node = start_pos(cluster, ns, prometheus, grace)
        battery(prometheus, node, 20)
        rec = wait_for(lambda: (r := breach_record(cluster, ns, node)) and r["phase"] == "Pending" and r, 30,
                       "the breach to be recorded by the active replica")
        since = rec["since"]
        wait_for(lambda: time.time() >= since + grace / 2, grace, "half-way through the grace period",
                 interval=0.1)
        active.stop()  # a clean stop (a rolling update): kopf withdraws it from the peering
        wait_for(lambda: "Resuming operations" in standby.log(), 30, "the standby to take over")
        done = wait_for(lambda: (r := breach_record(cluster, ns, node)) and r["phase"] == "Breached" and r, 60,
                        "the standby to complete the breach")
        error = done["changedAt"] - (since + grace)
        assert done["since"] == since and -0.5 <= error <= resync, (error, done)
    finally:
        try:
            if standby:
                release_group(cluster, ns)
        finally:
            if standby:
                standby.stop()
            active.stop()
    # Both processes are gone now: whatever they wrote is final. A stopping replica must not have re-made
    # the deleted group's claim after the release.
    assert_no_claim(cluster, f"{ns}/pay", 0)
    for proc in (active, standby):
        assert "Traceback" not in proc.log(), proc.log()[-3000:]
