"""`edgeweave operator`: run the kopf operator with probes, metrics and peering."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import GROUP, __version__
from .state import STATE

log = logging.getLogger("edgeweave.operator")


def _load_handlers() -> None:
    # Importing registers the handlers with kopf's default registry.
    from . import edgesite, gpujob, indexes, workloadgroup  # noqa: F401


async def _serve_probes(port: int, host: str) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready" if STATE.ready else "starting", status=200 if STATE.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def _configure(settings: kopf.OperatorSettings) -> None:
    # Progress and diff-base live in annotations: status is a structural schema that would prune
    # kopf's own fields, and handlers write status explicitly.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    settings.execution.max_workers = int(os.environ.get("EDGEWEAVE_WORKERS", "16"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgeweave operator", description="Run the edgeweave operator.")
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch WorkloadGroups/GpuJobs only here (repeatable; default: all namespaces)")
    parser.add_argument("--dry-run", action="store_true",
                        help="compute and record every plan, change nothing in the cluster")
    parser.add_argument("--probe-port", type=int, default=int(os.environ.get("EDGEWEAVE_PROBE_PORT", "8080")),
                        help="port for /healthz, /readyz and /metrics")
    parser.add_argument("--probe-host", default=os.environ.get("EDGEWEAVE_PROBE_HOST", "0.0.0.0"))
    parser.add_argument("--peering", default=os.environ.get("EDGEWEAVE_PEERING", "edgeweave"),
                        help="ClusterKopfPeering name shared by replicas (only one acts at a time)")
    parser.add_argument("--standalone", action="store_true", help="no peering (single replica, dev only)")
    # Replicas of one Deployment share their arguments; a random priority makes exactly one of them the
    # highest (kopf pauses every replica that sees a peer of higher priority).
    parser.add_argument("--priority", type=int,
                        default=int(os.environ.get("EDGEWEAVE_PRIORITY", "0")) or random.randint(1, 1_000_000),
                        help="peering priority; the highest live replica acts (default: random)")
    parser.add_argument("--prometheus-url", default=os.environ.get("EDGEWEAVE_PROMETHEUS_URL"),
                        help="Prometheus HTTP API base URL for telemetry")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    STATE.dry_run = args.dry_run
    STATE.namespaces = args.namespace
    STATE.prometheus_url = args.prometheus_url
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _load_handlers()

    runner_box: dict[str, web.AppRunner] = {}

    @kopf.on.startup()
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure(settings)
        runner_box["probes"] = await _serve_probes(args.probe_port, args.probe_host)
        where = ", ".join(args.namespace) if args.namespace else "all namespaces"
        log.info(
            "edgeweave operator %s starting: watching edgesites.%s (cluster-scoped), workloadgroups.%s and "
            "gpujobs.%s in %s, nodes and pods for inventory; peering=%s priority=%d; dry-run=%s; "
            "probes and /metrics on %s:%d; prometheus=%s",
            __version__, GROUP, GROUP, GROUP, where, "standalone" if args.standalone else args.peering,
            args.priority, args.dry_run, args.probe_host, args.probe_port, args.prometheus_url or "none")
        STATE.ready = True

    @kopf.on.cleanup()
    async def cleanup(**_: Any) -> None:
        STATE.ready = False
        if "probes" in runner_box:
            await runner_box["probes"].cleanup()

    asyncio.run(kopf.operator(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        peering_name=args.peering,
        priority=args.priority,
    ))
    return 0
