"""Validating webhook: semantic admission of EdgeSites, WorkloadGroups and GpuJobs.

Thin: gathers what the checks need from the API server, runs the pure checks in admission/checks.py,
and refuses with every fault named by its field. Not from kopf's indexes: every replica serves the
webhook, and a standby replica (paused by peering) does not keep its watch streams, so its indexes are
empty or stale — a standby would then admit overlaps and refuse every uplink. The reads are small and
narrowed server-side (the namespace's groups, only the pods the new selector matches, the EdgeSites). An UPDATE that leaves spec as it was is always admitted: the operator's
own annotation and finalizer patches must never be refused because a peer appeared later (that is a
reconcile-time Conflict, not an admission question).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from .. import GROUP, VERSION, metrics
from ..admission import checks
from ..admission.checks import Peer
from ..admission.policy import policy_from_env
from . import kube

POLICY = policy_from_env()


def _spec_unchanged(operation: str | None, old: Any, body: Any) -> bool:
    return operation == "UPDATE" and old is not None and dict(old.get("spec") or {}) == dict(body.get("spec") or {})


def _refuse(kind: str, refusals: list[checks.Refusal]) -> None:
    if refusals:
        metrics.ADMISSION_REFUSALS.labels(kind, refusals[0].field.split("[")[0]).inc()
        raise kopf.AdmissionError(checks.describe(refusals), code=422)


def _selector(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(raw or {}).items()} if isinstance(raw, Mapping) else {}


def _label_selector(selector: Mapping[str, str]) -> str | None:
    """A server-side label selector, or None when the selector is not one (the checks refuse it)."""
    text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return text if selector and len(text) <= 4096 else None


def _group_context(namespace: str, name: str | None, selector: dict[str, str]
                   ) -> tuple[list[Peer], list[dict[str, str]], set[str]]:
    from kubernetes.client.exceptions import ApiException

    groups = kube.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, "workloadgroups")["items"]
    peers = [Peer(name=g["metadata"]["name"], selector=_selector((g.get("spec") or {}).get("selector")))
             for g in groups if g["metadata"]["name"] != name]
    pods: list[dict[str, str]] = []
    if (label_selector := _label_selector(selector)) is not None:
        try:
            pods = [dict(p.metadata.labels or {}) for p in kube.core().list_namespaced_pod(
                namespace, label_selector=label_selector).items
                if p.status.phase not in ("Succeeded", "Failed") and not p.metadata.deletion_timestamp]
        except ApiException as e:
            if e.status != 400:  # not a valid label selector: the checks name the field
                raise
    sites = kube.custom().list_cluster_custom_object(GROUP, VERSION, "edgesites")["items"]
    uplinks = {str(u.get("name")) for s in sites for u in (s.get("spec") or {}).get("uplinks") or []
               if isinstance(u, Mapping)}
    return peers, pods, uplinks


def _site_context(name: str | None) -> tuple[list[Peer], dict[str, dict[str, str]]]:
    sites = kube.custom().list_cluster_custom_object(GROUP, VERSION, "edgesites")["items"]
    peers = [Peer(name=s["metadata"]["name"], selector=_selector((s.get("spec") or {}).get("nodeSelector")),
                  node_names=tuple(str(n) for n in (s.get("spec") or {}).get("nodeNames") or []))
             for s in sites if s["metadata"]["name"] != name]
    nodes = {n.metadata.name: dict(n.metadata.labels or {}) for n in kube.core().list_node().items}
    return peers, nodes


@kopf.on.validate(GROUP, "workloadgroups", id="validate-workloadgroups", operations=["CREATE", "UPDATE"])
async def validate_workloadgroup(body: kopf.Body, old: Any, operation: str | None, namespace: str | None,
                                 name: str | None, **_: Any) -> None:
    if _spec_unchanged(operation, old, body):
        return
    if refusals := checks.object_size(dict(body), POLICY):  # before anything costs in proportion to it
        _refuse("WorkloadGroup", refusals)
    selector = _selector((body.get("spec") or {}).get("selector"))
    peers, pods, uplinks = await asyncio.to_thread(_group_context, namespace or "", name, selector)
    _refuse("WorkloadGroup", checks.workloadgroup(dict(body), policy=POLICY, peers=peers, pod_labels=pods,
                                                  uplinks=uplinks))


@kopf.on.validate(GROUP, "gpujobs", id="validate-gpujobs", operations=["CREATE", "UPDATE"])
async def validate_gpujob(body: kopf.Body, old: Any, operation: str | None, **_: Any) -> None:
    if _spec_unchanged(operation, old, body):
        return
    _refuse("GpuJob", checks.gpujob(dict(body), policy=POLICY))


@kopf.on.validate(GROUP, "edgesites", id="validate-edgesites", operations=["CREATE", "UPDATE"])
async def validate_edgesite(body: kopf.Body, old: Any, operation: str | None, name: str | None, **_: Any) -> None:
    if _spec_unchanged(operation, old, body):
        return
    if refusals := checks.object_size(dict(body), POLICY):
        _refuse("EdgeSite", refusals)
    peers, nodes = await asyncio.to_thread(_site_context, name)
    _refuse("EdgeSite", checks.edgesite(dict(body), policy=POLICY, peers=peers, node_labels=nodes))
