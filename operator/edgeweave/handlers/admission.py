"""Validating webhook: semantic admission of EdgeSites, WorkloadGroups and GpuJobs.

Thin: gathers what the checks need from kopf's in-memory indexes (no API call on the admission path,
so the short timeout holds under load), runs the pure checks in admission/checks.py, and refuses with
every fault named by its field. An UPDATE that leaves spec as it was is always admitted: the operator's
own annotation and finalizer patches must never be refused because a peer appeared later (that is a
reconcile-time Conflict, not an admission question).
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, metrics
from ..admission import checks
from ..admission.checks import Peer
from ..admission.policy import policy_from_env
from .indexes import devices_of, sites_of

POLICY = policy_from_env()


def _spec_unchanged(operation: str | None, old: Any, body: Any) -> bool:
    return operation == "UPDATE" and old is not None and dict(old.get("spec") or {}) == dict(body.get("spec") or {})


def _refuse(kind: str, refusals: list[checks.Refusal]) -> None:
    if refusals:
        metrics.ADMISSION_REFUSALS.labels(kind, refusals[0].field.split("[")[0]).inc()
        raise kopf.AdmissionError(checks.describe(refusals), code=422)


@kopf.index(GROUP, "workloadgroups")
def groups_by_namespace(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, Peer]:
    selector = spec.get("selector") or {}
    return {namespace: Peer(name=name, selector={str(k): str(v) for k, v in dict(selector).items()})}


@kopf.on.validate(GROUP, "workloadgroups", id="validate-workloadgroups", operations=["CREATE", "UPDATE"])
async def validate_workloadgroup(body: kopf.Body, old: Any, operation: str | None, namespace: str | None,
                                 name: str | None, **kwargs: Any) -> None:
    if _spec_unchanged(operation, old, body):
        return
    peers = [p for p in kwargs["groups_by_namespace"].get(namespace, ()) if p.name != name]
    pods = [p.labels for p in kwargs["pods_by_namespace"].get(namespace, ()) if p.active]
    uplinks = {u.name for site in sites_of(kwargs["sites_index"]).values() for u in site.uplinks}
    _refuse("WorkloadGroup", checks.workloadgroup(dict(body), policy=POLICY, peers=peers, pod_labels=pods,
                                                  uplinks=uplinks))


@kopf.on.validate(GROUP, "gpujobs", id="validate-gpujobs", operations=["CREATE", "UPDATE"])
async def validate_gpujob(body: kopf.Body, old: Any, operation: str | None, **_: Any) -> None:
    if _spec_unchanged(operation, old, body):
        return
    _refuse("GpuJob", checks.gpujob(dict(body), policy=POLICY))


@kopf.on.validate(GROUP, "edgesites", id="validate-edgesites", operations=["CREATE", "UPDATE"])
async def validate_edgesite(body: kopf.Body, old: Any, operation: str | None, name: str | None,
                            **kwargs: Any) -> None:
    if _spec_unchanged(operation, old, body):
        return
    peers = [Peer(name=n, selector=s.node_selector, node_names=tuple(s.node_names))
             for n, s in sites_of(kwargs["sites_index"]).items() if n != name]
    nodes = {d.name: d.labels for d in devices_of(kwargs["devices_index"])}
    _refuse("EdgeSite", checks.edgesite(dict(body), policy=POLICY, peers=peers, node_labels=nodes))
