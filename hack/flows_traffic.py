"""Traffic for the flows e2e tests and benchmark: a server and a client mix of elephants
(bulk uploads) and mice (short request/response), run inside network namespaces.

  server --addr A [--sink-ports P,...]   sink on :5001 (+ more ports), request/response on :5002
  mix --dst A --elephants N --seconds S --mice-rate R [--resp B] [--write W] --out FILE
  uploads --dst A --plan FILE --out FILE  timed uploads (start, port, size, write) from a plan;
                                          FCT = connect .. the server's close after our EOF
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import threading
import time

SINK, RR = 5001, 5002


def _serve(addr: str, port: int, handler) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(512)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()


def _sink(c: socket.socket) -> None:
    with c:
        while c.recv(1 << 16):
            pass


def _rr(c: socket.socket) -> None:
    with c:
        buf = b""
        while b"\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        n = int(buf.split(b"\n", 1)[0].split()[0])
        c.sendall(b"x" * n)


def server(addr: str, sink_ports: list[int] | None = None) -> None:
    for port in [SINK, *(sink_ports or [])]:
        threading.Thread(target=_serve, args=(addr, port, _sink), daemon=True).start()
    _serve(addr, RR, _rr)


def _bytes_acked(s: socket.socket) -> int:
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("=Q", info, 120)[0]  # tcpi_bytes_acked


def elephant(dst: str, seconds: float, out: dict, write: int = 4 << 20) -> None:
    # a bulk uploader hands TCP large buffers (the send hint sees the write size)
    s = socket.create_connection((dst, SINK), timeout=30)
    out["sport"] = s.getsockname()[1]
    chunk = memoryview(b"e" * write)
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        s.send(chunk)
    out["bytes_acked"] = _bytes_acked(s)
    out["seconds"] = time.monotonic() - t0
    s.close()


def mouse(dst: str, req: int, resp: int, rows: list, errors: list) -> None:
    t0 = time.monotonic()
    try:
        s = socket.create_connection((dst, RR), timeout=10)
        sport = s.getsockname()[1]
        s.sendall(f"{resp}\n".encode().ljust(req, b" "))
        got = 0
        while got < resp:
            d = s.recv(65536)
            if not d:
                break
            got += len(d)
        s.close()
        if got != resp:
            errors.append(f"short response {got}/{resp}")
            return
        rows.append({"fct": time.monotonic() - t0, "sport": sport, "t": t0})
    except OSError as e:
        errors.append(repr(e))


def upload(dst: str, port: int, size: int, write: int, rows: list, errors: list, meta: dict) -> None:
    t0 = time.monotonic()
    try:
        s = socket.create_connection((dst, port), timeout=30)
        sport = s.getsockname()[1]
        buf = memoryview(b"u" * min(write, size))
        left = size
        while left > 0:
            n = min(left, len(buf))
            s.sendall(buf[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
        s.close()
        rows.append({**meta, "fct": time.monotonic() - t0, "sport": sport, "size": size, "port": port,
                     "t": t0})
    except OSError as e:
        errors.append(repr(e))


def uploads(dst: str, plan: list[dict]) -> dict:
    """Run a plan of uploads, each started at its offset from now, in its own thread."""
    rows: list = []
    errors: list = []
    threads = []
    t_start = time.monotonic()
    for f in sorted(plan, key=lambda x: x["start"]):
        delay = t_start + f["start"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=upload, args=(dst, f["port"], f["size"], f.get("write", 1 << 20), rows, errors,
                                                  {k: v for k, v in f.items() if k in ("app", "elephant_long")}))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(120)
    return {"flows": rows, "errors": errors}


def mix(dst: str, elephants: int, seconds: float, mice_rate: float, req: int, resp: int,
        warmup: float, seed: int, write: int = 4 << 20) -> dict:
    rng = random.Random(seed)
    eles = [dict() for _ in range(elephants)]
    threads = [threading.Thread(target=elephant, args=(dst, seconds, e, write)) for e in eles]
    for t in threads:
        t.start()
        time.sleep(0.05)
    rows: list = []
    errors: list = []
    mt: list[threading.Thread] = []
    t_start = time.monotonic()
    time.sleep(warmup)
    end = t_start + seconds - 0.5
    while time.monotonic() < end and mice_rate > 0:
        t = threading.Thread(target=mouse, args=(dst, req, resp, rows, errors))
        t.start()
        mt.append(t)
        time.sleep(rng.expovariate(mice_rate))
    for t in mt + threads:
        t.join(60)
    return {"elephants": eles, "mice": rows, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--addr", required=True)
    s.add_argument("--sink-ports", default="")
    u = sub.add_parser("uploads")
    u.add_argument("--dst", required=True)
    u.add_argument("--plan", required=True)
    u.add_argument("--out", required=True)
    m = sub.add_parser("mix")
    m.add_argument("--dst", required=True)
    m.add_argument("--elephants", type=int, default=2)
    m.add_argument("--seconds", type=float, default=10)
    m.add_argument("--mice-rate", type=float, default=10)
    m.add_argument("--req", type=int, default=200)
    m.add_argument("--resp", type=int, default=4096)
    m.add_argument("--warmup", type=float, default=1.0)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--write", type=int, default=4 << 20)
    m.add_argument("--out", required=True)
    ns = ap.parse_args()
    if ns.cmd == "server":
        server(ns.addr, [int(x) for x in ns.sink_ports.split(",") if x])
    elif ns.cmd == "uploads":
        with open(ns.plan) as f:
            res = uploads(ns.dst, json.load(f))
        with open(ns.out, "w") as f:
            json.dump(res, f)
    else:
        res = mix(ns.dst, ns.elephants, ns.seconds, ns.mice_rate, ns.req, ns.resp, ns.warmup, ns.seed,
                  ns.write)
        with open(ns.out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
