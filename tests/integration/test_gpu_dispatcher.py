"""The node slice dispatcher as real processes on the CPU runtime: a `python -m edgeweave.gpu.dispatcher`
and `python -m edgeweave.gpu.slice_worker` job pods talking over its unix socket. No cluster needed.

- three jobs submitted at once: the grants follow the policy (checked by an oracle written here, not
  the dispatcher's ranking code), and the jobs finish in the order the policy gives;
- a second tenant's load rises mid-job: the first job's next grants shrink;
- SIGKILL a job pod and the dispatcher mid-job, restart both: output identical to the unsliced run;
- authentication and bounds: wrong token, another job's token, garbage lines, connection cap.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeweave.gpu.dispatch_harness import Node, wait_until
from edgeweave.gpu.dispatch_output import assemble, commits
from edgeweave.gpu.slice_worker import job_wire

pytestmark = pytest.mark.integration

TPB = 10.0  # declared µs per block: grant sizes then depend on the load alone


def _spec(blocks: int, *, target_ms: float = 2.0, priority: int = 0, deadline: float | None = None,
          kernel: str = "saxpy", threads: int = 256) -> dict[str, Any]:
    s: dict[str, Any] = {"kernel": {"builtin": kernel, "problemSize": blocks * threads}, "grid": [blocks],
                         "block": [threads], "latencyTargetMs": target_ms, "priority": priority,
                         "profile": {"timePerBlockUs": TPB}}
    if deadline is not None:
        s["deadlineSeconds"] = deadline
    return s


class Client:
    """A raw protocol client the test drives by hand (the gate that holds the GPU)."""

    def __init__(self, node: Node, job, worker: str = "gate", token: str | None = None) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(str(node.socket))
        self.f = self.s.makefile("rwb")
        from edgeweave.gpu.slice_run import load_spec

        self.hello = self.call({"op": "hello", "namespace": job.namespace, "name": job.name, "uid": job.uid,
                                "token": node.token(job) if token is None else token, "worker": worker,
                                "job": job_wire(load_spec(job.spec_file), True)})

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        self.f.write((json.dumps(req) + "\n").encode())
        self.f.flush()
        return json.loads(self.f.readline())

    def close(self) -> None:
        self.f.close()
        self.s.close()


@pytest.fixture
def node_factory(tmp_path: Path):
    nodes: list[Node] = []

    def make(policy: str, **kw: Any) -> Node:
        n = Node(tmp_path / f"node{len(nodes)}", policy, **kw)
        nodes.append(n)
        n.start_dispatcher()
        return n

    yield make
    for n in nodes:
        n.stop()


def _oracle_best(policy: str, cands: list[dict[str, Any]]) -> set[str]:
    """Jobs a correct dispatcher may pick: written from the policy definitions, not from policy_key."""
    def key(c: dict[str, Any]) -> float:
        if policy == "Fifo":
            return c["arrival"]
        if policy == "ShortestFirst":
            return c["remaining_ms"]
        if policy == "Priority":
            return -c["priority"]
        if policy == "FairShare":
            return c["share"]
        return c["deadline"] if c["deadline"] is not None else math.inf
    best = min(key(c) for c in cands)
    tied = [c for c in cands if key(c) == best]
    first = min(c["arrival"] for c in tied)  # ties go to the earlier arrival
    return {c["job"] for c in tied if c["arrival"] == first}


def policy_violations(decisions: list[dict[str, Any]]) -> int:
    return sum(1 for d in decisions if len(d["candidates"]) > 1
               and d["job"] not in _oracle_best(d["policy"], d["candidates"]))


def _run_three(node: Node, specs: dict[str, dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Hold the GPU with a gate grant until all three jobs wait, release it, run them to the end."""
    gate_job = node.job("gate", "gate", _spec(64, target_ms=50))
    gate = Client(node, gate_job)
    held = gate.call({"op": "next"})
    assert held["ok"] and "grant" in held, held
    jobs = {name: node.job(f"ns-{name}", name, spec) for name, spec in specs.items()}
    for j in jobs.values():
        node.start_worker(j)
    wait_until(lambda: gate.call({"op": "progress"})["waiting_jobs"] >= 3, 60, "three jobs waiting")
    assert gate.call({"op": "release", "id": held["grant"]["id"]})["ok"]
    gate.close()
    finish: dict[str, int] = {}
    for j in jobs.values():
        assert j.procs[0].wait(120) == 0, node.worker_events(j)
    order = [d["job"] for d in node.decision_log() if not d["job"].startswith("gate/")]
    for name, j in jobs.items():
        finish[name] = max(i for i, k in enumerate(order) if k == j.key)
    return sorted(finish, key=finish.get), node.decision_log()  # type: ignore[arg-type]


