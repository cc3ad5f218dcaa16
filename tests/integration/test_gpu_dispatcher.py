"""The node slice dispatcher as real processes on the CPU runtime: a `python -m edgeweave.gpu.dispatcher`
and `python -m edgeweave.gpu.slice_worker` job pods talking over its unix socket. No cluster needed.

- three jobs submitted at once: the grants follow the policy (checked by an oracle that does not share
  the dispatcher's ranking code), and the jobs finish in the order the policy gives;
- a second tenant's load rises mid-job: the first job's next grants shrink;
- SIGKILL a job pod and the dispatcher mid-job, restart both: output identical to the unsliced run;
- authentication and bounds: wrong token, another job's token, garbage lines, connection cap.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from edgeweave.gpu.dispatch_harness import (
    Client,
    Node,
    dispatcher_node,
    job_spec,
    kill_scenario,
    kill_verdict,
    policy_check,
    resize_scenario,
    resize_verdict,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def node_factory(tmp_path: Path):
    with contextlib.ExitStack() as stack:
        made: list[Node] = []

        def make(policy: str, **kw: Any) -> Node:
            made.append(stack.enter_context(dispatcher_node(tmp_path / f"node{len(made)}", policy, **kw)))
            return made[-1]

        yield make


@pytest.mark.parametrize("policy", ["Priority", "ShortestFirst", "Deadline"])
def test_three_jobs_at_once_are_granted_in_policy_order(node_factory, policy: str) -> None:
    r = policy_check(node_factory(policy), policy)
    assert r["finished"] == r["expected"]
    assert r["contested"] >= 5  # the three really competed
    assert r["violations"] == 0
    # Each job's grants ran back to back: nothing of a later job between the first job's grants.
    order = [d["job"].split("/")[1] for d in r["decisions"]]
    assert order == sorted(order, key=r["expected"].index)


def test_fair_share_interleaves_tenants(node_factory) -> None:
    node = node_factory("FairShare")
    r = policy_check(node, "FairShare")
    assert r["violations"] == 0
    decisions = r["decisions"]
    first = [d["job"].split("/")[0] for d in decisions][:3]
    assert sorted(first) == ["ns-a", "ns-b", "ns-c"]  # nobody waits for a second grant of another
    # FairShare equalises GPU time, not grant counts: while all three compete, their committed time
    # never drifts apart by more than about one grant.
    longest = max(e["ms"] for j in node.jobs for e in node.worker_events(j) if e.get("event") == "grant-done")
    spreads = [max(c["share"] for c in d["candidates"]) - min(c["share"] for c in d["candidates"])
               for d in decisions if len(d["candidates"]) == 3]
    assert len(spreads) >= 10 and max(spreads) <= 1.5 * longest + 1.0, (max(spreads), longest)


def test_fifo_serves_in_arrival_order(node_factory) -> None:
    r = policy_check(node_factory("Fifo"), "Fifo")
    assert r["violations"] == 0
    arrival = {c["job"].split("/")[1]: c["arrival"] for d in r["decisions"] for c in d["candidates"]}
    assert r["finished"] == sorted(arrival, key=arrival.__getitem__)


def test_second_tenant_load_shrinks_the_next_slices(node_factory) -> None:
    """Deterministic: the scenario waits on the dispatcher's own recorded load, not on time. Every
    grant, before and after, must be what the optimiser gives for the load the dispatcher saw then,
    and with the second tenant's load (>= 0.2) the next sub-kernels are smaller."""
    r = resize_scenario(node_factory("Fifo", slots=2))
    assert resize_verdict(r) == "", r


def test_dcgm_utilisation_from_prometheus_sizes_the_next_grants(node_factory, prometheus) -> None:
    """DCGM present: the GPU's utilisation (real Prometheus scraping an exporter we control) is the
    load when it is higher than what the dispatcher sees of its own jobs."""
    import statistics

    labels = {"Hostname": "gpu-node-7", "gpu": "0", "UUID": "GPU-test"}
    prometheus.series.set_gauge("DCGM_FI_DEV_GPU_UTIL", labels, 5.0)
    try:
        node = node_factory("Fifo", extra=("--prometheus-url", prometheus.url, "--node", "gpu-node-7",
                                           "--dcgm-interval-s", "0.3"))
        a = node.job("ns-a", "a", job_spec(240000, target_ms=1.0, threads=32))
        node.start_worker(a)
        low = wait_until(lambda: [d for d in node.decision_log() if 0.04 <= d["load"] <= 0.06][5:25] or None,
                         60, "grants at the DCGM load 0.05")
        prometheus.series.set_gauge("DCGM_FI_DEV_GPU_UTIL", labels, 80.0)
        high = wait_until(lambda: [d for d in node.decision_log() if d["load"] >= 0.79][:20] or None,
                          60, "grants at the DCGM load 0.8")
        assert all("DCGM_FI_DEV_GPU_UTIL" in d["why"] for d in low + high)
        size = lambda ds: statistics.median(d["hi"] - d["lo"] for d in ds)  # noqa: E731
        assert abs(size(high) / size(low) - (1 - 0.8) / (1 - 0.05)) < 0.1, (size(low), size(high))
    finally:
        prometheus.series.set_gauge("DCGM_FI_DEV_GPU_UTIL", labels, None)


