"""`edgeweave memory ...` (page server, baseline, inspect, writer, probe) and `edgeweave memory-recover`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading

from .recovery import RecoveryFailed, recover
from .store import DirStore, StoreError
from .transport_tcp import Endpoint

EXIT_FAILED = 3


def _tls(args: argparse.Namespace, server: bool) -> ssl.SSLContext | None:
    """Mutual TLS when a certificate is given: both sides present one signed by --tls-ca."""
    if not args.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    ctx.load_verify_locations(args.tls_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False  # hosts are addressed by IP; the CA is the region's own
    return ctx


def _add_tls(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", help="certificate (enables mutual TLS)")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca", help="CA that signs the peers' certificates")


def read_token(args: argparse.Namespace) -> bytes:
    if getattr(args, "token_env", None):
        return os.environ[args.token_env].strip().encode()
    with open(args.token_file, "rb") as f:
        return f.read().strip()


def _control(path: str, req: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(json.dumps(req).encode())
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    return json.loads(data)


def _serve(a: argparse.Namespace) -> int:
    from .server import Agent

    listen = Endpoint.parse(a.listen) if a.listen else None
    agent = Agent(a.control, (listen.host, listen.port) if listen else None, _tls(a, server=True))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"LISTENING {agent.port}", flush=True)
    stop.wait()
    agent.close()
    return 0


def _baseline(a: argparse.Namespace) -> int:
    reply = _control(a.control, {"op": "baseline", "name": a.region, "store": os.path.abspath(a.store)})
    print(json.dumps(reply))
    return 0 if reply.get("ok") else EXIT_FAILED


def _inspect(a: argparse.Namespace) -> int:
    out: dict = {}
    if a.control:
        out["agent"] = _control(a.control, {"op": "list"})
    if a.store:
        store = DirStore(a.store)
        names = [a.region] if a.region else sorted(p.name for p in store.root.iterdir() if p.is_dir())
        regions = {}
        for n in names:
            try:
                m = store.manifest(n)
                entry = {"current": m.model_dump(), "epochs": store.epochs(n)}
                if a.verify:
                    from .hashing import page_sums

                    sums = store.sums(m)
                    with open(store.epoch_dir(n, m.epoch) / "data", "rb") as f:
                        data = f.read()
                    bad = (page_sums(memoryview(data), m.page_size_bytes, algo=m.checksum_algo) != sums).any(axis=1)
                    entry["corrupt_pages"] = bad.nonzero()[0].tolist()[:1000]
            except (StoreError, OSError) as exc:
                entry = {"error": str(exc)}
            regions[n] = entry
        out["store"] = regions
    print(json.dumps(out, indent=1))
    return 0


def _probe(a: argparse.Namespace) -> int:
    from .uffd import probe

    print(probe())
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave memory")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="the page server: registration socket + TCP")
    p.add_argument("--control", default="/run/edgeweave/memory.sock")
    p.add_argument("--listen", default="0.0.0.0:7470", help="HOST:PORT ('' = no TCP)")
    p.add_argument("-v", "--verbose", action="store_true")
    _add_tls(p)
    p = sub.add_parser("baseline", help="write a baseline of a region whose workload is gone")
    p.add_argument("--control", default="/run/edgeweave/memory.sock")
    p.add_argument("--region", required=True)
    p.add_argument("--store", required=True)
    p = sub.add_parser("inspect", help="show registered regions and stored baselines")
    p.add_argument("--control")
    p.add_argument("--store")
    p.add_argument("--region")
    p.add_argument("--verify", action="store_true", help="re-check every page of the current baseline")
    sub.add_parser("probe", help="which dirty-tracking mode this kernel gives")
    sub.add_parser("writer", help="test workload writing known patterns", add_help=False)
    if argv[:1] == ["writer"]:
        from .loadgen import main as writer_main

        return writer_main(argv[1:])
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(a, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    return {"serve": _serve, "baseline": _baseline, "inspect": _inspect, "probe": _probe}[a.cmd](a)


def recover_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave memory-recover",
                                 description="Rebuild a region: baseline from the store + dirty pages from "
                                 "the source. The last line of stdout is a JSON report.")
    ap.add_argument("--store", required=True, help="baseline store directory (the RWX volume)")
    ap.add_argument("--region", required=True)
    ap.add_argument("--dest", required=True, help="new region file (in /dev/shm or on hugetlbfs)")
    ap.add_argument("--source", help="HOST:PORT of the failed host's page server")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--token-file")
    g.add_argument("--token-env")
    ap.add_argument("--epoch", type=int, help="baseline epoch (default: the published one)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256, help="pages per request")
    ap.add_argument("--depth", type=int, default=8, help="requests in flight per connection")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--require-source", action="store_true",
                    help="fail instead of falling back to the baseline alone")
    ap.add_argument("--full-copy", action="store_true", help="copy every page from the source (comparison)")
    ap.add_argument("--transport", choices=["auto", "tcp", "rdma"], default="auto",
                    help="auto: RDMA where /dev/infiniband and pyverbs exist, else TCP")
    _add_tls(ap)
    a = ap.parse_args(argv)
    try:
        report = recover(DirStore(a.store), a.region, a.dest, Endpoint.parse(a.source) if a.source else None,
                         read_token(a), a.epoch, a.connections, a.batch, a.depth, a.timeout,
                         _tls(a, server=False), a.require_source, a.full_copy, a.transport)
    except RecoveryFailed as exc:
        print(f"recovery of {a.region} FAILED: {exc}", file=sys.stderr)
        print(exc.report.model_dump_json())
        return EXIT_FAILED
    print(f"recovered {a.region}: {report.message}", file=sys.stderr)
    print(report.model_dump_json())
    return 0
