"""Real nodes: real kubelets start real containers; the operator moves a running workload end to end."""

from __future__ import annotations

import time

import pytest

from edgeweave.gpu.ranges import RangeSet

from .conftest import RealCluster, demo, http_get, scrape, wait_for

pytestmark = pytest.mark.realnode
GROUP, VERSION = "edgeweave.io", "v1alpha1"


def ready(node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def running_pods(real: RealCluster, ns: str, app: str) -> list:
    return [p for p in real.cluster.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            and all(cs.ready for cs in p.status.container_statuses or [])]


def placement(real: RealCluster, ns: str, *apps: str) -> dict[str, str]:
    out = {}
    for app in apps:
        pods = running_pods(real, ns, app)
        if len(pods) != 1:
            return {}
        out[app] = pods[0].spec.node_name
    return out


def apply(real: RealCluster, ns: str, objs: list[dict]) -> None:
    import json
    real.cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                        "items": objs}))


def test_real_nodes_are_ready_beside_the_kwok_fleet(real: RealCluster) -> None:
    nodes = {n.metadata.name: n for n in real.cluster.core.list_node().items}
    for rn in real.nodes:
        node = nodes[rn.name]
        assert ready(node), f"{rn.name} not Ready"
        info = node.status.node_info
        assert info.kubelet_version == "v1.33.13"
        assert info.container_runtime_version.startswith("containerd://1.6")
        addrs = {a.type: a.address for a in node.status.addresses}
        assert addrs["InternalIP"] == rn.ip
        assert node.metadata.labels[demo.REAL_LABEL] == "true"
    kwok = [n for n in nodes.values() if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"]
    assert kwok and all(ready(n) for n in kwok), "the kwok fleet is not Ready beside the real nodes"
    # The real nodes joined in seconds (reported by the bench; here only a sanity bound).
    assert 0 < real.ready_s < 120


def test_containers_run_on_each_real_node(real: RealCluster, rn_namespace: str) -> None:
    """A pod per real node: Running in containerd, its log read through the API server (kubelet TLS both
    ways), and its own process answering on its pod IP (the host routes to every node's pod CIDR)."""
    for rn in real.nodes:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"probe-{rn.name}", "labels": {"app": "probe"}},
               "spec": {**demo._pod_spec("server", None, {}, "50m"), "nodeName": rn.name}}
        real.cluster.core.create_namespaced_pod(rn_namespace, pod)
    for rn in real.nodes:
        p = wait_for(lambda rn=rn: (p := real.cluster.core.read_namespaced_pod(f"probe-{rn.name}", rn_namespace))
                     .status.phase == "Running" and p.status.pod_ip and p, 60, f"probe pod Running on {rn.name}")
        prefix = rn.pod_cidr.rsplit(".", 2)[0]
        assert p.status.pod_ip.startswith(prefix + "."), (p.status.pod_ip, rn.pod_cidr)
        cs = p.status.container_statuses[0]
        assert cs.container_id.startswith("containerd://") and cs.image == demo.IMAGE
        logs = wait_for(lambda rn=rn: "demo server up" in (out := real.cluster.kubectl(
            "logs", "-n", rn_namespace, f"probe-{rn.name}", check=False).stdout) and out, 30, "pod log")
        assert "demo server up" in logs
        page = wait_for(lambda p=p: http_get(f"http://{p.status.pod_ip}:{demo.METRICS_PORT}/metrics"), 30,
                        "the container's metrics endpoint")
        assert scrape(page, "demo_server_connections_total") == 0


