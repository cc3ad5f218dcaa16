"""`edgeweave operator`: run the kopf operator with probes, metrics and peering."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import random
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import GROUP, __version__
from . import state
from .state import STATE

log = logging.getLogger("edgeweave.operator")
ROUND_WORKERS = int(os.environ.get("EDGEWEAVE_ROUND_WORKERS", "32"))
# Rounds of groups with moves in flight tick every 0.25 s and wait on the API server at every step: they
# get a pool of their own, so they cannot hold every thread while other groups' plan rounds queue.
# 32, not 16: with 500 groups' moves in flight at once, the 16 threads were all waiting on API responses
# (py-spy: TLS reads) and 141 of 500 groups' moves had not ended after 333 s.
# Rounds (32) and moves (32) together stay within the client's 64 connections.
MOVE_WORKERS = int(os.environ.get("EDGEWEAVE_MOVE_WORKERS", "32"))
LIST_CHUNK = int(os.environ.get("EDGEWEAVE_LIST_CHUNK", "500"))


def _load_handlers(webhook: bool, admission: bool = False) -> None:
    # Importing registers the handlers with kopf's default registry. The admission handler only when a
    # webhook server is configured: kopf refuses to start with admission handlers and no server.
    from . import edgesite, gpujob, indexes, workloadgroup  # noqa: F401

    if webhook:
        from . import webhook as _webhook  # noqa: F401
    if admission:
        from . import admission as _admission  # noqa: F401


_STANDBY: Any = None  # a standby.StandbyWatch with --ready-only-when-acting


async def _serve_probes(port: int, host: str) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if not STATE.ready:
            return web.Response(text="starting", status=503)
        if _STANDBY is not None and _STANDBY.standby:  # --ready-only-when-acting (handlers/standby.py)
            return web.Response(text=_STANDBY.reason, status=503)
        from .health import WATCHDOG

        if wedged := WATCHDOG.wedged():
            text = "wedged: " + ", ".join(f"{kind} {key} in one round for {age:.0f}s" for kind, key, age in wedged[:10])
            return web.Response(text=text, status=503)
        return web.Response(text="ready")

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


class RoutineSuccessFilter(logging.Filter):
    """kopf logs every successful timer, daemon and handler run at INFO ("Timer 'site_refresh' succeeded"):
    at fleet scale that is all `make run` prints. Those go to DEBUG; everything else is untouched."""


    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            msg = record.getMessage()
            if msg.endswith(("succeeded.", "succeeded")) or msg.startswith(("Creation is processed",
                                                                           "Updating is processed",
                                                                           "Resuming is processed")):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None off glibc."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


async def _return_freed_memory(interval: float = 60.0) -> None:
    """kopf holds every listed object's body until the start-up gate opens (about 14 KB per pod as Python
    objects); once freed, glibc keeps most of it mapped. Give it back to the OS now and then: RSS is what
    the node and the memory limit see."""
    trim = _malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(trim, 0)


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
    # The initial listing in pages: one response holding 20,000 pods is ~50 MB of JSON and ~300 MB once
    # parsed, all alive at once, and the heap keeps that high-water mark as RSS (0 = one response).
    settings.watching.chunk_size = LIST_CHUNK or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeweave operator", description="Run the edgeweave operator.")
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="act on WorkloadGroups/GpuJobs only in namespaces matching this glob (repeatable; default: all)")
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
    parser.add_argument("--webhook-port", type=int, default=int(os.environ.get("EDGEWEAVE_WEBHOOK_PORT", "0")),
                        help="serve the pod-steering admission webhook on this port (0 = off)")
    parser.add_argument("--webhook-host", default=os.environ.get("EDGEWEAVE_WEBHOOK_HOST", "127.0.0.1"),
                        help="host name or IP the API server uses to reach the webhook")
    parser.add_argument("--webhook-bind", default=os.environ.get("EDGEWEAVE_WEBHOOK_BIND", "127.0.0.1"))
    parser.add_argument("--webhook-config", default="steer.edgeweave.io",
                        help="name of the MutatingWebhookConfiguration the operator manages")
    parser.add_argument("--admission-config", default=os.environ.get("EDGEWEAVE_ADMISSION_CONFIG", ""),
                        help="serve the validating webhook (semantic admission) under this "
                        "ValidatingWebhookConfiguration name (empty = off; needs --webhook-port)")
    parser.add_argument("--webhook-cert-dir", default=os.environ.get("EDGEWEAVE_WEBHOOK_CERT_DIR", ".run/webhook"),
                        help="tls.crt/tls.key (and ca.crt) of the webhooks; generated once and kept when absent")
    parser.add_argument("--webhook-manage", action=argparse.BooleanOptionalAction, default=True,
                        help="apply the webhook configurations at start and remove them at a clean stop "
                        "(the chart installs them itself: --no-webhook-manage)")
    parser.add_argument("--webhook-exclude-namespace", action="append", default=[],
                        help="namespace the webhooks never see (kube-system always; repeatable)")
    parser.add_argument("--wedged-after", type=float, default=float(os.environ.get("EDGEWEAVE_WEDGED_AFTER", "120")),
                        help="/readyz fails while a reconcile round has run longer than this (seconds)")
    parser.add_argument("--admission-failure-policy", choices=("Fail", "Ignore"), default="Fail")
    parser.add_argument("--taint-namespace", action="append", default=None, metavar="GLOB",
                        help="namespaces whose WorkloadGroups may taint shared devices (repeatable; default: all). "
                             "A group elsewhere records its breaches and offloads, but never taints a node")
    parser.add_argument("--ready-only-when-acting", action="store_true",
                        help="/readyz fails while peering pauses this replica, so a Service in front of the "
                        "webhooks routes them to the acting replica only (whose in-process steering table "
                        "the move executor fills)")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.webhook_port and args.webhook_manage and args.webhook_config.count(".") < 2:
        # kopf names each webhook <handler-id>.<config>; the API server wants a 3-label domain there. Only
        # when the operator writes the configuration: the chart's own (--no-webhook-manage) has its names.
        parser.error("--webhook-config must be a domain name with at least three labels, e.g. steer.edgeweave.io")

    STATE.dry_run = args.dry_run
    from .health import WATCHDOG

    WATCHDOG.wedged_after_s = args.wedged_after
    STATE.namespaces = args.namespace
    STATE.taint_namespaces = args.taint_namespace
    STATE.prometheus_url = args.prometheus_url
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RoutineSuccessFilter())
    from . import kopf_fixes, kube

    # start-up at fleet scale: see the module (EDGEWEAVE_SLIM_BODIES=0 keeps kopf's bodies whole, to compare)
    kopf_fixes.install(slim=os.environ.get("EDGEWEAVE_SLIM_BODIES", "1") != "0")
    from . import finalizer_scope

    finalizer_scope.install()  # operators scoped elsewhere leave our finalizer alone: see the module
    rt = state.make_runtime(STATE, kube.api_client())
    state.install(rt)
    _load_handlers(webhook=bool(args.webhook_port), admission=bool(args.webhook_port and args.admission_config))

    runner_box: dict[str, Any] = {}

    @kopf.on.startup()
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure(settings)
        from . import indexes  # loaded with the handlers above

        indexes.bind_loop(asyncio.get_running_loop())  # index reads from round threads run on this loop
        # Group rounds run in asyncio's default executor (asyncio.to_thread), min(32, cores + 4) threads:
        # 6 here. A round mostly waits on the API server, so at a few hundred groups six threads left
        # moves queued for minutes with the operator's core idle (measured: 500 devices, 125 groups).
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(
            max_workers=ROUND_WORKERS, thread_name_prefix="edgeweave-round"))
        if args.webhook_port:
            from pathlib import Path

            from .webhook import WebhookOptions
            from .webhook import apply as apply_webhooks
            from .webhook import configure as configure_webhook

            runner_box["webhooks"] = configure_webhook(settings, WebhookOptions(  # type: ignore[assignment]
                port=args.webhook_port, host=args.webhook_host, bind=args.webhook_bind,
                config_name=args.webhook_config, admission_config=args.admission_config,
                cert_dir=Path(args.webhook_cert_dir), manage=args.webhook_manage,
                excluded_namespaces=args.webhook_exclude_namespace, failure_policy=args.admission_failure_policy))
            if runner_box["webhooks"]:
                from .kube import api_client

                await asyncio.to_thread(apply_webhooks, api_client(), runner_box["webhooks"])
        if args.ready_only_when_acting and not args.standalone:
            global _STANDBY
            from .kube import api_client as _api_client
            from .standby import StandbyWatch

            _STANDBY = StandbyWatch(args.peering, args.priority)
            runner_box["standby"] = asyncio.create_task(_STANDBY.run(_api_client()))
        runner_box["probes"] = await _serve_probes(args.probe_port, args.probe_host)
        runner_box["trim"] = asyncio.create_task(_return_freed_memory())
        where = ", ".join(args.namespace) if args.namespace else "all namespaces"
        log.info(
            "edgeweave operator %s starting: watching edgesites.%s (cluster-scoped), workloadgroups.%s and "
            "gpujobs.%s in %s, nodes and pods for inventory; peering=%s priority=%d; dry-run=%s; "
            "probes and /metrics on %s:%d; prometheus=%s; steering webhook=%s",
            __version__, GROUP, GROUP, GROUP, where, "standalone" if args.standalone else args.peering,
            args.priority, args.dry_run, args.probe_host, args.probe_port, args.prometheus_url or "none",
            f"https://{args.webhook_host}:{args.webhook_port}" if args.webhook_port else "off")
        STATE.ready = True

    @kopf.on.cleanup()
    async def cleanup(**_: Any) -> None:
        STATE.ready = False
        if "trim" in runner_box:
            runner_box["trim"].cancel()
        if runner_box.get("webhooks"):
            from .kube import api_client
            from .webhook import remove as remove_webhooks

            await asyncio.to_thread(remove_webhooks, api_client(), runner_box["webhooks"])
        if "standby" in runner_box:
            runner_box["standby"].cancel()
        if "probes" in runner_box:
            await runner_box["probes"].cleanup()

    asyncio.run(kopf.operator(
        memo=kopf.Memo(runtime=rt, move_executor=concurrent.futures.ThreadPoolExecutor(
            max_workers=MOVE_WORKERS, thread_name_prefix="edgeweave-moves")),
        clusterwide=True,
        standalone=args.standalone,
        # kopf makes peering mandatory whenever a name is given, which pauses a standalone operator forever.
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
    ))
    return 0
