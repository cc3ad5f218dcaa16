"""Semantic admission: what the CRD schema and CEL cannot check, as pure functions.

Each check takes the object (and, where it must, what the cluster holds now) and returns Refusals, each
naming the field at fault in the API's own spelling (`spec.requirements[0].value`), so `kubectl apply`
says exactly what to fix. The validating webhook (handlers/admission.py) runs these; nothing here talks
to the cluster. The order is cheapest first, and the bounds (size, slices) come before anything that
would cost in proportion to the object.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ..api.context import NUMERIC_ELEMENTS, PER_UPLINK_ELEMENTS, ContextElement, SourceKind
from ..api.edgesite import EdgeSiteSpec
from ..api.gpujob import GpuJobSpec
from ..api.workloadgroup import RequirementOperator, WorkloadGroupSpec
from ..gpu.rewrite import RewriteError, rewrite
from ..telemetry.prometheus import TENANT_SCOPE_LABEL, render_query
from ..telemetry.promql_scope import QueryRefused, check_query, scope_query

# Kubernetes' own label grammar (apimachinery validation.IsQualifiedName / IsValidLabelValue).
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_EXTENDED_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Refusal:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class AdmissionPolicy:
    """Cluster-wide bounds, from the chart's values (admission.*)."""

    allowed_images: tuple[str, ...] = ()  # fnmatch patterns; the operator's own image is always allowed
    operator_image: str | None = None
    max_grid_blocks: int = 1 << 26
    max_problem_size: int = 1 << 34
    max_object_bytes: int = 256 * 1024
    scope_label: str = TENANT_SCOPE_LABEL


@dataclass(frozen=True)
class Peer:
    """Another object of the same kind that the new one could collide with."""

    name: str
    selector: Mapping[str, str] = field(default_factory=dict)
    node_names: tuple[str, ...] = ()


def describe(refusals: Sequence[Refusal], limit: int = 8) -> str:
    shown = "; ".join(str(r) for r in refusals[:limit])
    return shown + (f"; and {len(refusals) - limit} more" if len(refusals) > limit else "")


# -- shared ------------------------------------------------------------------------------------------
def object_size(obj: Mapping[str, Any], policy: AdmissionPolicy) -> list[Refusal]:
    size = len(json.dumps(obj, separators=(",", ":"), default=str))
    if size > policy.max_object_bytes:
        return [Refusal("metadata", f"object is {size} bytes; at most {policy.max_object_bytes} "
                        "(admission.maxObjectBytes)")]
    return []


def non_finite(value: Any, path: str = "spec") -> list[Refusal]:
    """Every number must be finite: JSON 1e999 decodes to inf, and inf/NaN compare as no number should."""
    if isinstance(value, float) and not math.isfinite(value):
        return [Refusal(path, f"{value} is not a finite number")]
    if isinstance(value, Mapping):
        return [r for k, v in value.items() for r in non_finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in non_finite(v, f"{path}[{i}]")]
    return []


def _loc(loc: Iterable[int | str]) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse(model: type[BaseModel], spec: Mapping[str, Any]) -> tuple[Any, list[Refusal]]:
    try:
        return model.model_validate(dict(spec)), []
    except ValidationError as err:
        return None, [Refusal(_loc(e["loc"]), e["msg"]) for e in err.errors()[:8]]


