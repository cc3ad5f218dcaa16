"""Run a dispatcher and slice workers as real local processes (the CPU runtime): what the tests of
tests/unit/gpu/test_gpu_dispatcher_procs.py and `make bench-gpu-sched` share.

Processes only, no mocks: each worker is `python -m edgeweave.gpu.slice_worker` against the socket of
a `python -m edgeweave.gpu.dispatcher`; killing one is SIGKILL to its PID.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dispatch_auth import job_key, job_token
from .dispatch_output import assemble, commits

TPB = 10.0  # declared µs per block in the scenarios: grant sizes then depend on the load alone


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass
class JobHandle:
    namespace: str
    name: str
    uid: str
    spec: dict[str, Any]
    spec_file: Path
    frag_dir: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return job_key(self.namespace, self.name, self.uid)


class Node:
    """One GPU's dispatcher and its job pods' workers under `root`."""

    def __init__(self, root: Path, policy: str, *, slots: int = 1, lease_s: float = 3.0,
                 extra: tuple[str, ...] = (), decisions: bool = True, fsync: bool = False) -> None:
        self.root = root
        self.policy, self.slots, self.lease_s, self.extra = policy, slots, lease_s, extra
        self.flags = (["--decision-log", str(root / "decisions.jsonl")] if decisions else []) + (
            [] if fsync else ["--no-fsync"])
        self.socket = root / "run" / "dispatch.sock"
        self.state = root / "state"
        self.decisions = root / "decisions.jsonl"
        self.key_file = root / "key"
        root.mkdir(parents=True, exist_ok=True)
        self.key_file.write_bytes(secrets.token_hex(32).encode())
        os.chmod(self.key_file, 0o600)
        self.key = self.key_file.read_bytes().strip()
        self.dispatcher: subprocess.Popen[str] | None = None
        self.jobs: list[JobHandle] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start_dispatcher(self) -> subprocess.Popen[str]:
        log = (self.root / "dispatcher.log").open("a")
        self.dispatcher = subprocess.Popen(
            [sys.executable, "-m", "edgeweave.gpu.dispatcher", "--socket", str(self.socket),
             "--state-dir", str(self.state), "--key-file", str(self.key_file), "--policy", self.policy,
             "--slots", str(self.slots), "--lease-s", str(self.lease_s), *self.flags, *self.extra],
            stdout=subprocess.PIPE, stderr=log, text=True, env=self.env)
        assert self.dispatcher.stdout is not None
        line = self.dispatcher.stdout.readline()
        if '"listening"' not in line:
            raise RuntimeError(f"dispatcher did not start: {line!r}; see {self.root / 'dispatcher.log'}")
        return self.dispatcher

    def kill_dispatcher(self) -> None:
        assert self.dispatcher is not None
        self.dispatcher.send_signal(signal.SIGKILL)
        self.dispatcher.wait(10)

    def job(self, namespace: str, name: str, spec: dict[str, Any]) -> JobHandle:
        d = self.root / "jobs" / namespace / name
        d.mkdir(parents=True, exist_ok=True)
        spec_file = d / "spec.json"
        spec_file.write_text(json.dumps(spec))
        h = JobHandle(namespace, name, str(uuid.uuid4()), spec, spec_file, d / "out")
        self.jobs.append(h)
        return h

    def token(self, job: JobHandle) -> str:
        return job_token(self.key, job.namespace, job.name, job.uid)

    def start_worker(self, job: JobHandle, token: str | None = None, worker: str | None = None,
                     backend: str = "cpu", env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        n = len(job.procs)
        log = (job.frag_dir.parent / f"worker-{n}.log").open("w")
        p = subprocess.Popen(
            [sys.executable, "-m", "edgeweave.gpu.slice_worker", "--socket", str(self.socket),
             "--spec-file", str(job.spec_file), "--namespace", job.namespace, "--name", job.name,
             "--uid", job.uid, "--frag-dir", str(job.frag_dir), "--backend", backend,
             "--worker-id", worker or f"{job.name}-w{n}", "--connect-timeout", "30"],
            stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**self.env, **(env or {}), "EDGEWEAVE_JOB_TOKEN": token if token is not None else self.token(job)})
        job.procs.append(p)
        return p

    def worker_events(self, job: JobHandle, n: int = -1) -> list[dict[str, Any]]:
        idx = range(len(job.procs)) if n < 0 else [n]
        out = []
        for i in idx:
            path = job.frag_dir.parent / f"worker-{i}.log"
            for line in path.read_text().splitlines() if path.exists() else []:
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
        return out

    def decision_log(self) -> list[dict[str, Any]]:
        if not self.decisions.exists():
            return []
        # The dispatcher may be writing the last line right now: only newline-terminated lines count.
        lines = self.decisions.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self) -> None:
        for j in self.jobs:
            for p in j.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        if self.dispatcher is not None and self.dispatcher.poll() is None:
            self.dispatcher.terminate()
            try:
                self.dispatcher.wait(10)
            except subprocess.TimeoutExpired:
                self.dispatcher.kill()
                self.dispatcher.wait(10)


@contextmanager
def dispatcher_node(root: Path, policy: str, **kw: Any) -> Iterator[Node]:
    """A started dispatcher under `root`; its workers and it are stopped on the way out."""
    node = Node(root, policy, **kw)
    try:
        node.start_dispatcher()
        yield node
    finally:
        node.stop()


def policy_check(node: Node, policy: str) -> dict[str, Any]:
    """THREE_JOBS[policy] at once on `node`: grants checked by the oracle, and the finishing order
    where the policy fixes one."""
    specs, expected = THREE_JOBS[policy]
    finished, decisions = run_three(node, specs)
    order_ok = expected is None or finished == expected
    return {"finished": finished, "expected": expected, "order_ok": order_ok, "decisions": decisions,
            "contested": sum(1 for d in decisions if len(d["candidates"]) > 1),
            "violations": policy_violations(decisions) + (0 if order_ok else 1)}


def resize_verdict(r: dict[str, Any]) -> str:
    """'' when resize_scenario showed what the issue asks (sizes follow the live load), else why not."""
    if not (r["grants_before"] >= 20 and r["grants_after"] >= 10):
        return f"too few grants to compare: {r}"
    if r["max_load_before"] != 0.0:
        return f"the job was not alone before the second tenant: {r}"
    if r["sizes_off_prediction"]:
        return f"grants not sized by the optimiser for the load seen: {r['first_off']}"
    if not (r["load_after"] >= 0.2 and r["size_after"] <= 0.85 * r["size_before"]):
        return f"the second tenant's load did not shrink the next sub-kernels: {r}"
    if r["distinct_sizes"] <= 2:
        return f"one job's sub-kernels did not differ in size: {r}"
    return ""


def kill_verdict(r: dict[str, Any], blocks: int = 16384) -> str:
    """'' when kill_scenario's output is the unsliced run's and every block was committed once."""
    if r["exit_codes"] != [0, 0]:
        return f"workers failed: {r['exit_codes']}"
    if r["error"] or not r["identical"]:
        return f"output differs from the unsliced run: {r['error'] or 'values differ'}"
    if not (r["commits"] > r["commits_at_kill"] and r["reconnects"] >= 1):
        return f"the kills did not land mid-job: {r}"
    spans = r["spans"]
    if not (spans[0][0] == 0 and spans[-1][1] == blocks and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))):
        return f"committed spans are not every block once: {spans[:4]}..."
    return ""


def _oracle_best(policy: str, cands: list[dict[str, Any]]) -> set[str]:
    """Jobs a correct dispatcher may pick, written from the policy definitions in docs/gpu.md (not
    through scheduler.policy_key, which the dispatcher uses): the checker must not share its code."""
    def key(c: dict[str, Any]) -> float:
        if policy == "Fifo":
            return float(c["arrival"])
        if policy == "ShortestFirst":
            return float(c["remaining_ms"])
        if policy == "Priority":
            return -float(c["priority"])
        if policy == "FairShare":
            return float(c["share"])
        return float(c["deadline"]) if c["deadline"] is not None else math.inf
    best = min(key(c) for c in cands)
    tied = [c for c in cands if key(c) == best]
    first = min(c["arrival"] for c in tied)  # ties go to the earlier arrival
    return {c["job"] for c in tied if c["arrival"] == first}


def policy_violations(decisions: list[dict[str, Any]]) -> int:
    """Grants, among those decided with more than one job waiting, that went to the wrong job."""
    return sum(1 for d in decisions if len(d["candidates"]) > 1
               and d["job"] not in _oracle_best(d["policy"], d["candidates"]))


def job_spec(blocks: int, *, target_ms: float = 2.0, priority: int = 0, deadline: float | None = None,
             kernel: str = "saxpy", threads: int = 256) -> dict[str, Any]:
    s: dict[str, Any] = {"kernel": {"builtin": kernel, "problemSize": blocks * threads}, "grid": [blocks],
                         "block": [threads], "latencyTargetMs": target_ms, "priority": priority,
                         "profile": {"timePerBlockUs": TPB}}
    if deadline is not None:
        s["deadlineSeconds"] = deadline
    return s


class Client:
    """A raw protocol client driven by hand (the gate that holds the GPU, the latency probe)."""

    def __init__(self, node: Node, job: JobHandle, worker: str = "gate", token: str | None = None) -> None:
        self._open(node.socket, job.namespace, job.name, job.uid, node.token(job) if token is None else token,
                   job.spec, worker)

    @classmethod
    def at(cls, socket_path: Path, namespace: str, name: str, uid: str, token: str, spec: dict[str, Any],
           worker: str = "gate") -> Client:
        """A client of any dispatcher's socket (a real node's, through its host path)."""
        c = cls.__new__(cls)
        c._open(socket_path, namespace, name, uid, token, spec, worker)
        return c

    def _open(self, socket_path: Path, namespace: str, name: str, uid: str, token: str, spec: dict[str, Any],
              worker: str) -> None:
        from ..api.gpujob import GpuJobSpec
        from .slice_worker import job_wire

        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(str(socket_path))
        self.f = self.s.makefile("rwb")
        self.hello = self.call({"op": "hello", "namespace": namespace, "name": name, "uid": uid, "token": token,
                                "worker": worker, "job": job_wire(GpuJobSpec.model_validate(spec), True)})

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        self.f.write((json.dumps(req) + "\n").encode())
        self.f.flush()
        return json.loads(self.f.readline())

    def close(self) -> None:
        self.f.close()
        self.s.close()


THREE_JOBS: dict[str, tuple[dict[str, dict[str, Any]], list[str] | None]] = {
    "Priority": ({"low": job_spec(1024, priority=1), "high": job_spec(1024, priority=100),
                  "mid": job_spec(1024, priority=50)}, ["high", "mid", "low"]),
    "ShortestFirst": ({"large": job_spec(3072), "small": job_spec(512), "medium": job_spec(1536)},
                      ["small", "medium", "large"]),
    "Deadline": ({"latest": job_spec(1024, deadline=300), "soon": job_spec(1024, deadline=100),
                  "later": job_spec(1024, deadline=200)}, ["soon", "later", "latest"]),
    "FairShare": ({"a": job_spec(2048), "b": job_spec(2048), "c": job_spec(2048)}, None),
    "Fifo": ({"a": job_spec(1024), "b": job_spec(1024), "c": job_spec(1024)}, None),
}


def run_three(node: Node, specs: dict[str, dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Hold the GPU with a gate grant until all three jobs wait, release it, run them to the end.
    Returns the jobs in the order they finished and the dispatcher's decisions."""
    gate_job = node.job("gate", "gate", job_spec(64, target_ms=50))
    gate = Client(node, gate_job)
    held = gate.call({"op": "next"})
    if not (held.get("ok") and "grant" in held):
        raise RuntimeError(f"gate got no grant: {held}")
    jobs = {name: node.job(f"ns-{name}", name, spec) for name, spec in specs.items()}
    for j in jobs.values():
        node.start_worker(j)
    wait_until(lambda: gate.call({"op": "progress"})["waiting_jobs"] >= len(jobs), 60, "all jobs waiting")
    gate.call({"op": "release", "id": held["grant"]["id"]})
    gate.close()
    for j in jobs.values():
        if j.procs[0].wait(120) != 0:
            raise RuntimeError(f"worker of {j.name} failed: {node.worker_events(j)[-3:]}")
    decisions = [d for d in node.decision_log() if not d["job"].startswith("gate/")]
    last = {name: max(i for i, d in enumerate(decisions) if d["job"] == j.key) for name, j in jobs.items()}
    return sorted(last, key=last.__getitem__), decisions


