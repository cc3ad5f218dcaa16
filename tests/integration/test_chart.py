"""The Helm chart: lints, installs into the real cluster, and its objects come up (kwok runs the pods)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=180)


def test_chart_lints(cluster: Cluster) -> None:
    res = helm(cluster, "lint", str(REPO / "charts" / "edgeweave"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_values_schema_rejects_bad_values(cluster: Cluster) -> None:
    res = helm(cluster, "template", "x", str(REPO / "charts" / "edgeweave"), "--set", "operator.replicas=0")
    assert res.returncode != 0 and "replicas" in res.stderr


def test_chart_installs_and_runs(cluster: Cluster) -> None:
    ns = "edgeweave-chart-test"
    res = helm(cluster, "install", "ew", str(REPO / "charts" / "edgeweave"), "-n", ns, "--create-namespace",
               "--set", "operator.dryRun=true", "--wait", "--timeout", "120s")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        pods = cluster.core.list_namespaced_pod(ns).items
        operators = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/component") == "operator"]
        agents = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/component") == "agent"]
        assert len(operators) == 2 and all(p.status.phase == "Running" for p in operators)
        nodes = len(cluster.core.list_node().items)
        wait_for(lambda: len([p for p in cluster.core.list_namespaced_pod(
            ns, label_selector="app.kubernetes.io/component=agent").items if p.status.phase == "Running"]) == nodes,
            60, "one agent per node")
        agent = agents[0].spec
        caps = agent.containers[0].security_context.capabilities
        assert not agent.containers[0].security_context.privileged
        assert set(caps.add) == {"NET_ADMIN", "BPF", "PERFMON", "SYS_RESOURCE"} and caps.drop == ["ALL"]
        assert "--dry-run" in operators[0].spec.containers[0].args
        peering = cluster.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "ew-edgeweave")
        assert peering["metadata"]["name"] == "ew-edgeweave"
    finally:
        helm(cluster, "uninstall", "ew", "-n", ns, "--wait")
        cluster.core.delete_namespace(ns)


def test_agent_finds_its_edgesite(cluster: Cluster, tmp_path) -> None:
    out = tmp_path / "site.json"
    res = subprocess.run([sys.executable, "-m", "edgeweave.cli", "agent-site", "--node", "edge-001-1", "--out",
                          str(out)], env=cluster.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    site = json.loads(out.read_text())
    assert site["metadata"]["name"] == "site-001" and site["spec"]["uplinks"][0]["name"] == "mpls"
    res = subprocess.run([sys.executable, "-m", "edgeweave.cli", "agent-site", "--node", "no-such-node", "--out",
                          str(out)], env=cluster.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
