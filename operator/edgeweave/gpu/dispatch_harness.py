"""Run a dispatcher and slice workers as real local processes (the CPU runtime): what the tests of
tests/unit/gpu/test_gpu_dispatcher_procs.py and `make bench-gpu-sched` share.

Processes only, no mocks: each worker is `python -m edgeweave.gpu.slice_worker` against the socket of
a `python -m edgeweave.gpu.dispatcher`; killing one is SIGKILL to its PID.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dispatch_auth import job_key, job_token


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
                 extra: tuple[str, ...] = ()) -> None:
        self.root = root
        self.policy, self.slots, self.lease_s, self.extra = policy, slots, lease_s, extra
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
             "--slots", str(self.slots), "--lease-s", str(self.lease_s), "--decision-log", str(self.decisions),
             "--no-fsync", *self.extra],
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

    def start_worker(self, job: JobHandle, token: str | None = None, worker: str | None = None
                     ) -> subprocess.Popen[str]:
        n = len(job.procs)
        log = (job.frag_dir.parent / f"worker-{n}.log").open("w")
        p = subprocess.Popen(
            [sys.executable, "-m", "edgeweave.gpu.slice_worker", "--socket", str(self.socket),
             "--spec-file", str(job.spec_file), "--namespace", job.namespace, "--name", job.name,
             "--uid", job.uid, "--frag-dir", str(job.frag_dir), "--backend", "cpu",
             "--worker-id", worker or f"{job.name}-w{n}", "--connect-timeout", "30"],
            stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**self.env, "EDGEWEAVE_JOB_TOKEN": token if token is not None else self.token(job)})
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
        return [json.loads(line) for line in self.decisions.read_text().splitlines() if line.strip()]

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