def predicted_blocks(spec: dict[str, Any], left: int, load: float) -> int:
    """The grant size the optimiser gives a job with `left` blocks to go at `load` (what the
    dispatcher's book computes, written out here from the job's declared profile)."""
    from ..api.gpujob import GpuJobSpec
    from .optimiser import GpuLoad, OptimiserConfig, SliceProblem, decide

    js = GpuJobSpec.model_validate(spec)
    problem = SliceProblem(total_blocks=left, time_per_block_us=js.profile.time_per_block_us or TPB,
                           launch_overhead_us=js.profile.launch_overhead_us, latency_target_ms=js.latency_target_ms)
    return decide(problem, GpuLoad(utilisation=load, source="dispatcher"), OptimiserConfig()).slice_blocks


def resize_scenario(node: Node, *, risen: float = 0.2, after: int = 10, timeout: float = 180.0) -> dict[str, Any]:
    """Job a runs alone; tenant b starts mid-job on the same GPU (two slots: two contexts), its
    sub-kernels paced (EDGEWEAVE_CPU_PACE_US_PER_BLOCK = the declared time per block) so each one holds
    its slot for ~100 ms, as on a GPU. No timing assumption: the scenario polls the dispatcher's own
    record of the load it saw for each of a's grants until `after` of them were decided at a load of at
    least `risen`, and checks every grant's size against the optimiser's for that grant's load.

    a has 2^22 blocks (one thread each): it is still running however slowly b starts; the caller's
    node.stop() ends it."""
    from .runtime_cpu import ENV_PACE_US

    a_spec = job_spec(1 << 22, target_ms=0.5, threads=1)
    a = node.job("ns-a", "a", a_spec)
    node.start_worker(a)
    grants_of = lambda j: [d for d in node.decision_log() if d["job"] == j.key]  # noqa: E731
    wait_until(lambda: len(grants_of(a)) >= 30, timeout, "30 grants of a alone")
    b = node.job("ns-b", "b", job_spec(1 << 20, target_ms=200.0, threads=1))
    node.start_worker(b, env={ENV_PACE_US: str(TPB)})
    wait_until(lambda: sum(1 for d in grants_of(a) if d["load"] >= risen) >= after, timeout,
               f"{after} grants of a decided at a load >= {risen} (the dispatcher's own view)")
    log = node.decision_log()
    b_start = min(i for i, d in enumerate(log) if d["job"] == b.key)
    before = [d for d in log[:b_start] if d["job"] == a.key][5:]
    high = [d for d in log[b_start:] if d["job"] == a.key and d["load"] >= risen]
    total = 1 << 22
    # a's single worker takes its pool from the front: a grant at `lo` was sized with total - lo left.
    off = [d for d in before + high if abs((d["hi"] - d["lo"]) - predicted_blocks(a_spec, total - d["lo"], d["load"])) > 1]
    med = statistics.median
    return {"grants_before": len(before), "grants_after": len(high),
            "size_before": med(d["hi"] - d["lo"] for d in before) if before else None,
            "size_after": med(d["hi"] - d["lo"] for d in high) if high else None,
            "load_before": med(d["load"] for d in before) if before else None,
            "load_after": med(d["load"] for d in high) if high else None,
            "max_load_before": max((d["load"] for d in before), default=None),
            "sizes_off_prediction": len(off), "first_off": off[:3],
            "distinct_sizes": len({d["hi"] - d["lo"] for d in log if d["job"] == a.key})}


