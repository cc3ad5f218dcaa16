"""Failover between two network-namespace hosts sharing a baseline directory.

Host "src" runs the node agent (page server) and a writer workload that writes known
patterns and acknowledges each write; host "dst" runs `edgeweave memory-recover`. The
writer is killed with SIGKILL; the recovered region must hold every acknowledged write.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edgeweave.memory.loadgen import read_acks
from edgeweave.memory.patterns import check

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
PY = sys.executable
SIZE = 32 << 20
NPAGES = SIZE // 4096


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@dataclass
class Topo:
    src: str
    dst: str
    src_ip: str
    dst_ip: str


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("the memory e2e tests need root and iproute2 (CI runs as root)")
    sfx = secrets.token_hex(3)
    t = Topo(f"ewm-s-{sfx}", f"ewm-d-{sfx}", "10.231.7.1", "10.231.7.2")
    made: list[str] = []
    try:
        for ns in (t.src, t.dst):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        a, b = f"ewmS{sfx}", f"ewmD{sfx}"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", t.src)
        sh("ip", "link", "set", b, "netns", t.dst)
        sh("ip", "-n", t.src, "addr", "add", f"{t.src_ip}/30", "dev", a)
        sh("ip", "-n", t.dst, "addr", "add", f"{t.dst_ip}/30", "dev", b)
        sh("ip", "-n", t.src, "link", "set", a, "up")
        sh("ip", "-n", t.dst, "link", "set", b, "up")
        yield t
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@dataclass
class Stack:
    topo: Topo
    dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    port: int = 7470

    @property
    def store(self) -> Path:
        return self.dir / "store"

    @property
    def control(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    def start_agent(self) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.topo.src, PY, "-m", "edgeweave.cli", "memory", "serve",
                              "--control", str(self.control), "--listen", f"{self.topo.src_ip}:{self.port}", "-v"],
                             stdout=subprocess.PIPE, stderr=open(self.dir / "agent.log", "w"), text=True)
        self.procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("LISTENING"), line
        return p

    def start_writer(self, name: str, *extra: str) -> tuple[subprocess.Popen, dict]:
        p = subprocess.Popen(["ip", "netns", "exec", self.topo.src, PY, "-m", "edgeweave.cli", "memory", "writer",
                              "--name", name, "--size", str(SIZE), "--control", str(self.control),
                              "--token-file", str(self.token_file), "--store", str(self.store),
                              "--ack", str(self.dir / f"{name}.ack"), *extra],
                             stdout=subprocess.PIPE, stderr=open(self.dir / f"{name}.log", "w"), text=True)
        self.procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("READY "), (line, (self.dir / f"{name}.log").read_text())
        return p, json.loads(line[6:])

    def recover(self, name: str, *extra: str, token_file: Path | None = None) -> tuple[int, dict, Path]:
        dest = Path("/dev/shm") / f"ewm-test-{secrets.token_hex(4)}-{name}"
        r = subprocess.run(["ip", "netns", "exec", self.topo.dst, PY, "-m", "edgeweave.cli", "memory-recover",
                            "--store", str(self.store), "--region", name, "--dest", str(dest),
                            "--source", f"{self.topo.src_ip}:{self.port}", "--timeout", "3",
                            "--token-file", str(token_file or self.token_file), *extra],
                           capture_output=True, text=True, timeout=90)
        self.dests.append(dest)
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1]), dest

    dests: list[Path] = field(default_factory=list)


@pytest.fixture
def stack(topo: Topo, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(topo, tmp_path)
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


def kill9(p: subprocess.Popen) -> None:
    # `ip netns exec` execs the program, so the pid is the workload itself.
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def region_words(dest: Path) -> np.ndarray:
    return np.fromfile(dest, dtype=np.uint64).reshape(-1, 512)


@pytest.mark.parametrize("track", ["auto", "explicit"])
def test_failover_keeps_every_acknowledged_write(stack: Stack, track: str) -> None:
    stack.start_agent()
    w, ready = stack.start_writer("sessions", "--track", track, "--dirty-pages", "1500",
                                  "--rate", "800", "--scan-interval", "0.3")
    if track == "auto":
        assert ready["tracking"].startswith("uffd-wp-async+PAGEMAP_SCAN")
    time.sleep(1.5)  # keep writing (acknowledged) until the kill
    kill9(w)
    rc, rep, dest = stack.recover("sessions")
    assert rc == 0, rep
    assert rep["mode"] == "baseline+dirty" and rep["source_reachable"] and rep["epoch"] == 1
    acked = read_acks(str(stack.dir / "sessions.ack"), NPAGES)
    ahead, wrong = check(region_words(dest), acked)
    assert len(wrong) == 0, f"lost or corrupt pages: {wrong[:10]}"
    assert len(ahead) <= 1  # at most the one write in flight when the writer died
    written = int((acked > 0).sum())
    assert written >= 1500 and rep["dirty_pages"] >= written
    assert rep["dirty_pages"] <= written + 1  # only the changed pages crossed the link
    assert rep["bytes"] < (written + 64) * 4096 * 1.05


def test_writes_after_the_last_scan_are_found_by_the_sweep(stack: Stack) -> None:
    stack.start_agent()
    # No scan ever runs after the baseline: every write since is found only by checksum sweep.
    w, _ = stack.start_writer("cache", "--track", "uffd", "--dirty-pages", "700", "--scan-interval", "3600")
    kill9(w)
    rc, rep, dest = stack.recover("cache")
    assert rc == 0, rep
    assert rep["source_sweep"]["found"] == 700
    acked = read_acks(str(stack.dir / "cache.ack"), NPAGES)
    ahead, wrong = check(region_words(dest), acked)
    assert len(wrong) == 0 and len(ahead) == 0
    assert rep["pages"] == 700


def test_wrong_token_is_refused(stack: Stack) -> None:
    stack.start_agent()
    w, _ = stack.start_writer("secret", "--dirty-pages", "10")
    bad = stack.dir / "bad-token"
    bad.write_text(secrets.token_hex(32))
    rc, rep, dest = stack.recover("secret", token_file=bad)
    assert rc == 3 and not rep["ok"] and rep["mode"] == "failed"
    assert "refused" in rep["message"] and rep["bytes"] == 0
    assert not dest.exists()
    # the same region with the right token works, and a region that does not exist is refused alike
    rc, rep, _ = stack.recover("secret")
    assert rc == 0 and rep["mode"] == "baseline+dirty"
    (stack.store / "nosuch").mkdir(parents=True)
    shutil.copytree(stack.store / "secret" / "epoch-000001", stack.store / "nosuch" / "epoch-000001")
    (stack.store / "nosuch" / "CURRENT").write_text("1\n")
    rc, rep, _ = stack.recover("nosuch")
    assert rc == 3 and "refused" in rep["message"]
    kill9(w)


def test_source_down_gives_the_baseline_and_says_so(stack: Stack) -> None:
    agent = stack.start_agent()
    w, ready = stack.start_writer("state", "--dirty-pages", "300", "--second-baseline-after", "100")
    assert ready["epoch"] == 2
    kill9(w)
    kill9(agent)  # the whole source host is gone
    rc, rep, dest = stack.recover("state")
    assert rc == 0, rep
    assert rep["mode"] == "baseline-only" and rep["source_reachable"] is False and rep["epoch"] == 2
    assert "epoch 2" in rep["message"] and rep["pages"] == 0
    # exactly epoch 2: the first 100 dirty writes are in it, the 200 after it are not
    acks = np.frombuffer((stack.dir / "state.ack").read_bytes(), dtype="<u4").reshape(-1, 2)
    at_epoch2 = np.zeros(NPAGES, dtype=np.int64)
    at_epoch2[acks[:100, 0]] = acks[:100, 1]
    ahead, wrong = check(region_words(dest), at_epoch2)
    assert len(wrong) == 0 and len(ahead) == 0
    rc, rep, dest = stack.recover("state", "--require-source")
    assert rc == 3 and not rep["ok"] and not dest.exists()


def test_corrupt_baseline_page_is_detected(stack: Stack) -> None:
    agent = stack.start_agent()
    w, _ = stack.start_writer("model", "--dirty-pages", "50")
    kill9(w)
    data = stack.store / "model" / "epoch-000001" / "data"
    with open(data, "r+b") as f:
        f.seek(17 * 4096 + 100)
        b = f.read(1)
        f.seek(17 * 4096 + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    rc, rep, dest = stack.recover("model")
    assert rc == 0 and rep["corrupt_baseline_pages"] == [17]
    assert "repaired" in rep["message"]
    ahead, wrong = check(region_words(dest), read_acks(str(stack.dir / "model.ack"), NPAGES))
    assert len(wrong) == 0 and len(ahead) == 0
    kill9(agent)
    rc, rep, dest = stack.recover("model")
    assert rc == 3 and not rep["ok"] and rep["corrupt_baseline_pages"] == [17]
    assert not dest.exists()
