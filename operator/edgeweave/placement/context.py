"""Resolve each device's context values from its sources: Prometheus series and the Node object.

Pure: Prometheus results and the parsed Node come in as values; nothing here calls an API. A value
that cannot be read is MISSING, and MISSING is never a breach nor a recovery (see breach.py): no
telemetry means no action.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..api.context import (
    DEFAULT_SOURCES,
    NUMERIC_ELEMENTS,
    PER_UPLINK_ELEMENTS,
    ContextElement,
    ContextSource,
    SourceKind,
)
from ..api.edgesite import ContextObservation, EdgeSiteSpec
from .inventory import Device

NODE_VAR = "$node"
UPLINK_VAR = "$uplink"
# Label a Prometheus info-style series uses to carry a string value (PowerSource, Zone, ...).
VALUE_LABEL = "value"

_TRUE = frozenset({"true", "1", "yes", "healthy", "ok"})
_FALSE = frozenset({"false", "0", "no", "unhealthy", "failed"})


class _Missing:
    """The one 'no value' marker. Falsy, prints as MISSING, survives copy/pickle as the same object."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> tuple[type[_Missing], tuple[()]]:
        return (_Missing, ())


MISSING = _Missing()

Scalar = float | str | bool


@dataclass(frozen=True, slots=True)
class ContextValue:
    """One context value of one device: typed (float, str, or bool for GpuHealthy) or MISSING."""

    value: Scalar | _Missing
    observed_at: float  # seconds since the epoch
    source: SourceKind
    note: str = ""  # why a value is MISSING, when there is more to say than "absent"

    @property
    def missing(self) -> bool:
        return self.value is MISSING

    @property
    def text(self) -> str:
        return format_value(self.value)


def format_value(value: Scalar | _Missing) -> str:
    if value is MISSING:
        return "MISSING"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def context_key(element: ContextElement | str, uplink: str | None = None) -> str:
    """'BatteryPercent', or 'UplinkLatencyMs/mpls' for a per-uplink element on one uplink."""
    name = element.value if isinstance(element, ContextElement) else element
    return f"{name}/{uplink}" if uplink else name


def split_key(key: str) -> tuple[ContextElement, str | None]:
    name, _, uplink = key.partition("/")
    return ContextElement(name), (uplink or None)


def parse_bool(raw: str) -> bool | None:
    s = raw.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


def parse_number(raw: str) -> float | None:
    try:
        v = float(raw.strip())
    except ValueError:
        return None
    return None if math.isnan(v) else v


# -- sources -------------------------------------------------------------------------------------

def sources_for(site_spec: EdgeSiteSpec | None,
                defaults: Iterable[ContextSource] = DEFAULT_SOURCES) -> dict[ContextElement, ContextSource]:
    """Fleet defaults, each replaced by the site's source for the same element. Enum order, so the
    queries and the status list come out the same every time."""
    chosen = {s.element: s for s in defaults}
    if site_spec is not None:
        for s in site_spec.context:
            chosen[s.element] = s
    return {e: chosen[e] for e in ContextElement if e in chosen}


def render_query(query: str, node: str | None = None, uplink: str | None = None) -> str:
    if node is not None:
        query = query.replace(NODE_VAR, node)
    if uplink is not None:
        query = query.replace(UPLINK_VAR, uplink)
    return query


def _variants(source: ContextSource, nodes: Sequence[str | None],
              uplinks: Sequence[str | None]) -> list[tuple[str | None, str | None]]:
    """The (node, uplink) substitutions a source's query needs; (None, None) when it is fleet-wide."""
    q = source.query or ""
    ns: Sequence[str | None] = nodes if NODE_VAR in q else (None,)
    us: Sequence[str | None] = uplinks if (UPLINK_VAR in q and source.element in PER_UPLINK_ELEMENTS) else (None,)
    return [(n, u) for n in ns for u in us]


