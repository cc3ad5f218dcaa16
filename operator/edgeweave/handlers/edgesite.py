"""EdgeSite: report the site's nodes, capacity and utilisation (from the API server) in status."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kopf

from .. import GROUP, metrics
from ..actuate import events
from ..api.base import parse_rfc3339
from ..api.conditions import get_condition, set_condition
from ..api.edgesite import EdgeSiteSpec
from ..placement.context import observations
from ..placement.sites import site_devices, site_summary
from .common import parse_spec
from .indexes import devices_of, sites_of
from .kube import changed_fields
from .state import Runtime, runtime

RESOURCE = (GROUP, "edgesites")
# Context values carry the time they were read; a refresh where nothing but those times moved is written
# at most this often (250 sites would otherwise cost 25 status patches a second for no news).
OBSERVED_AT_REFRESH_SECONDS = 60.0
REFRESH_SECONDS = 10.0
# Status fields older operators wrote and this one no longer does (`nodes`: every device's state, ~40 KB per
# site at 10 devices with the context list; now `unhealthyNodes` and counts).
RETIRED_FIELDS = ("nodes",)


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    out["context"] = [{k: v for k, v in c.items() if k != "observedAt"} for c in status.get("context") or []]
    return out


def only_times_moved(current: Mapping[str, Any], new: Mapping[str, Any], now: float) -> bool:
    """True when `new` differs from `current` in observation times only, and those are recent enough."""
    if _without_times({k: current.get(k) for k in new}) != _without_times(new):
        return False
    stamps = [c.get("observedAt") or "" for c in current.get("context") or []]
    if not stamps:
        return True
    # One format (rfc3339), so the oldest is the smallest string: one parse, not one per device element.
    oldest = parse_rfc3339(min(stamps)) if all(stamps) else None
    return oldest is not None and now - oldest < OBSERVED_AT_REFRESH_SECONDS


def reconcile_site(rt: Runtime, body: kopf.Body, patch: kopf.Patch, logger: Any, devices_index: kopf.Index,
                   pods_by_node: kopf.Index, sites_index: kopf.Index, *, changed: bool = False) -> None:
    """`changed`: the site's spec was just created or changed (its membership is computed afresh, not
    taken from the shared view, which may predate it)."""
    spec = parse_spec(EdgeSiteSpec, "EdgeSite", body, patch, logger)
    if spec is None:
        return
    name = body["metadata"]["name"]
    generation = body["metadata"].get("generation", 0)
    view = rt.sites.get(lambda: devices_of(devices_index), lambda: sites_of(sites_index))
    mine = site_devices(spec, view.devices) if changed or name not in view.members else view.members[name]
    members = {d.name for d in mine}
    breached = {d: r for d, r in rt.breaches.breached_devices().items() if d in members}
    # The pod index is read in place (a Mapping of node -> pods): no copy of the fleet's pods per site.
    summary = site_summary(spec, mine, pods_by_node, {d: [x.requirement for x in rs] for d, rs in breached.items()})
    # Keyed by uid: a site deleted and made again under its name starts with no status and is written.
    key = body["metadata"].get("uid") or name
    stored = body.get("status") or {}
    status = {**stored, **rt.site_writes.in_flight(key)}  # what the API server has, or is about to have
    conditions = status.get("conditions")
    if summary["nodeCount"] == 0:
        conditions = set_condition(conditions, "Ready", False, "NoNodes",
                                   "no node matches nodeSelector/nodeNames", generation)
    elif summary["readyNodes"] == 0:
        conditions = set_condition(conditions, "Ready", False, "NoReadyNodes",
                                   f"0/{summary['nodeCount']} nodes Ready", generation)
    else:
        conditions = set_condition(conditions, "Ready", True, "NodesReady",
                                   f"{summary['readyNodes']}/{summary['nodeCount']} nodes Ready", generation)
    # Context in status only for the listed breached devices (the readings behind the condition). Status
    # shows it at the refresh cadence: a snapshot up to one refresh old will do (breach detection, which
    # acts on it, keeps the 1 s one fresh for itself). A healthy site reads no context at all.
    listed = sorted(n["name"] for n in summary["unhealthyNodes"] if n["name"] in breached)
    context: list[dict[str, Any]] = []
    if listed:
        snap = rt.context.get(view.devices, view.sites, rt.settings.prometheus_url, ttl=REFRESH_SECONDS)
        context = [o.wire() for node in listed for o in observations(node, snap.by_device.get(node, {}))]
    if breached:
        faults = sorted({f"{d}: {r.requirement}" for d, rs in breached.items() for r in rs})
        conditions = set_condition(conditions, "Breached", True, "RequirementsNotMet", "; ".join(faults)[:1000],
                                   generation)
    else:
        conditions = set_condition(conditions, "Breached", False, "NoBreach",
                                   "no WorkloadGroup finds a device of this site breached", generation)
    # A node belongs to at most one site (admission refuses what it can see; labels change later).
    if changed:
        shared = {other: sorted(members & {d.name for d in view.members.get(other, ())})
                  for other in view.members if other != name}
        shared = {k: v for k, v in shared.items() if v}
    else:
        shared = view.shared.get(name, {})
    if shared:
        detail = "; ".join(f"{', '.join(v[:5])} also in EdgeSite {k}" for k, v in sorted(shared.items()))
        if (get_condition(conditions, "Conflict") or {}).get("status") != "True":
            events.warning(body, "NodesShared", detail[:1000])
        conditions = set_condition(conditions, "Conflict", True, "NodesShared", detail, generation)
    else:
        conditions = set_condition(conditions, "Conflict", False, "NoOverlap", "no node is in another EdgeSite",
                                   generation)
    summary["context"] = context
    if status.get("nodeCount") != summary["nodeCount"] and summary["nodeCount"]:
        events.normal(body, "NodesChanged", f"site has {summary['nodeCount']} node(s)")
    new = {**summary, "conditions": conditions, "observedGeneration": generation}
    if not only_times_moved(status, new, time.time()):
        diff = changed_fields(status, new)
        if diff:
            for field, value in diff.items():
                patch.status[field] = value
            rt.site_writes.sent(key, diff)
    for old in RETIRED_FIELDS:
        if old in stored:  # written by an older operator (kilobytes per site): a merge patch's null drops it
            patch.status[old] = None
    metrics.SITE_NODES.labels(name).set(summary["nodeCount"])
    metrics.SITE_READY_NODES.labels(name).set(summary["readyNodes"])
    metrics.SITE_CPU_UTILISATION.labels(name).set(summary["cpuUtilisationPercent"] / 100)
    metrics.RECONCILES.labels("EdgeSite", "ok").inc()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_site_change(**kwargs: Any) -> None:
    reconcile_site(runtime(kwargs.get("memo")), kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["devices_index"],
                   kwargs["pods_by_node"], kwargs["sites_index"], changed=True)


@kopf.timer(*RESOURCE, interval=REFRESH_SECONDS, initial_delay=2)
def site_refresh(**kwargs: Any) -> None:
    reconcile_site(runtime(kwargs.get("memo")), kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["devices_index"],
                   kwargs["pods_by_node"], kwargs["sites_index"])
