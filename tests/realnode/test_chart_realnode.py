"""The chart installed for real, as a user does: `helm install` puts the operator and the agent DaemonSet
on the real nodes, in the edgeweave image built here; the API server reaches the operator's webhooks
through their Service; a WorkloadGroup move lands through the in-cluster steering webhook; `helm
uninstall` takes it all away."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .conftest import (
    REPO,
    RealCluster,
    demo,
    fresh_namespace,
    http_get,
    images,
    paused_operators,
    realnode,
    scrape,
    wait_for,
)

pytestmark = pytest.mark.realnode
GROUP, VERSION = "edgeweave.io", "v1alpha1"
RELEASE, RELEASE_NS = "ew", "edgeweave-system"
WATCHED = "rh-*"  # the chart's operator acts here only (the suite's own operator watches rn-*)


def helm(real: RealCluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(real.cluster.bin_dir / "helm"), f"--kubeconfig={real.cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=timeout)


def chart_values(real: RealCluster, prometheus: str) -> list[str]:
    on_real = "edgeweave\\.io/real-node"
    sets = {
        "image.repository": demo.EDGEWEAVE_IMAGE.rsplit(":", 1)[0], "image.tag": demo.EDGEWEAVE_IMAGE.rsplit(":", 1)[1],
        "image.pullPolicy": "Never",  # imported into each node's containerd; there is no registry
        "operator.prometheusUrl": f"http://{prometheus}",
        f"operator.nodeSelector.{on_real}": "true", f"agent.nodeSelector.{on_real}": "true",
        "operator.namespaces[0]": WATCHED,
        # The pods' LAN side on these devices is the CNI bridge inside each node's namespace.
        "agent.lanInterface": f"{realnode.PREFIX}br0",
        # Several nodes share this host's bpffs: one pin directory per node.
        "agent.bpffsHostPath": str(realnode.bpffs_dir(real.run_dir)), "agent.pinDir": "/sys/fs/bpf/$(NODE_NAME)",
        "webhook.certManager": "disabled",
        # The agents' exporters on the nodes' own addresses, found by the suite's annotation-based Prometheus.
        "agent.metricsAddress": "$(POD_IP)",
        "agent.podAnnotations.prometheus\\.io/scrape": "true",
        "agent.podAnnotations.prometheus\\.io/port": "9477",
        # Their exporters require the chart's bearer token: the suite's Prometheus sends it (its pods-bearer job).
        "agent.podAnnotations.edgeweave\\.io/scrape-auth": "bearer",
    }
    # This VM's root has no CAP_SYS_RESOURCE (runc cannot grant what containerd lacks); the datapath needs
    # it only for memlock on kernels before 5.11 (this one accounts BPF memory to the cgroup).
    caps = ["--set", "agent.capabilities={NET_ADMIN,BPF,PERFMON}"]
    return [a for k, v in sets.items() for a in ("--set-string", f"{k}={v}")] + caps


def pods(real: RealCluster, ns: str, selector: str) -> list:
    return [p for p in real.cluster.core.list_namespaced_pod(ns, label_selector=selector).items
            if not p.metadata.deletion_timestamp]


def is_ready(p) -> bool:
    return p.status.phase == "Running" and all(cs.ready for cs in p.status.container_statuses or [])


def placement(real: RealCluster, ns: str) -> dict[str, str]:
    out = {}
    for app in ("demo-server", "demo-client"):
        ready = [p for p in pods(real, ns, f"app={app}") if is_ready(p)]
        if len(ready) != 1:
            return {}
        out[app] = ready[0].spec.node_name
    return out


def release_objects(real: RealCluster) -> list[str]:
    """Every object of the release, cluster-wide (kubectl get all kinds the chart renders)."""
    kinds = ("deployments,daemonsets,services,serviceaccounts,secrets,pods,clusterroles,clusterrolebindings,"
             "mutatingwebhookconfigurations,validatingwebhookconfigurations,validatingadmissionpolicies,"
             "validatingadmissionpolicybindings,clusterkopfpeerings")
    out = real.cluster.kubectl("get", kinds, "-A", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout
    return sorted(line for line in out.split() if line)


def node_containers(real: RealCluster, ns: str) -> dict[str, list[str]]:
    """Containers (sandboxes included) of namespace `ns` whose task still runs on each real node: a
    stopped container's record is the kubelet's garbage collector's, a running one is a leak."""
    out = {}
    for n in real.nodes:
        ctr = ["ctr", "--address", str(n.sock), "-n", "k8s.io"]
        res = subprocess.run([*ctr, "containers", "ls", "-q", f'labels."io.kubernetes.pod.namespace"=={ns}'],
                             capture_output=True, text=True)
        tasks = subprocess.run([*ctr, "tasks", "ls"], capture_output=True, text=True)
        assert res.returncode == 0 and tasks.returncode == 0, res.stderr + tasks.stderr
        running = {line.split()[0] for line in tasks.stdout.splitlines()[1:] if "RUNNING" in line.split()}
        out[n.name] = sorted(set(res.stdout.split()) & running)
    return out


