"""Benchmark: dirty-page recovery of a 1 GiB region vs a full copy over the same 1 Gbit/s link.

Two network-namespace hosts joined by a veth pair shaped with tc (tbf, 1 Gbit/s, both ways).
Per dirty fraction (0.1 %, 1 %, 10 %, 50 %): a writer fills the region, baseline epoch 1 goes to
a store on local disk (evicted from the page cache, so recovery reads it cold), the writer
dirties the fraction of pages (acknowledging each write) and is SIGKILLed; the failover host
runs `edgeweave memory-recover` and the result is checked against the acknowledgements.
The full copy (every page, same transport, same link) is measured in the same run.
Then the cost of dirty tracking on a write-heavy loop. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeweave.memory.loadgen import read_acks
from edgeweave.memory.patterns import check

PY = sys.executable
SIZE = int(os.environ.get("EWM_BENCH_SIZE", str(1 << 30)))
PAGE = 4096
NPAGES = SIZE // PAGE
RATE = os.environ.get("EWM_BENCH_RATE", "1gbit")
FRACTIONS = [0.001, 0.01, 0.1, 0.5]
SRC_IP, DST_IP = "10.231.9.1", "10.231.9.2"


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Topo:
    def __init__(self) -> None:
        sfx = secrets.token_hex(3)
        self.src, self.dst = f"ewm-bs-{sfx}", f"ewm-bd-{sfx}"
        self.a, self.b = f"ewmS{sfx}", f"ewmD{sfx}"
        self.made: list[str] = []

    def up(self) -> None:
        for ns in (self.src, self.dst):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.a, "type", "veth", "peer", "name", self.b)
        sh("ip", "link", "set", self.a, "netns", self.src)
        sh("ip", "link", "set", self.b, "netns", self.dst)
        for ns, dev, ip in ((self.src, self.a, SRC_IP), (self.dst, self.b, DST_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            # veth offloads would let 64 KiB super-packets through; tbf shapes them fine either way.
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", RATE,
               "burst", "1mb", "latency", "50ms")

    def down(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start(ns: str, *args: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "edgeweave.cli", *args],
                            stdout=subprocess.PIPE, stderr=open(out, "w"), text=True)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def recover(topo: Topo, work: Path, name: str, dest: Path, *extra: str) -> dict:
    r = subprocess.run(["ip", "netns", "exec", topo.dst, PY, "-m", "edgeweave.cli", "memory-recover",
                        "--store", str(work / "store"), "--region", name, "--dest", str(dest),
                        "--source", f"{SRC_IP}:7470", "--token-file", str(work / "token"), *extra],
                       capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        raise RuntimeError(f"recover failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def level(topo: Topo, work: Path, frac: float, with_full_copy: bool) -> dict:
    name = f"bench-{int(frac * 10000)}"
    agent = start(topo.src, "memory", "serve", "--control", str(work / "agent.sock"), "--listen",
                  f"{SRC_IP}:7470", out=work / f"agent-{name}.log")
    procs = [agent]
    dest = Path("/dev/shm") / f"ewm-bench-{secrets.token_hex(3)}"
    full_dest = Path("/dev/shm") / f"ewm-bench-full-{secrets.token_hex(3)}"
    try:
        assert agent.stdout is not None and agent.stdout.readline().startswith("LISTENING")
        k = max(1, round(NPAGES * frac))
        w = start(topo.src, "memory", "writer", "--name", name, "--size", str(SIZE), "--control",
                  str(work / "agent.sock"), "--token-file", str(work / "token"), "--store", str(work / "store"),
                  "--ack", str(work / f"{name}.ack"), "--dirty-pages", str(k), "--scan-interval", "0.5",
                  out=work / f"{name}.log")
        procs.append(w)
        assert w.stdout is not None
        line = w.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError((work / f"{name}.log").read_text())
        ready = json.loads(line[6:])
        evict(work / "store" / name / "epoch-000001" / "data")
        os.kill(w.pid, signal.SIGKILL)
        w.wait()
        rep = recover(topo, work, name, dest)
        acked = read_acks(str(work / f"{name}.ack"), NPAGES)
        ahead, wrong = check(np.fromfile(dest, dtype=np.uint64).reshape(NPAGES, PAGE // 8), acked)
        dest.unlink()
        out = {"dirty_pct": frac * 100, "dirty_pages_written": k, "recovery_s": rep["duration_s"],
               "bytes_from_source": rep["bytes"], "pages_from_source": rep["pages"], "phases": rep["phases"],
               "source_sweep_s": (rep.get("source_sweep") or {}).get("seconds"), "mode": rep["mode"],
               "lost_acknowledged_writes": int(len(wrong)), "unacknowledged_in_flight": int(len(ahead)),
               "tracking": ready["tracking"]}
        if with_full_copy:
            full = recover(topo, work, name, full_dest, "--full-copy")
            out["full_copy"] = {"seconds": full["duration_s"], "bytes": full["bytes"]}
            ahead_f, wrong_f = check(np.fromfile(full_dest, dtype=np.uint64).reshape(NPAGES, PAGE // 8), acked)
            out["full_copy"]["lost_acknowledged_writes"] = int(len(wrong_f))
        log(f"  {frac * 100:g}% dirty: {json.dumps(out)}")
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        dest.unlink(missing_ok=True)
        full_dest.unlink(missing_ok=True)
        shutil.rmtree(work / "store" / name, ignore_errors=True)


def tracking_overhead(size: int = 256 << 20, rounds: int = 6, writes_per_page: int = 4) -> dict:
    """ns per 8-byte store in a write-heavy loop (random pages, scan between rounds).

    `cold`: every store hits a page re-protected by the last scan (the worst case: one
    write-protect fault per store); `warm`: each page written `writes_per_page` times per round.
    """
    from edgeweave.memory.region import Region

    res: dict[str, dict[str, float]] = {}
    n = size // PAGE
    rng = np.random.default_rng(3)
    order = rng.permutation(n).astype(np.int64) * (PAGE // 8)
    for mode in ("none", "uffd", "explicit"):
        r = Region.create(f"ovh-{mode}", size, track="uffd" if mode == "uffd" else "explicit")
        words = r.array.view(np.uint64)
        words[::PAGE // 8] = 1  # populate
        r.collect()
        times = {"cold": [], "warm": []}
        for i in range(rounds):
            for kind, reps in (("cold", 1), ("warm", writes_per_page)):
                r.collect()
                t = time.perf_counter()
                for j in range(reps):
                    words[order] = i * 10 + j
                if mode == "explicit":
                    r.state.mark(order // (PAGE // 8))  # one vectorised mark per batch of writes
                dt = time.perf_counter() - t
                times[kind].append(dt / (n * reps))
                r.collect()
        res[mode] = {k: round(float(np.median(v)) * 1e9, 2) for k, v in times.items()}
        res[mode]["scan_s_per_gib"] = 0.0
        if mode == "uffd":
            words[order] = 99
            t = time.perf_counter()
            r.collect()
            res[mode]["scan_s_per_gib"] = round((time.perf_counter() - t) * (1 << 30) / size, 4)
        del words
        r.close()
    for kind in ("cold", "warm"):
        base = res["none"][kind]
        res[f"uffd_overhead_pct_{kind}"] = round((res["uffd"][kind] - base) / base * 100, 1)  # type: ignore[assignment]
        res[f"explicit_overhead_pct_{kind}"] = round((res["explicit"][kind] - base) / base * 100, 1)  # type: ignore[assignment]
    return res


def main() -> int:
    if os.geteuid() != 0:
        print("bench-memory needs root (network namespaces, tc)", file=sys.stderr)
        return 1
    t_all = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ewm-bench-", dir="/var/tmp"))  # local disk, not tmpfs
    (work / "token").write_text(secrets.token_hex(32))
    topo = Topo()
    try:
        topo.up()
        log(f"memory bench: {SIZE >> 20} MiB region, link {RATE} (tbf), store {work}")
        levels = [level(topo, work, f, with_full_copy=(f == 0.01)) for f in FRACTIONS]
    finally:
        topo.down()
        shutil.rmtree(work, ignore_errors=True)
    log("tracking overhead ...")
    ovh = tracking_overhead()
    full = next(lv["full_copy"] for lv in levels if "full_copy" in lv)
    for lv in levels:
        lv["speedup_vs_full_copy"] = round(full["seconds"] / lv["recovery_s"], 2)
        lv["source_bytes_ratio"] = round(full["bytes"] / max(1, lv["bytes_from_source"]), 1)
    one = next(lv for lv in levels if lv["dirty_pct"] == 1.0)
    result = {
        "bench": "memory",
        "region_bytes": SIZE, "page_bytes": PAGE, "link": f"{RATE} tbf veth between netns",
        "baseline_store": "local disk, page cache evicted before recovery",
        "tracking_mode": one["tracking"],
        "full_copy_s": full["seconds"], "full_copy_bytes": full["bytes"],
        "recovery_s_1pct": one["recovery_s"], "bytes_from_source_1pct": one["bytes_from_source"],
        "speedup_vs_full_copy_1pct": one["speedup_vs_full_copy"],
        "source_bytes_ratio_1pct": one["source_bytes_ratio"],
        "lost_acknowledged_writes": sum(lv["lost_acknowledged_writes"] for lv in levels)
        + full["lost_acknowledged_writes"],
        "levels": {f"{lv['dirty_pct']:g}pct": {k: lv[k] for k in (
            "recovery_s", "bytes_from_source", "pages_from_source", "speedup_vs_full_copy", "source_bytes_ratio",
            "lost_acknowledged_writes", "source_sweep_s", "phases")} for lv in levels},
        "tracking_overhead_ns_per_write": ovh,
        "targets_met_1pct": one["speedup_vs_full_copy"] >= 5 and one["source_bytes_ratio"] >= 50
        and all(lv["lost_acknowledged_writes"] == 0 for lv in levels),
        "bench_seconds": round(time.monotonic() - t_all, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
