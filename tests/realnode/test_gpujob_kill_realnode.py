"""A GpuJob's slice pod SIGKILLed mid-run on a real node (no dispatcher: each pod runs its planned slice
list with `edgeweave.gpu.slice_report`, the CPU runtime paced so the job lasts). The kubelet reports the
pod Failed (restartPolicy Never); the operator closes its status entry with the slices it reported
done, hands only the rest to a replacement pod (attempt 1), and the job reaches Succeeded with every
slice credited to exactly one pod attempt. The job's pods keep no output, so each attempt's credited
slices are run again in the same image on the same node with `--out` on a host path, and the output
assembled from those pieces equals the unsliced run bit for bit.
"""

from __future__ import annotations

import json
import os
import re
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
from edgeweave.gpu.dispatch_harness import unsliced_output
from edgeweave.gpu.grid import Grid, unlinearise
from edgeweave.gpu.ranges import RangeSet

from .conftest import OperatorProcess, RealCluster, start_operator, wait_for

# The first test of the session to need the edgeweave image builds it (minutes when its inputs changed).
pytestmark = [pytest.mark.realnode, pytest.mark.timeout(1500)]
GROUP, VERSION = "edgeweave.io", "v1alpha1"
PACE_US = 60000  # 60 ms per block: each pod's 96 blocks last ~6 s, a window to kill one mid-run
BLOCKS = 192
PACE_ENV = "EDGEWEAVE_CPU_PACE_US_PER_BLOCK"


@dataclass
class KillJob:
    real: RealCluster
    ns: str
    image: str
    operator: OperatorProcess
    host: Path  # verify pods' output dirs (the nodes share the host's filesystem)


@pytest.fixture(scope="module")
def kj(real: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillJob]:
    from .conftest import demo, images, realnode

    img = images.build_edgeweave()
    realnode.import_image(real.nodes, img.archive)
    ns = f"rgk-{uuid.uuid4().hex[:8]}"
    real.cluster.core.create_namespace({"metadata": {"name": ns}})
    host = real.run_dir / "gpujob-kill" / ns
    host.mkdir(parents=True, exist_ok=True)
    op = None
    try:
        wait_for(lambda: real.cluster.core.read_namespaced_service_account("default", ns), 30, "default SA")
        rbac = [o for o in demo.gpujob("unused") if o["kind"] != "GpuJob"]  # slice_report patches its own pod
        real.cluster.kubectl("apply", "-n", ns, "-f", "-",
                             input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))
        # An operator for this namespace only, pacing its job pods' CPU runtime.
        op = start_operator(real.cluster, tmp_path_factory.mktemp("rgk-operator"), "--namespace", ns, env={
            "EDGEWEAVE_IMAGE": img.ref, "EDGEWEAVE_GPU_JOB_POD_ENV": json.dumps({PACE_ENV: str(PACE_US)})})
        yield KillJob(real=real, ns=ns, image=img.ref, operator=op, host=host)
    finally:
        if op is not None:
            op.stop()
        real.cluster.core.delete_namespace(ns)
        try:
            wait_for(lambda: not real.cluster.core.list_namespaced_pod(ns).items, 120, "the test's pods gone")
            shutil.rmtree(host, ignore_errors=True)
        except AssertionError as exc:
            print(f"left {host}: {exc}")


def _node(real: RealCluster, name: str) -> Any:
    return next(n for n in real.nodes if n.name == name)


def _kill(real: RealCluster, pod: Any) -> None:
    """SIGKILL the pod's container through its node's containerd (no grace, no SIGTERM)."""
    cid = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    subprocess.run(["ctr", "--address", str(_node(real, pod.spec.node_name).sock), "-n", "k8s.io", "task", "kill",
                    "-s", "SIGKILL", cid], check=True, capture_output=True, timeout=30)


def _env(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def _verify_pod(kj: KillJob, name: str, src: Any, credited: RangeSet) -> dict[str, Any]:
    """Runs `credited` slices of `src`'s job (its spec and slice size, same image and node), unpaced, with
    --out on a host path."""
    env = _env(src)
    env.pop(PACE_ENV, None)
    env["EDGEWEAVE_SLICES"] = re.sub(r"slices=[^;]*$", f"slices={credited.encode()}", env["EDGEWEAVE_SLICES"])
    out = kj.host / name
    out.mkdir(mode=0o777, exist_ok=True)
    os.chmod(out, 0o777)  # the image's user (uid 65532) writes there; kubelet would make it root's
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": src.spec.node_name, "restartPolicy": "Never",
                     "volumes": [{"name": "out", "hostPath": {"path": str(out), "type": "Directory"}}],
                     "containers": [{"name": "v", "image": kj.image, "imagePullPolicy": "Never",
                                     "command": ["python", "-m", "edgeweave.gpu.slice_run", "--backend", "cpu",
                                                 "--verify", "--out", "/out"],
                                     "env": [{"name": k, "value": v} for k, v in env.items()],
                                     "volumeMounts": [{"name": "out", "mountPath": "/out"}]}]}}


