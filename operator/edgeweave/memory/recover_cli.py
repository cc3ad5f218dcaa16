"""`edgeweave memory-recover`: the replacement pod's init container (and the bench's recovery).

Kept apart from `memory/cli.py` and lean on purpose: the whole command is what a failover waits
for, and on a loaded edge CPU the interpreter's imports cost more than the recovery itself. Only
the standard library, the protocol and the store are imported on the way to a pre-staged
recovery; numpy, boto3 and the lazy-restore machinery only where their path is taken.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys

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


def wait_owner_exit(source: object, region: str, token: bytes, tls: ssl.SSLContext | None, wait_s: float,
                    timeout: float = 5.0) -> dict:
    """Before reading the dirty list: wait (at most `wait_s`) until the source agent says the region's
    workload is gone. A move evicts the old pod while its controller already makes the replacement,
    so the replacement's recovery can start while the old workload still writes; what it writes after
    the dirty list is read would be lost. A source that does not answer ends the wait at once (a dead
    host: recovery decides). Returns what was seen: {"waited_s", "owner_alive"} (None: unreachable)."""
    import time

    from .transport_tcp import PageClient

    t0 = time.monotonic()
    alive: bool | None = None
    while True:
        try:
            client = PageClient(source, region, token, timeout, tls)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - refused or unreachable: recovery itself reports why
            alive = None
            break
        alive = bool(client.info.get("owner_alive"))
        client.conn.close()
        if not alive or time.monotonic() - t0 >= wait_s:
            break
        time.sleep(0.2)
    return {"waited_s": round(time.monotonic() - t0, 3), "owner_alive": alive}


def recover_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave memory-recover",
                                 description="Rebuild a region: baseline from the store + dirty pages from "
                                 "the source. The last line of stdout is a JSON report.")
    ap.add_argument("--store", required=True, help="baseline store: directory (RWX volume) or s3://bucket/prefix")
    ap.add_argument("--local-cache", help="pre-staged baselines on this node (used when they hold the store's "
                    "current epoch)")
    ap.add_argument("--region", required=True, help="namespace/pod-uid/name of the region on the source")
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
    ap.add_argument("--wait-owner-exit", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS for the source's workload to exit (a planned move: the "
                    "old pod is still terminating when its replacement starts)")
    ap.add_argument("--transport", choices=["auto", "tcp", "rdma"], default="auto",
                    help="auto: RDMA where /dev/infiniband and pyverbs exist, else TCP")
    ap.add_argument("--lazy", metavar="SOCKET", help="lazy restore: the replacement attaches its "
                    "userfaultfd on SOCKET and serves at once; faults first, the rest in the background")
    _add_tls(ap)
    a = ap.parse_args(argv)
    from .recovery import RecoveryFailed, recover
    from .store import DirStore, open_store
    from .transport_tcp import Endpoint

    waited = None
    if a.wait_owner_exit > 0 and a.source:
        waited = wait_owner_exit(Endpoint.parse(a.source), a.region, read_token(a), _tls(a, server=False),
                                 a.wait_owner_exit, a.timeout)
        print(f"source workload of {a.region}: owner_alive={waited['owner_alive']} after {waited['waited_s']} s",
              file=sys.stderr)
    try:
        if a.lazy:
            from .lazy import recover_lazy

            report = recover_lazy(open_store(a.store), a.region, a.dest,
                                  Endpoint.parse(a.source) if a.source else None, read_token(a), a.lazy,
                                  _tls(a, server=False), DirStore(a.local_cache) if a.local_cache else None,
                                  a.timeout, on_listening=lambda: print("LAZY-LISTENING", file=sys.stderr,
                                                                        flush=True))
        else:
            report = recover(open_store(a.store), a.region, a.dest, Endpoint.parse(a.source) if a.source else None,
                             read_token(a), a.epoch, a.connections, a.batch, a.depth, a.timeout,
                             _tls(a, server=False), a.require_source, a.full_copy, a.transport,
                             local=DirStore(a.local_cache) if a.local_cache else None)
    except RecoveryFailed as exc:
        if waited:
            exc.report.phases["wait_owner_exit_s"] = waited["waited_s"]
        print(f"{'lazy ' if a.lazy else ''}recovery of {a.region} FAILED: {exc}", file=sys.stderr)
        print(exc.report.model_dump_json())
        return EXIT_FAILED
    if waited:  # the report's duration is the recovery's; the wait is its own phase
        report.phases["wait_owner_exit_s"] = waited["waited_s"]
    print(f"recovered {a.region}: {report.message}", file=sys.stderr)
    print(report.model_dump_json())
    return 0
