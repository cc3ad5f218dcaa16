"""`python -m edgeweave.gpu.slice_worker`: a job pod's slice loop against the node dispatcher.

    hello (job token) -> next -> run the granted blocks -> write the grant's output -> commit -> next ...

The grant's output goes to `<frag-dir>/<grant id>.npy` (written to a temporary name, fsynced, renamed)
before the commit, so a committed grant always has its output; output written for a grant whose
commit is refused (its blocks went to another worker while this one was cut off) is deleted. When the
dispatcher goes away mid-job the worker reconnects (until `--connect-timeout`) and names the grant it
holds, so a grant finished across a dispatcher restart is committed, not rerun. A restarted pod
simply says hello again: the dispatcher answers with the job's progress and grants what is left.

Exit 0 when the job is done, 2 on bad input, 3 when the dispatcher refuses us (token, bounds), 4
when it cannot be reached in time, 143 on SIGTERM (after the grant in flight is committed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .grid import unlinearise
from .plan import ENV_POD_INDEX, ENV_SLICES, decode_slices, grid_of
from .ranges import RangeSet
from .slice_run import build_runner, load_spec

ENV_SOCKET = "EDGEWEAVE_DISPATCHER_SOCKET"
ENV_TOKEN = "EDGEWEAVE_JOB_TOKEN"
ENV_JOB_UID = "EDGEWEAVE_JOB_UID"
ENV_JOB_NAME = "EDGEWEAVE_JOB_NAME"
ENV_JOB_NAMESPACE = "EDGEWEAVE_POD_NAMESPACE"


class Refused(Exception):
    pass


class Channel:
    """One connection: JSON lines, reconnect on loss until a deadline, hello again each time."""

    def __init__(self, path: str, hello: dict[str, Any], connect_timeout: float) -> None:
        self.path, self.hello, self.connect_timeout = path, hello, connect_timeout
        self.sock: socket.socket | None = None
        self.file: Any = None
        self.holding: dict[str, Any] | None = None
        self.reconnects = 0

    def _connect(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.02
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                self.sock, self.file = s, s.makefile("rwb")
                hello = dict(self.hello, holding=[self.holding] if self.holding else [])
                reply = self._roundtrip(hello)
                if not reply.get("ok"):
                    raise Refused(f"{reply.get('error')}: {reply.get('message')}")
                return reply
            except (ConnectionError, FileNotFoundError, OSError) as exc:
                self.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dispatcher at {self.path} unreachable for {self.connect_timeout:g}s: {exc}") from exc
                time.sleep(delay)
                delay = min(0.5, delay * 2)

    def _roundtrip(self, req: dict[str, Any]) -> dict[str, Any]:
        self.file.write((json.dumps(req) + "\n").encode())
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise ConnectionResetError("dispatcher closed the connection")
        return json.loads(line)

    def start(self) -> dict[str, Any]:
        return self._connect()

    def call(self, req: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(reply, hello reply if we had to reconnect first)."""
        rehello = None
        while True:
            try:
                if self.sock is None:
                    rehello = self._connect()
                    self.reconnects += 1
                return self._roundtrip(req), rehello
            except (ConnectionError, OSError, json.JSONDecodeError):
                self.close()

    def close(self) -> None:
        for x in (self.file, self.sock):
            with contextlib.suppress(Exception):
                if x is not None:
                    x.close()
        self.sock = self.file = None


def _write_fragment(frag_dir: Path, gid: str, values: np.ndarray) -> Path:
    path = frag_dir / f"{gid}.npy"
    tmp = frag_dir / f".{gid}.tmp.npy"
    with tmp.open("wb") as f:
        np.save(f, values)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def job_wire(spec: Any, tpb_declared: bool, blocks: str = "") -> dict[str, Any]:
    return {"total_blocks": grid_of(spec).blocks, "latency_target_ms": spec.latency_target_ms,
            "launch_overhead_us": spec.profile.launch_overhead_us,
            "time_per_block_us": spec.profile.time_per_block_us if tpb_declared else None,
            "priority": spec.priority, "deadline_s": spec.deadline_seconds, "policy": spec.policy.value,
            "blocks": blocks}


