"""The chart's GPU slice dispatcher in the real cluster: one per selected GPU node, no API token,
socket and journal on host paths, a key Secret that survives `helm upgrade`, and the operator wired
to it (kwok runs the pods' status, not their processes)."""

from __future__ import annotations

import base64

import pytest

from .conftest import REPO, Cluster, wait_for
from .test_chart import helm

pytestmark = pytest.mark.integration

NS = "edgeweave-gpu-chart"
# kwok GPU nodes carry no GPU Operator label: select one by name instead (null drops the default).
SELECT = ["--set", "gpuDispatcher.nodeSelector.nvidia\\.com/gpu\\.present=null",
          "--set", "gpuDispatcher.nodeSelector.kubernetes\\.io/hostname=edge-002-0",
          "--set", "gpuDispatcher.policy=Priority", "--set", "operator.dryRun=true"]


def _key(cluster: Cluster) -> bytes:
    s = cluster.core.read_namespaced_secret("ew-edgeweave-gpu-dispatcher", NS)
    return base64.b64decode(s.data["key"])


def test_dispatcher_daemonset_runs_on_the_gpu_node_and_keeps_its_key(cluster: Cluster) -> None:
    chart = str(REPO / "charts" / "edgeweave")
    res = helm(cluster, "install", "ew", chart, "-n", NS, "--create-namespace", *SELECT, "--wait", "--timeout", "120s")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        sel = "app.kubernetes.io/component=gpu-dispatcher"
        pods = wait_for(lambda: [p for p in cluster.core.list_namespaced_pod(NS, label_selector=sel).items
                                 if p.status.phase == "Running"], 60, "dispatcher pod Running")
        assert [p.spec.node_name for p in pods] == ["edge-002-0"]
        spec = pods[0].spec
        assert spec.automount_service_account_token is False
        c = spec.containers[0]
        assert c.command == ["python", "-m", "edgeweave.gpu.dispatcher"] and "--policy=Priority" in c.args
        sc = c.security_context
        assert sc.read_only_root_filesystem and sc.capabilities.drop == ["ALL"] and not sc.allow_privilege_escalation
        # uid 0 only to own the kubelet's hostPath dirs; SYS_NICE (SCHED_RR for grants) is its one capability.
        assert sc.capabilities.add == ["SYS_NICE"] and (sc.run_as_user, sc.run_as_group) == (0, 65532)
        assert "--rt-priority=1" in c.args and "--output-dir=/var/lib/edgeweave/gpu/out" in c.args
        assert not c.ports  # listens on nothing but its unix socket
        host = {v.name: v.host_path.path for v in spec.volumes if v.host_path}
        assert host == {"socket": "/var/run/edgeweave/gpu", "state": "/var/lib/edgeweave/gpu/state",
                        "output": "/var/lib/edgeweave/gpu/out"}
        key = _key(cluster)
        assert len(key) >= 32
        op = next(p for p in cluster.core.list_namespaced_pod(
            NS, label_selector="app.kubernetes.io/component=operator").items)
        env = {e.name: e.value for e in op.spec.containers[0].env}
        assert env["EDGEWEAVE_GPU_DISPATCHER_KEY_FILE"] == "/etc/edgeweave/gpu-dispatcher/key"
        assert env["EDGEWEAVE_GPU_DISPATCHER_SOCKET_DIR"] == "/var/run/edgeweave/gpu"
        # An upgrade keeps the key: a new one would lock out the pods of running jobs.
        res = helm(cluster, "upgrade", "ew", chart, "-n", NS, *SELECT, "--set", "gpuDispatcher.slots=2")
        assert res.returncode == 0, res.stdout + res.stderr
        assert _key(cluster) == key
        # Disabled: no dispatcher, no key, and the operator is not told about one.
        res = helm(cluster, "upgrade", "ew", chart, "-n", NS, *SELECT, "--set", "gpuDispatcher.enabled=false")
        assert res.returncode == 0, res.stdout + res.stderr
        from kubernetes import client

        assert not client.AppsV1Api(cluster.api).list_namespaced_daemon_set(NS, label_selector=sel).items
    finally:
        helm(cluster, "uninstall", "ew", "-n", NS, "--wait")
        cluster.core.delete_namespace(NS)