def test_killed_job_pod_and_dispatcher_output_identical_to_unsliced(node_factory, tmp_path: Path) -> None:
    r = kill_scenario(node_factory("ShortestFirst"), tmp_path / "whole")
    assert kill_verdict(r) == "", r  # every block committed once across both dispatcher lives, bit-identical


def test_pods_register_their_planned_shares_and_the_shares_assemble_the_whole(node_factory, tmp_path: Path) -> None:
    import numpy as np

    from edgeweave.api.gpujob import GpuJobSpec
    from edgeweave.gpu.builtins import make_kernel
    from edgeweave.gpu.dispatch_harness import unsliced_output
    from edgeweave.gpu.dispatch_output import assemble
    from edgeweave.gpu.grid import Grid
    from edgeweave.gpu.plan import plan_job, pod_env

    node = node_factory("FairShare")
    raw = job_spec(4096, target_ms=0.5, kernel="stencil")
    raw["vgpu"] = {"count": 2}
    job = node.job("ns-p", "p", raw)
    spec = GpuJobSpec.model_validate(raw)
    plan = plan_job(spec, None)
    workers = [node.start_worker(job, env=pod_env(spec, plan, a.pod)) for a in plan.pods]
    assert [w.wait(120) for w in workers] == [0, 0], node.worker_events(job)
    keys = sorted({d["job"] for d in node.decision_log()})
    assert keys == [f"{job.key}#s0", f"{job.key}#s1"]  # each pod drew only from its own share
    twin = make_kernel("stencil", 4096 * 256, Grid(4096), Grid(256), 0)
    merged = assemble(node.state, keys, job.frag_dir, twin)
    assert np.array_equal(merged, unsliced_output(job.spec_file, tmp_path / "whole"))


def test_wrong_or_foreign_token_is_refused_and_bad_lines_get_clear_errors(node_factory) -> None:
    node = node_factory("Fifo", extra=("--max-connections", "3"))
    a = node.job("ns-a", "a", job_spec(256))
    b = node.job("ns-b", "b", job_spec(256))
    w = node.start_worker(a, token="not-the-token")
    assert w.wait(60) == 3
    assert any(e.get("event") == "refused" and "unauthenticated" in e["error"] for e in node.worker_events(a))
    w = node.start_worker(b, token=node.token(a))  # a's token does not open b
    assert w.wait(60) == 3
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(node.socket))
    f = s.makefile("rwb")
    f.write(b'{"op": "next"}\n')
    f.flush()
    reply = json.loads(f.readline())
    assert reply == {"ok": False, "error": "unauthenticated", "message": "send hello with the job token first"}
    assert f.readline() == b""  # and the connection is closed
    s.close()
    c = Client(node, a)
    assert c.hello["ok"] and c.hello["policy"] == "Fifo"
    assert c.call({"op": "frobnicate"})["error"] == "bad-request"
    c.f.write(b"[1, 2]\n")
    c.f.flush()
    assert json.loads(c.f.readline())["error"] == "bad-request"
    c.f.write(b"x" * (70 * 1024) + b"\n")
    c.f.flush()
    assert json.loads(c.f.readline())["error"] == "too-large"
    c.close()
    # Connection cap: the fourth concurrent connection is told so and closed.
    held = [Client(node, a, worker=f"h{i}") for i in range(3)]
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.connect(str(node.socket))
    assert json.loads(extra.makefile("rb").readline())["error"] == "busy"
    extra.close()
    for h in held:
        h.close()
    # The dispatcher is still healthy: a real job runs to the end.
    assert node.start_worker(a).wait(60) == 0
