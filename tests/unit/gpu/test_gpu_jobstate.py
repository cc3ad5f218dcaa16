"""GpuJob progress decisions: status + observed pods -> next status, pods to create, events."""

from __future__ import annotations

import socket

from edgeweave.api.gpujob import GpuJobSpec, GpuJobStatus
from edgeweave.gpu import dcgm
from edgeweave.gpu.jobstate import LOST, PLANNED, PodObservation, advance, initial_status, observe_pod
from edgeweave.gpu.plan import plan_job
from edgeweave.gpu.ranges import RangeSet

SPEC = GpuJobSpec.model_validate({"kernel": {"builtin": "saxpy"}, "grid": [64], "block": [256],
                                  "vgpu": {"count": 2}, "profile": {"timePerBlockUs": 1000}})


def _planned() -> GpuJobStatus:
    return initial_status("j", plan_job(SPEC, None))


def _obs(name: str, phase: str = "Running", done: tuple[int, ...] = (), deleting: bool = False) -> PodObservation:
    _, s, a = name.rsplit("-", 2)
    return PodObservation(name=name, index=int(s[1:]), attempt=int(a[1:]), phase=phase, done=RangeSet.of(done).encode(),
                          deleting=deleting, node="edge-002-0")


def _ix(runs: str) -> list[int]:
    return list(RangeSet.decode(runs))


def _entry(status: GpuJobStatus, name: str):
    return next(e for e in status.pods if e.name == name)


def test_plan_is_recorded_then_every_planned_pod_is_created_once() -> None:
    st = _planned()
    assert [e.phase for e in st.pods] == [PLANNED, PLANNED] and st.slices_total == 16
    step = advance("j", SPEC, st, [])
    assert [(a.pod, a.attempt, tuple(a.set)) for a in step.create] == [(0, 0, tuple(range(8))), (1, 0, tuple(range(8, 16)))]
    # Restarted operator: one pod exists, the other does not -> only the missing one is (re)created.
    step = advance("j", SPEC, step.status, [_obs("j-s0-a0")])
    assert [a.pod for a in step.create] == [1]
    assert _entry(step.status, "j-s0-a0").phase == "Running" and step.status.phase == "Running"


def test_progress_counts_each_slice_once_and_only_grows() -> None:
    st = advance("j", SPEC, _planned(), [_obs("j-s0-a0", done=(0, 1, 2)), _obs("j-s1-a0", done=(8,))]).status
    assert st.slices_done == 4
    # An annotation that goes backwards, or names slices of another pod, changes nothing.
    st = advance("j", SPEC, st, [_obs("j-s0-a0", done=(1, 9, 10)), _obs("j-s1-a0", done=(8,))]).status
    assert _ix(_entry(st, "j-s0-a0").done) == [0, 1, 2] and st.slices_done == 4


def test_lost_pod_unfinished_slices_go_to_a_replacement_and_done_ones_do_not() -> None:
    st = advance("j", SPEC, _planned(), [_obs("j-s0-a0", done=(0,)), _obs("j-s1-a0", done=(8, 9, 10))]).status
    # Deleting: not replaced yet (it may be finishing a slice).
    step = advance("j", SPEC, st, [_obs("j-s0-a0", done=(0,)), _obs("j-s1-a0", deleting=True, done=(8, 9, 10))])
    assert not step.create and _entry(step.status, "j-s1-a0").phase == "Terminating"
    step = advance("j", SPEC, step.status, [_obs("j-s0-a0", done=(0, 1))])
    assert _entry(step.status, "j-s1-a0").phase == LOST
    assert [(a.pod, a.attempt, tuple(a.set)) for a in step.create] == [(1, 1, (11, 12, 13, 14, 15))]
    assert {e.reason for e in step.events} == {"SlicePodLost", "Rescheduled"}
    # The running pod keeps its list (its env cannot change).
    assert _ix(_entry(step.status, "j-s0-a0").slices) == list(range(8))
    # Next pass: the replacement is seen, nothing more is created, nothing is replaced twice.
    step = advance("j", SPEC, step.status, [_obs("j-s0-a0", done=(0, 1)), _obs("j-s1-a1")])
    assert not step.create and not step.events
    # A failed pod: the same, with the slices it finished kept.
    step = advance("j", SPEC, step.status, [_obs("j-s0-a0", phase="Failed", done=(0, 1, 2)), _obs("j-s1-a1")])
    assert [(a.pod, a.attempt, tuple(a.set)) for a in step.create] == [(0, 1, (3, 4, 5, 6, 7))]
    st = step.status
    owners: dict[int, list[str]] = {}
    for e in st.pods:
        for i in _ix(e.done):
            owners.setdefault(i, []).append(e.name)
    assert all(len(v) == 1 for v in owners.values())
    step = advance("j", SPEC, st, [_obs("j-s0-a1", phase="Succeeded"), _obs("j-s1-a1", phase="Succeeded")])
    assert step.status.phase == "Succeeded" and step.status.slices_done == 16
    assert [e.reason for e in step.events] == ["Succeeded"]
    done_by = sorted(i for e in step.status.pods for i in _ix(e.done))
    assert done_by == list(range(16))  # every slice done exactly once across attempts


