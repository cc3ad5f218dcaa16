"""The GPU slice dispatcher on a real node, deployed from the chart's template, with GpuJob pods that
are real pods: the operator creates them (dispatcher mode), the kubelet runs them in containerd, and
each one talks to the node's dispatcher over the unix socket on the host path, authenticated by its
job's token. CPU runtime (no GPU here), slices paced to last (EDGEWEAVE_CPU_PACE_US_PER_BLOCK).

- three GpuJobs with different `spec.policy` and priorities on one GPU: the grants follow the GPU's
  policy (Priority), checked by the oracle that does not share the dispatcher's ranking code;
- a job pod's container and the dispatcher's container are SIGKILLed mid-job (through containerd):
  the operator replaces the pod (its share is resumed, not restarted), the kubelet restarts the
  dispatcher, which replays its journal from the host path; the output assembled from the committed
  grants on the node equals the unsliced run, bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeweave.gpu.builtins import make_kernel
from edgeweave.gpu.dispatch_auth import job_key, job_token, output_subdir
from edgeweave.gpu.dispatch_harness import Client, policy_violations, unsliced_output
from edgeweave.gpu.dispatch_output import assemble, commits
from edgeweave.gpu.grid import Grid

from .conftest import REPO, OperatorProcess, RealCluster, start_operator, wait_for

# The module's first test pays for building the edgeweave image when its inputs changed (~5 min, more
# on a loaded box: once measured over 10 min at load average 22), on top of its own ~1 min.
pytestmark = [pytest.mark.realnode, pytest.mark.timeout(1500)]
GROUP, VERSION = "edgeweave.io", "v1alpha1"
# Offered by the dispatcher's node only, so every job pod lands where the dispatcher is.
GPU_RESOURCE = "edgeweave.io/vgpu-dispatch"
PACE_US = 3000  # each block takes >= 3 ms in the CPU runtime: a window to kill things mid-job
SEL = "app.kubernetes.io/component=gpu-dispatcher"


@dataclass
class GpuNode:
    real: RealCluster
    node: Any  # realnode.Node
    ns: str
    host: Path  # socket/, state/, out/ below it: the chart's host paths
    key: bytes
    operator: OperatorProcess
    image: str

    @property
    def socket(self) -> Path:
        return self.host / "socket" / "dispatch.sock"

    @property
    def state(self) -> Path:
        return self.host / "state"

    def out_dir(self, name: str, uid: str) -> Path:
        return self.host / "out" / output_subdir(self.ns, name, uid)

    def dispatcher_pod(self) -> Any:
        return dispatcher_pod(self.real, self.ns)

    def kill_container(self, pod: Any) -> None:
        """SIGKILL the pod's container through the node's containerd (no grace, no SIGTERM)."""
        cid = pod.status.container_statuses[0].container_id.split("://", 1)[1]
        subprocess.run(["ctr", "--address", str(self.node.sock), "-n", "k8s.io", "task", "kill", "-s", "SIGKILL",
                        cid], check=True, capture_output=True, timeout=30)

    def decisions(self) -> list[dict[str, Any]]:
        path = self.state / "decisions.jsonl"
        lines = path.read_text().split("\n")[:-1] if path.exists() else []
        return [json.loads(x) for x in lines if x.strip()]

    def gpujob(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.real.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "gpujobs", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": name},
            "spec": {**spec, "image": self.image}})

    def status(self, name: str) -> dict[str, Any]:
        return self.real.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, "gpujobs", name).get("status") or {}

    def pod_logs(self, name: str) -> str:
        return self.real.cluster.kubectl("logs", "-n", self.ns, name, check=False).stdout


def job_spec(blocks: int, target_ms: float, *, policy: str = "Fifo", priority: int = 0, count: int = 1,
             kernel: str = "saxpy") -> dict[str, Any]:
    return {"kernel": {"builtin": kernel, "problemSize": blocks * 256}, "grid": [blocks], "block": [256],
            "vgpu": {"resource": GPU_RESOURCE, "count": count}, "policy": policy, "priority": priority,
            "latencyTargetMs": target_ms, "profile": {"timePerBlockUs": PACE_US}}


def dispatcher_pod(real: RealCluster, ns: str) -> Any:
    pods = [p for p in real.cluster.core.list_namespaced_pod(ns, label_selector=SEL).items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return pods[0] if len(pods) == 1 else None


def _status_patch(real: RealCluster, node: str, op: str, value: str | None = None) -> None:
    path = f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}"
    patch = [{"op": op, "path": path, **({"value": value} if value is not None else {})}]
    real.cluster.kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p", json.dumps(patch),
                         check=op == "add")


@pytest.fixture(scope="module")
def gpu(real: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpuNode]:
    from .conftest import images, realnode

    node = real.nodes[0]
    img = images.build_edgeweave()
    realnode.import_image([node], img.archive)
    _status_patch(real, node.name, "add", "4")
    ns = f"gpd-{uuid.uuid4().hex[:8]}"
    real.cluster.core.create_namespace({"metadata": {"name": ns}})
    host = real.run_dir / "gpu-dispatcher" / ns  # the host paths of this test's dispatcher (nodes share the host fs)
    op = None
    try:
        values = [f"image.repository={img.ref.rsplit(':', 1)[0]}", f"image.tag={img.ref.rsplit(':', 1)[1]}",
                  "image.pullPolicy=Never", "operator.prometheusUrl=",  # nothing to reach outside our namespaces
                  "gpuDispatcher.nodeSelector.nvidia\\.com/gpu\\.present=null",
                  f"gpuDispatcher.nodeSelector.kubernetes\\.io/hostname={node.name}",
                  "gpuDispatcher.policy=Priority",
                  f"gpuDispatcher.hostSocketDir={host / 'socket'}", f"gpuDispatcher.hostStateDir={host / 'state'}",
                  f"gpuDispatcher.hostOutputDir={host / 'out'}",
                  "gpuDispatcher.extraArgs={--decision-log=/var/lib/edgeweave/gpu/state/decisions.jsonl,--lease-s=5}"]
        rendered = subprocess.run([str(real.cluster.bin_dir / "helm"), "template", "ew", str(REPO / "charts" / "edgeweave"),
                                   "-n", ns, "--kube-version", "1.33.0", "-s", "templates/gpu-dispatcher.yaml",
                                   *(a for v in values for a in ("--set", v))],
                                  capture_output=True, text=True, check=True, timeout=120).stdout
        real.cluster.kubectl("apply", "-n", ns, "-f", "-", input=rendered)
        pod = wait_for(lambda: dispatcher_pod(real, ns), 120, "the dispatcher pod Running")
        assert pod.spec.node_name == node.name
        wait_for(lambda: (host / "socket" / "dispatch.sock").exists(), 60, "the dispatcher's socket on the host path")
        import base64

        key = base64.b64decode(real.cluster.core.read_namespaced_secret("ew-edgeweave-gpu-dispatcher", ns).data["key"])
        key_file = tmp_path_factory.mktemp("gpd-key") / "key"
        key_file.write_bytes(key)
        os.chmod(key_file, 0o600)
        # The operator as the chart wires it to the dispatcher (key, host paths), for this namespace only.
        op = start_operator(real.cluster, tmp_path_factory.mktemp("gpd-operator"), "--namespace", ns, env={
            "EDGEWEAVE_IMAGE": img.ref, "EDGEWEAVE_GPU_DISPATCHER_KEY_FILE": str(key_file),
            "EDGEWEAVE_GPU_DISPATCHER_SOCKET_DIR": str(host / "socket"),
            "EDGEWEAVE_GPU_OUTPUT_DIR": str(host / "out"),
            "EDGEWEAVE_GPU_JOB_POD_ENV": json.dumps({"EDGEWEAVE_CPU_PACE_US_PER_BLOCK": str(PACE_US)})})
        yield GpuNode(real=real, node=node, ns=ns, host=host, key=key, operator=op, image=img.ref)
    finally:
        if op is not None:
            op.stop()
        real.cluster.core.delete_namespace(ns)
        _status_patch(real, node.name, "remove")
        try:  # the host paths go once no pod of the test uses them
            wait_for(lambda: not real.cluster.core.list_namespaced_pod(ns).items, 120, "the test's pods gone")
            shutil.rmtree(host, ignore_errors=True)
        except AssertionError as exc:
            print(f"left {host}: {exc}")


def _finished(gpu: GpuNode, name: str, timeout: float) -> dict[str, Any]:
    return wait_for(lambda: (s := gpu.status(name)).get("phase") in ("Succeeded", "Failed") and s, timeout,
                    f"GpuJob {name} to finish")


def _identical(gpu: GpuNode, name: str, spec: dict[str, Any], uid: str, parts: list[str], scratch: Path) -> bool:
    blocks = spec["grid"][0]
    twin = make_kernel(spec["kernel"]["builtin"], blocks * 256, Grid(blocks), Grid(256), 0)
    merged = assemble(gpu.state, [f"{job_key(gpu.ns, name, uid)}#{p}" for p in parts], gpu.out_dir(name, uid), twin)
    scratch.mkdir(parents=True, exist_ok=True)
    spec_file = scratch / "spec.json"
    spec_file.write_text(json.dumps({k: v for k, v in spec.items() if k != "image"}))
    return bool(np.array_equal(merged, unsliced_output(spec_file, scratch / "whole")))


def test_three_gpujobs_real_pods_granted_in_policy_order(gpu: GpuNode, tmp_path: Path) -> None:
    gate_uid = str(uuid.uuid4())
    gate_spec = job_spec(64, 500.0)
    # The gate holds the GPU's only slot until the three jobs' pods have all started and wait.
    gate = Client.at(gpu.socket, "gpd-gate", "gate", gate_uid, job_token(gpu.key, "gpd-gate", "gate", gate_uid),
                     gate_spec)
    assert gate.hello["ok"] and gate.hello["policy"] == "Priority", gate.hello
    held = gate.call({"op": "next"})
    assert "grant" in held, held
    jobs = {"low": job_spec(192, 30.0, policy="Fifo", priority=1),
            "high": job_spec(192, 30.0, policy="ShortestFirst", priority=100),
            "mid": job_spec(192, 30.0, policy="FairShare", priority=50)}
    uids = {name: gpu.gpujob(name, spec)["metadata"]["uid"] for name, spec in jobs.items()}
    try:
        wait_for(lambda: gate.call({"op": "progress"})["waiting_jobs"] >= 3, 240,
                 "the three jobs' pods to start and wait for a grant")
    finally:
        gate.call({"op": "release", "id": held["grant"]["id"]})
        gate.close()
    states = {name: _finished(gpu, name, 240) for name in jobs}
    pods = {p.metadata.name: p for p in gpu.real.cluster.core.list_namespaced_pod(
        gpu.ns, label_selector="app.kubernetes.io/component=gpujob").items}
    logs = {n: gpu.pod_logs(n) for n in pods}
    assert all(s["phase"] == "Succeeded" for s in states.values()), (states, logs)
    for name in jobs:
        (pod,) = [p for n, p in pods.items() if n.startswith(f"{name}-s0-")]
        assert pod.spec.node_name == gpu.node.name  # a real pod on the dispatcher's node
        assert pod.spec.containers[0].command == ["python", "-m", "edgeweave.gpu.slice_worker"]
        hello = next(json.loads(x) for x in logs[pod.metadata.name].splitlines() if '"event": "hello"' in x)
        assert hello["policy"] == "Priority", hello  # the GPU's rule, whatever the job asked for
    decisions = [d for d in gpu.decisions() if not d["job"].startswith("gpd-gate/")]
    contested = [d for d in decisions if len(d["candidates"]) > 1]
    assert len(contested) >= 5, decisions[:5]
    assert policy_violations(decisions) == 0
    order = [d["job"].split("/")[1] for d in decisions]
    last = {name: max(i for i, j in enumerate(order) if j == name) for name in jobs}
    assert sorted(last, key=last.__getitem__) == ["high", "mid", "low"], order
    for name, spec in jobs.items():  # and each job's output is the unsliced run's
        assert _identical(gpu, name, spec, uids[name], ["s0"], tmp_path / name)
    runs = [[order[0], 1]]
    for j in order[1:]:
        runs[-1][1] += 1 if j == runs[-1][0] else 0
        if j != runs[-1][0]:
            runs.append([j, 1])
    print(f"real pods, Priority: {len(decisions)} grants, {len(contested)} contested, order "
          f"{' '.join(f'{j}x{n}' for j, n in runs)}; dispatcher: "
          f"{_log_line(gpu, 'scheduling:')}")


def test_killed_job_pod_and_dispatcher_real_pods_output_identical(gpu: GpuNode, tmp_path: Path) -> None:
    spec = job_spec(3072, 30.0, kernel="stencil", count=2)
    uid = gpu.gpujob("k", spec)["metadata"]["uid"]
    part0 = f"{job_key(gpu.ns, 'k', uid)}#s0"
    core = gpu.real.cluster.core
    n = lambda: len(commits(gpu.state, part0))  # noqa: E731 - committed grants of pod 0's share
    wait_for(lambda: n() >= 10, 240, "10 commits of pod 0's share")
    victim = core.read_namespaced_pod("k-s0-a0", gpu.ns)
    gpu.kill_container(victim)
    at_pod_kill = n()
    # The operator replaces the failed pod; the replacement resumes its share at the dispatcher.
    wait_for(lambda: core.read_namespaced_pod("k-s0-a1", gpu.ns).status.phase == "Running", 180,
             "the replacement pod k-s0-a1 Running")
    wait_for(lambda: n() >= at_pod_kill + 5, 120, "the replacement committing")
    disp = gpu.dispatcher_pod()
    restarts = disp.status.container_statuses[0].restart_count
    gpu.kill_container(disp)
    at_dispatcher_kill = n()
    st = _finished(gpu, "k", 300)
    assert st["phase"] == "Succeeded", st
    after = core.read_namespaced_pod(disp.metadata.name, gpu.ns)
    assert after.status.container_statuses[0].restart_count > restarts  # the kubelet restarted the dispatcher
    assert n() > at_dispatcher_kill  # ... and pod 0's share went on after it
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(gpu.ns, label_selector="edgeweave.io/gpujob=k").items}
    assert {e["name"]: e["phase"] for e in st["pods"]}["k-s0-a0"] == "Failed", st["pods"]
    assert pods["k-s0-a0"].status.phase == "Failed"
    assert pods["k-s0-a1"].status.phase == "Succeeded" and pods["k-s1-a0"].status.phase == "Succeeded"
    assert all(p.spec.node_name == gpu.node.name for p in pods.values())
    # The replacement was running when the dispatcher died: it reconnected and went on.
    replacement = [json.loads(x) for x in gpu.pod_logs("k-s0-a1").splitlines() if x.startswith("{")]
    assert any(e.get("event") == "done" and e["reconnects"] >= 1 for e in replacement), replacement[-3:]
    # Exactly once: every block of both shares committed once, across both pods of share 0 and both
    # dispatcher lives, and the output assembled from the committed grants is the unsliced run's.
    spans = sorted((c["lo"], c["hi"]) for p in ("s0", "s1")
                   for c in commits(gpu.state, f"{job_key(gpu.ns, 'k', uid)}#{p}"))
    assert spans[0][0] == 0 and spans[-1][1] == 3072
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert _identical(gpu, "k", spec, uid, ["s0", "s1"], tmp_path)
    print(f"real pods, kills: pod k-s0-a0 SIGKILLed after {at_pod_kill} commits of its share, the dispatcher "
          f"after {at_dispatcher_kill}; {len(spans)} commits in all; output identical to the unsliced run")


def _log_line(gpu: GpuNode, marker: str) -> str:
    pod = gpu.dispatcher_pod()
    out = gpu.real.cluster.kubectl("logs", "-n", gpu.ns, pod.metadata.name, check=False).stdout if pod else ""
    return next((x.split(marker, 1)[1].strip() for x in out.splitlines() if marker in x), "?")
