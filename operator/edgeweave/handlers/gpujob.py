"""GpuJob: plan the slices, record the plan, create the job pods, track their progress, replace lost pods.

Thin: the decisions are in gpu/plan.py (slice size, assignment, reassignment), gpu/jobstate.py
(status + observed pods -> next status and pods to create) and gpu/podspec.py (manifests); pods are
created only through the Actuator. Every reconcile of a job reads the job and its pods fresh from
the API server under a per-job lock, writes status, and only then creates pods, so a restarted
operator resumes from status (deterministic pod names make a repeated create a 409).

Triggers: the job's create/resume/spec update, any event of a pod labelled with a job, and a timer.

A reconcile that fails (the API server refuses a write, a status that would be too large, a bug)
never becomes a traceback per event or a retry loop: the job gets `Ready=False/ReconcileFailed` naming
the fault, one Warning Event per distinct fault, one log line, and is left alone for an exponential
backoff (2 s doubling to 5 min) before the next try.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, VERSION, metrics
from ..actuate import events
from ..actuate.actuator import Actuator, Outcome
from ..admission import checks as admission_checks
from ..admission.policy import policy_from_env
from ..api.conditions import set_condition
from ..api.gpujob import GpuJobPhase, GpuJobSpec, GpuJobStatus
from ..gpu import dcgm
from ..gpu.dispatch_auth import job_token, load_key
from ..gpu.jobstate import JobEvent, advance, initial_status, observe_pod, restore_plan
from ..gpu.plan import plan_job
from ..gpu.podspec import LABEL_JOB, DispatcherWiring, job_pod, job_selector
from . import kube
from .common import invalid_spec
from .health import WATCHDOG, Backoff, Backoffs, describe_error, record_failure
from .indexes import devices_of
from .state import in_scope, runtime

RESOURCE = (GROUP, "gpujobs")
PLURAL = "gpujobs"
POD_CREATES_PER_INTERVAL, POD_CREATE_INTERVAL = 50, 10.0  # per job, through the shared limiter

_client_lock = threading.Lock()
_job_locks: dict[tuple[str, str], threading.Lock] = {}
MAX_STATUS_BYTES = 256 * 1024  # far below etcd's 1.5 MiB: a status never draws a 413
class StatusTooLarge(Exception):
    pass


BACKOFFS = Backoffs()


class AdmissionRefused(ValueError):
    """The spec parses but admission's semantic checks refuse it."""


def api_client() -> Any:
    return kube.api_client()


def actuator() -> Actuator:
    """The operator's shared actuator (its limiter, dry-run and Events)."""
    return runtime(None).actuator


# Set by the chart when the node slice dispatcher is installed: job pods then get their grants from it.
ENV_DISPATCHER_KEY = "EDGEWEAVE_GPU_DISPATCHER_KEY_FILE"
ENV_DISPATCHER_SOCKET_DIR = "EDGEWEAVE_GPU_DISPATCHER_SOCKET_DIR"
ENV_DISPATCHER_OUTPUT_DIR = "EDGEWEAVE_GPU_OUTPUT_DIR"
# A JSON object of env for every job pod (node-wide settings such as MPS's pipe directory; in tests the
# CPU runtime's pace), with or without the dispatcher.
ENV_DISPATCHER_POD_ENV = "EDGEWEAVE_GPU_JOB_POD_ENV"


def job_pod_env() -> tuple[tuple[str, str], ...]:
    import json
    import os

    extra = json.loads(os.environ.get(ENV_DISPATCHER_POD_ENV) or "{}")
    if not isinstance(extra, dict):
        raise ValueError(f"{ENV_DISPATCHER_POD_ENV} must be a JSON object of names to values")
    return tuple((str(k), str(v)) for k, v in sorted(extra.items()))


def dispatcher_wiring(namespace: str, name: str, uid: str) -> DispatcherWiring | None:
    import os

    key_file = os.environ.get(ENV_DISPATCHER_KEY)
    if not key_file:
        return None
    return DispatcherWiring(host_socket_dir=os.environ.get(ENV_DISPATCHER_SOCKET_DIR, "/var/run/edgeweave/gpu"),
                            host_output_dir=os.environ.get(ENV_DISPATCHER_OUTPUT_DIR, "/var/lib/edgeweave/gpu/out"),
                            token=job_token(load_key(key_file), namespace, name, uid))


def _lock(namespace: str, name: str) -> threading.Lock:
    with _client_lock:
        return _job_locks.setdefault((namespace, name), threading.Lock())


def _job_ref(job: dict[str, Any]) -> dict[str, str]:
    meta = job["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuJob", "namespace": meta["namespace"],
            "name": meta["name"], "uid": meta.get("uid", "")}