def test_dependency_between_real_pods_is_discovered_and_colocated(real: RealCluster, real_operator,
                                                                  rn_namespace: str) -> None:
    """Client and server start on different real nodes and talk over a Service (kube-proxy). The client's
    exporter counts the bytes, Prometheus scrapes the pod, the operator sees the dependency, evicts one pod
    and steers its replacement (webhook) next to the other. The Deployments stay as written."""
    from kubernetes import client

    ns = rn_namespace
    apply(real, ns, demo.pair("demo"))
    before = wait_for(lambda: (n := placement(real, ns, "demo-server", "demo-client")) and n, 90,
                      "client and server Running")
    assert before["demo-server"] != before["demo-client"], f"the scheduler put the pair together: {before}"
    assert set(before.values()) <= set(real.node_names)
    appsv1 = client.AppsV1Api(real.cluster.api)
    deploy_before = {d.metadata.name: (d.metadata.generation, d.spec.template.to_dict())
                     for d in appsv1.list_namespaced_deployment(ns).items}

    # Real traffic, counted and scraped: the series the operator's default query reads.
    query = f'sum(rate(edgeweave_flow_bytes_total{{namespace="{ns}"}}[15s]))'
    wait_for(lambda: (r := real.prom.query(query)) and float(r[0]["value"][1]) > 1e5, 60,
             "Prometheus to see the client's bytes to the server")
    t0 = time.monotonic()
    real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups",
                                                        demo.workload_group("demo"))
    together = wait_for(lambda: (n := placement(real, ns, "demo-server", "demo-client"))
                        and n["demo-server"] == n["demo-client"] and n, 90, "the pair Running on one real node")
    colocated_s = time.monotonic() - t0
    assert together["demo-server"] in before.values()
    st = wait_for(lambda: (s := (real.cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, "workloadgroups", "demo").get("status") or {})).get("movesTotal") == 1 and s,
        30, "the move recorded in status")
    (move,) = st["plan"]["moves"]
    assert move["phase"] == "Done" and move["toNode"] == together["demo-server"]
    moved_app = "demo-server" if before["demo-server"] != together["demo-server"] else "demo-client"
    (moved,) = running_pods(real, ns, moved_app)
    # The replacement was steered by the operator's webhook (the API server reached it), not rewritten in Git.
    terms = moved.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    assert terms[0].match_expressions[0].values == [together["demo-server"]]
    after = {d.metadata.name: (d.metadata.generation, d.spec.template.to_dict())
             for d in appsv1.list_namespaced_deployment(ns).items}
    assert after == deploy_before

    # The client serves again after the move: its acknowledged requests keep growing.
    (cl,) = running_pods(real, ns, "demo-client")
    url = f"http://{cl.status.pod_ip}:{demo.METRICS_PORT}/metrics"
    n0 = scrape(http_get(url), "demo_requests_total")
    wait_for(lambda: scrape(http_get(url), "demo_requests_total") > n0 + 20, 30, "client requests after the move")
    print(f"dependency_to_colocated_s={colocated_s:.1f}")


def test_edgeweave_image_built_here_runs_on_a_real_node(real: RealCluster, rn_namespace: str) -> None:
    """The edgeweave image (Debian rootfs from mmdebstrap + the wheel + the eBPF object, the Dockerfile's
    recipe) runs its entry point in a container as the Dockerfile's non-root user."""
    from .conftest import images, realnode

    img = images.build_edgeweave()
    realnode.import_image(real.nodes[:1], img.archive)  # 300 MB: only where it runs
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "edgeweave-image"},
           "spec": {"nodeName": real.nodes[0].name, "restartPolicy": "Never", "containers": [{
               "name": "edgeweave", "image": img.ref, "imagePullPolicy": "Never",
               "command": ["python3.11", "-c",
                           "import os, edgeweave.cli, edgeweave.agent.loader; "
                           "print('uid', os.getuid(), sorted(os.listdir(os.environ['EDGEWEAVE_BPF_OUT'])))"]}]}}
    real.cluster.core.create_namespaced_pod(rn_namespace, pod)
    phase = wait_for(lambda: (p := real.cluster.core.read_namespaced_pod("edgeweave-image", rn_namespace)
                              .status.phase) in ("Succeeded", "Failed") and p, 120, "the image's pod to finish")
    logs = real.cluster.kubectl("logs", "-n", rn_namespace, "edgeweave-image").stdout
    assert phase == "Succeeded", logs
    assert "uid 65532" in logs and "flows.bpf.o" in logs, logs