def test_pod_lost_after_all_its_slices_are_done_is_not_replaced() -> None:
    st = advance("j", SPEC, _planned(), [_obs("j-s0-a0", done=tuple(range(8))), _obs("j-s1-a0")]).status
    step = advance("j", SPEC, st, [_obs("j-s1-a0")])
    assert not step.create and _entry(step.status, "j-s0-a0").phase == LOST


def test_repeated_failures_fail_the_job() -> None:
    st = advance("j", SPEC, _planned(), [_obs("j-s0-a0"), _obs("j-s1-a0")]).status
    for attempt in range(2):
        st = advance("j", SPEC, st, [_obs(f"j-s0-a{attempt}", phase="Failed"), _obs("j-s1-a0")],
                     max_attempts=2).status
    assert st.phase == "Failed"
    assert not advance("j", SPEC, st, [_obs("j-s1-a0")], max_attempts=2).create


def test_unschedulable_creates_nothing() -> None:
    step = advance("j", SPEC, _planned(), [], schedulable=False)
    assert step.status.phase == "Unschedulable" and not step.create


def test_observe_pod_reads_annotation_and_ignores_garbage() -> None:
    pod = {"metadata": {"name": "j-s1-a2", "uid": "u", "annotations": {"edgeweave.io/slices-done": "8-10"}},
           "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    o = observe_pod(pod)
    assert o is not None and (o.index, o.attempt, o.done, o.node) == (1, 2, "8-10", "n1")
    pod["metadata"]["annotations"]["edgeweave.io/slices-done"] = "oops"
    o = observe_pod(pod)
    assert o is not None and o.done == "" and o.bad_annotation is not None and "oops" in o.bad_annotation
    # An annotation of more runs than a pod running its slices in order can produce: ignored too.
    pod["metadata"]["annotations"]["edgeweave.io/slices-done"] = ",".join(str(2 * i) for i in range(100))
    o = observe_pod(pod)
    assert o is not None and o.done == "" and "runs" in (o.bad_annotation or "")
    assert observe_pod({"metadata": {"name": "web-1"}}) is None


def test_dcgm_response_gives_mean_load_of_the_gpu_nodes() -> None:
    data = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"Hostname": "edge-002-0", "gpu": "0"}, "value": [1000.0, "80"]},
        {"metric": {"Hostname": "edge-002-1", "gpu": "0"}, "value": [990.0, "40"]},
        {"metric": {"Hostname": "elsewhere", "gpu": "0"}, "value": [1000.0, "0"]},
    ]}}
    load, why = dcgm.load_from_response(data, ["edge-002-0", "edge-002-1"], now=1010.0)
    assert load is not None and abs(load.utilisation - 0.6) < 1e-9 and load.age_s == 10.0
    assert "2 GPU node(s)" in why
    load, _ = dcgm.load_from_response(data, ["nomatch"], now=1010.0)
    assert load is not None and abs(load.utilisation - 0.4) < 1e-9
    assert dcgm.load_from_response({"status": "success", "data": {"result": []}})[0] is None
    assert dcgm.load_from_response({"status": "error", "error": "bad query"})[0] is None


def test_unreachable_prometheus_means_unknown_load_with_the_reason() -> None:
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load, why = dcgm.read_load(f"http://127.0.0.1:{port}", timeout=1.0)
    assert load is None and why.startswith("Prometheus query failed")
    assert dcgm.read_load(None) == (None, "no Prometheus configured")
