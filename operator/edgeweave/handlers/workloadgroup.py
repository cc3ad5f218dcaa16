"""WorkloadGroup: one daemon per group is the single writer of its status.

Each round (`wg_round.GroupController.round`): finish the moves in flight (one persisted step at a time,
`wg_moves`), then gather inventory, context and telemetry, decide (`wg_decide.decide`, pure), write status
if it changed, and act (taint claims, Events; in Enforce mode the mover starts the plan's moves).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from typing import Any

import kopf

from .. import GROUP
from ..actuate.kubeapi import ApiError, api_error
from . import kube
from .health import WATCHDOG, Backoff, describe_error, record_failure
from .indexes import devices_of
from .state import in_scope, runtime
from .wg_round import GroupController, GroupRef

RESOURCE = (GROUP, "workloadgroups")
TICK = 1.0
INFLIGHT_TICK = 0.25
INDEXES = ("devices_index", "pods_by_node", "pods_by_namespace", "sites_index", "groups_by_namespace")


@kopf.index(*RESOURCE)
def groups_by_namespace(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[str, GroupRef]:
    """Every group's selector, for the overlap check (a pod belongs to at most one group)."""
    selector = (body.get("spec") or {}).get("selector") or {}
    return {namespace: GroupRef(name=name, created=body.get("metadata", {}).get("creationTimestamp", ""),
                                selector=tuple(sorted((str(k), str(v)) for k, v in dict(selector).items())))}


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0, when=in_scope)
async def group_daemon(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body, logger: Any,
                       memo: kopf.Memo, **kwargs: Any) -> None:
    """Async on purpose: a sync daemon would hold one of kopf's worker threads for the group's whole life,
    and enough groups would starve the admission webhook and the timers. Each round runs in a thread
    only while it works. `body` is kopf's live view of the object, fed by its watch: no GET per round."""
    rt = runtime(memo)
    ctl = GroupController(namespace, name, rt, logger)
    indexes = {k: kwargs[k] for k in INDEXES}
    backoff = Backoff()
    last_plan = 0.0
    last_gen = None
    inflight = False
    try:
        while not stopped:
            gen = body.get("metadata", {}).get("generation")
            spec = body.get("spec", {})
            resync = (spec.get("telemetry") or {}).get("resyncSeconds", 30)
            now = time.monotonic()
            plan_now = gen != last_gen or now - last_plan >= resync
            # Between resyncs a round is only needed while something runs on a clock: moves in flight,
            # requirements (grace periods), failover watch. An idle group costs nothing.
            if not (plan_now or inflight or spec.get("requirements") or
                    (spec.get("memoryRecovery") or {}).get("enabled")):
                await stopped.wait(TICK)
                continue
            try:
                with WATCHDOG.round("WorkloadGroup", f"{namespace}/{name}"):
                    # Moves in flight run in their own pool (main): plan rounds never queue behind them.
                    pool = memo.get("move_executor") if inflight else None
                    inflight = await asyncio.get_running_loop().run_in_executor(pool, functools.partial(
                        contextvars.copy_context().run, ctl.round, body, indexes, plan_now and not inflight))
                if plan_now:
                    last_plan, last_gen = now, gen
                if backoff.succeeded():
                    logger.info("WorkloadGroup round succeeds again")
            except Exception as err:  # noqa: BLE001 - a failed round backs off with a condition, never a crash loop
                if await asyncio.to_thread(group_gone, err, namespace, name):
                    # Deleted under a running round (kopf stops the daemon soon): nothing left to reconcile.
                    logger.info("WorkloadGroup is gone; its daemon ends")
                    return
                delay, new_error = backoff.failed(describe_error(err))
                record_failure(logger, "WorkloadGroup round", backoff, delay, new_error)
                ctl.written, ctl.claimed = None, None  # re-read: our copies may be what failed
                await asyncio.to_thread(ctl.report_failure, body, backoff, delay, new_error)
                inflight = False
                await stopped.wait(delay)
                continue
            await stopped.wait(INFLIGHT_TICK if inflight else TICK)
    finally:
        rt.breaches.forget(f"{namespace}/{name}")


def group_gone(err: BaseException, namespace: str, name: str) -> bool:
    """Whether a round failed because its own group no longer exists (a 404, and a GET agrees)."""
    typed = err if isinstance(err, ApiError) else api_error(err)
    if typed is None or not typed.not_found:
        return False
    try:
        return kube.read_custom("workloadgroups", namespace, name) is None
    except Exception:  # noqa: BLE001 - cannot tell: the normal backoff path reports it
        return False


@kopf.on.delete(*RESOURCE, when=in_scope)
def group_deleted(name: str, namespace: str, uid: str, memo: kopf.Memo, logger: Any, devices_index: kopf.Index,
                  **_: Any) -> None:
    """A deleted group's taint claims go with it (kopf's finalizer holds the object until this returns).
    The group's daemon may still be in a round: the release closes the group's claims first, so that round
    cannot re-taint a device after it (tests/unit/handlers/test_taint_claims.py)."""
    rt = runtime(memo)
    ctl = GroupController(namespace, name, rt, logger)
    failed = ctl.release_all_taints(devices_of(devices_index), uid)
    ctl.release_prestage(devices_of(devices_index))
    rt.breaches.forget(ctl.key)
    if failed:
        raise kopf.TemporaryError(f"could not release the taint claims on {failed} device(s)", delay=5)