def queries_to_run(sources: Mapping[ContextElement, ContextSource], nodes: Sequence[str] = (),
                   uplinks: Sequence[str] = ()) -> list[str]:
    """The distinct PromQL queries that resolve these sources, in a stable order.

    A query without `$node` runs once for the whole fleet (the cheap, recommended form: one query,
    matched to devices by the `node` label). A query with `$node` (or `$uplink`) runs once per node
    (per uplink), so `nodes` (`uplinks`) must be given.
    """
    out: dict[str, None] = {}
    for s in sources.values():
        if s.source is not SourceKind.Prometheus or not s.query:
            continue
        if NODE_VAR in s.query and not nodes:
            raise ValueError(f"{s.element}: query uses {NODE_VAR} but no nodes were given")
        if UPLINK_VAR in s.query and s.element in PER_UPLINK_ELEMENTS and not uplinks:
            raise ValueError(f"{s.element}: query uses {UPLINK_VAR} but no uplinks were given")
        for node, uplink in _variants(s, list(nodes), list(uplinks)):
            out[render_query(s.query, node, uplink)] = None
    return list(out)


# -- Prometheus results ----------------------------------------------------------------------------

Sample = tuple[Mapping[str, str], float]
_AMBIGUOUS = object()


@dataclass(frozen=True)
class PromIndex:
    """Query results keyed for lookup: query -> (node label, uplink label) -> sample.

    Built once per evaluation round so resolving 500 devices does not rescan every series per device.
    Two series for the same (node, uplink) with different values are ambiguous (say, two scrape jobs
    disagreeing): that key resolves to MISSING rather than to an arbitrary pick.
    """

    by_query: Mapping[str, Mapping[tuple[str | None, str | None], Any]]

    @classmethod
    def build(cls, prom_results: Mapping[str, Iterable[Sample]]) -> PromIndex:
        by_query: dict[str, dict[tuple[str | None, str | None], Any]] = {}
        for query, samples in prom_results.items():
            idx: dict[tuple[str | None, str | None], Any] = {}
            for labels, value in samples:
                k = (labels.get("node"), labels.get("uplink"))
                sample = (dict(labels), float(value))
                prev = idx.get(k)
                if prev is None:
                    idx[k] = sample
                elif prev is not _AMBIGUOUS and not _same_sample(prev, sample):
                    idx[k] = _AMBIGUOUS
            by_query[query] = idx
        return cls(by_query)


def _same_sample(a: tuple[dict[str, str], float], b: tuple[dict[str, str], float]) -> bool:
    same_value = a[1] == b[1] or (math.isnan(a[1]) and math.isnan(b[1]))
    return same_value and a[0].get(VALUE_LABEL) == b[0].get(VALUE_LABEL)


def _typed_from_sample(element: ContextElement, labels: Mapping[str, str],
                       value: float) -> tuple[Scalar | _Missing, str]:
    if math.isnan(value) or math.isinf(value):
        return MISSING, "sample is NaN/Inf"
    if element in NUMERIC_ELEMENTS:
        return float(value), ""
    if element is ContextElement.GpuHealthy:
        return value != 0.0, ""
    # String elements from Prometheus: an info-style series carries the value in a label.
    if VALUE_LABEL in labels:
        return labels[VALUE_LABEL], ""
    return f"{value:g}", ""


def _typed_from_text(element: ContextElement, raw: str) -> tuple[Scalar | _Missing, str]:
    if element in NUMERIC_ELEMENTS:
        v = parse_number(raw)
        return (MISSING, f"not a number: {raw!r}") if v is None else (v, "")
    if element is ContextElement.GpuHealthy:
        b = parse_bool(raw)
        return (MISSING, f"not a boolean: {raw!r}") if b is None else (b, "")
    return raw, ""


# -- resolution ------------------------------------------------------------------------------------