@pytest.mark.parametrize("policy, expected", [
    ("Priority", ["high", "mid", "low"]),
    ("ShortestFirst", ["small", "medium", "large"]),
    ("Deadline", ["soon", "later", "latest"]),
])
def test_three_jobs_at_once_are_granted_in_policy_order(node_factory, policy: str, expected: list[str]) -> None:
    node = node_factory(policy)
    if policy == "Priority":
        specs = {"low": _spec(1024, priority=1), "high": _spec(1024, priority=100), "mid": _spec(1024, priority=50)}
    elif policy == "ShortestFirst":
        specs = {"large": _spec(3072), "small": _spec(512), "medium": _spec(1536)}
    else:
        specs = {"latest": _spec(1024, deadline=300), "soon": _spec(1024, deadline=100),
                 "later": _spec(1024, deadline=200)}
    finished, decisions = _run_three(node, specs)
    assert finished == expected
    contested = [d for d in decisions if len(d["candidates"]) > 1]
    assert len(contested) >= 5  # the three really competed
    assert policy_violations(decisions) == 0
    # Each job's grants ran back to back: nothing of a later job between the first job's grants.
    order = [d["job"].split("/")[1] for d in decisions if not d["job"].startswith("gate/")]
    assert order == sorted(order, key=expected.index)


def test_fair_share_interleaves_tenants(node_factory) -> None:
    node = node_factory("FairShare")
    _, decisions = _run_three(node, {"a": _spec(2048), "b": _spec(2048), "c": _spec(2048)})
    assert policy_violations(decisions) == 0
    first = [d["job"].split("/")[0] for d in decisions if not d["job"].startswith("gate/")][:9]
    assert sorted(first) == sorted(["ns-a", "ns-b", "ns-c"] * 3)  # every tenant served in every round


def test_second_tenant_load_shrinks_the_next_slices(node_factory) -> None:
    # Two slots: both tenants run at once, as two contexts on one GPU; a's load is b's share of it.
    node = node_factory("Fifo", slots=2)
    a = node.job("ns-a", "a", _spec(120000, target_ms=1.0, threads=64))
    node.start_worker(a)
    wait_until(lambda: len([d for d in node.decision_log() if d["job"] == a.key]) >= 30, 60, "30 grants of a alone")
    b = node.job("ns-b", "b", _spec(20000, target_ms=20.0, kernel="stencil"))  # long grants: busy
    node.start_worker(b)
    wait_until(lambda: any(d["job"] == b.key for d in node.decision_log()), 60, "b's first grant")
    wait_until(lambda: sum(1 for d in node.decision_log() if d["job"] == b.key) >= 8, 60, "8 grants of b")
    log = node.decision_log()
    b_start = min(i for i, d in enumerate(log) if d["job"] == b.key)
    before = [d for d in log[:b_start] if d["job"] == a.key][5:]
    after = [d for d in log[b_start:] if d["job"] == a.key][5:]
    assert len(before) >= 10 and len(after) >= 10, (len(before), len(after))
    size = lambda ds: statistics.median(d["hi"] - d["lo"] for d in ds)  # noqa: E731
    load = lambda ds: statistics.median(d["load"] for d in ds)  # noqa: E731
    assert load(before) < 0.05 and load(after) > 0.3, (load(before), load(after))
    assert size(after) < 0.75 * size(before), (size(before), size(after))
    assert len({d["hi"] - d["lo"] for d in log if d["job"] == a.key}) > 2  # sub-kernels of one job differ


def _unsliced(spec_file: Path, out: Path) -> np.ndarray:
    run = subprocess.run([sys.executable, "-m", "edgeweave.gpu.slice_run", "--spec-file", str(spec_file),
                          "--slices", "all", "--backend", "cpu", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return np.load(out / "output.npy")


def test_killed_job_pod_and_dispatcher_output_identical_to_unsliced(node_factory, tmp_path: Path) -> None:
    node = node_factory("ShortestFirst")
    job = node.job("ns-k", "k", _spec(16384, target_ms=1.0, kernel="stencil"))
    w0 = node.start_worker(job)
    node.start_worker(job)
    count = lambda: len(commits(node.state, job.key))  # noqa: E731
    wait_until(lambda: count() >= 15, 60, "15 commits")
    w0.kill()  # SIGKILL: no goodbye; its grant in flight goes back to the pool
    w0.wait(10)
    wait_until(lambda: count() >= 40, 60, "40 commits")
    node.kill_dispatcher()
    committed_before = count()
    node.start_dispatcher()  # same state dir: replays the journal
    node.start_worker(job, worker="k-w0")  # the job pod's restart resumes from progress
    for p in job.procs[1:]:
        assert p.wait(120) == 0, node.worker_events(job)
    events = node.worker_events(job)
    assert any(e.get("event") == "done" and e["progress"]["finished"] for e in events)
    assert any(e.get("event") == "done" and e["reconnects"] >= 1 for e in node.worker_events(job, 1))
    assert count() > committed_before
    from edgeweave.gpu.builtins import make_kernel
    from edgeweave.gpu.grid import Grid

    twin = make_kernel("stencil", 16384 * 256, Grid(16384), Grid(256), 0)
    merged = assemble(node.state, job.key, job.frag_dir, twin)  # raises on overlap or gap
    assert np.array_equal(merged, _unsliced(job.spec_file, tmp_path / "whole"))
    # Every block committed exactly once, across both dispatcher lives.
    spans = sorted((c["lo"], c["hi"]) for c in commits(node.state, job.key))
    assert spans[0][0] == 0 and spans[-1][1] == 16384
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_wrong_or_foreign_token_is_refused_and_bad_lines_get_clear_errors(node_factory) -> None:
    node = node_factory("Fifo", extra=("--max-connections", "3"))
    a = node.job("ns-a", "a", _spec(256))
    b = node.job("ns-b", "b", _spec(256))
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