def agent_metrics_token(real: RealCluster) -> str:
    import base64

    sec = real.cluster.core.read_namespaced_secret(f"{RELEASE}-edgeweave-agent-metrics", RELEASE_NS)
    return base64.b64decode(sec.data["token"]).decode()


def edgesite_names(real: RealCluster) -> list[str]:
    return [f"{realnode.PREFIX}-site-{n.index}" for n in real.nodes]


@pytest.fixture(scope="module")
def edgesites(real: RealCluster):
    """One EdgeSite per real node (the agent's init container looks up the one that selects its node)."""
    names = []
    for n in real.nodes:
        name = f"{realnode.PREFIX}-site-{n.index}"
        real.cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeSite", "metadata": {"name": name},
            "spec": {"nodeSelector": {realnode.SITE_LABEL: name}, "uplinks": n.uplinks()}}))
        names.append(name)
    yield names
    # The chart's operator (uninstalled by now) put kopf's finalizer on them: nothing would remove it.
    real.cluster.kubectl("delete", "edgesite", "--ignore-not-found", "--wait=false", *names)
    for name in names:
        real.cluster.kubectl("patch", "edgesite", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                             check=False)


@pytest.fixture(scope="module")
def chart(real: RealCluster, edgesites: list[str]):
    """`helm install` of the chart into the real-node cluster; the last test of the module uninstalls it."""
    img = images.build_edgeweave()
    realnode.import_image(real.nodes, img.archive)
    # The operator in its pod reads Prometheus (on the host, loopback) through the bridge address.
    prometheus = realnode.forward(real.prom.port, "prometheus", rd=real.run_dir)
    helm(real, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait")  # a run killed mid-test left it
    t0 = time.monotonic()
    res = helm(real, "install", RELEASE, str(REPO / "charts" / "edgeweave"), "-n", RELEASE_NS, "--create-namespace",
               *chart_values(real, prometheus), "--wait", "--timeout", "240s")
    if res.returncode == 0:  # what a user puts in Prometheus's scrape config: the agents' Secret
        real.prom.set_bearer_token(agent_metrics_token(real))
    try:
        yield res, time.monotonic() - t0
    finally:
        helm(real, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "120s")


def test_helm_install_runs_the_operator_and_agents_on_real_nodes(real: RealCluster, chart) -> None:
    res, install_s = chart
    assert res.returncode == 0, res.stdout + res.stderr + real.cluster.kubectl(
        "get", "pods", "-n", RELEASE_NS, "-o", "wide", check=False).stdout
    # Two replicas that peer: exactly one acts and is Ready (the webhooks' Service routes to it only), the
    # other runs as a standby whose /readyz says so.
    def settled() -> list | None:
        o = pods(real, RELEASE_NS, "app.kubernetes.io/component=operator")
        if len(o) != 2 or [is_ready(p) for p in o].count(True) != 1 or any(p.status.phase != "Running" for p in o):
            return None
        (standby,) = [p for p in o if not is_ready(p)]
        try:  # what the kubelet's readiness probe reads (the host routes to pod IPs)
            http_get(f"http://{standby.status.pod_ip}:8080/readyz")
        except urllib.error.HTTPError as e:
            return o if e.code == 503 and e.read().decode().startswith("standby") else None
        except OSError:
            return None
        return None

    ops = wait_for(settled, 120, "one acting (Ready) operator and one standby that says so")
    assert {p.spec.node_name for p in ops} <= set(real.node_names)
    for p in ops:
        if p.status.container_statuses[0].restart_count:
            print(p.metadata.name, "restarted:", real.cluster.kubectl("logs", "-n", RELEASE_NS, p.metadata.name,
                                                                     "--previous", check=False).stdout[-3000:])
    agents = wait_for(lambda: (a := [p for p in pods(real, RELEASE_NS, "app.kubernetes.io/component=agent")
                                     if is_ready(p)]) and len(a) == len(real.nodes) and a, 90,
                      "an agent Running on every real node")
    assert {p.spec.node_name for p in agents} == set(real.node_names)
    for p in agents:  # the datapath attached to the node's LAN side, inside the node's own namespace
        wait_for(lambda p=p: "agent up: lan=" in real.cluster.kubectl(
            "logs", "-n", RELEASE_NS, p.metadata.name, "-c", "agent", check=False).stdout, 90,
            f"{p.metadata.name} attached its datapath")
        node = next(n for n in real.nodes if n.name == p.spec.node_name)
        tc = subprocess.run(["nsenter", f"--net=/run/netns/{node.netns}", "tc", "-j", "filter", "show", "dev",
                             f"{realnode.PREFIX}br0", "ingress"], capture_output=True, text=True, check=True)
        assert any(f.get("kind") == "bpf" for f in json.loads(tc.stdout or "[]")), tc.stdout
    # The exporter on the node's address refuses a caller without the chart's token, and serves one with it.
    token = agent_metrics_token(real)
    for p in agents:
        url = f"http://{p.status.pod_ip}:9477/metrics"
        for header in (None, "Bearer not-the-token", f"Basic {token}"):
            req = urllib.request.Request(url, headers={"Authorization": header} if header else {})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=5)  # noqa: S310 - a node address in our namespace
            assert refused.value.code == 401, (url, header)
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - a node address in our namespace
            assert "edgeweave_agent_uplink_up{" in r.read().decode()
    # Prometheus, given the same Secret, scrapes every agent: each node's uplinks are up, as the agent
    # reads them in the node.
    q = "edgeweave_agent_uplink_up"
    up = wait_for(lambda: len(r := real.prom.query(q)) == len(real.nodes) * len(realnode.UPLINKS) and r, 60,
                  f"the agents' uplink state in Prometheus: {real.prom.query(q)}")
    assert {(s["metric"]["node"], s["metric"]["uplink"]) for s in up} == {
        (n.name, u["name"]) for n in real.nodes for u in n.uplinks()}
    assert all(s["value"][1] == "1" for s in up), up
    # Both webhook configurations are the chart's, service-based (no URL).
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        cfg = json.loads(real.cluster.kubectl("get", kind, f"{RELEASE}-edgeweave", "-o", "json").stdout)
        for wh in cfg["webhooks"]:
            assert "url" not in wh["clientConfig"] and wh["clientConfig"]["service"]["namespace"] == RELEASE_NS
    # What the uninstall test must see gone: the release's containers running in each node's containerd.
    assert all(node_containers(real, RELEASE_NS).values()), node_containers(real, RELEASE_NS)
    print(f"helm_install_s={install_s:.1f}")


