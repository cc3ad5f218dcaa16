"""GpuJob plan: slices, pod assignment, the slice-list wire format, reassignment, the example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeweave.api.gpujob import GpuJobSpec
from edgeweave.gpu.optimiser import GpuLoad
from edgeweave.gpu.plan import (
    ENV_SLICES,
    ENV_SPEC,
    decode_slices,
    encode_slices,
    plan_job,
    pod_env,
    reassign,
    remaining,
)
from edgeweave.gpu.ranges import RangeSet

ROOT = Path(__file__).resolve().parents[3]


def _spec(**over: object) -> GpuJobSpec:
    base: dict[str, object] = {
        "kernel": {"builtin": "saxpy", "problemSize": 1 << 20}, "grid": [4096], "block": [256],
        "vgpu": {"count": 3}, "latencyTargetMs": 0.5,
        "profile": {"timePerBlockUs": 2.0, "launchOverheadUs": 4.0},
    }
    base.update(over)
    return GpuJobSpec.model_validate(base)


def test_gpu_plan_slices_cover_grid_once_and_pods_split_them() -> None:
    spec = _spec(grid=[64, 8, 2])
    plan = plan_job(spec, GpuLoad.from_samples(50.0))
    slices = [plan.slice(i) for i in range(plan.slice_count)]
    covered = [b for s in slices for b in range(s.start, s.end)]
    assert covered == list(range(spec.total_blocks))
    assert all(s.blocks == plan.slice_blocks for s in slices[:-1])
    assigned = [i for p in plan.pods for i in p.set]
    assert assigned == list(range(plan.slice_count))  # every slice once, contiguous per pod
    assert all(p.set.runs() == 1 for p in plan.pods)
    assert len(plan.pods) == 3
    sizes = [p.count for p in plan.pods]
    assert max(sizes) - min(sizes) <= 1
    assert plan.decision.latency_target_met
    assert "slices of" in plan.summary()


def test_gpu_plan_load_shrinks_slices() -> None:
    idle = plan_job(_spec(), GpuLoad.from_samples(0.0))
    busy = plan_job(_spec(), GpuLoad.from_samples(80.0))
    assert busy.slice_blocks < idle.slice_blocks
    assert busy.slice_count > idle.slice_count


def test_gpu_plan_fewer_slices_than_pods() -> None:
    plan = plan_job(_spec(grid=[4], vgpu={"count": 8}), None)
    assert plan.slice_count == 1 and len(plan.pods) == 1


def test_gpu_plan_is_frozen() -> None:
    plan = plan_job(_spec(), None)
    with pytest.raises(Exception, match="frozen"):
        plan.slice_blocks = 3  # type: ignore[misc]


def test_gpu_plan_slice_list_round_trip_and_env() -> None:
    spec = _spec()
    plan = plan_job(spec, GpuLoad.from_samples(30.0))
    for pod in plan.pods:
        env = pod_env(spec, plan, pod.pod)
        decoded = decode_slices(env[ENV_SLICES])
        assert [s.index for s in decoded] == list(pod.set)
        assert [(s.start, s.end) for s in decoded] == [(plan.slice(i).start, plan.slice(i).end) for i in pod.set]
        assert GpuJobSpec.model_validate_json(env[ENV_SPEC]) == spec
    text = encode_slices(plan, RangeSet.of([0, 1, 2, 5, 7, 8]))
    assert text.endswith("slices=0-2,5,7-8")


@pytest.mark.parametrize("bad", ["v2;blocks=1;total=2;slices=0", "v1;blocks=0;total=2;slices=0",
                                 "v1;blocks=4;total=10;slices=3", "v1;blocks=4;total=10",
                                 "v1;blocks=x;total=10;slices=0", "v1;blocks=4;total=10;slices=2-1"])
def test_gpu_plan_decode_rejects_bad_lists(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_slices(bad)


def test_gpu_plan_reassign_moves_only_lost_work() -> None:
    plan = plan_job(_spec(), GpuLoad.from_samples(70.0))
    assert len(plan.pods) == 3
    p0, p1, p2 = (list(p.set) for p in plan.pods)
    done = RangeSet.of([*p0[:2], *p1[:1], *p2])
    after = reassign(plan, done, lost_pods=[0])
    by_pod = {p.pod: p for p in after.pods}
    assert list(by_pod[1].set) == p1[1:] and by_pod[1].attempt == 0  # running pod keeps its list
    assert by_pod[2].slices == ""
    assert list(by_pod[0].set) == p0[2:] and by_pod[0].attempt == 1  # replacement pod
    left = sorted(i for p in after.pods for i in p.set)
    assert left == list(remaining(plan, done))
    # a second failure of the replacement bumps the attempt again
    again = reassign(after, done, lost_pods=[0])
    assert again.pod(0).attempt == 2


def test_gpu_plan_reassign_spreads_lost_work_over_replacements() -> None:
    plan = plan_job(_spec(), GpuLoad.from_samples(70.0))
    after = reassign(plan, RangeSet(), lost_pods=[0, 1, 2])
    assert sorted(i for p in after.pods for i in p.set) == list(range(plan.slice_count))
    assert all(p.attempt == 1 for p in after.pods)
    finished = reassign(plan, plan.all, lost_pods=[0, 1, 2])
    assert finished.pods == ()
    with pytest.raises(ValueError):
        reassign(plan, RangeSet.of([10**6]), lost_pods=[])
    with pytest.raises(ValueError):
        reassign(plan, RangeSet(), lost_pods=[9])


def test_gpu_plan_of_2_to_the_31_slices_is_ranges_and_small() -> None:
    import json
    import time

    from edgeweave.gpu.jobstate import initial_status

    # 2^31 blocks of 1 µs with no launch cost and a 1 µs target: one block per slice, 2^31 slices.
    spec = _spec(grid=[2**16, 2**15], vgpu={"count": 64}, latencyTargetMs=0.001,
                 profile={"timePerBlockUs": 1.0, "launchOverheadUs": 0.0})
    t0 = time.perf_counter()
    plan = plan_job(spec, GpuLoad.from_samples(0.0))
    status = initial_status("huge", plan)
    wire = json.dumps(status.wire())
    assert time.perf_counter() - t0 < 1.0
    assert plan.slice_count == 2**31 and len(plan.pods) == 64
    assert sum(p.count for p in plan.pods) == 2**31
    assert len(wire) < 8 * 1024, len(wire)  # 64 entries of one run each: nothing per slice
    half = reassign(plan, RangeSet.span(0, 2**30), lost_pods=[63])
    assert half.pod(63).attempt == 1 and half.pod(63).count == plan.pods[63].count


def test_gpu_example_manifest_validates() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "gpujob-saxpy.yaml").read_text())
    assert doc["apiVersion"] == "edgeweave.io/v1alpha1" and doc["kind"] == "GpuJob"
    spec = GpuJobSpec.model_validate(doc["spec"])
    assert spec.kernel.builtin is not None and spec.kernel.builtin.value == "saxpy"
    threads = spec.total_blocks * spec.threads_per_block
    assert threads >= spec.kernel.problem_size  # one element per thread, no stride needed
    plan = plan_job(spec, GpuLoad.from_samples(50.0))
    assert plan.decision.latency_target_met and plan.decision.overhead_bound_met and plan.slice_count > 1
