"""Traffic for the flows e2e tests and benchmark: a server and a client mix of elephants
(bulk uploads) and mice (short request/response), run inside network namespaces.

  server --addr A                      sink on :5001, request/response on :5002
  mix --dst A --elephants N --seconds S --mice-rate R [--resp B] --out FILE
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


def server(addr: str) -> None:
    threading.Thread(target=_serve, args=(addr, SINK, _sink), daemon=True).start()
    _serve(addr, RR, _rr)


def _bytes_acked(s: socket.socket) -> int:
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("=Q", info, 120)[0]  # tcpi_bytes_acked


def elephant(dst: str, seconds: float, out: dict) -> None:
    s = socket.create_connection((dst, SINK), timeout=30)
    out["sport"] = s.getsockname()[1]
    chunk = b"e" * 65536
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


def mix(dst: str, elephants: int, seconds: float, mice_rate: float, req: int, resp: int,
        warmup: float, seed: int) -> dict:
    rng = random.Random(seed)
    eles = [dict() for _ in range(elephants)]
    threads = [threading.Thread(target=elephant, args=(dst, seconds, e)) for e in eles]
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
    m = sub.add_parser("mix")
    m.add_argument("--dst", required=True)
    m.add_argument("--elephants", type=int, default=2)
    m.add_argument("--seconds", type=float, default=10)
    m.add_argument("--mice-rate", type=float, default=10)
    m.add_argument("--req", type=int, default=200)
    m.add_argument("--resp", type=int, default=4096)
    m.add_argument("--warmup", type=float, default=1.0)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--out", required=True)
    ns = ap.parse_args()
    if ns.cmd == "server":
        server(ns.addr)
    else:
        res = mix(ns.dst, ns.elephants, ns.seconds, ns.mice_rate, ns.req, ns.resp, ns.warmup, ns.seed)
        with open(ns.out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
