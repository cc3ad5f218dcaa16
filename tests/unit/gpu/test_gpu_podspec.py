"""Job pod manifests, names, labels and the progress annotation format."""

from __future__ import annotations

import pytest

from edgeweave.api.gpujob import GpuJobSpec
from edgeweave.gpu.plan import decode_slices, plan_job
from edgeweave.gpu.podspec import (
    ANNOTATION_SLICES,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_SLICE_POD,
    decode_runs,
    encode_runs,
    job_label_value,
    job_pod,
    parse_pod_name,
    pod_name,
)
from edgeweave.gpu.ranges import RangeSet

JOB = {"name": "sax", "namespace": "ns1", "uid": "1234-abcd"}


def _spec(**extra) -> GpuJobSpec:
    data = {"kernel": {"builtin": "saxpy", "problemSize": 16384}, "grid": [64], "block": [256],
            "vgpu": {"count": 2}, "profile": {"timePerBlockUs": 1000}, **extra}
    return GpuJobSpec.model_validate(data)


def _env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in manifest["spec"]["containers"][0]["env"]}


def test_pods_cover_every_slice_once_and_request_one_vgpu() -> None:
    spec = _spec()
    plan = plan_job(spec, None)
    assert plan.slice_count == 16 and len(plan.pods) == 2
    seen: list[int] = []
    for a in plan.pods:
        m = job_pod(JOB, spec, plan, a)
        c = m["spec"]["containers"][0]
        assert c["resources"] == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
        assert m["metadata"]["name"] == f"sax-s{a.pod}-a0"
        assert m["metadata"]["labels"][LABEL_JOB] == "sax"
        assert m["metadata"]["labels"][LABEL_SLICE_POD] == str(a.pod)
        assert m["metadata"]["labels"][LABEL_ATTEMPT] == "0"
        owner = m["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("GpuJob", "sax", "1234-abcd", True)
        assert m["spec"]["restartPolicy"] == "Never"
        env = _env(m)
        assert GpuJobSpec.model_validate_json(env["EDGEWEAVE_GPUJOB"]) == spec
        got = [s.index for s in decode_slices(env["EDGEWEAVE_SLICES"])]
        assert got == list(a.set)
        assert m["metadata"]["annotations"][ANNOTATION_SLICES] == env["EDGEWEAVE_SLICES"]
        seen += got
    assert sorted(seen) == list(range(16))


def test_mig_profile_and_image_come_from_the_spec() -> None:
    spec = _spec(vgpu={"resource": "nvidia.com/mig-1g.10gb", "count": 1}, image="registry.local/ew:dev")
    plan = plan_job(spec, None)
    m = job_pod(JOB, spec, plan, plan.pods[0])
    c = m["spec"]["containers"][0]
    assert c["image"] == "registry.local/ew:dev"
    assert c["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert m["spec"]["tolerations"][0]["key"] == "nvidia.com/mig-1g.10gb"


def test_replacement_pod_gets_only_its_slices() -> None:
    from edgeweave.gpu.plan import reassign

    spec = _spec()
    plan = plan_job(spec, None)
    after = reassign(plan, done=RangeSet.of([8, 9, 10]), lost_pods=[1])
    repl = after.pod(1)
    m = job_pod(JOB, spec, after, repl)
    assert m["metadata"]["name"] == "sax-s1-a1"
    assert [s.index for s in decode_slices(_env(m)["EDGEWEAVE_SLICES"])] == [11, 12, 13, 14, 15]


def test_names_round_trip_and_long_job_names_make_valid_labels() -> None:
    assert parse_pod_name(pod_name("my-job-s3", 2, 7)) == ("my-job-s3", 2, 7)
    assert parse_pod_name("nginx-abc") is None
    long = "j" * 120
    v = job_label_value(long)
    assert len(v) <= 63 and v != job_label_value("j" * 121)
    assert job_label_value("short") == "short"


@pytest.mark.parametrize("indices,text", [([], ""), ([3], "3"), ([0, 1, 2, 3, 7], "0-3,7"),
                                          ([9, 1, 2, 2, 5], "1-2,5,9")])
def test_runs_round_trip(indices: list[int], text: str) -> None:
    assert encode_runs(indices) == text
    assert list(decode_runs(text)) == sorted(set(indices))


@pytest.mark.parametrize("bad", ["x", "3-1", "-2", ",".join(str(2 * i) for i in range(17)), "1,,a"])
def test_bad_runs_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_runs(bad)


def test_with_the_dispatcher_pods_run_the_worker_with_socket_token_and_output_dir() -> None:
    from edgeweave.gpu.dispatch_auth import job_token, verify
    from edgeweave.gpu.podspec import DispatcherWiring

    spec = _spec()
    plan = plan_job(spec, None)
    key = b"k" * 32
    token = job_token(key, JOB["namespace"], JOB["name"], JOB["uid"])
    m = job_pod(JOB, spec, plan, plan.pods[1], dispatcher=DispatcherWiring(
        "/var/run/ew", "/var/lib/ew/out", token, env=(("CUDA_MPS_PIPE_DIRECTORY", "/run/mps"),)))
    c = m["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "edgeweave.gpu.slice_worker"]
    assert c["args"][c["args"].index("--worker-id") + 1] == "sax-s1-a0"
    env = _env(m)
    assert verify(key, JOB["namespace"], JOB["name"], env["EDGEWEAVE_JOB_UID"], env["EDGEWEAVE_JOB_TOKEN"])
    assert env["EDGEWEAVE_DISPATCHER_SOCKET"] == "/run/edgeweave/gpu/dispatch.sock"
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == "/run/mps"  # the node-wide env the operator is given
    # Non-root in the dispatcher's group (its socket is 0660; it hands the output dir to that group).
    assert c["securityContext"] == {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True,
                                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    vols = {v["name"]: v["hostPath"] for v in m["spec"]["volumes"]}
    assert vols["dispatcher"] == {"path": "/var/run/ew", "type": "Directory"}
    assert vols["output"]["path"] == f"/var/lib/ew/out/{JOB['namespace']}/sax-{JOB['uid'][:8]}"
    # Without the dispatcher nothing of it appears.
    plain = job_pod(JOB, spec, plan, plan.pods[1])
    assert "volumes" not in plain["spec"] and "EDGEWEAVE_JOB_TOKEN" not in _env(plain)
    assert "securityContext" not in plain["spec"]["containers"][0]


def test_the_operators_job_pod_env_reaches_pods_with_and_without_the_dispatcher() -> None:
    from edgeweave.gpu.podspec import DispatcherWiring

    spec = _spec()
    plan = plan_job(spec, None)
    extra = (("EDGEWEAVE_CPU_PACE_US_PER_BLOCK", "3000"),)
    plain = _env(job_pod(JOB, spec, plan, plan.pods[0], extra_env=extra))
    assert plain["EDGEWEAVE_CPU_PACE_US_PER_BLOCK"] == "3000" and "EDGEWEAVE_SLICES" in plain
    wired = _env(job_pod(JOB, spec, plan, plan.pods[0], extra_env=extra,
                         dispatcher=DispatcherWiring("/var/run/ew", "/var/lib/ew/out", "t")))
    assert wired["EDGEWEAVE_CPU_PACE_US_PER_BLOCK"] == "3000" and wired["EDGEWEAVE_JOB_TOKEN"] == "t"