def test_a_move_lands_through_the_in_cluster_steering_webhook(real: RealCluster, chart) -> None:
    # The validating webhook (failurePolicy Fail) must answer from its pod for the WorkloadGroup to be
    # created at all; the steering webhook must answer for the move to land.
    assert chart[0].returncode == 0
    gen = fresh_namespace(real.cluster, "rh")
    ns = next(gen)
    try:
        move_through_chart(real, ns)
    finally:
        gen.close()


LOSS_FROM_AGENT = demo.LOSS_FROM_AGENT


def uplink_down_to_serving(real: RealCluster, ns: str) -> dict:
    """The demo server needs its device's `inet` uplink (a WorkloadGroup requirement); the client, in no
    group, talks to it through the Service from the other node. `inet` loses its carrier inside the
    server's device: the agent there reports it, Prometheus scrapes it, the chart's operator sees the
    context breach, taints the device and evicts the server, which comes up on the other node, and the
    client is acknowledged again. Returns the timings."""
    real.cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": demo.uplink_drill("pay")}))
    before = wait_for(lambda: (p := placement(real, ns)) and p, 90, "client and server Running")
    group = demo.uplink_group("pay", "inet")
    real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", group)

    def condition(kind: str) -> dict:
        st = real.cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "pay").get(
            "status") or {}
        return next((c for c in st.get("conditions", []) if c["type"] == kind), {})

    wait_for(lambda: condition("ContextSatisfied").get("status") == "True", 90,
             f"ContextSatisfied=True from the agents' uplink state: {condition('ContextSatisfied')}")
    (client_pod,) = [p for p in pods(real, ns, "app=demo-client") if is_ready(p)]
    url = f"http://{client_pod.status.pod_ip}:{demo.METRICS_PORT}/metrics"
    node = next(n for n in real.nodes if n.name == before["demo-server"])
    other = next(n for n in real.nodes if n is not node)
    t0 = time.monotonic()
    node.set_uplink(1, False)  # inet: the WAN side goes away, the device's up1 loses its carrier
    try:
        try:
            wait_for(lambda: (p := placement(real, ns)) and p["demo-server"] == other.name, 120,
                     f"the server offloaded to {other.name}")
        except AssertionError as e:
            raise AssertionError(f"{e}: {condition('ContextSatisfied')}\n"
                                 f"prom: {real.prom.query(LOSS_FROM_AGENT)}\n{operator_logs(real)}") from None
        moved_s = time.monotonic() - t0
        n0 = scrape(http_get(url), "demo_requests_total")
        wait_for(lambda: scrape(http_get(url), "demo_requests_total") > n0 + 5, 60, "the client acknowledged again")
        serving_s = time.monotonic() - t0
        # The server left because it was evicted for the breach: the move is the group's remediation.
        st = real.cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "pay")["status"]
        plan = st.get("plan") or {}
        assert plan.get("kind") == "Remediation" and any(
            m["fromNode"] == node.name and m["phase"] == "Done" for m in plan.get("moves", [])), plan
        # ... and its new device meets the requirement again.
        wait_for(lambda: condition("ContextSatisfied").get("status") == "True", 30, "ContextSatisfied on the new device")
        # The device is still breached (its uplink is still down): the group claims its breach taint, so
        # nothing new lands there. (The chart's node policy once refused the claim's owners annotation.)
        try:
            wait_for(lambda: "edgeweave.io/context-breach" in [
                t.key for t in real.cluster.core.read_node(node.name).spec.taints or []], 30,
                f"the breach taint on {node.name} while its uplink is down")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{operator_logs(real)}") from None
        return {"uplink_down_to_offloaded_s": round(moved_s, 2), "uplink_down_to_serving_s": round(serving_s, 2)}
    finally:
        node.set_uplink(1, True)


