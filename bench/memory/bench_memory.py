"""Benchmark: failover of a 1 GiB region, every path across links of one class, CRIU in the same run.

Three network-namespace hosts (src, dst, store: hack/memory_topo.py), every link a veth pair
shaped with tc tbf at EWM_BENCH_RATE (1 Gbit/s) both ways. The store is `rclone serve s3`
(TLS, access key) on its own host; the page server uses mutual TLS (the default).

Per run (EWM_BENCH_RUNS, default 10), at 1 % dirty pages:
  * the writer fills the region, publishes baseline epoch 1 to the store (over its link),
    dirties 1 % of the pages (each write acknowledged) and is SIGKILLed;
  * pre-staged: the dst agent pulled epoch 1 in the background (rate-limited, checked as it
    arrives) before the kill; recovery asks the source for the pages dirty since that epoch (the
    store is not asked) and either adopts the copy (in node memory, the region's tmpfs: rename)
    or reads it from local disk (page cache evicted, every page checked), then the dirty pages;
    each recovery is timed in-process (`duration_s`) and as the whole command (`wall_s`:
    interpreter start and imports included; CRIU's figures are whole commands, so the CRIU
    ratio uses ours as a whole command too);
  * cold: recovery reads the baseline from the store over the dst-store link;
  * lazy: the replacement attaches its userfaultfd and serves at once (pre-staged baseline,
    adopted; MINOR mode where the kernel has it);
    time to first served request and to fully resident;
  * full copy: every page from the source over the src-dst link (same transport, TLS);
  * CRIU 4.1.1 (hack/fetch-criu.sh): a process holding the same 1 GiB memfd, 1 % rewritten;
    `criu dump` straight to a `criu page-server` on dst over the src-dst link, then `criu
    restore` on dst. Pre-dump needs soft-dirty tracking, which this kernel lacks.
Every recovered region is checked against the acknowledgements. Then the faults (64 MiB
regions): SIGKILL under steady writes, SIGKILL mid-snapshot, the source agent killed (host
failure). Medians with 95 % bootstrap intervals. The last line is one JSON object.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeweave.memory.certs import make_pki
from edgeweave.memory.loadgen import read_acks
from edgeweave.memory.patterns import check
from edgeweave.memory.prestage import parse_rate

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
EDGEWEAVE = str(Path(PY).parent / "edgeweave")  # the console script pip installs beside the interpreter
SIZE = int(os.environ.get("EWM_BENCH_SIZE", str(1 << 30)))
PAGE = 4096
NPAGES = SIZE // PAGE
RATE = os.environ.get("EWM_BENCH_RATE", "1gbit")
RUNS = int(os.environ.get("EWM_BENCH_RUNS", "10"))
CRIU_RUNS = int(os.environ.get("EWM_BENCH_CRIU_RUNS", str(RUNS)))
FAULT_REPS = int(os.environ.get("EWM_BENCH_FAULT_REPS", "3"))
FAULT_SIZE = 64 << 20
PRESTAGE_RATE = os.environ.get("EWM_BENCH_PRESTAGE_RATE", "800mbit")
PORT = int(os.environ.get("EDGEWEAVE_MEMORY_PAGE_PORT", "7470"))  # inside the bench's own netns
CRIU_PORT = os.environ.get("EDGEWEAVE_MEMORY_CRIU_PORT", "7480")  # and CRIU_PORT + 1 (image copy)
CRIU_LAZY_RUNS = int(os.environ.get("EWM_BENCH_CRIU_LAZY_RUNS", "1"))


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def _topo_mod():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("memory_topo", REPO / "hack" / "memory_topo.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["memory_topo"] = mod
    spec.loader.exec_module(mod)
    return mod


def med_ci(xs: list[float], seed: int = 0) -> dict:
    a = np.asarray(xs, dtype=float)
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(a, (2000, len(a))), axis=1) if len(a) > 1 else a
    return {"median": round(float(np.median(a)), 4), "ci95": [round(float(np.percentile(boots, 2.5)), 4),
                                                             round(float(np.percentile(boots, 97.5)), 4)],
            "n": len(a)}


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Bench:
    def __init__(self, work: Path) -> None:
        self.mt = _topo_mod()
        self.work = work
        self.topo = self.mt.MemTopo(rate=RATE)
        self.procs: list[subprocess.Popen] = []

    def up(self) -> None:
        self.topo.up()
        t = self.topo
        self.pki = make_pki(self.work / "pki", {"src": t.src_ip, "dst": t.dst_ip, "store": self.mt.STORE_IP})
        self.store_env = t.start_store(self.work / "s3root", self.pki["store"]["cert"], self.pki["store"]["key"])
        self.env = {**os.environ, **self.store_env}
        self.url = self.mt.MemTopo.store_url()
        (self.work / "token").write_text(secrets.token_hex(32))

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.topo.down()

    def tls(self, host: str) -> list[str]:
        p = self.pki[host]
        return ["--tls-cert", str(p["cert"]), "--tls-key", str(p["key"]), "--tls-ca", str(p["ca"])]

    def popen(self, role: str, *args: str, log_name: str, stdin: int | None = None) -> subprocess.Popen:
        p = subprocess.Popen(self.topo.py(role, *args), stdout=subprocess.PIPE, stdin=stdin,
                             stderr=open(self.work / log_name, "w"), text=True, env=self.env)
        self.procs.append(p)
        return p

    def agent(self) -> subprocess.Popen:
        p = self.popen("src", "memory", "serve", "--control", str(self.work / "agent.sock"), "--listen",
                       f"{self.topo.src_ip}:{PORT}", "--store", self.url, *self.tls("src"), "-v",
                       log_name="agent.log")
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("LISTENING"):
            raise RuntimeError((self.work / "agent.log").read_text())
        return p

    def writer(self, name: str, size: int, *extra: str) -> tuple[subprocess.Popen, dict, str]:
        uid = secrets.token_hex(8)
        p = self.popen("src", "memory", "writer", "--name", name, "--size", str(size), "--control",
                       str(self.work / "agent.sock"), "--token-file", str(self.work / "token"), "--store", self.url,
                       "--ack", str(self.work / f"{name}.ack"), "--namespace", "bench", "--pod-uid", uid, *extra,
                       log_name=f"{name}.log")
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError((self.work / f"{name}.log").read_text()[-3000:])
        return p, json.loads(line[6:]), f"bench/{uid}/{name}"

    def recover(self, key: str, dest: Path, *extra: str) -> dict:
        t = time.monotonic()
        # the whole command as the init container runs it: the `edgeweave` console script
        r = subprocess.run([*self.topo.exec("dst"), EDGEWEAVE, "memory-recover", "--store", self.url, "--region", key,
                            "--dest", str(dest), "--source", f"{self.topo.src_ip}:{PORT}", "--token-file",
                            str(self.work / "token"), *self.tls("dst"), *extra],
                           capture_output=True, text=True, timeout=600, env=self.env)
        wall = time.monotonic() - t  # the whole command: interpreter start, imports, TLS, exit
        if not r.stdout.strip():
            raise RuntimeError(f"recover failed: {r.stderr[-3000:]}")
        return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": round(wall, 4)}

    def lost(self, dest: Path, ack: Path, npages: int) -> tuple[int, int]:
        ahead, wrong = check(np.fromfile(dest, dtype=np.uint64).reshape(npages, PAGE // 8),
                             read_acks(str(ack), npages))
        return int(len(wrong)), int(len(ahead))


def kill9(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def one_run(b: Bench, i: int, with_lazy: bool) -> dict:
    name = f"r{i}"
    k = max(1, round(NPAGES * 0.01))
    shm = Path("/dev/shm")
    dests = {m: shm / f"ewm-bench-{m}-{secrets.token_hex(3)}" for m in ("pre", "mem", "cold", "full", "lazy")}
    cache = b.work / "cache"  # pre-staged on the node's disk (page cache evicted before each read)
    mcache = shm / f"ewm-bench-prestaged-{b.topo.sfx}"  # pre-staged in memory (tmpfs / emptyDir Memory)
    out: dict = {}
    try:
        t = time.monotonic()
        w, ready, key = b.writer(name, SIZE, "--dirty-pages", str(k), "--scan-interval", "0.5")
        out["writer_ready_s"] = round(time.monotonic() - t, 2)  # fill + baseline upload + 1 % writes
        store_name = ready["store_name"]
        # pre-staging: what the dst agent does in the background after each snapshot (rate-limited)
        r = subprocess.run(b.topo.py("dst", "memory", "prestage", "--store", b.url, "--cache", str(cache),
                                     "--region", store_name, "--rate", PRESTAGE_RATE),
                           capture_output=True, text=True, env=b.env, timeout=600)
        pre = json.loads(r.stdout.strip().splitlines()[-1])
        assert pre.get("ok"), r.stdout + r.stderr
        out["prestage_s"] = pre["seconds"]
        # the in-memory copy is made from the disk one (same bytes and check mark, no second pull
        # over the link); recovery adopts it (rename), so it is made again for each recovery using it
        def stage_in_memory() -> None:
            shutil.rmtree(mcache / store_name, ignore_errors=True)
            shutil.copytree(cache / store_name, mcache / store_name)

        stage_in_memory()
        kill9(w)
        ack = b.work / f"{name}.ack"
        evict(cache / store_name / "epoch-000001" / "data")
        rep = b.recover(key, dests["pre"], "--local-cache", str(cache))
        assert rep["mode"] == "baseline+dirty" and rep["sources"]["baseline"]["from"] == "local", rep
        out["prestaged_s"] = rep["duration_s"]
        out["prestaged_phases"] = rep["phases"]
        out["bytes_from_source"] = rep["bytes"]
        out["lost_prestaged"] = b.lost(dests["pre"], ack, NPAGES)[0]
        dests["pre"].unlink()
        rep = b.recover(key, dests["mem"], "--local-cache", str(mcache))
        assert rep["mode"] == "baseline+dirty" and rep["sources"]["baseline"]["from"] == "local", rep
        assert rep["sources"]["baseline"].get("adopted"), rep
        out["prestaged_mem_s"] = rep["duration_s"]
        out["prestaged_mem_wall_s"] = rep["wall_s"]
        out["prestaged_mem_phases"] = rep["phases"]
        out["lost_prestaged_mem"] = b.lost(dests["mem"], ack, NPAGES)[0]
        dests["mem"].unlink()
        rep = b.recover(key, dests["cold"])
        assert rep["mode"] == "baseline+dirty" and rep["sources"]["baseline"]["from"] == "store", rep
        out["cold_s"] = rep["duration_s"]
        out["cold_phases"] = rep["phases"]
        out["lost_cold"] = b.lost(dests["cold"], ack, NPAGES)[0]
        dests["cold"].unlink()
        if with_lazy:
            stage_in_memory()
            sock = b.work / f"lazy-{name}.sock"
            app = b.popen("dst", "memory", "lazy-check", "--dest", str(dests["lazy"]), "--size", str(SIZE),
                          "--helper", str(sock), "--ack", str(ack), "--requests", "2000", log_name=f"lazy-{name}.log")
            time.sleep(1.0)  # the replacement process is up (interpreter, imports) before recovery starts
            rep = b.recover(key, dests["lazy"], "--local-cache", str(mcache), "--lazy", str(sock))
            assert app.stdout is not None
            served = json.loads(app.stdout.readline())
            app.wait()
            lz = rep["source_sweep"]["lazy"]
            out["lazy"] = {"first_serve_ms": round((served["first_served_at"] - lz["t0_monotonic"]) * 1e3, 2),
                           "adopted": rep["sources"]["baseline"].get("adopted"),
                           "phases": {k: v for k, v in rep["phases"].items() if k in
                                      ("connect_s", "manifest_s", "dirty_list_s", "adopt_s", "attach_s")},
                           "fully_resident_s": lz["fully_resident_s"], "faults": lz["faults"],
                           "fault_ms_p50": lz["fault_ms_p50"], "request_ms_p99": served["request_ms_p99"],
                           "wrong_served": served["wrong"], "attach_s": lz["attach_s"]}
            out["lost_lazy"] = b.lost(dests["lazy"], ack, NPAGES)[0] + served["wrong"]
            dests["lazy"].unlink()
        rep = b.recover(key, dests["full"], "--full-copy")
        out["full_copy_s"] = rep["duration_s"]
        out["full_copy_wall_s"] = rep["wall_s"]
        out["full_copy_bytes"] = rep["bytes"]
        out["lost_full"] = b.lost(dests["full"], ack, NPAGES)[0]
        log(f"  run {i}: {json.dumps(out)}")
        return out
    finally:
        for d in dests.values():
            d.unlink(missing_ok=True)
        shutil.rmtree(b.work / "s3root" / "baselines" / f"bench.{name}", ignore_errors=True)
        shutil.rmtree(cache / f"bench.{name}", ignore_errors=True)
        shutil.rmtree(mcache, ignore_errors=True)


# --- CRIU ---------------------------------------------------------------------------------------
HOLDER = r"""
import mmap, os, signal, sys, time
import numpy as np
from edgeweave.memory.patterns import pattern
size, k, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n = size // 4096
fd = os.memfd_create("ewm-criu-region")
os.ftruncate(fd, size)
m = mmap.mmap(fd, size)
w = np.frombuffer(m, dtype=np.uint64).reshape(n, 512)
for lo in range(0, n, 8192):
    hi = min(n, lo + 8192)
    w[lo:hi] = pattern(np.arange(lo, hi), np.zeros(hi - lo, np.int64), 512)
