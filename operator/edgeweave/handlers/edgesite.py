"""EdgeSite: report the site's nodes, capacity and utilisation (from the API server) in status."""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, metrics
from ..actuate import events
from ..api.conditions import get_condition, set_condition
from ..api.edgesite import EdgeSiteSpec
from ..placement.context import observations
from ..placement.sites import site_devices, site_summary
from .common import apply_status, parse_spec
from .context_cache import BREACHES, CONTEXT
from .indexes import devices_of, pods_on_nodes, sites_of
from .state import STATE

RESOURCE = (GROUP, "edgesites")


def reconcile_site(body: kopf.Body, patch: kopf.Patch, logger: Any, devices_index: kopf.Index,
                   pods_by_node: kopf.Index, sites_index: kopf.Index) -> None:
    spec = parse_spec(EdgeSiteSpec, "EdgeSite", body, patch, logger)
    if spec is None:
        return
    name = body["metadata"]["name"]
    generation = body["metadata"].get("generation", 0)
    summary = site_summary(spec, devices_of(devices_index), pods_on_nodes(pods_by_node))
    status = body.get("status", {})
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
    # Context: what each device reads now, and which groups find which device breached.
    members = {n["name"] for n in summary["nodes"]}
    snap = CONTEXT.get(devices_of(devices_index), sites_of(sites_index), STATE.prometheus_url)
    context = [o.wire() for node in sorted(members) for o in observations(node, snap.by_device.get(node, {}))]
    breached = {d: r for d, r in BREACHES.breached_devices().items() if d in members}
    if breached:
        faults = sorted({f"{d}: {r.requirement}" for d, rs in breached.items() for r in rs})
        conditions = set_condition(conditions, "Breached", True, "RequirementsNotMet", "; ".join(faults)[:1000],
                                   generation)
    else:
        conditions = set_condition(conditions, "Breached", False, "NoBreach",
                                   "no WorkloadGroup finds a device of this site breached", generation)
    # A node belongs to at most one site (admission refuses what it can see; labels change later).
    shared = {other: sorted(members & {d.name for d in site_devices(ospec, devices_of(devices_index))})
              for other, ospec in sites_of(sites_index).items() if other != name}
    shared = {k: v for k, v in shared.items() if v}
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
    apply_status(body, patch, {**summary, "conditions": conditions, "observedGeneration": generation})
    metrics.SITE_NODES.labels(name).set(summary["nodeCount"])
    metrics.SITE_READY_NODES.labels(name).set(summary["readyNodes"])
    metrics.SITE_CPU_UTILISATION.labels(name).set(summary["cpuUtilisationPercent"] / 100)
    metrics.RECONCILES.labels("EdgeSite", "ok").inc()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_site_change(**kwargs: Any) -> None:
    reconcile_site(kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["devices_index"],
                   kwargs["pods_by_node"], kwargs["sites_index"])


@kopf.timer(*RESOURCE, interval=10, initial_delay=2)
def site_refresh(**kwargs: Any) -> None:
    reconcile_site(kwargs["body"], kwargs["patch"], kwargs["logger"], kwargs["devices_index"],
                   kwargs["pods_by_node"], kwargs["sites_index"])
