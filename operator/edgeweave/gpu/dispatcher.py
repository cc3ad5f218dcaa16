"""`python -m edgeweave.gpu.dispatcher`: the node-local slice dispatcher, one per GPU.

Job pods on the GPU connect to a unix socket on a host path and ask for their next sub-kernel; the
dispatcher grants sub-kernels across every job on the GPU in the order its policy gives, sizes each
grant from the live load (grants.py), and records every grant and commit in a journal before it
answers, so a restart loses no grant and no slice reaches the output twice.

Wire: one JSON object per line each way, one request in flight per connection.

    {"op": "hello", "namespace", "name", "uid", "token", "worker", "job": {...}, "holding": [...]}
    {"op": "next"}                       -> {"ok": true, "grant": {id, lo, hi, blocks, load}}
                                            | {"ok": true, "done": true, "progress": {...}}
                                            | {"ok": true, "wait": true}   (long poll ran out; ask again)
    {"op": "commit", "id", "lo", "hi", "ms"}  -> {"ok": true} | {"ok": false, "error": "conflict", ...}
    {"op": "release", "id"}  {"op": "progress"}

Errors are {"ok": false, "error": <code>, "message": <what to fix>}. Bounds: connections
(`--max-connections`), jobs (`--max-jobs`), request line size, idle connections time out.
Authentication: the job token (dispatch_auth.py); the tenant is the job's namespace, never what the
caller says. The socket file is mode 0660 and the dispatcher listens on nothing else.

A closed connection hands its worker's grants back at once (the worker died or gave up; its output,
if any, is refused at commit when the blocks went to someone else). Grants replayed after a restart
are held for `--lease-s` for their worker to reconnect and claim them, then handed back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..api.gpujob import SchedulingPolicy
from .dispatch_auth import job_key, load_key, output_subdir, verify
from .grants import GrantBook, GrantError, JobInfo
from .optimiser import GpuLoad
from .sched_latency import request_realtime

LOG = logging.getLogger("edgeweave.gpu.dispatcher")
MAX_LINE = 64 * 1024
JOURNAL = "journal.jsonl"


class Journal:
    """Append-only JSON lines, written by one thread of its own so that the disk never stalls the
    event loop: on a busy node a plain `write` to the journal can block for milliseconds (dirty-page
    throttling, the filesystem's own journal), and that was most of the dispatcher's grant latency.

    What is on disk when: a grant is answered once its record is queued — a grant record lost with
    the process is harmless (its worker's commit is accepted while nobody else took its blocks, and
    the epoch record makes every grant id unique across restarts, so two grants never share an
    output file). Job registrations and commits are answered only once written and fsynced (`wait`);
    commits that arrive during one fsync share the next, so one job's disk wait never delays another
    job's grant."""

    def __init__(self, state_dir: Path, fsync: bool = True) -> None:
        self.path = state_dir / JOURNAL
        self.fsync = fsync
        state_dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._q: queue.SimpleQueue[tuple[int, bytes, bool] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[int, bool, asyncio.Future[None]]] = []
        self.queued = 0  # records handed to the writer by this process
        self.written = 0  # of those, in the file (the page cache: survives a killed process)
        self.synced = 0  # of those, fsynced (survive a node crash)
        self.error: BaseException | None = None

    def replay(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        with self.path.open() as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    # Only the last line can be torn (killed mid-write); it was never answered.
                    LOG.warning("journal: dropped a torn record %r", line[:80])
        return out

    def compact(self, records: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for r in records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def append(self, rec: dict[str, Any], durable: bool = False) -> int:
        """Queue `rec`; its sequence number (for `wait`). Without the writer thread (before `start`,
        and in tests of the book), it is written at once."""
        self.queued += 1
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        if self._thread is None:
            assert self._fd is not None
            os.write(self._fd, line)
            if durable and self.fsync:
                os.fsync(self._fd)
            self.written = self.synced = self.queued
        else:
            self._q.put((self.queued, line, durable))
        return self.queued

    async def wait(self, seq: int, durable: bool) -> None:
        """Until record `seq` is in the file (and fsynced when `durable` and fsync is on)."""
        if self.error is not None:
            raise self.error
        if (self.synced if durable and self.fsync else self.written) >= seq:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((seq, durable and self.fsync, fut))
        await fut

    def _run(self) -> None:
        assert self._fd is not None and self._loop is not None
        while True:
            item = self._q.get()
            batch = [item]
            while True:  # everything queued meanwhile goes in one write (and at most one fsync)
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            items = [b for b in batch if b is not None]
            try:
                if items:
                    os.write(self._fd, b"".join(line for _, line, _ in items))
                    last = items[-1][0]
                    synced = self.synced
                    if self.fsync and any(d for _, _, d in items):
                        os.fsync(self._fd)
                        synced = last
                    self._loop.call_soon_threadsafe(self._done, last, synced, None)
            except OSError as exc:
                self._loop.call_soon_threadsafe(self._done, self.written, self.synced, exc)
            if any(b is None for b in batch):
                return

    def _done(self, written: int, synced: int, error: BaseException | None) -> None:
        self.written, self.synced = max(self.written, written), max(self.synced, synced)
        if error is not None:
            LOG.error("journal write failed: %s", error)
            self.error = error
        keep = []
        for seq, durable, fut in self._waiters:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif (self.synced if durable else self.written) >= seq:
                fut.set_result(None)
            else:
                keep.append((seq, durable, fut))
        self._waiters = keep

    def close(self) -> None:
        """Write what is queued and stop the writer (SIGTERM: nothing queued is lost)."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(30)
            self._thread = None
        if self._fd is not None:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def compacted(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs, every commit, and the grants still open; released grants and forgotten jobs drop out."""
    forgotten = {r["job"] for r in records if r["t"] == "forget"}
    closed = {r["id"] for r in records if r["t"] in ("commit", "release")}
    epochs = [r for r in records if r["t"] == "epoch"]
    keep = epochs[-1:]
    for r in records:
        if r["t"] == "job" and r["info"]["key"] not in forgotten:
            keep.append(r)
        elif r["t"] == "commit" and r["job"] not in forgotten:
            keep.append(r)
        elif r["t"] == "grant" and r["job"] not in forgotten and r["id"] not in closed:
            keep.append(r)
    return keep


class Conn:
    def __init__(self, worker: str, job: str) -> None:
        self.worker, self.job = worker, job


class Dispatcher:
    def __init__(self, socket_path: Path, state_dir: Path, key: bytes, policy: SchedulingPolicy, *,
                 slots: int = 1, max_jobs: int = 64, max_connections: int = 256, lease_s: float = 10.0,
                 poll_s: float = 20.0, idle_s: float = 300.0, decision_log: Path | None = None,
                 prometheus_url: str | None = None, node: str | None = None, fsync: bool = True,
                 dcgm_interval_s: float = 10.0, output_dir: Path | None = None) -> None:
        self.socket_path, self.key, self.output_dir = socket_path, key, output_dir
        self.journal = Journal(state_dir, fsync)
        records = self.journal.replay()
        # A new epoch per start, recorded (fsynced) before any grant of it: grant ids never repeat,
        # even when every grant record of an earlier start was lost with its process.
        epoch = 1 + max([int(r["id"].split("-")[0]) for r in records if r["t"] == "grant"]
                        + [int(r["n"]) for r in records if r["t"] == "epoch"], default=0)
        self.book = GrantBook(policy, slots=slots, max_jobs=max_jobs, epoch=epoch)
        now = time.monotonic()
        for r in records:
            self.book.apply(r, now, live=False)
        self.journal.compact(compacted(records))
        self.journal.open()
        self.journal.append({"t": "epoch", "n": epoch}, durable=True)
        self.max_connections, self.lease_s, self.poll_s, self.idle_s = max_connections, lease_s, poll_s, idle_s
        self.connections = 0
        self.waiting: dict[str, deque[tuple[Conn, asyncio.Future[dict[str, Any]], float]]] = {}
        self.decision_log = decision_log.open("a") if decision_log else None
        self.prometheus_url, self.node, self.dcgm_interval_s = prometheus_url, node, dcgm_interval_s
        self.external: GpuLoad | None = None
        self._slot_free_at = time.monotonic()
        LOG.info("dispatcher epoch %d: policy %s, %d slot(s), %d job(s) and %d open grant(s) from the journal",
                 epoch, policy.value, slots, len(self.book.jobs), self.book.busy_slots())

    def record(self, rec: dict[str, Any], durable: bool = False) -> int:
        """Journal `rec` (queued: see Journal) and apply it to the book; its journal sequence number."""
        seq = self.journal.append(rec, durable)
        self.book.apply(rec, time.monotonic())
        return seq

    # -- scheduling -------------------------------------------------------------------------------

    def kick(self) -> None:
        """Grant while slots are free, in policy order over the jobs that have a worker waiting."""
        for key in [k for k, q in self.waiting.items() if q]:
            job = self.book.jobs.get(key)
            if job is not None and job.finished:
                while self.waiting[key]:
                    _, fut, _ = self.waiting[key].popleft()
                    if not fut.done():
                        fut.set_result({"ok": True, "done": True, "progress": self.book.progress(key)})
        while self.book.busy_slots() < self.book.slots:
            waiting = [k for k, q in self.waiting.items() if q]
            decision = self.book.choose(waiting)
            if decision is None:
                return
            conn, fut, asked = self.waiting[decision.job].popleft()
            if fut.done():
                continue
            rec = self.book.next_grant(decision.job, conn.worker, time.monotonic(), self.external)
            self.record(rec)
            grant = self.book.jobs[decision.job].leased[rec["id"]]
            fut.set_result({"ok": True, "grant": grant.wire(), "why": rec["why"]})
            if self.decision_log is not None:
                ready = max(asked, self._slot_free_at)
                self.decision_log.write(json.dumps({
                    "id": rec["id"], "job": decision.job, "lo": rec["lo"], "hi": rec["hi"], "load": rec["load"],
                    "why": rec["why"], "policy": self.book.policy.value, "candidates": list(decision.candidates),
                    "service_us": round((time.monotonic() - ready) * 1e6, 1), "wall": time.time()}) + "\n")
                self.decision_log.flush()

    def _slot_freed(self) -> None:
        self._slot_free_at = time.monotonic()
        self.kick()

    # -- connections ------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections:
            await self._send(writer, _err("busy", f"{self.max_connections} connections open; retry later"))
            writer.close()
            return
        self.connections += 1
        conn: Conn | None = None
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_s)
                except TimeoutError:
                    await self._send(writer, _err("idle", f"no request for {self.idle_s:g}s; closing"))
                    return
                except ValueError:  # over the reader's limit
                    await self._send(writer, _err("too-large", f"request lines are at most {MAX_LINE} bytes"))
                    return
                if not line:
                    return
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    await self._send(writer, _err("bad-request", f"not a JSON object: {exc}"))
                    continue
                try:
                    if conn is None:
                        if req.get("op") != "hello":
                            await self._send(writer, _err("unauthenticated", "send hello with the job token first"))
                            return
                        conn, reply, seq = self._hello(req, writer)
                        await self.journal.wait(seq, durable=True)  # registration on disk before the answer
                    else:
                        reply = await self._request(conn, req)
                except GrantError as exc:
                    reply = _err(exc.code, str(exc))
                    if exc.code == "unauthenticated":
                        await self._send(writer, reply)
                        return
                if req.get("stamp"):
                    # When the answer left, on the node's monotonic clock: the caller measures the
                    # dispatcher's part of a round trip (its wake-up, decision, write), not its own.
                    reply["sent_ns"] = time.monotonic_ns()
                await self._send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            if conn is not None:
                self._drop(conn)
            with contextlib.suppress(Exception):
                writer.close()

    def _drop(self, conn: Conn) -> None:
        q = self.waiting.get(conn.job)
        if q:
            self.waiting[conn.job] = deque(w for w in q if w[0] is not conn)
        releases = self.book.releases_for(conn.worker)
        for rec in releases:
            self.record(rec)
        if releases:
            self._slot_freed()

    def _hello(self, req: dict[str, Any], writer: asyncio.StreamWriter) -> tuple[Conn, dict[str, Any], int]:
        ns, name, uid = str(req.get("namespace", "")), str(req.get("name", "")), str(req.get("uid", ""))
        if not verify(self.key, ns, name, uid, str(req.get("token", ""))):
            raise GrantError("unauthenticated", f"token does not match job {ns}/{name} (uid {uid[:12]})")
        self._give_output_dir(ns, name, uid)
        worker = str(req.get("worker", ""))[:128]
        if not worker:
            raise GrantError("bad-request", "hello needs a worker id")
        spec = req.get("job") or {}
        try:
            key = job_key(ns, name, uid)
            part = str(req.get("part", ""))[:32]
            if part:
                # One job pod's share of a job (its planned slices): pods on different GPUs never
                # compute the same blocks, and a replacement pod of that share resumes it here.
                key = f"{key}#{part}"
            deadline_s = spec.get("deadline_s")
            info = JobInfo(key=key, tenant=ns, total_blocks=int(spec["total_blocks"]),
                           latency_target_ms=float(spec["latency_target_ms"]),
                           launch_overhead_us=float(spec.get("launch_overhead_us", 8.0)),
                           time_per_block_us=(None if spec.get("time_per_block_us") is None
                                              else float(spec["time_per_block_us"])),
                           priority=int(spec.get("priority", 0)),
                           deadline=None if deadline_s is None else time.time() + float(deadline_s),
                           policy=str(spec.get("policy", SchedulingPolicy.Fifo.value)),
                           blocks=str(spec.get("blocks", ""))[:MAX_LINE])
        except (KeyError, TypeError, ValueError) as exc:
            raise GrantError("bad-request", f"job needs total_blocks and latency_target_ms: {exc}") from None
        if not (info.latency_target_ms > 0 and info.launch_overhead_us >= 0):
            raise GrantError("bad-request", "latency_target_ms must be > 0 and launch_overhead_us >= 0")
        rec = self.book.register(info)
        seq = self.record(rec, durable=True) if rec is not None else 0
        conn = Conn(f"{key}#{worker}", key)
        claimed, lost = [], []
        for h in req.get("holding") or []:
            g = self.book.claim(key, str(h.get("id")), conn.worker)
            (claimed if g is not None else lost).append(str(h.get("id")))
        sock = writer.get_extra_info("socket")
        peer = _peer(sock)
        LOG.info("hello %s worker %s (%s); claimed %s lost %s", key, worker, peer, claimed, lost)
        return conn, {"ok": True, "job": key, "policy": self.book.policy.value, "asked_policy": info.policy,
                      "progress": self.book.progress(key), "claimed": claimed, "lost": lost}, seq

    def _give_output_dir(self, ns: str, name: str, uid: str) -> None:
        """The kubelet creates a job pod's output directory (a hostPath) as root, mode 0755; the pod
        runs as non-root. On the job's hello the dispatcher — the directory's owner, in the job pods'
        group — hands it to that group (setgid, 2770): no capability needed, only the pods of this
        job mount it. Absent (the pod is on another node, or not a pod): nothing to do."""
        if self.output_dir is None:
            return
        try:
            path = self.output_dir / output_subdir(ns, name, uid)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            LOG.warning("output dir of %s/%s: %s", ns, name, exc)
            return
        try:
            st = os.fstat(fd)
            gid = os.getgid()
            if st.st_gid != gid or st.st_mode & 0o7777 != 0o2770:
                os.fchown(fd, -1, gid)
                os.fchmod(fd, 0o2770)
        except OSError as exc:
            LOG.warning("output dir %s not handed to gid %d: %s", path, os.getgid(), exc)
        finally:
            os.close(fd)

    async def _request(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "next":
            return await self._next(conn)
        if op == "commit":
            try:
                gid, lo, hi = str(req["id"]), int(req["lo"]), int(req["hi"])
                ms = float(req.get("ms") or 0.0)
            except (KeyError, TypeError, ValueError) as exc:
                raise GrantError("bad-request", f"commit needs id, lo, hi: {exc}") from None
            rec = self.book.commit(conn.job, gid, lo, hi, conn.worker, ms)
            seq = self.record(rec, durable=True) if rec is not None else 0
            ack = {"ok": True, "repeat": rec is None, "progress": self.book.progress(conn.job)}
            if req.get("next"):
                # Commit and ask in one step: the worker is waiting before the freed slot is given
                # out, so the policy sees it (otherwise the slot would go to whoever else waits).
                # The next grant is decided while the commit goes to disk; both are answered after.
                reply = await self._next(conn, freed=True)
                await self.journal.wait(seq, durable=True)
                return {**reply, "commit": ack}
            self._slot_freed()
            await self.journal.wait(seq, durable=True)  # a commit is acknowledged once on disk
            return ack
        if op == "release":
            gid = str(req.get("id"))
            job = self.book.jobs.get(conn.job)
            g = job.leased.get(gid) if job else None
            if g is None or g.worker != conn.worker:
                raise GrantError("unknown-grant", f"no grant {gid} held by this worker")
            self.record({"t": "release", "id": gid, "job": conn.job})
            self._slot_freed()
            return {"ok": True}
        if op == "progress":
            return {"ok": True, "progress": self.book.progress(conn.job),
                    "waiting_jobs": sum(1 for q in self.waiting.values() if q), "busy_slots": self.book.busy_slots()}
        raise GrantError("bad-request", f"unknown op {op!r} (hello, next, commit, release, progress)")

    async def _next(self, conn: Conn, freed: bool = False) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(conn.job, deque()).append((conn, fut, time.monotonic()))
        if freed:
            self._slot_freed()
        else:
            self.kick()
        if fut.done():
            # Granted at once (the common case: a slot was free): no timer, no extra loop turns.
            return fut.result()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.poll_s)
        except TimeoutError:
            q = self.waiting.get(conn.job)
            if q:
                self.waiting[conn.job] = deque(w for w in q if w[1] is not fut)
            if fut.done():
                return fut.result()
            fut.cancel()
            return {"ok": True, "wait": True}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())
        await writer.drain()

    # -- background -------------------------------------------------------------------------------

    async def expire_orphans(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.lease_s / 4))
            recs = self.book.expired_orphans(time.monotonic(), self.lease_s)
            for rec in recs:
                LOG.info("grant %s of %s not claimed within %.0fs: handed back", rec["id"], rec["job"], self.lease_s)
                self.record(rec)
            if recs:
                self._slot_freed()

    async def poll_dcgm(self) -> None:
        from .dcgm import read_load

        while True:
            load, why = await asyncio.to_thread(read_load, self.prometheus_url, [self.node] if self.node else [])
            self.external = load
            if load is None:
                LOG.debug("DCGM load unavailable: %s", why)
            await asyncio.sleep(self.dcgm_interval_s)

    async def serve(self) -> None:
        self.journal.start(asyncio.get_running_loop())
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o117)  # the socket is created 0660: owner and group only
        try:
            server = await asyncio.start_unix_server(self.handle, path=str(self.socket_path), limit=MAX_LINE)
        finally:
            os.umask(old)
        tasks = [asyncio.create_task(self.expire_orphans())]
        if self.prometheus_url:
            tasks.append(asyncio.create_task(self.poll_dcgm()))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(json.dumps({"event": "listening", "socket": str(self.socket_path), "pid": os.getpid(),
                          "policy": self.book.policy.value, "epoch": self.book.epoch}), flush=True)
        async with server:
            await stop.wait()
        for t in tasks:
            t.cancel()
        self.journal.close()


