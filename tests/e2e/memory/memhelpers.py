"""Fixtures: three netns hosts (src, dst, store), rclone serve s3 as the store, mutual TLS, processes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeweave.memory.certs import make_pki

REPO = Path(__file__).resolve().parents[3]
SIZE = 32 << 20
NPAGES = SIZE // 4096
PORT = int(os.environ.get("EDGEWEAVE_MEMORY_PAGE_PORT", "7470"))  # inside the test's own netns


def _load_topo() -> Any:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("memory_topo", REPO / "hack" / "memory_topo.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["memory_topo"] = mod
    spec.loader.exec_module(mod)
    return mod


memory_topo = _load_topo()


@dataclass
class Env:
    topo: Any
    dir: Path
    pki: dict
    store_env: dict[str, str]
    store_root: Path

    @property
    def store_url(self) -> str:
        return memory_topo.MemTopo.store_url()


@pytest.fixture(scope="package")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("the memory e2e tests need root and network namespaces (CI runs as root)")
    d = tmp_path_factory.mktemp("ewm")
    topo = memory_topo.MemTopo()
    topo.up()
    try:
        pki = make_pki(d / "pki", {"src": topo.src_ip, "dst": topo.dst_ip, "store": memory_topo.STORE_IP})
        root = d / "s3root"
        store_env = topo.start_store(root, pki["store"]["cert"], pki["store"]["key"])
        yield Env(topo, d, pki, store_env, root)
    finally:
        topo.down()


def tls_args(env: Env, host: str) -> list[str]:
    p = env.pki[host]
    return ["--tls-cert", str(p["cert"]), "--tls-key", str(p["key"]), "--tls-ca", str(p["ca"])]


@dataclass
class Stack:
    env: Env
    dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    dests: list[Path] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)  # directories (pre-staged copies in /dev/shm)
    ns: str = field(default_factory=lambda: f"t{secrets.token_hex(3)}")
    pod_uid: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def control(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    def penv(self) -> dict[str, str]:
        return {**os.environ, **self.env.store_env}

    def popen(self, role: str, *args: str, log: str) -> subprocess.Popen:
        p = subprocess.Popen(self.env.topo.py(role, *args), stdout=subprocess.PIPE,
                             stderr=open(self.dir / log, "w"), text=True, env=self.penv())
        self.procs.append(p)
        return p

    def start_agent(self, *extra: str, role: str = "src", control: Path | None = None) -> subprocess.Popen:
        ip = self.env.topo.src_ip if role == "src" else self.env.topo.dst_ip
        p = self.popen(role, "memory", "serve", "--control", str(control or self.control), "--listen",
                       f"{ip}:{PORT}", "--store", self.env.store_url, *tls_args(self.env, role), "-v", *extra,
                       log=f"agent-{role}.log")
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("LISTENING"), (line, (self.dir / f"agent-{role}.log").read_text())
        return p

    def start_writer(self, name: str, *extra: str, wait: str = "READY ") -> tuple[subprocess.Popen, dict]:
        p = self.popen("src", "memory", "writer", "--name", name, "--size", str(SIZE), "--control",
                       str(self.control), "--token-file", str(self.token_file), "--store", self.env.store_url,
                       "--ack", str(self.dir / f"{name}.ack"), "--namespace", self.ns, "--pod-uid", self.pod_uid,
                       *extra, log=f"{name}.log")
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("READY "), (line, (self.dir / f"{name}.log").read_text())
        return p, json.loads(line[6:])

    def key(self, name: str) -> str:
        return f"{self.ns}/{self.pod_uid}/{name}"

    def recover(self, name: str, *extra: str, token_file: Path | None = None,
                key: str | None = None, dest: Path | None = None) -> tuple[int, dict, Path]:
        dest = dest or Path("/dev/shm") / f"ewm-test-{secrets.token_hex(4)}-{name}"
        r = subprocess.run(self.env.topo.py("dst", "memory-recover", "--store", self.env.store_url, "--region",
                                            key or self.key(name), "--dest", str(dest), "--source",
                                            f"{self.env.topo.src_ip}:{PORT}", "--timeout", "3", "--token-file",
                                            str(token_file or self.token_file), *tls_args(self.env, "dst"), *extra),
                           capture_output=True, text=True, timeout=120, env=self.penv())
        self.dests.append(dest)
        assert r.stdout.strip(), r.stderr[-3000:]
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1]), dest


@pytest.fixture
def stack(env: Env, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(env, tmp_path)
    s.token_file.write_text(secrets.token_hex(32))
    try:
        yield s
    finally:
        for p in s.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        for d in s.dests:
            d.unlink(missing_ok=True)
        for d in s.cleanup:
            shutil.rmtree(d, ignore_errors=True)


def kill9(p: subprocess.Popen) -> None:
    # nsenter execs the program, so the pid is the workload itself.
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def region_words(dest: Path) -> np.ndarray:
    return np.fromfile(dest, dtype=np.uint64).reshape(-1, 512)


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(what)