def _post(job: dict[str, Any], ev: JobEvent) -> None:
    events.post(api_client(), _job_ref(job), ev.type, ev.reason, ev.message)


def _write_status(namespace: str, name: str, current: dict[str, Any], new: dict[str, Any]) -> None:
    """Merge-patch only the changed top-level status fields (lists are replaced whole)."""
    changed = {k: v for k, v in new.items() if current.get(k) != v}
    if not changed:
        return
    from kubernetes import client

    client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": changed})


def reconcile(namespace: str, name: str, devices_index: kopf.Index, logger: Any) -> None:
    key = (namespace, name)
    if not BACKOFFS.due(key):
        return  # failing: the next try waits out its backoff (timer and pod events keep calling)
    with _lock(namespace, name), WATCHDOG.round("GpuJob", f"{namespace}/{name}"):
        try:
            _reconcile(namespace, name, devices_index, logger)
        except Exception as err:  # noqa: BLE001 - backs off with a condition instead of kopf's retry loop
            backoff, delay, new_error = BACKOFFS.failed(key, err)
            record_failure(logger, "GpuJob reconcile", backoff, delay, new_error)
            _report_failure(namespace, name, backoff, delay, new_error, logger)
            return
        if BACKOFFS.succeeded(key):
            logger.info("GpuJob reconcile succeeds again")


def _report_failure(namespace: str, name: str, backoff: Backoff, delay: float, new_error: bool, logger: Any) -> None:
    """Best effort: the failure may be the status patch itself (e.g. 413), so the condition is small."""
    from kubernetes import client

    message = f"reconcile failed {backoff.failures} time(s) in a row, next try in {delay:.0f}s: {backoff.last_error}"
    try:
        job = client.CustomObjectsApi(api_client()).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                 name)
        current = dict(job.get("status") or {})
        gen = job["metadata"].get("generation", 0)
        _write_status(namespace, name, current, {"conditions": set_condition(
            current.get("conditions"), "Ready", False, "ReconcileFailed", message, gen)})
        if new_error:
            _post(job, JobEvent(type="Warning", reason="ReconcileFailed", message=message))
    except Exception as err:  # noqa: BLE001 - reporting never raises into kopf
        logger.warning("could not record the failure: %s", describe_error(err))