def unsliced_output(spec_file: Path, out: Path) -> np.ndarray:
    run = subprocess.run([sys.executable, "-m", "edgeweave.gpu.slice_run", "--spec-file", str(spec_file),
                          "--slices", "all", "--backend", "cpu", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise RuntimeError(run.stdout + run.stderr)
    return np.load(out / "output.npy")


def kill_scenario(node: Node, scratch: Path, blocks: int = 16384) -> dict[str, Any]:
    """SIGKILL one of a job's two pods, then the dispatcher, mid-job; restart both; compare the output
    assembled from committed grants with the unsliced run."""
    from .builtins import make_kernel
    from .grid import Grid

    job = node.job("ns-k", "k", job_spec(blocks, target_ms=1.0, kernel="stencil"))
    w0 = node.start_worker(job)
    node.start_worker(job)
    count = lambda: len(commits(node.state, job.key))  # noqa: E731
    wait_until(lambda: count() >= 15, 60, "15 commits")
    w0.kill()  # no goodbye: its grant in flight goes back to the pool when the socket closes
    w0.wait(10)
    wait_until(lambda: count() >= 40, 60, "40 commits")
    node.kill_dispatcher()
    at_kill = count()
    node.start_dispatcher()  # same state dir: replays the journal
    node.start_worker(job, worker="k-w0")  # the job pod's restart resumes from the job's progress
    codes = [p.wait(120) for p in job.procs[1:]]
    twin = make_kernel("stencil", blocks * 256, Grid(blocks), Grid(256), 0)
    try:
        merged = assemble(node.state, job.key, job.frag_dir, twin)
        identical = bool(np.array_equal(merged, unsliced_output(job.spec_file, scratch)))
        error = ""
    except ValueError as exc:
        identical, error = False, str(exc)
    events = node.worker_events(job)
    return {"identical": identical, "error": error, "exit_codes": codes, "commits_at_kill": at_kill,
            "commits": count(), "spans": sorted((c["lo"], c["hi"]) for c in commits(node.state, job.key)),
            "reconnects": max((e.get("reconnects", 0) for e in events if e.get("event") == "done"), default=0),
            "discarded": sum(1 for e in events if e.get("event") == "discarded")}
