"""GpuJob end to end against the real control plane: plan -> job pods on the GPU nodes -> progress
from the pods' annotation (written by the real slice runtime) -> Succeeded; lost and failed pods have
only their unfinished slices rescheduled.

kwok runs no processes: a pod's completion is simulated the way kwok allows, by marking the pod
`kwok.x-k8s.io/status=custom` (kwok then leaves its status alone) and writing its phase through the
status subresource, as a kubelet would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeweave.gpu.plan import decode_slices
from edgeweave.gpu.ranges import RangeSet

from .conftest import REPO, Cluster, OperatorProcess, fresh_namespace, start_operator, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION = "edgeweave.io", "v1alpha1"
GPU_NODES = {"edge-002-0", "edge-002-1"}
# 64 blocks of 1 ms with a 10 ms target at the assumed load 0.5 -> slices of 4 blocks: 16 slices, 8 per pod.
SPEC = {"kernel": {"builtin": "saxpy", "problemSize": 16384}, "grid": [64], "block": [256],
        "vgpu": {"resource": "nvidia.com/gpu", "count": 2}, "profile": {"timePerBlockUs": 1000}}


def _create_job(cluster: Cluster, namespace: str, name: str, spec: dict | None = None) -> dict:
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "gpujobs", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "metadata": {"name": name}, "spec": spec or SPEC})


def _ix(runs: str) -> list[int]:
    return list(RangeSet.decode(runs))


def _job(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "gpujobs", name)


def _status(cluster: Cluster, namespace: str, name: str) -> dict:
    return _job(cluster, namespace, name).get("status") or {}


def _pods(cluster: Cluster, namespace: str, job: str) -> dict:
    return {p.metadata.name: p for p in
            cluster.core.list_namespaced_pod(namespace, label_selector=f"edgeweave.io/gpujob={job}").items}


def _slices(pod) -> list[int]:
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    return [s.index for s in decode_slices(env["EDGEWEAVE_SLICES"])]


def _wait_running(cluster: Cluster, namespace: str, job: str, names: set[str]) -> dict:
    def running():
        pods = _pods(cluster, namespace, job)
        if names <= set(pods) and all(pods[n].status.phase == "Running" for n in names):
            return pods
        return None
    return wait_for(running, 90, f"pods {sorted(names)} Running")


def _report_done(cluster: Cluster, namespace: str, pod: str, runs: str) -> None:
    cluster.core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {"edgeweave.io/slices-done": runs}}})


def _finish(cluster: Cluster, namespace: str, pod: str, phase: str) -> None:
    """What a kubelet would report when the container exits (kwok told to keep out of it first)."""
    cluster.core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {"kwok.x-k8s.io/status": "custom"}}})
    cluster.core.patch_namespaced_pod_status(pod, namespace, {"status": {"phase": phase}})


def _events(cluster: Cluster, namespace: str, name: str, reason: str) -> list:
    return [e for e in cluster.core.list_namespaced_event(namespace).items
            if e.involved_object.name == name and e.involved_object.kind == "GpuJob" and e.reason == reason]


def _pod_entry(status: dict, name: str) -> dict:
    return next(p for p in status["pods"] if p["name"] == name)


def test_gpujob_runs_as_slice_pods_and_succeeds(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    job = _create_job(cluster, namespace, "sax")
    uid = job["metadata"]["uid"]
    pods = _wait_running(cluster, namespace, "sax", {"sax-s0-a0", "sax-s1-a0"})
    assert set(pods) == {"sax-s0-a0", "sax-s1-a0"}
    covered: list[int] = []
    for p in pods.values():
        c = p.spec.containers[0]
        assert c.resources.limits == {"nvidia.com/gpu": "1"} and c.resources.requests == {"nvidia.com/gpu": "1"}
        (owner,) = p.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("GpuJob", "sax", uid, True)
        assert p.metadata.labels["edgeweave.io/slice-pod"] in ("0", "1")
        assert p.metadata.labels["edgeweave.io/attempt"] == "0"
        assert p.spec.node_name in GPU_NODES and p.spec.restart_policy == "Never"
        covered += _slices(p)
    assert sorted(covered) == list(range(16))  # every slice exactly once
    assert pods["sax-s0-a0"].spec.node_name != pods["sax-s1-a0"].spec.node_name  # one GPU each

    st = _status(cluster, namespace, "sax")
    assert (st["sliceBlocks"], st["slicesTotal"]) == (4, 16)
    planned = next(c for c in st["conditions"] if c["type"] == "Planned")
    assert "16 slices of 4 blocks over 2 pod(s)" in planned["message"] and "load unknown" in planned["message"]
    assert {p["name"]: _ix(p["slices"]) for p in st["pods"]} == {n: _slices(p) for n, p in pods.items()}

    # Pod 0's real slice runtime (CPU backend here) runs the pod's own env and reports on its pod.
    env = {e.name: e.value for e in pods["sax-s0-a0"].spec.containers[0].env if e.value is not None}
    env.update({"EDGEWEAVE_POD_NAME": "sax-s0-a0", "EDGEWEAVE_POD_NAMESPACE": namespace})
    run = subprocess.run([sys.executable, "-m", "edgeweave.gpu.slice_report", "--report-interval", "0",
                          "--", "--backend", "cpu", "--verify"],
                         env={**os.environ, **env, **cluster.env()}, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"verified": true' in run.stdout
    annotated = cluster.core.read_namespaced_pod("sax-s0-a0", namespace).metadata.annotations
    assert annotated["edgeweave.io/slices-done"] == "0-7"
    st = wait_for(lambda: (s := _status(cluster, namespace, "sax")).get("slicesDone") == 8 and s, 30,
                  "8 slices done from pod 0's annotation")
    assert _pod_entry(st, "sax-s0-a0")["done"] == "0-7" and st["phase"] == "Running"

    _finish(cluster, namespace, "sax-s0-a0", "Succeeded")
    _finish(cluster, namespace, "sax-s1-a0", "Succeeded")
    st = wait_for(lambda: (s := _status(cluster, namespace, "sax")).get("phase") == "Succeeded" and s, 30,
                  "phase Succeeded")
    assert st["slicesDone"] == 16
    assert {p["name"]: p["phase"] for p in st["pods"]} == {"sax-s0-a0": "Succeeded", "sax-s1-a0": "Succeeded"}
    assert wait_for(lambda: _events(cluster, namespace, "sax", "Succeeded"), 30, "Succeeded Event")
    assert len(_events(cluster, namespace, "sax", "Created")) == 2
    # kwok really left the custom status alone.
    assert cluster.core.read_namespaced_pod("sax-s1-a0", namespace).status.phase == "Succeeded"


def test_lost_and_failed_pods_have_only_unfinished_slices_rescheduled(cluster: Cluster, operator: OperatorProcess,
                                                                     namespace: str) -> None:
    _create_job(cluster, namespace, "re")
    pods = _wait_running(cluster, namespace, "re", {"re-s0-a0", "re-s1-a0"})
    s0, s1 = _slices(pods["re-s0-a0"]), _slices(pods["re-s1-a0"])
    _report_done(cluster, namespace, "re-s1-a0", f"{s1[0]}-{s1[2]}")
    _report_done(cluster, namespace, "re-s0-a0", str(s0[0]))
    wait_for(lambda: _status(cluster, namespace, "re").get("slicesDone") == 4, 30, "4 slices done")

    # Lost: deleted (its GPU frees, so the replacement can schedule).
    cluster.core.delete_namespaced_pod("re-s1-a0", namespace, grace_period_seconds=0)
    pods = _wait_running(cluster, namespace, "re", {"re-s0-a0", "re-s1-a1"})
    assert _slices(pods["re-s1-a1"]) == s1[3:]
    st = _status(cluster, namespace, "re")
    assert _pod_entry(st, "re-s1-a0")["phase"] == "Lost" and _ix(_pod_entry(st, "re-s1-a0")["done"]) == s1[:3]
    assert _ix(_pod_entry(st, "re-s1-a1")["slices"]) == s1[3:]
    assert _ix(_pod_entry(st, "re-s0-a0")["slices"]) == s0  # a running pod keeps its list
    assert wait_for(lambda: _events(cluster, namespace, "re", "Rescheduled"), 30, "Rescheduled Event")

    # Failed: after finishing two slices.
    _report_done(cluster, namespace, "re-s0-a0", f"{s0[0]}-{s0[1]}")
    wait_for(lambda: _status(cluster, namespace, "re").get("slicesDone") == 5, 30, "5 slices done")
    _finish(cluster, namespace, "re-s0-a0", "Failed")
    pods = _wait_running(cluster, namespace, "re", {"re-s0-a1", "re-s1-a1"})
    assert _slices(pods["re-s0-a1"]) == s0[2:]
    st = _status(cluster, namespace, "re")
    assert _pod_entry(st, "re-s0-a0")["phase"] == "Failed" and _ix(_pod_entry(st, "re-s0-a0")["done"]) == s0[:2]

    # No slice is ever handed out after it was reported done, and each is done by exactly one pod.
    for name in ("re-s0-a1", "re-s1-a1"):
        _finish(cluster, namespace, name, "Succeeded")
    st = wait_for(lambda: (s := _status(cluster, namespace, "re")).get("phase") == "Succeeded" and s, 30,
                  "phase Succeeded")
    done_by = sorted(i for p in st["pods"] for i in _ix(p["done"]))
    assert done_by == list(range(16)) and st["slicesDone"] == 16
    assert {p["name"] for p in st["pods"]} == {"re-s0-a0", "re-s1-a0", "re-s0-a1", "re-s1-a1"}
    assert set(_pods(cluster, namespace, "re")) == {"re-s0-a0", "re-s0-a1", "re-s1-a1"}  # nothing extra created



def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture
def huge_namespace(cluster: Cluster) -> Iterator[str]:
    yield from fresh_namespace(cluster, "huge")


def test_gpujob_of_2_to_the_31_slices_plans_as_ranges_without_memory_per_slice(
        cluster: Cluster, huge_namespace: str, tmp_path: Path) -> None:
    # Admission bounds a grid at 2^26 blocks by default (the bad-input suite covers that refusal); a
    # platform that raises the bound must still get a plan that costs no memory per slice. An operator of
    # its own, with the bound raised, watches only this namespace.
    namespace = huge_namespace
    operator = start_operator(cluster, tmp_path, "--namespace", namespace, name="huge",
                              env={"EDGEWEAVE_ADMISSION_MAX_GRID_BLOCKS": str(2**31)})
    try:
        _plans_2_to_the_31(cluster, operator, namespace)
    finally:
        operator.stop()


def _plans_2_to_the_31(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    # One block per slice (no launch cost, 1 µs blocks, 1 µs target): 2^31 slices over two pods.
    spec = {"kernel": {"builtin": "saxpy", "problemSize": 1024}, "grid": [65536, 32768], "block": [32],
            "vgpu": {"resource": "nvidia.com/gpu", "count": 2}, "latencyTargetMs": 0.001,
            "profile": {"timePerBlockUs": 1, "launchOverheadUs": 0}}
    rss0 = _rss_mib(operator.proc.pid)
    _create_job(cluster, namespace, "huge", spec)
    st = wait_for(lambda: (s := _status(cluster, namespace, "huge")).get("slicesTotal") and s, 60, "huge planned")
    assert st["slicesTotal"] == 2**31 and st["sliceBlocks"] == 1
    assert {p["name"]: p["slices"] for p in st["pods"]} == {"huge-s0-a0": f"0-{2**30 - 1}",
                                                            "huge-s1-a0": f"{2**30}-{2**31 - 1}"}
    assert len(str(st)) < 8192
    pods = _wait_running(cluster, namespace, "huge", {"huge-s0-a0", "huge-s1-a0"})
    assert pods["huge-s0-a0"].metadata.annotations["edgeweave.io/slices"].endswith(f"slices=0-{2**30 - 1}")
    # A progress annotation with thousands of runs (a hostile or broken pod) is ignored, not stored.
    _report_done(cluster, namespace, "huge-s0-a0", ",".join(str(2 * i) for i in range(5000)))
    _report_done(cluster, namespace, "huge-s1-a0", f"{2**30}-{2**30 + 99}")
    st = wait_for(lambda: (s := _status(cluster, namespace, "huge")).get("slicesDone") == 100 and s, 30,
                  "100 slices done")
    assert _pod_entry(st, "huge-s0-a0")["done"] == ""
    assert _rss_mib(operator.proc.pid) - rss0 < 64  # nothing was allocated per slice
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_a_corrupted_status_gets_a_condition_an_event_and_backoff_not_a_traceback_loop(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    _create_job(cluster, namespace, "bad")
    _wait_running(cluster, namespace, "bad", {"bad-s0-a0", "bad-s1-a0"})
    # Settled (the operator saw its pods run), so its own writes do not race the edit below.
    wait_for(lambda: _status(cluster, namespace, "bad").get("phase") == "Running", 30, "bad Running")
    # Someone with access to the status subresource writes an entry that is not one of the job's pods.
    cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "gpujobs", "bad", {
        "status": {"pods": [{"name": "bogus", "phase": "Planned", "slices": "0-3"}]}})
    log_before = operator.log()

    def failed():
        st = _status(cluster, namespace, "bad")
        ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), None)
        return ready if ready and ready["reason"] == "ReconcileFailed" else None
    ready = wait_for(failed, 60, "Ready=False/ReconcileFailed")
    assert ready["status"] == "False" and "'bogus' is not a job pod name" in ready["message"]
    events = wait_for(lambda: _events(cluster, namespace, "bad", "ReconcileFailed"), 30, "ReconcileFailed Event")
    assert len(events) == 1 and "next try in" in events[0].message
    # The operator keeps serving good jobs meanwhile (planned, pods created; they wait for the GPUs
    # the bad job's pods hold), and it logged no traceback for the bad one.
    _create_job(cluster, namespace, "good")
    wait_for(lambda: {"good-s0-a0", "good-s1-a0"} <= set(_pods(cluster, namespace, "good")), 60, "good's pods")
    assert _status(cluster, namespace, "good")["slicesTotal"] == 16
    new_log = operator.log()[len(log_before):]
    # One traceback for the distinct fault (so it can be debugged), never one per retry.
    assert new_log.count("Traceback") <= 1
    failures = new_log.count("GpuJob reconcile failed")
    assert 1 <= failures <= 6, failures  # backoff: a few tries, not one per event and timer tick
    assert len(_events(cluster, namespace, "bad", "ReconcileFailed")) == 1  # one Event per distinct fault
