"""GpuJob: accept the job, and say at once when no node offers the vGPU resource it asks for."""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, metrics
from ..actuate import events
from ..api.conditions import set_condition
from ..api.gpujob import GpuJobPhase, GpuJobSpec
from .common import apply_status, parse_spec
from .indexes import devices_of

RESOURCE = (GROUP, "gpujobs")


def reconcile_job(body: kopf.Body, patch: kopf.Patch, logger: Any, devices_index: kopf.Index) -> None:
    spec = parse_spec(GpuJobSpec, "GpuJob", body, patch, logger)
    if spec is None:
        return
    generation = body["metadata"].get("generation", 0)
    status = body.get("status", {})
    conditions = status.get("conditions")
    offering = [d for d in devices_of(devices_index) if d.extended.get(spec.vgpu.resource, 0) > 0]
    if not offering:
        message = f"no node offers {spec.vgpu.resource}; the job waits until one does"
        if status.get("phase") != GpuJobPhase.Unschedulable.value:
            events.warning(body, "Unschedulable", message)
        patch.status["phase"] = GpuJobPhase.Unschedulable.value
        conditions = set_condition(conditions, "Schedulable", False, "NoSuchResource", message, generation)
    else:
        conditions = set_condition(conditions, "Schedulable", True, "ResourceAvailable",
                                   f"{len(offering)} node(s) offer {spec.vgpu.resource}", generation)
        if status.get("phase") in (None, GpuJobPhase.Unschedulable.value):
            patch.status["phase"] = GpuJobPhase.Pending.value
    conditions = set_condition(conditions, "Ready", True, "Accepted",
                               f"{spec.total_blocks} blocks of {spec.threads_per_block} threads", generation)
    apply_status(body, patch, {"conditions": conditions, "observedGeneration": generation})
    metrics.RECONCILES.labels("GpuJob", "ok").inc()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_job_change(**kwargs: Any) -> None:
    reconcile_job(kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["devices_index"])


@kopf.timer(*RESOURCE, interval=10, initial_delay=2)
def job_refresh(**kwargs: Any) -> None:
    reconcile_job(kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["devices_index"])