dirty = np.random.default_rng(1).choice(n, k, replace=False)
w[dirty] = pattern(dirty, np.ones(k, np.int64), 512)
def dump(*_):
    with open(out + ".tmp", "wb") as f:
        f.write(m)
    os.rename(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
print("READY", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


def criu_setup(b: Bench, d: Path, *wrap: str) -> tuple[Path, Path, Path, int, subprocess.Popen]:
    """(src images, dst images, region dump path, dirty pages, holder) for one CRIU run."""
    src_img, dst_img = d / "src", d / "dst"
    src_img.mkdir(parents=True)
    dst_img.mkdir()
    out_bin = Path("/dev/shm") / f"ewm-criu-out-{secrets.token_hex(3)}"
    k = max(1, round(NPAGES * 0.01))
    holder = subprocess.Popen([*b.topo.exec("src"), *wrap, PY, "-c", HOLDER, str(SIZE), str(k), str(out_bin)],
                              stdout=subprocess.PIPE, stderr=open(d / "holder.err", "w"), stdin=subprocess.DEVNULL,
                              start_new_session=True, text=True)
    return src_img, dst_img, out_bin, k, holder


def criu_run(b: Bench, criu: str, i: int) -> dict:
    d = b.work / f"criu-{i}"
    src_img, dst_img, out_bin, k, holder = criu_setup(b, d)
    assert holder.stdout is not None
    line = holder.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError((d / "holder.err").read_text())
    pid = int(line.split()[1])
    holder.stdout.close()
    ps = subprocess.Popen([*b.topo.exec("dst"), criu, "page-server", "--images-dir", str(dst_img), "--address",
                           b.topo.dst_ip, "--port", CRIU_PORT, "-v1", "--log-file", "ps.log"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # page-server has no readiness signal; the dump retries nothing
        t = time.monotonic()
        r = subprocess.run([*b.topo.exec("src"), criu, "dump", "-t", str(pid), "--images-dir", str(src_img),
                            "--page-server", "--address", b.topo.dst_ip, "--port", CRIU_PORT, "-v1", "--log-file",
                            "dump.log"], capture_output=True, text=True, timeout=600)
        dump_s = time.monotonic() - t
        if r.returncode:
            raise RuntimeError(f"criu dump failed: {(src_img / 'dump.log').read_text()[-3000:]}")
        holder.wait(timeout=30)  # dump kills the task
        ps.wait(timeout=60)
        t = time.monotonic()
        for f in src_img.iterdir():  # the non-page images (small) go along; pages are already on dst
            if f.suffix == ".img":
                shutil.copy(f, dst_img / f.name)
        r = subprocess.run([*b.topo.exec("dst"), criu, "restore", "--images-dir", str(dst_img), "-d", "-v1",
                            "--log-file", "restore.log"], capture_output=True, text=True, timeout=600)
        restore_s = time.monotonic() - t
        if r.returncode:
            raise RuntimeError(f"criu restore failed: {(dst_img / 'restore.log').read_text()[-3000:]}")
        os.kill(pid, signal.SIGUSR1)  # the restored process writes its region out: check it
        deadline = time.monotonic() + 60
        while not out_bin.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        words = np.fromfile(out_bin, dtype=np.uint64).reshape(NPAGES, PAGE // 8)
        acked = np.zeros(NPAGES, np.int64)
        acked[np.random.default_rng(1).choice(NPAGES, k, replace=False)] = 1
        wrong = int(len(check(words, acked)[1]))
        img_bytes = sum(f.stat().st_size for f in dst_img.iterdir())
        res = {"dump_s": round(dump_s, 3), "restore_s": round(restore_s, 3), "wrong_pages": wrong,
               "image_bytes": img_bytes}
        log(f"  criu {i}: {json.dumps(res)}")
        return res
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if ps.poll() is None:
            ps.kill()
        ps.wait()
        out_bin.unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)


LINK_COPY_RX = r"""
import socket, subprocess, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("READY", flush=True)
c, _ = srv.accept()
tar = subprocess.Popen(["tar", "-x", "-C", sys.argv[3]], stdin=subprocess.PIPE)
while b := c.recv(1 << 20):
    tar.stdin.write(b)
tar.stdin.close()
sys.exit(tar.wait())
"""
LINK_COPY_TX = r"""
import socket, subprocess, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
tar = subprocess.Popen(["tar", "-c", "-C", sys.argv[3], *sys.argv[4:]], stdout=subprocess.PIPE)
while b := tar.stdout.read(1 << 20):
    s.sendall(b)
s.close()
sys.exit(tar.wait())
"""


def link_copy(b: Bench, files: list[Path], dst_dir: Path) -> None:
    """Copy files from src to dst over the src-dst link (tar over plain TCP, as scp/rsync would)."""
    port = str(int(CRIU_PORT) + 1)
    rx = subprocess.Popen([*b.topo.exec("dst"), PY, "-c", LINK_COPY_RX, b.topo.dst_ip, port, str(dst_dir)],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        if not rx.stdout.readline().startswith("READY"):
            raise RuntimeError("link copy receiver did not start")
        tx = subprocess.run([*b.topo.exec("src"), PY, "-c", LINK_COPY_TX, b.topo.dst_ip, port,
                             str(files[0].parent), *[f.name for f in files]], timeout=600)
        if tx.returncode or rx.wait(timeout=600):
            raise RuntimeError(f"link copy failed: sender {tx.returncode}, receiver {rx.returncode}")
    finally:
        if rx.poll() is None:
            rx.kill()
        rx.wait()


def criu_errors(d: Path) -> list[str]:
    """CRIU's own error lines from every log of a run (RLIMIT_NOFILE's harmless one left out)."""
    out = []
    for log_file in sorted(d.rglob("*.log")):
        for ln in log_file.read_text(errors="replace").splitlines():
            if "Error (" in ln and "RLIMIT_NOFILE" not in ln:
                out.append(f"{log_file.parent.name}/{log_file.name}: {ln.strip()}")
    return out[:12]


def criu_lazy_run(b: Bench, criu: str, i: int) -> dict:
    """CRIU's lazy migration over the same link: `criu dump --lazy-pages` leaves the pages in the
    source and serves them from its own page server; on dst `criu lazy-pages --page-server` pulls
    them into the restored process through userfaultfd while `criu restore --lazy-pages` runs it.
    Timed: dump (everything but the pages), restore (the process runs), fully resident (the
    lazy-pages daemon has every page and exits)."""
    d = b.work / f"criu-lazy-{i}"
    # its own PID namespace (as a container's process is): the lazily dumped task stays frozen on
    # src until its pages are served, so a restore into the same PID namespace collides with it
    src_img, dst_img, out_bin, k, holder = criu_setup(b, d, "unshare", "--pid", "--fork", "--kill-child", "setsid")
    assert holder.stdout is not None
    line = holder.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError((d / "holder.err").read_text())
    holder.stdout.close()
    pid = int(Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()[0])
    procs: list[subprocess.Popen] = []
    try:
        t = time.monotonic()
        # the dump writes every image but the pages, then serves the pages until dst has them all
        dump = subprocess.Popen([*b.topo.exec("src"), criu, "dump", "-t", str(pid), "--images-dir", str(src_img),
                                 "--lazy-pages", "--address", b.topo.src_ip, "--port", CRIU_PORT, "-v4",
                                 "--log-file", "dump.log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(dump)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # CRIU's own line once the non-page images are written
            txt = (src_img / "dump.log").read_text(errors="replace") if (src_img / "dump.log").exists() else ""
            if "Starting page server" in txt or "page server" in txt.lower() and "Lazy" in txt:
                break
            if dump.poll() is not None:
                raise RuntimeError(f"criu dump --lazy-pages exited {dump.returncode}: {txt[-3000:]}")
            time.sleep(0.02)
        else:
            raise RuntimeError("criu dump --lazy-pages: no page server within 120 s")
        dump_s = time.monotonic() - t
        t = time.monotonic()
        # CRIU dumps shared memory (our memfd region) eagerly even with --lazy-pages: only private
        # anonymous memory is lazy. So the images hold the whole region and must cross the link.
        image_bytes = sum(f.stat().st_size for f in src_img.iterdir() if f.suffix == ".img")
        link_copy(b, [f for f in src_img.iterdir() if f.suffix == ".img"], dst_img)
        copy_s = time.monotonic() - t
        t = time.monotonic()
        lp = subprocess.Popen([*b.topo.exec("dst"), criu, "lazy-pages", "--page-server", "--address", b.topo.src_ip,
                               "--port", CRIU_PORT, "--images-dir", str(dst_img), "-v4", "--log-file", "lazy.log"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(lp)
        deadline = time.monotonic() + 60
        while not (dst_img / "lazy-pages.socket").exists():  # restore connects to the daemon's socket
            if lp.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"criu lazy-pages did not start: {(dst_img / 'lazy.log').read_text()[-2000:]}")
            time.sleep(0.01)
        rp = subprocess.Popen([*b.topo.exec("dst"), criu, "restore", "--images-dir", str(dst_img), "-d", "-v4",
                               "--lazy-pages", "--pidfile", str(d / "restored.pid"), "--log-file", "restore.log"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        procs.append(rp)
        deadline = time.monotonic() + 120
        while rp.poll() is None:  # seen here: a restore whose lazy transfer failed never exits
            if (dump.poll() not in (None, 0)) or time.monotonic() > deadline:
                rp.kill()
                rp.wait()
                raise RuntimeError(f"criu restore --lazy-pages did not finish (dump exit {dump.poll()}): "
                                   f"{criu_errors(d)}")
            time.sleep(0.01)
        r = rp
        restore_s = time.monotonic() - t
        if r.returncode:
            raise RuntimeError(f"criu restore --lazy-pages failed: {criu_errors(d)}")
        restored = int((d / "restored.pid").read_text().split()[0])
        os.kill(restored, signal.SIGUSR1)  # the restored process writes its region out (touches every page)
        deadline = time.monotonic() + 300
        while not out_bin.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        lp.wait(timeout=300)
        resident_s = time.monotonic() - t
        dump.wait(timeout=60)
        words = np.fromfile(out_bin, dtype=np.uint64).reshape(NPAGES, PAGE // 8)
        acked = np.zeros(NPAGES, np.int64)
        acked[np.random.default_rng(1).choice(NPAGES, k, replace=False)] = 1
        wrong = int(len(check(words, acked)[1]))
        lazy_pages = sum(int(x) for x in re.findall(r"Pagemap generated: \d+ pages \((\d+) lazy\)",
                                                   (src_img / "dump.log").read_text(errors="replace")))
        res = {"dump_s": round(dump_s, 3), "copy_images_s": round(copy_s, 3), "restore_s": round(restore_s, 3),
               "resident_s": round(resident_s, 3), "image_bytes": image_bytes, "lazy_pages": lazy_pages,
               "wrong_pages": wrong}
        log(f"  criu lazy {i}: {json.dumps(res)}")
        return res
    finally:
        for victim in (pid, holder.pid, *([int((d / "restored.pid").read_text().split()[0])]
                                          if (d / "restored.pid").exists() else [])):
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        out_bin.unlink(missing_ok=True)
        if os.environ.get("EWM_BENCH_KEEP_CRIU"):
            log(f"  kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


# --- faults -------------------------------------------------------------------------------------
def faults(b: Bench, agent: subprocess.Popen, reps: int = 3) -> tuple[dict, subprocess.Popen]:
    npages = FAULT_SIZE // PAGE
    res: dict = {"under_load": [], "mid_snapshot": [], "host_failure": []}
    for i in range(reps):
        # 1. SIGKILL while writing at a steady rate
        w, _, key = b.writer(f"load{i}", FAULT_SIZE, "--dirty-pages", "500", "--rate", "2000")
        ack = b.work / f"load{i}.ack"
        while ack.stat().st_size < (500 + 2000) * 8:
            time.sleep(0.02)
        kill9(w)
        dest = Path("/dev/shm") / f"ewm-bench-f-{secrets.token_hex(3)}"
        rep = b.recover(key, dest)
        res["under_load"].append({"lost": b.lost(dest, ack, npages)[0], "mode": rep["mode"],
                                  "acked_writes": ack.stat().st_size // 8})
        dest.unlink(missing_ok=True)
        # 2. SIGKILL during a snapshot (baseline upload in progress)
        w, _, key = b.writer(f"snap{i}", FAULT_SIZE, "--dirty-pages", "200", "--rate", "1000",
                             "--baseline-every", "0.5")
        objs = b.work / "s3root" / "baselines" / f"bench.snap{i}"
        # kill once a snapshot's upload is under way: some data objects stored, no manifest yet
        deadline = time.monotonic() + 60
        while not any(p.name.startswith("epoch-") and not (p / "manifest.json").exists()
                      and any((p / "data").glob("0*")) for p in objs.iterdir()):
            if time.monotonic() > deadline:
                raise RuntimeError("no snapshot upload caught in progress")
            time.sleep(0.005)
        kill9(w)
        published = int((objs / "CURRENT").read_text())
        abandoned = sorted(p.name for p in objs.iterdir() if p.name.startswith("epoch-")
                           and not (p / "manifest.json").exists())
        rep = b.recover(key, dest)
        res["mid_snapshot"].append({"lost": b.lost(dest, b.work / f"snap{i}.ack", npages)[0], "epoch": rep["epoch"],
                                    "published_before_kill": published, "abandoned_epochs": abandoned,
                                    "mode": rep["mode"]})
        dest.unlink(missing_ok=True)
        # 3. host failure: the source agent dies too
        w, ready, key = b.writer(f"host{i}", FAULT_SIZE, "--dirty-pages", "300", "--second-baseline-after", "100")
        kill9(w)
        kill9(agent)
        rep = b.recover(key, dest)
        acks = np.frombuffer((b.work / f"host{i}.ack").read_bytes(), dtype="<u4").reshape(-1, 2)
        at2 = np.zeros(npages, np.int64)
        at2[acks[:100, 0]] = acks[:100, 1]
        _, wrong = check(np.fromfile(dest, dtype=np.uint64).reshape(npages, PAGE // 8), at2)
        res["host_failure"].append({
            "mode": rep["mode"], "epoch": rep["epoch"], "expected_epoch": ready["epoch"],
            "message": rep["message"], "region_equals_epoch": int(len(wrong)) == 0,
            "writes_after_epoch_lost": int(len(acks) - 100),
            "reported": rep["mode"] == "baseline-only" and rep["epoch"] == ready["epoch"]
            and "HOST FAILURE" in rep["message"] and f"after epoch {ready['epoch']}" in rep["message"]
            and rep["sources"]["source_agent"]["reachable"] is False and int(len(wrong)) == 0})
        dest.unlink(missing_ok=True)
        agent = b.agent()
        for n in (f"load{i}", f"snap{i}", f"host{i}"):
            shutil.rmtree(b.work / "s3root" / "baselines" / f"bench.{n}", ignore_errors=True)
    log(f"  faults: {json.dumps(res)}")
    return res, agent


def tracking_overhead(size: int = 256 << 20, rounds: int = 6, writes_per_page: int = 4) -> dict:
    """ns per 8-byte store in a write-heavy loop (random pages, scan between rounds)."""
    from edgeweave.memory.region import Region

    res: dict[str, dict[str, float]] = {}
    n = size // PAGE
    rng = np.random.default_rng(3)
    order = rng.permutation(n).astype(np.int64) * (PAGE // 8)
    for mode in ("none", "uffd", "explicit"):
        r = Region.create(f"ovh-{mode}", size, track="uffd" if mode == "uffd" else "explicit")
        words = r.array.view(np.uint64)
        words[::PAGE // 8] = 1
        r.collect()
        times: dict[str, list[float]] = {"cold": [], "warm": []}
        for i in range(rounds):
            for kind, reps in (("cold", 1), ("warm", writes_per_page)):
                r.collect()
                t = time.perf_counter()
                for j in range(reps):
                    words[order] = i * 10 + j
                if mode == "explicit":
                    r.state.mark(order // (PAGE // 8))
                times[kind].append((time.perf_counter() - t) / (n * reps))
                r.collect()
        res[mode] = {k: round(float(np.median(v)) * 1e9, 2) for k, v in times.items()}
        del words
        r.close()
    return res


def main() -> int:
    if os.geteuid() != 0:
        print("bench-memory needs root (network namespaces, tc)", file=sys.stderr)
        return 1
    t_all = time.monotonic()
    criu = subprocess.run(["bash", str(REPO / "hack" / "fetch-criu.sh")], capture_output=True, text=True)
    criu_bin = criu.stdout.strip().splitlines()[-1] if criu.returncode == 0 else None
    if criu_bin is None:
        log(f"CRIU unavailable: {criu.stderr[-1000:]}")
    work = Path(tempfile.mkdtemp(prefix="ewm-bench-", dir="/var/tmp"))  # local disk, not tmpfs
    b = Bench(work)
    # EWM_BENCH_STATE: runs accumulate in this file over several invocations (each one short enough
    # for the shared bench lock); the JSON line is computed over all of them
    state_path = Path(os.environ["EWM_BENCH_STATE"]) if os.environ.get("EWM_BENCH_STATE") else None
    state = json.loads(state_path.read_text()) if state_path and state_path.exists() else {}
    runs, crius, crius_lazy = state.get("runs", []), state.get("crius", []), state.get("crius_lazy", [])
    failed: list[str] = state.get("failed", [])
    fault_res: dict = state.get("faults", {})
    loads: list[list[float]] = [*state.get("loadavg", []), list(os.getloadavg())]

    def save() -> None:
        if state_path:
            state_path.write_text(json.dumps({"runs": runs, "crius": crius, "crius_lazy": crius_lazy,
                                              "failed": failed, "faults": fault_res, "loadavg": loads}))

    try:
        b.up()
        agent = b.agent()
        log(f"memory bench: {SIZE >> 20} MiB region, every link {RATE} (tbf), store rclone serve s3 (TLS), "
            f"page server mutual TLS, {RUNS} runs, work {work}")
        for i in range(len(runs), len(runs) + RUNS):
            try:
                runs.append(one_run(b, i, with_lazy=True))
            except (RuntimeError, AssertionError, OSError, KeyError) as exc:
                # reported, never dropped silently: the JSON counts failed runs and says why
                agent_log = (work / "agent.log").read_text()[-1500:]
                failed.append(f"run {i}: {str(exc)[-600:]} | agent: {agent_log}")
                log(f"  run {i} FAILED: {failed[-1]}")
                if agent.poll() is not None:
                    agent = b.agent()
            save()
        if criu_bin:
            for i in range(len(crius), len(crius) + CRIU_RUNS):
                crius.append(criu_run(b, criu_bin, i))
                save()
            for i in range(CRIU_LAZY_RUNS):
                try:
                    crius_lazy.append({"ok": True, **criu_lazy_run(b, criu_bin, i)})
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    crius_lazy.append({"ok": False, "error": str(exc)[-1500:]})
                    log(f"  criu lazy {i} FAILED: {crius_lazy[-1]['error']}")
        if FAULT_REPS:
            fault_res, agent = faults(b, agent, FAULT_REPS)
        loads.append(list(os.getloadavg()))
        save()
    finally:
        b.down()
        shutil.rmtree(work, ignore_errors=True)
    ovh = tracking_overhead()

    def col(k: str) -> list[float]:
        return [r[k] for r in runs]

    full, pre, cold = med_ci(col("full_copy_s")), med_ci(col("prestaged_mem_s")), med_ci(col("cold_s"))
    full_wall, pre_wall = med_ci(col("full_copy_wall_s")), med_ci(col("prestaged_mem_wall_s"))
    pre_disk = med_ci(col("prestaged_s"))
    link_bps = parse_rate(RATE)
    link_bound = round(SIZE / link_bps, 3)  # the fastest any full copy could cross the link
    first = med_ci([r["lazy"]["first_serve_ms"] for r in runs])
    resident = med_ci([r["lazy"]["fully_resident_s"] for r in runs])
    result: dict = {
        "bench": "memory",
        "region_bytes": SIZE, "page_bytes": PAGE, "dirty_fraction": 0.01, "runs": len(runs), "criu_runs": len(crius),
        "fault_reps": len(fault_res.get("under_load", [])),
        "link": f"{RATE} tbf veth, every link (src-dst, dst-store, src-store)",
        "store": "rclone serve s3 (TLS) in its own netns; client boto3",
        "store_link": RATE,
        "page_server": "TCP + mutual TLS (default)",
        "full_copy_s": full, "full_copy_link_bound_s": link_bound,
        "recovery_prestaged_s": pre, "prestaged_in": "memory (tmpfs) on the failover node",
        "recovery_prestaged_disk_s": pre_disk, "recovery_cold_s": cold,
        "speedup_vs_full_copy_1pct_prestaged": round(full["median"] / pre["median"], 2),
        "speedup_vs_full_copy_1pct_prestaged_disk": round(full["median"] / pre_disk["median"], 2),
        # the whole commands (interpreter start and exit included), beside the in-process figures
        "full_copy_wall_s": full_wall, "recovery_prestaged_wall_s": pre_wall,
        "speedup_vs_full_copy_1pct_prestaged_wall": round(full_wall["median"] / pre_wall["median"], 2),
        "speedup_vs_full_copy_1pct_cold": round(full["median"] / cold["median"], 2),
        "speedup_vs_link_bound_copy_1pct_prestaged": round(link_bound / pre["median"], 2),
        "speedup_vs_link_bound_copy_1pct_cold": round(link_bound / cold["median"], 2),
        "phases_median": {k: {ph: round(float(np.median([r[k][ph] for r in runs if ph in r[k]])), 4)
                              for ph in runs[0][k]} for k in ("prestaged_mem_phases", "prestaged_phases",
                                                              "cold_phases")},
        "prestage_pull_s": med_ci(col("prestage_s")), "prestage_rate": PRESTAGE_RATE,
        "bytes_from_source_1pct": int(np.median(col("bytes_from_source"))),
        "full_copy_bytes": int(np.median(col("full_copy_bytes"))),
        "time_to_first_serve_ms": first["median"], "time_to_first_serve_ms_ci": first,
        "lazy_fully_resident_s": resident,
        "lazy_phases_median": {ph: round(float(np.median([r["lazy"]["phases"][ph] for r in runs
                                                          if ph in r["lazy"]["phases"]])), 4)
                               for ph in runs[0]["lazy"]["phases"]},
        "lazy_adopted": all(r["lazy"]["adopted"] for r in runs),
        "lost_acknowledged_writes_recoveries": sum(r["lost_prestaged"] + r["lost_prestaged_mem"] + r["lost_cold"]
                                                   + r["lost_full"]
                                                   + r.get("lost_lazy", 0) for r in runs),
        "lost_acknowledged_writes_under_load": sum(x["lost"] for x in fault_res["under_load"]),
        "lost_acknowledged_writes_mid_snapshot": sum(x["lost"] for x in fault_res["mid_snapshot"]),
        "host_failure_reported": all(x["reported"] for x in fault_res["host_failure"]),
        "faults": fault_res,
        "tracking_overhead_ns_per_write": ovh,
    }
    if crius:
        dump, restore = med_ci([c["dump_s"] for c in crius]), med_ci([c["restore_s"] for c in crius])
        total = med_ci([c["dump_s"] + c["restore_s"] for c in crius])
        result.update({
            "criu": {"version": "4.1.1", "dump_s": dump, "restore_s": restore, "dump_plus_restore_s": total,
                     "wrong_pages": sum(c["wrong_pages"] for c in crius),
                     "image_bytes": int(np.median([c["image_bytes"] for c in crius])),
                     "mode": "full dump straight to criu page-server on dst over the src-dst link, then restore "
                             "on dst; pre-dump impossible (no soft-dirty in this kernel)"},
            # CRIU's way to the same state on the other host is dump (over the link) + restore.
            # CRIU's figures are whole commands, so ours is too (interpreter start included)
            "speedup_vs_criu_restore_1pct": round(total["median"] / pre_wall["median"], 2),
            "speedup_vs_criu_restore_only_1pct": round(restore["median"] / pre_wall["median"], 2),
            "speedup_vs_criu_restore_1pct_in_process": round(total["median"] / pre["median"], 2),
        })
    if crius_lazy:
        ok = [c for c in crius_lazy if c["ok"]]
        result["criu_lazy"] = {
            "version": "4.1.1", "runs": len(crius_lazy), "ok_runs": len(ok),
            "mode": "criu dump --lazy-pages (its page server on src) + the images over the src-dst link + "
                    "criu lazy-pages --page-server and criu restore --lazy-pages on dst; holder in its own pid ns",
            "note": "CRIU dumps shared memory (the memfd region) eagerly even with --lazy-pages: only private "
                    "anonymous memory is lazy, so the images hold the whole region",
            **({"dump_s": med_ci([c["dump_s"] for c in ok]), "copy_images_s": med_ci([c["copy_images_s"] for c in ok]),
                "restore_s": med_ci([c["restore_s"] for c in ok]), "resident_s": med_ci([c["resident_s"] for c in ok]),
                "wrong_pages": sum(c["wrong_pages"] for c in ok)} if ok else {}),
            "errors": [c["error"] for c in crius_lazy if not c["ok"]][:2],
        }
    result["failed_runs"] = failed
    result["loadavg_at_invocations"] = [[round(x, 2) for x in la] for la in loads]
    result["bench_seconds"] = round(time.monotonic() - t_all, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
