"""WorkloadGroup: membership, devices spanned, readiness. Aggregation/remediation build on this."""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, metrics
from ..api.conditions import set_condition
from ..api.workloadgroup import WorkloadGroupSpec
from ..placement.inventory import selector_matches
from .common import apply_status, parse_spec
from .state import STATE

RESOURCE = (GROUP, "workloadgroups")


def reconcile_group(body: kopf.Body, patch: kopf.Patch, logger: Any, pods_by_namespace: kopf.Index) -> None:
    spec = parse_spec(WorkloadGroupSpec, "WorkloadGroup", body, patch, logger)
    if spec is None:
        return
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 0)
    members = [p for p in pods_by_namespace.get(namespace, ())
               if p.active and selector_matches(spec.selector, p.labels)]
    devices = {p.node for p in members if p.node}
    mode = "DryRun" if (spec.mode.value == "DryRun" or STATE.dry_run) else "Enforce"
    conditions = set_condition(body.get("status", {}).get("conditions"), "Ready", True, "Accepted",
                               f"{len(members)} member pod(s) on {len(devices)} device(s); mode {mode}",
                               generation)
    apply_status(body, patch, {"conditions": conditions, "members": len(members), "devices": len(devices),
                               "observedGeneration": generation})
    metrics.GROUP_MEMBERS.labels(namespace, name).set(len(members))
    metrics.GROUP_DEVICES.labels(namespace, name).set(len(devices))
    metrics.RECONCILES.labels("WorkloadGroup", "ok").inc()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_group_change(**kwargs: Any) -> None:
    reconcile_group(kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["pods_by_namespace"])


@kopf.timer(*RESOURCE, interval=10, initial_delay=2)
def group_refresh(**kwargs: Any) -> None:
    reconcile_group(kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["pods_by_namespace"])