def _label_map(path: str, labels: Mapping[str, str]) -> list[Refusal]:
    out = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or len(name) > 63 \
                or not _LABEL_NAME.match(name):
            out.append(Refusal(f"{path}[{key[:63]!r}]", "not a valid label key"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            shown = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
            out.append(Refusal(f"{path}[{key[:63]!r}]",
                               f"value {shown!r} is not a valid label value (at most 63 characters: "
                               "alphanumerics, '-', '_' or '.')"))
    return out


# -- WorkloadGroup -----------------------------------------------------------------------------------
def _parse_bounded(obj: Mapping[str, Any], policy: AdmissionPolicy, model: type[BaseModel], label_key: str
                   ) -> tuple[Any, list[Refusal]]:
    """The checks every kind starts with, cheapest first: object size, non-finite numbers, the label map
    at `spec.<label_key>`, then the model itself. (None, refusals) when any of them refuses."""
    if refusals := object_size(obj, policy):
        return None, refusals
    raw = obj.get("spec") or {}
    refusals = non_finite(raw) + _label_map(f"spec.{label_key}", raw.get(label_key) or {})
    if refusals:
        return None, refusals
    return parse(model, raw)


def workloadgroup(obj: Mapping[str, Any], *, policy: AdmissionPolicy, peers: Sequence[Peer],
                  pod_labels: Sequence[Mapping[str, str]], uplinks: set[str]) -> list[Refusal]:
    """`peers`: the other groups of the namespace; `pod_labels`: its pods now; `uplinks`: every uplink
    name some EdgeSite declares."""
    spec, refusals = _parse_bounded(obj, policy, WorkloadGroupSpec, "selector")
    if spec is None:
        return refusals
    assert isinstance(spec, WorkloadGroupSpec)
    ns = obj.get("metadata", {}).get("namespace") or ""
    if not _LABEL_NAME.match(spec.workload_label.rpartition("/")[2]):
        refusals.append(Refusal("spec.workloadLabel", f"{spec.workload_label!r} is not a valid label key"))
    for i, dep in enumerate(spec.dependencies):
        for end in ("source", "target"):
            value = getattr(dep, end)
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                refusals.append(Refusal(f"spec.dependencies[{i}].{end}",
                                        f"{value[:40]!r} cannot name a workload: workloads are values of the "
                                        f"{spec.workload_label!r} label"))
    for i, req in enumerate(spec.requirements):
        path = f"spec.requirements[{i}]"
        numeric = req.element in NUMERIC_ELEMENTS
        if req.operator in (RequirementOperator.Gte, RequirementOperator.Lte, RequirementOperator.Eq) and numeric:
            refusals += _finite_text(f"{path}.value", req.value)
        if req.operator in (RequirementOperator.In, RequirementOperator.NotIn) and numeric:
            for j, v in enumerate(req.values or []):
                refusals += _finite_text(f"{path}.values[{j}]", v)
        if req.uplink is not None:
            if req.element not in PER_UPLINK_ELEMENTS:
                refusals.append(Refusal(f"{path}.uplink", f"{req.element.value} is not a per-uplink element; "
                                        "uplink applies to UplinkBandwidthMbps, UplinkLatencyMs and UplinkLossPercent"))
            elif req.uplink and req.uplink not in uplinks:
                known = ", ".join(sorted(uplinks)[:12]) or "none"
                refusals.append(Refusal(f"{path}.uplink", f"no EdgeSite has an uplink named {req.uplink!r} "
                                        f"(known: {known})"))
        if req.element == ContextElement.GpuHealthy and req.operator == RequirementOperator.Eq \
                and req.value not in ("True", "False"):
            refusals.append(Refusal(f"{path}.value", "GpuHealthy is True or False"))
    if spec.discovery.enabled:
        for name in ("triggerQuery", "dataQuery"):
            template = getattr(spec.discovery, "trigger_query" if name == "triggerQuery" else "data_query")
            try:
                scope_query(render_query(template, ns or "namespace"), policy.scope_label, ns or "namespace")
            except QueryRefused as err:
                refusals.append(Refusal(f"spec.discovery.{name}", str(err)))
    refusals += selector_overlap(spec.selector, peers, pod_labels)
    return refusals


def _finite_text(path: str, value: str | None) -> list[Refusal]:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return [Refusal(path, f"{value!r} is not a number")]
    if number is not None and not math.isfinite(number):
        return [Refusal(path, f"{value!r} is not a finite number")]
    return []


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selector_overlap(selector: Mapping[str, str], peers: Sequence[Peer],
                     pod_labels: Sequence[Mapping[str, str]]) -> list[Refusal]:
    """Refuse a selector that certainly shares pods with another group: one selector contains the other
    (every pod of the narrower matches the broader), or a pod that exists now matches both. Selectors
    that only could overlap (disjoint keys) are admitted; the reconcile gives both a Conflict condition
    if a pod ever matches both."""
    out = []
    mine = set(selector.items())
    for peer in peers:
        theirs = set(peer.selector.items())
        if not theirs:
            continue
        if mine <= theirs or theirs <= mine:
            out.append(Refusal("spec.selector", f"overlaps WorkloadGroup {peer.name!r} (selector "
                                f"{dict(sorted(peer.selector.items()))}): one selector contains the other, "
                                "so a pod would belong to both; a pod belongs to at most one group"))
            continue
        shared = sum(1 for labels in pod_labels if _matches(selector, labels) and _matches(peer.selector, labels))
        if shared:
            out.append(Refusal("spec.selector", f"overlaps WorkloadGroup {peer.name!r}: {shared} pod(s) match "
                                "both selectors; a pod belongs to at most one group"))
    return out


def unknown_uplinks(requirements: Sequence[Any], devices: Iterable[str], all_devices: Sequence[Any],
                    sites: Mapping[str, EdgeSiteSpec]) -> list[str]:
    """For the reconcile: requirements naming an uplink that a device's EdgeSite does not declare (the
    real fault behind what would otherwise read as missing telemetry)."""
    from ..placement.sites import site_devices

    site_of: dict[str, tuple[str, set[str]]] = {}
    for name, spec in sites.items():
        for dev in site_devices(spec, all_devices):
            site_of.setdefault(dev.name, (name, {u.name for u in spec.uplinks}))
    out = []
    for i, req in enumerate(requirements):
        if not req.uplink:
            continue
        for dev in sorted(devices):
            site, names = site_of.get(dev, ("", set()))
            if req.uplink not in names:
                where = f"EdgeSite {site}" if site else "no EdgeSite"
                out.append(f"spec.requirements[{i}].uplink: device {dev} ({where}) has no uplink {req.uplink!r}"
                           f" (it has: {', '.join(sorted(names)) or 'none'})")
    return out[:20]


# -- EdgeSite ------------------------------------------------------------------------------------------
def edgesite(obj: Mapping[str, Any], *, policy: AdmissionPolicy, peers: Sequence[Peer],
             node_labels: Mapping[str, Mapping[str, str]]) -> list[Refusal]:
    """`peers`: the other EdgeSites; `node_labels`: every node's labels now."""
    spec, refusals = _parse_bounded(obj, policy, EdgeSiteSpec, "nodeSelector")
    if spec is None:
        return refusals
    assert isinstance(spec, EdgeSiteSpec)
    for i, up in enumerate(spec.uplinks):
        if up.gateway is not None:
            try:
                ipaddress.IPv4Address(up.gateway)
            except ValueError:
                refusals.append(Refusal(f"spec.uplinks[{i}].gateway", f"{up.gateway[:45]!r} is not an IPv4 address"))
        if up.interface in (".", "..") or any(c in up.interface for c in "/ \t\n:"):
            refusals.append(Refusal(f"spec.uplinks[{i}].interface", f"{up.interface!r} is not an interface name"))
    for i, src in enumerate(spec.context):
        if src.source == SourceKind.Prometheus and src.query:
            try:
                check_query(src.query.replace("$node", "node").replace("$uplink", "uplink"))
            except QueryRefused as err:
                refusals.append(Refusal(f"spec.context[{i}].query", str(err)))
    refusals += site_overlap(spec, peers, node_labels)
    return refusals


def site_members(selector: Mapping[str, str], names: Iterable[str],
                 node_labels: Mapping[str, Mapping[str, str]]) -> set[str]:
    members = {n for n in names}
    if selector:
        members |= {n for n, labels in node_labels.items() if _matches(selector, labels)}
    return members


def site_overlap(spec: EdgeSiteSpec, peers: Sequence[Peer],
                 node_labels: Mapping[str, Mapping[str, str]]) -> list[Refusal]:
    """A node belongs to at most one site: refuse names another site lists, and a selector that takes a
    node another site has now."""
    out = []
    mine_named = set(spec.node_names)
    mine_selected = site_members(spec.node_selector, (), node_labels) if spec.node_selector else set()
    for peer in peers:
        theirs = site_members(peer.selector, peer.node_names, node_labels)
        for i, name in enumerate(spec.node_names):
            if name in theirs:
                out.append(Refusal(f"spec.nodeNames[{i}]", f"node {name!r} already belongs to EdgeSite {peer.name!r}"))
        taken = sorted((mine_selected - mine_named) & theirs)
        if taken:
            out.append(Refusal("spec.nodeSelector", f"selects {len(taken)} node(s) of EdgeSite {peer.name!r} "
                                f"({', '.join(taken[:5])}); a node belongs to at most one site"))
    return out


# -- GpuJob ----------------------------------------------------------------------------------------------
def gpujob(obj: Mapping[str, Any], *, policy: AdmissionPolicy) -> list[Refusal]:
    if refusals := object_size(obj, policy):
        return refusals
    raw = obj.get("spec") or {}
    if refusals := non_finite(raw):
        return refusals
    # The bound comes before the model: it is what keeps a plan (and its status) finite.
    grid = raw.get("grid")
    if isinstance(grid, list) and grid and all(isinstance(g, int) and g >= 1 for g in grid):
        total = math.prod(grid)
        if total > policy.max_grid_blocks:
            return [Refusal("spec.grid", f"{total} thread blocks in total ({' x '.join(map(str, grid))}); at most "
                            f"{policy.max_grid_blocks} (admission.maxGridBlocks)")]
    spec, refusals = parse(GpuJobSpec, raw)
    if spec is None:
        return refusals
    assert isinstance(spec, GpuJobSpec)
    if spec.kernel.problem_size > policy.max_problem_size:
        refusals.append(Refusal("spec.kernel.problemSize", f"{spec.kernel.problem_size} elements; at most "
                                f"{policy.max_problem_size}"))
    if spec.kernel.source is not None and spec.kernel.entry:
        try:
            rewrite(spec.kernel.source, spec.kernel.entry)
        except RewriteError as err:
            refusals.append(Refusal("spec.kernel.source", f"cannot be sliced: {err}"))
    if spec.image is not None and not image_allowed(spec.image, policy):
        allowed = ", ".join(policy.allowed_images) or "none besides the operator's own image"
        refusals.append(Refusal("spec.image", f"{spec.image!r} is not on the cluster's allow-list "
                                f"(admission.allowedImages: {allowed})"))
    if not _EXTENDED_RESOURCE.match(spec.vgpu.resource) or spec.vgpu.resource.startswith(("kubernetes.io/",
                                                                                           "requests.")):
        refusals.append(Refusal("spec.vgpu.resource", f"{spec.vgpu.resource!r} is not an extended resource name "
                                "(domain/name, e.g. nvidia.com/gpu or nvidia.com/mig-1g.10gb)"))
    return refusals


def image_allowed(image: str, policy: AdmissionPolicy) -> bool:
    if policy.operator_image and image == policy.operator_image:
        return True
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in policy.allowed_images)