def test_uplink_down_on_a_real_node_offloads_the_workload_and_it_serves_again(real: RealCluster, chart) -> None:
    assert chart[0].returncode == 0
    for site, n in zip(edgesite_names(real), real.nodes, strict=True):  # uplink loss from the agents
        real.cluster.kubectl("patch", "edgesite", site, "--type=merge", "-p", json.dumps({"spec": {"context": [
            {"element": "UplinkLossPercent", "source": "Prometheus", "query": LOSS_FROM_AGENT}]}}))
        assert n.uplinks()
    gen = fresh_namespace(real.cluster, "rh")
    ns = next(gen)
    try:
        out = uplink_down_to_serving(real, ns)
        print(out)
    finally:
        gen.close()
    # Back up and the group gone: no breach taint is left on either device.
    wait_for(lambda: all("edgeweave.io/context-breach" not in [t.key for t in real.cluster.core.read_node(n.name)
                                                                   .spec.taints or []] for n in real.nodes), 90,
             "no breach taint left once the uplink is back")


def test_zz_helm_uninstall_leaves_nothing(real: RealCluster, chart) -> None:
    # Only the chart's operator may act here: the suite's own operators (same kopf finalizer name) pause.
    with paused_operators():
        _uninstall_and_delete_a_site(real, chart)