def _from_prometheus(device: Device, source: ContextSource, index: PromIndex, uplinks: Sequence[str],
                     observed_at: float, out: dict[str, ContextValue]) -> None:
    el = source.element
    q = source.query or ""
    templated_node = NODE_VAR in q
    templated_uplink = UPLINK_VAR in q and el in PER_UPLINK_ELEMENTS

    def put(key: str, hit: Any) -> None:
        if hit is None:
            out.setdefault(key, ContextValue(MISSING, observed_at, SourceKind.Prometheus, "no series"))
        elif hit is _AMBIGUOUS:
            out[key] = ContextValue(MISSING, observed_at, SourceKind.Prometheus,
                                    "several series with different values")
        else:
            value, note = _typed_from_sample(el, hit[0], hit[1])
            out[key] = ContextValue(value, observed_at, SourceKind.Prometheus, note)

    node_keys: tuple[str | None, ...] = (device.name, None) if templated_node else (device.name,)

    def lookup(query: str, uplink: str | None) -> Any:
        rows = index.by_query.get(query, {})
        uplink_keys: tuple[str | None, ...] = (uplink, None) if (templated_uplink and uplink) else (uplink,)
        for n in node_keys:
            for u in uplink_keys:
                if (n, u) in rows:
                    return rows[(n, u)]
        return None

    if el not in PER_UPLINK_ELEMENTS:
        put(context_key(el), lookup(render_query(q, device.name), None))
        return
    names = list(uplinks)
    if not names and not templated_uplink:
        # No declared uplinks: take whatever uplinks this node's series report.
        rows = index.by_query.get(render_query(q, device.name), {})
        names = sorted({u for (n, u) in rows if u is not None and n in node_keys})
    for u in names:
        put(context_key(el, u), lookup(render_query(q, device.name, u), u))
    if not templated_uplink:
        # A series without an `uplink` label describes the device as a whole (e.g. its best uplink).
        plain = lookup(render_query(q, device.name), None)
        if plain is not None:
            put(context_key(el), plain)


def _from_node(device: Device, source: ContextSource, uplinks: Sequence[str], observed_at: float,
               out: dict[str, ContextValue]) -> None:
    el = source.element
    key = source.key or ""
    kind = source.source

    def read(k: str) -> tuple[Scalar | _Missing, str]:
        if kind is SourceKind.NodeLabel:
            raw = device.labels.get(k)
        elif kind is SourceKind.NodeAnnotation:
            raw = device.annotations.get(k)
        else:
            status = device.conditions.get(k)
            if status is None or status == "Unknown":
                return MISSING, "condition absent" if status is None else "condition status Unknown"
            if el is ContextElement.GpuHealthy:
                return status == "True", ""
            if el in NUMERIC_ELEMENTS:
                return MISSING, "a node condition carries no number"
            return status, ""
        if raw is None:
            return MISSING, f"{kind.value} {k} absent"
        return _typed_from_text(el, raw)

    if el in PER_UPLINK_ELEMENTS and UPLINK_VAR in key:
        for u in uplinks:
            value, note = read(key.replace(UPLINK_VAR, u))
            out[context_key(el, u)] = ContextValue(value, observed_at, kind, note)
        return
    value, note = read(key)
    out[context_key(el)] = ContextValue(value, observed_at, kind, note)


def resolve_context(device: Device, sources: Mapping[ContextElement, ContextSource],
                    prom_results: Mapping[str, Iterable[Sample]] | PromIndex, uplinks: Sequence[str],
                    observed_at: float) -> dict[str, ContextValue]:
    """Every context value of one device, keyed by element name or 'Element/uplink'.

    Prometheus series are matched to the device by their `node` label, and to an uplink by their
    `uplink` label. Every element with a source appears (MISSING when there is no value), so status
    shows what could not be read rather than silently leaving it out.
    """
    index = prom_results if isinstance(prom_results, PromIndex) else PromIndex.build(prom_results)
    out: dict[str, ContextValue] = {}
    for source in sources.values():
        if source.source is SourceKind.Prometheus:
            _from_prometheus(device, source, index, uplinks, observed_at, out)
        else:
            _from_node(device, source, uplinks, observed_at, out)
    return out


# -- views for other layers ------------------------------------------------------------------------

def context_strings(context: Mapping[str, ContextValue]) -> dict[str, str]:
    """The present values as strings, for DeviceState.context."""
    return {k: v.text for k, v in sorted(context.items()) if not v.missing}


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def observations(node: str, context: Mapping[str, ContextValue]) -> list[ContextObservation]:
    """EdgeSite status entries for one device (MISSING values included, so gaps are visible)."""
    out = []
    for key in sorted(context):
        cv = context[key]
        element, uplink = split_key(key)
        out.append(ContextObservation(element=element.value, uplink=uplink, node=node, value=cv.text,
                                      observed_at=_rfc3339(cv.observed_at)))
    return out