def test_killed_slice_pod_slices_reassigned_done_once_output_identical(kj: KillJob, tmp_path: Path) -> None:
    real, ns = kj.real, kj.ns
    core, custom = real.cluster.core, real.cluster.custom
    spec = {"kernel": {"builtin": "saxpy", "problemSize": BLOCKS * 256}, "grid": [BLOCKS], "block": [256],
            "vgpu": {"resource": "edgeweave.io/vgpu", "count": 2}, "latencyTargetMs": 250.0,
            "profile": {"timePerBlockUs": PACE_US}, "image": kj.image}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": "k"}, "spec": spec})
    status = lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, "gpujobs", "k").get("status") or {}  # noqa: E731

    def reported(name: str) -> RangeSet:
        ann = (core.read_namespaced_pod(name, ns).metadata.annotations or {}).get("edgeweave.io/slices-done", "")
        return RangeSet.decode(ann) if ann else RangeSet()

    st0 = wait_for(lambda: (s := status()).get("slicesTotal") and s, 120, "the plan in status")
    mine = RangeSet.decode(next(p["slices"] for p in st0["pods"] if p["name"] == "k-s0-a0"))
    assert len(mine) >= 4, st0  # enough slices to be killed in the middle of
    # Killed once some of its slices are reported done and most are not.
    wait_for(lambda: 2 <= len(reported("k-s0-a0")) <= len(mine) - 2, 240, "k-s0-a0 reporting its first slices")
    victim = core.read_namespaced_pod("k-s0-a0", ns)
    _kill(real, victim)
    at_kill = reported("k-s0-a0")
    wait_for(lambda: core.read_namespaced_pod("k-s0-a0", ns).status.phase == "Failed", 60,
             "the kubelet to report k-s0-a0 Failed")
    st = wait_for(lambda: (s := status()).get("phase") in ("Succeeded", "Failed") and s, 240, "the GpuJob to finish")
    events = [e for e in core.list_namespaced_event(ns).items if e.involved_object.name == "k"]
    reasons = {e.reason: e.message for e in events}
    assert st["phase"] == "Succeeded", (st, reasons)
    entries = {p["name"]: p for p in st["pods"]}
    assert set(entries) == {"k-s0-a0", "k-s0-a1", "k-s1-a0"}, entries
    assert entries["k-s0-a0"]["phase"] == "Failed"
    dead_done = RangeSet.decode(entries["k-s0-a0"]["done"])
    # What the dead pod reported before the kill is credited to it (a later report cannot have got out).
    assert at_kill.difference(dead_done) == RangeSet() and len(dead_done) < len(mine), (at_kill.encode(), entries)
    # Its replacement got exactly the slices it had not reported done; nothing it had is rerun.
    assert RangeSet.decode(entries["k-s0-a1"]["slices"]) == mine.difference(dead_done), entries
    assert "SlicePodFailed" in reasons and "Rescheduled" in reasons, reasons
    # Done once: the credited sets are disjoint and cover every slice.
    credited = {n: RangeSet.decode(e["done"]) for n, e in entries.items()}
    assert sum(len(c) for c in credited.values()) == st["slicesTotal"] == st["slicesDone"], credited
    union = RangeSet()
    for c in credited.values():
        union = union.union(c)
    assert union == RangeSet.span(0, st["slicesTotal"]), union.encode()
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(ns, label_selector="edgeweave.io/gpujob=k").items}
    assert {p.spec.node_name for p in pods.values()} <= set(real.node_names)
    wait_for(lambda: core.read_namespaced_pod("k-s0-a1", ns).status.phase == "Succeeded"
             and core.read_namespaced_pod("k-s1-a0", ns).status.phase == "Succeeded", 60, "the other pods Succeeded")

    # The output: each attempt's credited slices, run again where that attempt ran, assembled.
    for name, c in credited.items():
        core.create_namespaced_pod(ns, _verify_pod(kj, f"v-{name}", pods[name], c))
    for name in credited:
        phase = wait_for(lambda name=name: (ph := core.read_namespaced_pod(f"v-{name}", ns).status.phase)
                         in ("Succeeded", "Failed") and ph, 180, f"v-{name} to finish")
        log = real.cluster.kubectl("logs", "-n", ns, f"v-{name}", check=False).stdout
        assert phase == "Succeeded" and '"verified": true' in log, log
    twin = make_kernel("saxpy", BLOCKS * 256, Grid(BLOCKS), Grid(256), 0)
    merged = np.zeros_like(np.asarray(twin.out)).ravel()
    size = st["sliceBlocks"]
    for name, c in credited.items():
        piece = np.load(kj.host / f"v-{name}" / "output.npy").ravel()
        for lo, hi in c.ranges():
            idx = twin.output_elements(unlinearise(np.arange(lo * size, min(hi * size, BLOCKS), dtype=np.uint64),
                                                   twin.grid))
            merged[idx] = piece[idx]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({k: v for k, v in spec.items() if k != "image"}))
    assert np.array_equal(merged, unsliced_output(spec_file, tmp_path / "whole").ravel())
    print(f"real pods: k-s0-a0 SIGKILLed with {len(dead_done)}/{len(mine)} of its slices reported done; "
          f"k-s0-a1 ran the other {len(mine) - len(dead_done)}; {st['slicesTotal']} slices of {size} blocks, "
          f"each credited once; output assembled from the credited slices identical to the unsliced run")