def _err(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


def _peer(sock: socket.socket | None) -> str:
    if sock is None:
        return "peer unknown"
    try:
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return "peer unknown"
    return f"pid {pid} uid {uid} gid {gid}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeweave.gpu.dispatcher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", type=Path, required=True, help="unix socket path (a host path job pods mount)")
    p.add_argument("--state-dir", type=Path, required=True, help="journal directory (a host path: survives restarts)")
    p.add_argument("--key-file", required=True, help="shared key the per-job tokens are derived from")
    p.add_argument("--policy", choices=[x.value for x in SchedulingPolicy], default=SchedulingPolicy.ShortestFirst.value)
    p.add_argument("--slots", type=int, default=1, help="grants in flight on this GPU at once")
    p.add_argument("--max-jobs", type=int, default=64)
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--lease-s", type=float, default=10.0, help="how long a replayed grant waits for its worker")
    p.add_argument("--poll-s", type=float, default=20.0, help="longest a `next` waits before {wait: true}")
    p.add_argument("--idle-s", type=float, default=300.0)
    p.add_argument("--decision-log", type=Path, help="append one JSON line per grant (policy inputs, size, load)")
    p.add_argument("--prometheus-url", help="read DCGM_FI_DEV_GPU_UTIL of --node from here")
    p.add_argument("--dcgm-interval-s", type=float, default=10.0)
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), help="DCGM Hostname of this GPU's node")
    p.add_argument("--no-fsync", action="store_true", help="do not fsync commits (tests on slow disks)")
    p.add_argument("--rt-priority", type=int, default=1,
                   help="SCHED_RR priority (needs CAP_SYS_NICE): grants answered promptly on a busy node; 0 = off")
    p.add_argument("--output-dir", type=Path,
                   help="the host's job output root (job pods mount <ns>/<job>-<uid8> below it): each job's "
                        "directory is given to the dispatcher's group on hello, so non-root job pods can write it")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if ns.slots < 1 or ns.max_jobs < 1 or ns.max_connections < 1:
        print("--slots, --max-jobs and --max-connections must be >= 1", file=sys.stderr)
        return 2
    LOG.info("scheduling: %s", request_realtime(ns.rt_priority))
    try:
        key = load_key(ns.key_file)
    except (OSError, ValueError) as exc:
        print(f"dispatcher: {exc}", file=sys.stderr)
        return 2
    d = Dispatcher(ns.socket, ns.state_dir, key, SchedulingPolicy(ns.policy), slots=ns.slots, max_jobs=ns.max_jobs,
                   max_connections=ns.max_connections, lease_s=ns.lease_s, poll_s=ns.poll_s, idle_s=ns.idle_s,
                   decision_log=ns.decision_log, prometheus_url=ns.prometheus_url, node=ns.node,
                   fsync=not ns.no_fsync, dcgm_interval_s=ns.dcgm_interval_s, output_dir=ns.output_dir)
    # Everything built so far (imports, the replayed book) lives as long as the process: frozen, it
    # is out of the collector's sight, so a collection mid-request walks only what requests allocate.
    gc.collect()
    gc.freeze()
    asyncio.run(d.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
