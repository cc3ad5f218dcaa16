"""Scope a tenant's PromQL to its namespace: an enforced label matcher on every selector, by a parser.

A WorkloadGroup's discovery queries are written by the application team but run with the operator's
Prometheus identity, which reads every namespace's series. String replacement (`$namespace`) scopes
nothing: a tenant writes `{namespace="other"}` or drops the placeholder. So the query is parsed with
`promql-parser` (Python bindings of the Rust promql-parser crate, the grammar Prometheus itself has),
every vector selector — also those inside range vectors and subqueries — gets `<label>="<namespace>"`
added, and the result is parsed again and checked: a selector without the enforced matcher means the
query is refused, never sent. Adding (not replacing) is enough: matchers are ANDed, so a tenant's own
`namespace=~".*"` only narrows further. What we cannot scope soundly is refused: `or` inside a
selector's braces (each alternative would need the matcher) and queries the parser rejects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import promql_parser as pp

MAX_QUERY_LENGTH = 4096
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# MatchOp values are not hashable: a list of pairs, compared with ==.
_OPS = ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="), (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~"))


def _op_text(op: object) -> str:
    for known, text in _OPS:
        if op == known:
            return text
    raise QueryRefused(f"unknown label match operator {op!r}")


class QueryRefused(ValueError):
    """The query cannot be scoped to a namespace; the message says why (for a condition or a rejection)."""


@dataclass(frozen=True)
class ScopedQuery:
    text: str
    selectors: int


def _quote(value: str) -> str:
    # The parser's printer does not escape, so a value that would need escaping is outside the subset we
    # accept (label values of tenant series are names, not prose).
    if any(c in value for c in '"\\\n`'):
        raise QueryRefused(f"label value {value[:60]!r} holds a quote, backslash or newline")
    return f'"{value}"'


def _at_text(at: object) -> str:
    kind = getattr(at, "type", None)
    if kind == pp.AtModifierType.Start:
        return " @ start()"
    if kind == pp.AtModifierType.End:
        return " @ end()"
    moment = getattr(at, "at", None)
    if moment is None:
        raise QueryRefused("unreadable @ modifier")
    return f" @ {moment.timestamp():.3f}"


def _selector_text(sel: pp.VectorSelector, label: str, value: str, rng: str = "") -> str:
    matchers = sel.matchers
    if matchers.or_matchers:
        raise QueryRefused("'or' inside a selector's braces cannot be scoped to a namespace; "
                           "write two selectors joined by the `or` operator")
    parts = []
    scoped = False
    for m in matchers.matchers:
        scoped = scoped or (m.name == label and m.op == pp.MatchOp.Equal and str(m.value) == value)
        if not _LABEL_NAME.match(m.name):
            raise QueryRefused(f"label name {m.name!r} is not supported")
        parts.append(f"{m.name}{_op_text(m.op)}{_quote(str(m.value))}")
    if not scoped:
        parts.append(f"{label}={_quote(value)}")
    name = sel.name or ""
    if name and not _METRIC_NAME.match(name):
        raise QueryRefused(f"metric name {name!r} is not supported")
    # A range vector's range goes between the braces and any offset/@ (PromQL's order).
    text = name + "{" + ",".join(parts) + "}" + rng
    if sel.offset is not None:
        off = sel.offset
        text += f" offset -{pp.display_duration(-off)}" if off.total_seconds() < 0 else \
            f" offset {pp.display_duration(off)}"
    if sel.at is not None:
        text += _at_text(sel.at)
    return text


def _parse(query: str) -> pp.Expr:
    try:
        return pp.parse(query)
    except (ValueError, TypeError) as err:
        raise QueryRefused(f"not valid PromQL: {err}") from err


def check_query(query: str) -> None:
    """A query the platform team writes (EdgeSite context): not scoped, but it must be valid PromQL."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryRefused(f"query is {len(query)} characters; at most {MAX_QUERY_LENGTH}")
    _parse(query)


def scope_query(query: str, label: str, value: str) -> ScopedQuery:
    """Return `query` with `label="value"` on every selector, or raise QueryRefused."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryRefused(f"query is {len(query)} characters; at most {MAX_QUERY_LENGTH}")
    if not _LABEL_NAME.match(label):
        raise QueryRefused(f"enforced label {label!r} is not a label name")
    expr = _parse(query)

    def scope(node: pp.Expr) -> pp.Expr | None:
        if isinstance(node, pp.MatrixSelector):
            rng = f"[{pp.display_duration(node.range)}]"
            return _parse(_selector_text(node.vector_selector, label, value, rng))
        if isinstance(node, pp.VectorSelector):
            return _parse(_selector_text(node, label, value))
        return None

    scoped = pp.transform(expr, pre_visit=scope)
    text = str(scoped)
    count = verify_scoped(text, label, value)
    return ScopedQuery(text=text, selectors=count)


def verify_scoped(query: str, label: str, value: str) -> int:
    """Parse `query` afresh and check that every selector carries `label="value"`; returns their count."""
    expr = _parse(query)
    found: list[bool] = []

    def has_scope(sel: pp.VectorSelector) -> bool:
        return not sel.matchers.or_matchers and any(
            m.name == label and m.op == pp.MatchOp.Equal and str(m.value) == value for m in sel.matchers.matchers)

    def check(node: pp.Expr) -> bool:
        # The walk visits a range vector's inner selector as a node of its own.
        if isinstance(node, pp.VectorSelector):
            found.append(has_scope(node))
        return True

    pp.walk(expr, pre_visit=check)
    if not all(found):
        raise QueryRefused(f"a selector escaped the {label}={value!r} scope")
    return len(found)