def test_gpujob_slices_run_in_containers_on_real_nodes(real: RealCluster, real_operator, rn_namespace: str) -> None:
    """A GpuJob's slice pods run the real slice runtime (CPU backend: no GPU here) in the edgeweave image on
    the real nodes, report their finished slices on their own pods through the API server (in-cluster
    config, the kubernetes Service via kube-proxy), and the job reaches Succeeded with every slice done
    exactly once."""
    from .conftest import images, realnode

    ns = rn_namespace
    img = images.build_edgeweave()
    realnode.import_image(real.nodes, img.archive)
    # slice_report patches its own pod: the default service account may patch pods in this namespace only.
    rbac = client_rbac(real)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "slice-report"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]})
    rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "slice-report"},
                                             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                         "name": "slice-report"},
                                             "subjects": [{"kind": "ServiceAccount", "name": "default",
                                                           "namespace": ns}]})
    spec = {"kernel": {"builtin": "saxpy", "problemSize": 16384}, "grid": [64], "block": [256],
            "vgpu": {"resource": realnode.VGPU_RESOURCE, "count": 2}, "profile": {"timePerBlockUs": 1000},
            "image": img.ref}
    real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": "sax"}, "spec": spec})
    st = wait_for(lambda: (s := (real.cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, "gpujobs", "sax").get("status") or {})).get("phase") in ("Succeeded", "Failed") and s,
        180, "the GpuJob to finish")
    pods = {p.metadata.name: p for p in real.cluster.core.list_namespaced_pod(
        ns, label_selector="edgeweave.io/gpujob=sax").items}
    logs = {n: real.cluster.kubectl("logs", "-n", ns, n, check=False).stdout for n in pods}
    assert st["phase"] == "Succeeded", (st, logs)
    assert {p.spec.node_name for p in pods.values()} <= set(real.node_names)
    # The job is Succeeded from the pods' reports; each container then exits 0 and its pod follows.
    wait_for(lambda: all(p.status.phase == "Succeeded" for p in real.cluster.core.list_namespaced_pod(
        ns, label_selector="edgeweave.io/gpujob=sax").items), 60, f"slice pods Succeeded; logs={logs}")
    assert all('"event": "finished", "backend": "cpu"' in out for out in logs.values()), logs
    done = sorted(i for p in st["pods"] for i in RangeSet.decode(p["done"]))  # status keeps ranges ("0-7")
    assert done == list(range(st["slicesTotal"])), st  # every slice done, none twice
    assert st["slicesDone"] == st["slicesTotal"] > 1

    # The job's pods keep no output (podspec runs them without --out/--verify), so each pod's own slice
    # assignment is run again, in the same image on the same node with the same env, with --verify: its
    # output elements must equal the unsliced reference.
    for name, p in pods.items():
        env = [e.to_dict() for e in p.spec.containers[0].env if e.value is not None]
        check = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"verify-{name}"},
                 "spec": {"nodeName": p.spec.node_name, "restartPolicy": "Never", "containers": [{
                     "name": "verify", "image": img.ref, "imagePullPolicy": "Never",
                     "command": ["python", "-m", "edgeweave.gpu.slice_run", "--backend", "cpu", "--verify"],
                     "env": [{"name": e["name"], "value": e["value"]} for e in env]}]}}
        real.cluster.core.create_namespaced_pod(ns, check)
    for name in pods:
        phase = wait_for(lambda name=name: (ph := real.cluster.core.read_namespaced_pod(
            f"verify-{name}", ns).status.phase) in ("Succeeded", "Failed") and ph, 120, f"verify-{name} to finish")
        out = real.cluster.kubectl("logs", "-n", ns, f"verify-{name}").stdout
        assert phase == "Succeeded" and '"verified": true' in out, out


def client_rbac(real: RealCluster):
    from kubernetes import client
    return client.RbacAuthorizationV1Api(real.cluster.api)


def test_two_server_replicas_with_a_pdb_serve_through_a_move(real: RealCluster, real_operator,
                                                             rn_namespace: str) -> None:
    """Two server replicas (a PDB keeps one) spread over the real nodes; the client's requests go through
    the Service to both. The operator moves the remote replica next to the client; the client sees no
    failed request during the move (the evicted replica drains while kube-proxy drops it)."""
    ns = rn_namespace
    apply(real, ns, demo.pair("demo", server_replicas=2))
    wait_for(lambda: len({p.spec.node_name for p in running_pods(real, ns, "demo-server")}) == 2
             and len(running_pods(real, ns, "demo-client")) == 1, 90, "two server replicas on two nodes, one client")
    (cl,) = running_pods(real, ns, "demo-client")
    url = f"http://{cl.status.pod_ip}:{demo.METRICS_PORT}/metrics"
    query = f'sum(rate(edgeweave_flow_bytes_total{{namespace="{ns}"}}[15s]))'
    wait_for(lambda: (r := real.prom.query(query)) and float(r[0]["value"][1]) > 1e5, 60, "the traffic in Prometheus")
    failed0, ok0 = scrape(http_get(url), "demo_failed_requests_total"), scrape(http_get(url), "demo_requests_total")
    real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workloadgroups",
                                                        demo.workload_group("demo", replicas_per_device=2))
    wait_for(lambda: {p.spec.node_name for p in running_pods(real, ns, "demo-server")} == {cl.spec.node_name}
             and len(running_pods(real, ns, "demo-server")) == 2, 90, "both server replicas on the client's node")
    st = wait_for(lambda: (s := (real.cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, "workloadgroups", "demo").get("status") or {})).get("movesTotal", 0) >= 1
        and all(m["phase"] == "Done" for m in s["plan"]["moves"]) and s, 30, "the move Done in status")
    ok1 = scrape(http_get(url), "demo_requests_total")
    wait_for(lambda: scrape(http_get(url), "demo_requests_total") > ok1 + 20, 30, "requests after the move")
    (same,) = running_pods(real, ns, "demo-client")
    assert same.metadata.uid == cl.metadata.uid, "the client moved: this test measures the server's move"
    failed = scrape(http_get(url), "demo_failed_requests_total") - failed0
    assert failed == 0, f"{failed} failed requests during the move ({st['plan']['moves']})"
    assert scrape(http_get(url), "demo_requests_total") > ok0