def _uninstall_and_delete_a_site(real: RealCluster, chart) -> None:
    assert chart[0].returncode == 0
    un = helm(real, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "120s")
    assert un.returncode == 0, un.stdout + un.stderr
    # Nothing of the release is left but the webhook's TLS Secret, which the chart keeps on purpose
    # (helm.sh/resource-policy: keep: a reinstall serves with the same certificate).
    wait_for(lambda: release_objects(real) == [f"secret/{RELEASE}-edgeweave-webhook-tls"], 60,
             f"the release's objects gone after helm uninstall: {release_objects(real)}")
    wait_for(lambda: not any(node_containers(real, RELEASE_NS).values()), 60,
             f"no container of the release on the real nodes: {node_containers(real, RELEASE_NS)}")
    real.cluster.kubectl("delete", "namespace", RELEASE_NS, "--wait=false")
    # The pre-delete hook (cleanup.onUninstall: keep) stopped the operator and took kopf's finalizer off
    # every EdgeSite it had handled: they stay, and deleting one now goes at once instead of hanging.
    sites = {i["metadata"]["name"]: i["metadata"].get("finalizers") or [] for i in
             real.cluster.custom.list_cluster_custom_object(GROUP, VERSION, "edgesites")["items"]}
    names = edgesite_names(real)
    assert set(names) <= set(sites), sites
    assert not [n for n, f in sites.items() if "kopf.zalando.org/KopfFinalizerMarker" in f], sites
    t0 = time.monotonic()
    gone = real.cluster.kubectl("delete", "edgesite", names[0], "--timeout=30s", check=False)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    wait_for(lambda: names[0] not in {i["metadata"]["name"] for i in real.cluster.custom.list_cluster_custom_object(
        GROUP, VERSION, "edgesites")["items"]}, 30, f"EdgeSite {names[0]} deleted after the uninstall")
    print(f"edgesite deleted {time.monotonic() - t0:.2f}s after the request, with the operator uninstalled")


def move_through_chart(real: RealCluster, ns: str) -> None:
    """The demo pair split across the real nodes, real traffic, and the chart's operator moving one pod."""
    real.cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": demo.pair("demo")}))
    before = wait_for(lambda: (p := placement(real, ns)) and p, 90, "client and server Running")
    assert before["demo-server"] != before["demo-client"], before
    query = f'sum(rate(edgeweave_flow_bytes_total{{namespace="{ns}"}}[15s]))'
    wait_for(lambda: (r := real.prom.query(query)) and float(r[0]["value"][1]) > 1e5, 60, "the traffic in Prometheus")
    real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups",
                                                        demo.workload_group("demo"))
    try:
        together = wait_for(lambda: (p := placement(real, ns)) and p["demo-server"] == p["demo-client"] and p, 120,
                            "the pair Running on one real node (the chart's operator moved one)")
    except AssertionError as e:
        st = real.cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups", "demo").get("status")
        raise AssertionError(f"{e}\nstatus={json.dumps(st)[:3000]}\noperators:\n{operator_logs(real)}") from None
    st = wait_for(lambda: (s := (real.cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, "workloadgroups", "demo").get("status") or {})).get("movesTotal") == 1 and s,
        30, "the move recorded in status")
    (move,) = st["plan"]["moves"]
    assert move["phase"] == "Done" and move["toNode"] == together["demo-server"], move
    moved_app = "demo-server" if before["demo-server"] != together["demo-server"] else "demo-client"
    (moved,) = [p for p in pods(real, ns, f"app={moved_app}") if is_ready(p)]
    # Steered at admission by the webhook in the operator's pod: the API server reached it via the Service.
    assert (moved.metadata.annotations or {}).get("edgeweave.io/steered-by-move"), moved.metadata.annotations
    terms = moved.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    assert terms[0].match_expressions[0].values == [together["demo-server"]]
    logs = operator_logs(real, tail=0)
    assert f"steering a new pod of {ns}/" in logs, logs[-3000:]


def operator_logs(real: RealCluster, tail: int = 40) -> str:
    """The chart's operators' own log lines (not the webhook access log), for a failure message."""
    out = []
    for p in pods(real, RELEASE_NS, "app.kubernetes.io/component=operator"):
        lines = [ln for ln in real.cluster.kubectl("logs", "-n", RELEASE_NS, p.metadata.name, check=False)
                 .stdout.splitlines() if "aiohttp.access" not in ln]
        out.append(f"--- {p.metadata.name}\n" + "\n".join(ln[:300] for ln in lines[-tail:]))
    return "\n".join(out)
