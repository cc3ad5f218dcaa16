"""Availability constraints read from pod specs, and the check planners run before every tentative move.

What a user declares on a pod decides where its replicas may go, and a planner must not undo it:

- required pod anti-affinity (topologyKey kubernetes.io/hostname): never put the pod on a device
  running a pod its term selects, nor next to a pod whose own required term selects it (the scheduler
  enforces both directions);
- topologySpreadConstraints over kubernetes.io/hostname with whenUnsatisfiable DoNotSchedule: never
  put more than maxSkew matching pods on one device. On a fleet with more devices than matching pods
  the emptiest device holds 0, so this is exactly the skew rule there and a conservative reading of it
  elsewhere;
- preferred anti-affinity and ScheduleAnyway spread: the user had a wish, not a rule; the group's
  `aggregation.spread` policy decides (by default they are kept like the required ones).

On top, the group's spread policy: by default a workload that runs two or more replicas never gets a
second replica on one device from us. A placement that already breaks a rule is never made worse: a
move onto a device is refused when the rule is broken there after it; pods already there stay put.

Terms with other topology keys (zone, site) are read but only their hostname-level consequence is
enforced: moving within one device's neighbourhood cannot change a zone count we do not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from .nodematch import NodeTerm, expression_holds, parse_node_terms

HOSTNAME = "kubernetes.io/hostname"


class Selector(BaseModel):
    """A label selector (matchLabels + matchExpressions), namespaced like the term it came from."""

    model_config = ConfigDict(frozen=True)

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (key, operator, values)
    namespaces: tuple[str, ...] = ()  # empty: the pod's own namespace

    def matches(self, labels: Mapping[str, str]) -> bool:
        if not self.match_labels and not self.expressions:
            return False  # an empty selector in an anti-affinity term selects nothing we can act on
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        return all(expression_holds(labels, key, op, values) for key, op, values in self.expressions)

    def applies_to(self, own_namespace: str, other_namespace: str) -> bool:
        return other_namespace in self.namespaces if self.namespaces else other_namespace == own_namespace


class SpreadRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    selector: Selector
    max_per_device: int


class PodConstraints(BaseModel):
    """What one pod's spec says about sharing a device."""

    model_config = ConfigDict(frozen=True)

    anti_required: tuple[Selector, ...] = ()
    anti_preferred: tuple[Selector, ...] = ()
    spread_required: tuple[SpreadRule, ...] = ()
    spread_preferred: tuple[SpreadRule, ...] = ()
    # spec.nodeSelector: the labels a device must carry for the pod (or its replacement) to land there
    node_selector: tuple[tuple[str, str], ...] = ()
    # spec.affinity.nodeAffinity's required terms (ORed): module nodematch judges both against a device
    node_terms: tuple[NodeTerm, ...] = ()

    @property
    def empty(self) -> bool:
        """No rule about sharing a device with other pods (node_selector is about the device alone)."""
        return not (self.anti_required or self.anti_preferred or self.spread_required or self.spread_preferred)


def parse_selector(sel: Mapping[str, Any] | None, namespaces: Iterable[str] = ()) -> Selector:
    sel = sel or {}
    return Selector(
        match_labels=tuple(sorted((str(k), str(v)) for k, v in (sel.get("matchLabels") or {}).items())),
        expressions=tuple((str(e.get("key", "")), str(e.get("operator", "")), tuple(e.get("values") or ()))
                          for e in sel.get("matchExpressions") or ()),
        namespaces=tuple(sorted(namespaces)))


def pod_constraints(pod_spec: Mapping[str, Any] | None, *, placed_by_us: bool = False) -> PodConstraints:
    """Read anti-affinity and hostname spread from a pod spec (as the API server sends it). placed_by_us:
    see nodematch.parse_node_terms."""
    spec = pod_spec or {}
    anti = ((spec.get("affinity") or {}).get("podAntiAffinity")) or {}
    required = tuple(parse_selector(t.get("labelSelector"), t.get("namespaces") or ())
                     for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or ()
                     if t.get("topologyKey") == HOSTNAME)
    preferred = tuple(parse_selector((w.get("podAffinityTerm") or {}).get("labelSelector"),
                                     (w.get("podAffinityTerm") or {}).get("namespaces") or ())
                      for w in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
                      if (w.get("podAffinityTerm") or {}).get("topologyKey") == HOSTNAME)
    hard, soft = [], []
    for c in spec.get("topologySpreadConstraints") or ():
        if c.get("topologyKey") != HOSTNAME:
            continue
        rule = SpreadRule(selector=parse_selector(c.get("labelSelector")), max_per_device=max(1, int(c.get("maxSkew", 1))))
        (hard if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule" else soft).append(rule)
    selector = tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items()))
    return PodConstraints(anti_required=required, anti_preferred=preferred, spread_required=tuple(hard),
                          spread_preferred=tuple(soft), node_selector=selector, node_terms=parse_node_terms(spec, placed_by_us=placed_by_us))


class _Pod(Protocol):
    key: str
    labels: dict[str, str]
    constraints: PodConstraints

    @property
    def namespace(self) -> str: ...


def conflicts(pod: _Pod, others: Iterable[_Pod], *, respect_preferred: bool) -> str | None:
    """Why `pod` may not join `others` on one device, or None (the label rules; the group's replica
    limit is counted by the planner). `others` may include pod itself: it is skipped."""
    others = [o for o in others if o.key != pod.key]
    c = pod.constraints
    anti = c.anti_required + (c.anti_preferred if respect_preferred else ())
    for o in others:
        for s in anti:
            if s.applies_to(pod.namespace, o.namespace) and s.matches(o.labels):
                return f"its anti-affinity keeps it off devices running {o.key}"
        oa = o.constraints.anti_required + (o.constraints.anti_preferred if respect_preferred else ())
        for s in oa:
            if s.applies_to(o.namespace, pod.namespace) and s.matches(pod.labels):
                return f"the anti-affinity of {o.key} keeps it away"
    rules = c.spread_required + (c.spread_preferred if respect_preferred else ())
    for r in rules:
        n = 1 + sum(1 for o in others if o.namespace == pod.namespace and r.selector.matches(o.labels))
        if n > r.max_per_device:
            return f"its topology spread allows {r.max_per_device} matching pod(s) per device"
    for o in others:
        orules = o.constraints.spread_required + (o.constraints.spread_preferred if respect_preferred else ())
        for r in orules:
            if o.namespace == pod.namespace and r.selector.matches(pod.labels):
                n = sum(1 for q in [pod, *others] if q.namespace == o.namespace and r.selector.matches(q.labels))
                if n > r.max_per_device:
                    return f"the topology spread of {o.key} allows {r.max_per_device} matching pod(s) per device"
    return None