def planned_blocks(slices_text: str) -> str:
    """The blocks of a pod's planned slice list (EDGEWEAVE_SLICES) as runs: the share it registers."""
    sl = decode_slices(slices_text)
    out = RangeSet()
    for lo, hi in sl.indices.ranges():
        out.add(lo * sl.size, min(hi * sl.size, sl.total))
    return out.encode()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeweave.gpu.slice_worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default=os.environ.get(ENV_SOCKET))
    p.add_argument("--spec-file", type=Path)
    p.add_argument("--namespace", default=os.environ.get(ENV_JOB_NAMESPACE))
    p.add_argument("--name", default=os.environ.get(ENV_JOB_NAME))
    p.add_argument("--uid", default=os.environ.get(ENV_JOB_UID))
    p.add_argument("--token-file", help=f"file holding the job token (default: env {ENV_TOKEN})")
    p.add_argument("--worker-id", default=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    p.add_argument("--frag-dir", type=Path, required=True, help="where each committed grant's output goes")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--part", default=None,
                   help=f"register only this pod's planned share (default: from {ENV_SLICES} and {ENV_POD_INDEX} "
                        "when set; 'none' = the whole job)")
    ns = p.parse_args(argv)
    try:
        if not ns.socket:
            raise ValueError(f"no dispatcher socket: pass --socket or set {ENV_SOCKET}")
        if not (ns.namespace and ns.name and ns.uid):
            raise ValueError("need the job's namespace, name and uid")
        token = Path(ns.token_file).read_text().strip() if ns.token_file else os.environ.get(ENV_TOKEN, "")
        spec = load_spec(ns.spec_file)
        runner, twin = build_runner(spec, ns.backend, ns.seed)
        if twin is None:
            raise ValueError("the dispatcher worker writes per-grant output for built-in kernels only")
        ns.frag_dir.mkdir(parents=True, exist_ok=True)
        part, blocks = "", ""
        if ns.part != "none" and os.environ.get(ENV_SLICES) and os.environ.get(ENV_POD_INDEX):
            part, blocks = f"s{int(os.environ[ENV_POD_INDEX])}", planned_blocks(os.environ[ENV_SLICES])
    except Exception as exc:  # noqa: BLE001 - every set-up failure is one clear line and exit 2
        print(json.dumps({"event": "error", "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 2
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    hello = {"op": "hello", "namespace": ns.namespace, "name": ns.name, "uid": ns.uid, "token": token,
             "worker": ns.worker_id, "part": part,
             "job": job_wire(spec, spec.profile.time_per_block_us is not None, blocks)}
    ch = Channel(ns.socket, hello, ns.connect_timeout)
    grants = 0
    try:
        first = ch.start()
        print(json.dumps({"event": "hello", "policy": first["policy"], "progress": first["progress"]}), flush=True)
        reply, _ = ch.call({"op": "next"})
        while True:
            if not reply.get("ok"):
                raise Refused(f"{reply.get('error')}: {reply.get('message')}")
            if reply.get("wait"):
                reply, _ = ch.call({"op": "next"})
                continue
            if reply.get("done"):
                print(json.dumps({"event": "done", "grants": grants, "reconnects": ch.reconnects,
                                  "progress": reply["progress"]}), flush=True)
                return 0
            g = reply["grant"]
            gid, lo, hi = g["id"], int(g["lo"]), int(g["hi"])
            ch.holding = {"id": gid, "lo": lo, "hi": hi}
            t0 = time.perf_counter()
            runner.run_slice(lo, hi)
            runner.synchronize()
            ms = (time.perf_counter() - t0) * 1000.0
            idx = twin.output_elements(unlinearise(np.arange(lo, hi, dtype=np.uint64), twin.grid))
            frag = _write_fragment(ns.frag_dir, gid, np.asarray(runner.output()).ravel()[idx])
            last = stop["requested"]
            reply, _ = ch.call({"op": "commit", "id": gid, "lo": lo, "hi": hi, "ms": ms, "next": not last})
            ch.holding = None
            ack = reply.get("commit", reply)
            if not ack.get("ok"):
                frag.unlink(missing_ok=True)  # the blocks are someone else's now; never in the output twice
                print(json.dumps({"event": "discarded", "grant": gid, "why": ack.get("message")}), flush=True)
                if ack is reply:  # a refused commit carries no grant: ask again
                    reply, _ = ch.call({"op": "next"})
            else:
                grants += 1
                print(json.dumps({"event": "grant-done", "grant": gid, "blocks": [lo, hi], "ms": round(ms, 3),
                                  "load": g.get("load")}), flush=True)
            if last:
                return 143
    except Refused as exc:
        print(json.dumps({"event": "refused", "error": str(exc)}), flush=True)
        return 3
    except TimeoutError as exc:
        print(json.dumps({"event": "unreachable", "error": str(exc)}), flush=True)
        return 4
    finally:
        ch.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
