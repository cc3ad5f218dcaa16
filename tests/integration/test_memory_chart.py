"""The chart's memory parts: the agent DaemonSet runs the memory server with its TLS Secret, the operator
points replacements at the pre-staged copies, and bad memory values are refused by the schema."""

from __future__ import annotations

import pytest
import yaml

from .conftest import REPO, Cluster
from .test_chart import helm

pytestmark = pytest.mark.integration
CHART = str(REPO / "charts" / "edgeweave")


def render(cluster: Cluster, *sets: str) -> tuple[int, list[dict], str]:
    args = ["template", "ew", CHART, "--kube-version", "1.33.0"]
    for s in sets:
        args += ["--set", s]
    res = helm(cluster, *args)
    return res.returncode, [d for d in yaml.safe_load_all(res.stdout) if d], res.stderr


def test_agent_runs_the_memory_server_with_its_tls_secret(cluster: Cluster) -> None:
    rc, docs, err = render(cluster, "agent.memory.enabled=true", "agent.memory.store=s3://baselines/prod",
                           "agent.memory.storeSecret=s3-creds")
    assert rc == 0, err
    ds = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "ew-edgeweave-agent")
    pod = ds["spec"]["template"]["spec"]
    mem = next(c for c in pod["containers"] if c["name"] == "memory")
    args = mem["args"]
    assert args[:2] == ["memory", "serve"] and "--listen=$(NODE_IP):7470" in args
    assert "--store=s3://baselines/prod" in args and "--require-pod-cgroup" in args
    assert "--prestage-node=$(NODE_NAME)" in args and "--prestage-cache=/dev/shm/edgeweave/prestaged" in args
    assert {"--tls-cert=/var/run/edgeweave/memory-tls/tls.crt", "--tls-key=/var/run/edgeweave/memory-tls/tls.key",
            "--tls-ca=/var/run/edgeweave/memory-tls/ca.crt"} <= set(args)
    assert mem["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert pod["hostPID"] is True  # SO_PEERCRED pids of workloads, for the pod-cgroup check
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["memory-tls"]["secret"]["secretName"] == "edgeweave-memory-tls"  # expected, not created
    assert not [d for d in docs if d["kind"] == "Certificate"]
    op = next(d for d in docs if d["kind"] == "Deployment" and "operator" in d["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGEWEAVE_MEMORY_PRESTAGE_HOST_DIR"] == "/dev/shm/edgeweave/prestaged"


def test_cert_manager_certificate_and_defaults_off(cluster: Cluster) -> None:
    rc, docs, err = render(cluster, "agent.memory.enabled=true", "agent.memory.store=/var/lib/edgeweave/baselines",
                           "agent.memory.tls.certManager.enabled=true", "agent.memory.tls.certManager.issuerRef.name=ca",
                           "agent.memory.tls.certManager.issuerRef.kind=ClusterIssuer")
    assert rc == 0, err
    cert = next(d for d in docs if d["kind"] == "Certificate")
    assert cert["spec"]["secretName"] == "edgeweave-memory-tls"
    assert cert["spec"]["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer"}
    assert set(cert["spec"]["usages"]) == {"server auth", "client auth"}
    # default: no memory container, no hostPID, no pre-stage env
    rc, docs, err = render(cluster)
    assert rc == 0, err
    ds = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "ew-edgeweave-agent")
    pod = ds["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["agent"] and "hostPID" not in pod


@pytest.mark.parametrize(("sets", "needle"), [
    (["agent.memory.enabled=true"], "agent.memory.store"),
    (["agent.memory.enabled=true", "agent.memory.store=http://x"], "store"),
    (["agent.memory.enabled=true", "agent.memory.store=/x", "agent.memory.prestage.rate=fast"], "rate"),
    (["agent.memory.enabled=true", "agent.memory.store=/x", "agent.memory.tls.certManager.enabled=true"],
     "issuerRef"),
])
def test_bad_memory_values_are_refused_naming_the_field(cluster: Cluster, sets: list[str], needle: str) -> None:
    rc, _, err = render(cluster, *sets)
    assert rc != 0 and needle in err, err