def _reconcile(namespace: str, name: str, devices_index: kopf.Index, logger: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api_client())
    try:
        job = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return  # deleted; its pods go with it (owner references)
        raise
    meta = job["metadata"]
    if meta.get("deletionTimestamp"):
        return
    generation = meta.get("generation", 0)
    current: dict[str, Any] = dict(job.get("status") or {})
    conditions = current.get("conditions")
    try:
        spec = GpuJobSpec.model_validate(job.get("spec") or {})
        # What admission refuses (when the webhook is off or the object predates it) is never served:
        # CUDA source the slice rewrite rejects, an image off the allow-list, an unbounded grid.
        if refusals := admission_checks.gpujob({"spec": job.get("spec") or {}}, policy=policy_from_env()):
            raise AdmissionRefused(admission_checks.describe(refusals))
    except (ValidationError, AdmissionRefused) as err:
        new = invalid_spec("GpuJob", current, generation, err if isinstance(err, ValidationError) else str(err),
                           kube.group_ref("GpuJob", namespace, name, meta.get("uid", "")), api_client(), logger)
        if not current.get("pods"):
            # Nothing ran and nothing will: the phase says so (a job left without one looked like a job
            # still starting, and whoever waited on the phase waited forever). A fixed spec is planned
            # afresh, as a job without pods is never final.
            new["phase"] = GpuJobPhase.Failed.value
        _write_status(namespace, name, current, new)
        return

    offering = sorted(d.name for d in devices_of(devices_index) if d.extended.get(spec.vgpu.resource, 0) > 0)
    if offering:
        conditions = set_condition(conditions, "Schedulable", True, "ResourceAvailable",
                                   f"{len(offering)} node(s) offer {spec.vgpu.resource}", generation)
    else:
        message = f"no node offers {spec.vgpu.resource}; the job waits until one does"
        if current.get("phase") != GpuJobPhase.Unschedulable.value:
            _post(job, JobEvent(type="Warning", reason="Unschedulable", message=message))
        conditions = set_condition(conditions, "Schedulable", False, "NoSuchResource", message, generation)
    conditions = set_condition(conditions, "Ready", True, "Accepted",
                               f"{spec.total_blocks} blocks of {spec.threads_per_block} threads", generation)

    status = GpuJobStatus.model_validate(current)
    if status.pods and status.phase in (GpuJobPhase.Succeeded.value, GpuJobPhase.Failed.value):
        return  # finished: done slices only grow, and a failed job is not retried
    if not status.pods:
        if not offering:
            # Nothing is planned until the resource exists: the slice size depends on the GPU's load.
            _write_status(namespace, name, current, {
                "conditions": conditions, "observedGeneration": generation,
                "phase": GpuJobPhase.Unschedulable.value})
            metrics.RECONCILES.labels("GpuJob", "ok").inc()
            return
        load, why = dcgm.read_load(runtime(None).settings.prometheus_url, offering)
        plan = plan_job(spec, load)
        summary = plan.summary()
        if load is None:
            summary += f"; load unknown: {why}"
        conditions = set_condition(conditions, "Planned", True, "PlanRecorded", summary, generation)
        status = initial_status(name, plan)
        logger.info("GpuJob %s/%s planned: %s", namespace, name, summary)

    pods = client.CoreV1Api(api_client()).list_namespaced_pod(namespace, label_selector=job_selector(name))
    uid = meta.get("uid")
    observed = []
    for pod in pods.items:
        # A job recreated under the same name must not adopt the old one's pods (still being collected).
        owners = pod.metadata.owner_references or []
        if not any(o.uid == uid for o in owners):
            continue
        obs = observe_pod(api_client().sanitize_for_serialization(pod))
        if obs is not None:
            if obs.bad_annotation is not None:
                logger.warning("pod %s: unreadable progress annotation %r ignored", obs.name, obs.bad_annotation)
            observed.append(obs)
    step = advance(name, spec, status, observed, schedulable=bool(offering))
    new = step.status.wire()
    new["conditions"] = conditions
    new["observedGeneration"] = generation
    size = len(json.dumps(new))
    if size > MAX_STATUS_BYTES:
        raise StatusTooLarge(f"status would be {size} bytes (limit {MAX_STATUS_BYTES}); "
                             f"{len(new.get('pods') or [])} pod entries")
    # The plan (and any replacement entries) is recorded before a pod is created for it.
    _write_status(namespace, name, current, new)
    for ev in step.events:
        _post(job, ev)
    if not step.create:
        metrics.RECONCILES.labels("GpuJob", "ok").inc()
        return
    plan = restore_plan(spec, step.status, [])
    act = actuator()
    job_meta = {"name": name, "namespace": namespace, "uid": uid}
    wiring = dispatcher_wiring(namespace, name, uid)
    pod_env = job_pod_env()
    for assignment in step.create:
        manifest = job_pod(job_meta, spec, plan, assignment, dispatcher=wiring, extra_env=pod_env)
        pod_name = manifest["metadata"]["name"]
        result = act.create_pod(namespace, manifest, reason="GpuJobSlicePod",
                                message=f"runs {assignment.count} slice(s) of GpuJob {name}",
                                limit=(f"gpujob/{namespace}/{name}", POD_CREATES_PER_INTERVAL, POD_CREATE_INTERVAL))
        if result.outcome == Outcome.RateLimited:
            break  # still Planned in status: the next reconcile creates the rest
        if result.outcome == Outcome.Done:
            _post(job, JobEvent(type="Normal", reason="Created",
                                message=f"pod {pod_name} for {assignment.count} slice(s)"))
        elif result.outcome == Outcome.Failed:
            _post(job, JobEvent(type="Warning", reason="CreateFailed", message=result.message))
            logger.warning("GpuJob %s/%s: %s", namespace, name, result.message)
        # Conflict: created by an earlier run (before a restart); DryRun: recorded only.
    metrics.RECONCILES.labels("GpuJob", "ok").inc()


@kopf.on.resume(*RESOURCE, when=in_scope)
@kopf.on.create(*RESOURCE, when=in_scope)
@kopf.on.update(*RESOURCE, field="spec", when=in_scope)
def on_job_change(**kwargs: Any) -> None:
    reconcile(kwargs["namespace"], kwargs["name"], kwargs["devices_index"], kwargs["logger"])


@kopf.timer(*RESOURCE, interval=10, initial_delay=2, when=in_scope)
def job_refresh(**kwargs: Any) -> None:
    reconcile(kwargs["namespace"], kwargs["name"], kwargs["devices_index"], kwargs["logger"])


@kopf.on.event("pods", labels={LABEL_JOB: kopf.PRESENT}, when=in_scope)
def on_job_pod_event(**kwargs: Any) -> None:
    """Progress and loss of a job pod: reconcile its GpuJob now rather than at the next timer tick."""
    body = kwargs["body"]
    owner = next((o for o in body.get("metadata", {}).get("ownerReferences") or []
                  if o.get("kind") == "GpuJob" and o.get("apiVersion", "").startswith(f"{GROUP}/")), None)
    if owner is None:
        return
    reconcile(body["metadata"]["namespace"], owner["name"], kwargs["devices_index"], kwargs["logger"])
