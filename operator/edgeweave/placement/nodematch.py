"""Whether a pod (or the replacement its controller makes) may land on a device: its nodeSelector and its
required node affinity, judged as the scheduler judges them. One predicate for every planner: aggregation
and remediation must never pick a device the scheduler would then refuse (the replacement would stay
Pending and the move roll back).

Semantics (the scheduler's NodeAffinity filter):
- nodeSelector: every key=value must be a label of the device;
- requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: the terms are ORed, the expressions
  of one term ANDed; a term with no expression at all matches nothing;
- In / NotIn / Exists / DoesNotExist on labels (NotIn and DoesNotExist hold where the label is absent);
  Gt / Lt compare the label, read as an integer, with the single integer value (absent or not an
  integer: no match);
- matchFields: `metadata.name` with In / NotIn (the only field the scheduler supports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

Expression = tuple[str, str, tuple[str, ...]]  # (key, operator, values)
NAME_FIELD = "metadata.name"
HOSTNAME = "kubernetes.io/hostname"
# A pod edgeweave placed carries one of these (actuate.steering / actuate.moves write them): its single-device
# hostname pin is edgeweave's own steer, not the user's rule, and the next move replaces it.
PLACED_BY_US = ("edgeweave.io/steered-by-move", "edgeweave.io/moved-from")


class NodeTerm(BaseModel):
    """One nodeSelectorTerm: all of its label expressions and field expressions must hold."""

    model_config = ConfigDict(frozen=True)

    expressions: tuple[Expression, ...] = ()
    fields: tuple[Expression, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not self.expressions and not self.fields:
            return False
        return (all(expression_holds(labels, key, op, values) for key, op, values in self.expressions)
                and all(_field_holds(name, key, op, values) for key, op, values in self.fields))

    def describe(self) -> str:
        return " and ".join(_describe(e) for e in (*self.expressions, *self.fields)) or "(empty term)"


class NodeConstraints(Protocol):
    """What a pod says about devices (spread.PodConstraints carries both)."""

    node_selector: tuple[tuple[str, str], ...]
    node_terms: tuple[NodeTerm, ...]


def _expressions(raw: Sequence[Mapping[str, Any]] | None) -> tuple[Expression, ...]:
    return tuple((str(e.get("key", "")), str(e.get("operator", "")), tuple(str(v) for v in e.get("values") or ()))
                 for e in raw or ())


def _our_pin(e: Expression) -> bool:
    return e[0] == HOSTNAME and e[1] == "In" and len(e[2]) == 1


def parse_node_terms(pod_spec: Mapping[str, Any] | None, *, placed_by_us: bool = False) -> tuple[NodeTerm, ...]:
    """The required node affinity's terms of a pod spec (as the API server sends it); () when it has none.
    placed_by_us: the pod is a steered replacement or a copy edgeweave made (`PLACED_BY_US` annotations);
    the hostname pin the steer ANDed into each term is dropped, and a term that held only that pin with it:
    the user's own rules are what the next move must keep."""
    node = (((pod_spec or {}).get("affinity") or {}).get("nodeAffinity")) or {}
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = []
    for t in required.get("nodeSelectorTerms") or ():
        exprs, fields = _expressions(t.get("matchExpressions")), _expressions(t.get("matchFields"))
        if placed_by_us and any(_our_pin(e) for e in exprs):
            exprs = tuple(e for e in exprs if not _our_pin(e))
            if not exprs and not fields:
                continue  # the steer's own term (the user had none)
        terms.append(NodeTerm(expressions=exprs, fields=fields))
    return tuple(terms)


def placed_by_us(annotations: Mapping[str, str] | None) -> bool:
    return any(k in (annotations or {}) for k in PLACED_BY_US)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def expression_holds(labels: Mapping[str, str], key: str, op: str, values: Sequence[str]) -> bool:
    """One node selector requirement against a device's labels. An unknown operator holds nowhere (the API
    server rejects one, so this only meets hand-made input)."""
    has = key in labels
    if op == "In":
        return has and labels[key] in values
    if op == "NotIn":
        return not has or labels[key] not in values
    if op == "Exists":
        return has
    if op == "DoesNotExist":
        return not has
    if op in ("Gt", "Lt"):
        have, bound = _int(labels.get(key)), _int(values[0]) if len(values) == 1 else None
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def _field_holds(name: str, key: str, op: str, values: Sequence[str]) -> bool:
    if key != NAME_FIELD or op not in ("In", "NotIn"):
        return False
    return (name in values) == (op == "In")


def _describe(e: Expression) -> str:
    key, op, values = e
    if op in ("Exists", "DoesNotExist"):
        return f"{key} {op}"
    return f"{key} {op} {','.join(values)}"


def node_refusal(c: NodeConstraints, name: str, labels: Mapping[str, str]) -> str | None:
    """None where the pod may land on the device; otherwise why not, naming the rule."""
    missing = [f"{k}={v}" for k, v in c.node_selector if labels.get(k) != v]
    if missing:
        return f"its nodeSelector needs {', '.join(missing)}"
    if c.node_terms and not any(t.matches(name, labels) for t in c.node_terms):
        return "its required node affinity needs " + " or ".join(f"({t.describe()})" for t in c.node_terms)
    return None


def node_allows(c: NodeConstraints, name: str, labels: Mapping[str, str]) -> bool:
    """Whether the pod may land on the device (nodeSelector and required node affinity)."""
    if not c.node_selector and not c.node_terms:
        return True  # the common case, on the planners' hottest path
    return node_refusal(c, name, labels) is None
