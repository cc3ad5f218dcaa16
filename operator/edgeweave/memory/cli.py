"""`edgeweave memory ...` (page server, baseline, inspect, writer, probe) and `edgeweave memory-recover`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading

from .recover_cli import EXIT_FAILED, _add_tls, _tls, recover_main  # noqa: F401 (recover_main: old entry)
from .store import DirStore, StoreError, open_store
from .transport_tcp import Endpoint


def _file_token(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read().strip()


def _auth(a: argparse.Namespace) -> dict:
    """Control-socket credentials: a region's token (hex) or the agent's admin token."""
    out = {}
    # Sent hex-encoded, as registration sends the region's token.
    if getattr(a, "token_file", None):
        out["token"] = (_file_token(a.token_file) or b"").hex()
    if getattr(a, "admin_token_file", None):
        out["admin_token"] = (_file_token(a.admin_token_file) or b"").hex()
    return out


def _control(path: str, req: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(json.dumps(req).encode())
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    return json.loads(data)


def _serve(a: argparse.Namespace) -> int:
    from .server import Agent, Limits

    listen = Endpoint.parse(a.listen) if a.listen else None
    try:
        agent = Agent(a.control, (listen.host, listen.port) if listen else None, _tls(a, server=True),
                      store=a.store, admin_token=_file_token(a.admin_token_file),
                      require_pod_cgroup=a.require_pod_cgroup, allow_plaintext=a.insecure_plaintext,
                      limits=Limits(max_tcp_connections=a.max_connections, idle_timeout_s=a.idle_timeout))
    except ValueError as exc:
        print(f"edgeweave memory serve: {exc}", file=sys.stderr)
        return 2
    pre = watch = None
    if a.prestage or a.prestage_node:
        from .prestage import NodeWatch, Prestager, parse_rate

        if not (a.store and a.prestage_cache):
            print("edgeweave memory serve: --prestage/--prestage-node need --store and --prestage-cache",
                  file=sys.stderr)
            return 2
        watch = NodeWatch(a.prestage_node).start() if a.prestage_node else None
        pre = Prestager(open_store(a.store), DirStore(a.prestage_cache), a.prestage,
                        parse_rate(a.prestage_rate) if a.prestage_rate else None, a.prestage_interval,
                        wanted=watch.names if watch else None).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"LISTENING {agent.port}", flush=True)
    stop.wait()
    if watch:
        watch.stop()
    if pre:
        pre.stop()
    agent.close()
    return 0


def _baseline(a: argparse.Namespace) -> int:
    reply = _control(a.control, {"op": "baseline", "region": a.region, **_auth(a)})
    print(json.dumps(reply))
    return 0 if reply.get("ok") else EXIT_FAILED


def _inspect(a: argparse.Namespace) -> int:
    out: dict = {}
    if a.control:
        out["agent"] = _control(a.control, {"op": "list", "region": a.region or "", **_auth(a)})
    if a.store:
        store = open_store(a.store)
        names = [a.region] if a.region else store.regions()
        regions = {}
        for n in names:
            try:
                m = store.manifest(n)
                entry = {"current": m.model_dump(), "epochs": store.epochs(n)}
                if a.verify:
                    from .hashing import page_sums

                    sums = store.sums(m)
                    data = bytearray(m.size_bytes)
                    store.read_into(m, memoryview(data))
                    bad = (page_sums(memoryview(data), m.page_size_bytes, algo=m.checksum_algo) != sums).any(axis=1)
                    entry["corrupt_pages"] = bad.nonzero()[0].tolist()[:1000]
            except (StoreError, OSError, ValueError) as exc:
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
    p.add_argument("--listen", default="", help="HOST:PORT, the node's pod-network address (none: no TCP)")
    p.add_argument("--store", help="the baseline store (directory or s3://bucket/prefix): the only place "
                   "`baseline` writes")
    p.add_argument("--admin-token-file", help="hex token that may list every region and take baselines")
    p.add_argument("--require-pod-cgroup", action="store_true",
                   help="registration only from a process in the cgroup of the pod it names")
    p.add_argument("--insecure-plaintext", action="store_true", help="serve pages without TLS")
    p.add_argument("--max-connections", type=int, default=32)
    p.add_argument("--idle-timeout", type=float, default=30.0)
    p.add_argument("--prestage", action="append", default=[], metavar="STORE_NAME",
                   help="pull new baselines of this region (namespace.name) into --prestage-cache")
    p.add_argument("--prestage-node", metavar="NODE", help="also pre-stage what the operator names in this "
                   "Node's prestage.memory.edgeweave.io/* annotations (the devices a workload would fail over to)")
    p.add_argument("--prestage-cache", help="local directory for pre-staged baselines (on the regions' "
                   "tmpfs, a failover adopts the copy by rename)")
    p.add_argument("--prestage-rate", default="200mbit", help="rate limit of the background pull")
    p.add_argument("--prestage-interval", type=float, default=5.0)
    p.add_argument("-v", "--verbose", action="store_true")
    _add_tls(p)
    p = sub.add_parser("baseline", help="write a baseline of a region whose workload is gone")
    p.add_argument("--control", default="/run/edgeweave/memory.sock")
    p.add_argument("--region", required=True, help="namespace/pod-uid/name")
    p.add_argument("--token-file", help="the region's token (hex)")
    p.add_argument("--admin-token-file")
    p = sub.add_parser("inspect", help="show registered regions and stored baselines")
    p.add_argument("--control")
    p.add_argument("--store")
    p.add_argument("--region")
    p.add_argument("--token-file", help="the region's token (hex)")
    p.add_argument("--admin-token-file")
    p.add_argument("--verify", action="store_true", help="re-check every page of the current baseline")
    sub.add_parser("probe", help="which dirty-tracking mode this kernel gives")
    p = sub.add_parser("prestage", help="pull the current baseline of a region into a local directory")
    p.add_argument("--store", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--region", required=True, help="store name (namespace.name)")
    p.add_argument("--rate", default="", help="e.g. 200mbit (default: unlimited)")
    sub.add_parser("writer", help="test workload writing known patterns", add_help=False)
    sub.add_parser("lazy-check", help="test replacement workload of a lazy restore", add_help=False)
    if argv[:1] == ["lazy-check"]:
        from .loadgen import lazy_check_main

        return lazy_check_main(argv[1:])
    if argv[:1] == ["writer"]:
        from .loadgen import main as writer_main

        return writer_main(argv[1:])
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(a, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    return {"serve": _serve, "baseline": _baseline, "inspect": _inspect, "probe": _probe,
            "prestage": _prestage}[a.cmd](a)


def _prestage(a: argparse.Namespace) -> int:
    from .prestage import parse_rate, prestage_once

    try:
        out = prestage_once(open_store(a.store), DirStore(a.cache), a.region, parse_rate(a.rate) if a.rate else None)
    except (StoreError, OSError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return EXIT_FAILED
    print(json.dumps({"ok": True, **out}))
    return 0
