"""Tenant PromQL scoping: every selector gets the enforced matcher, whatever the tenant wrote."""

from __future__ import annotations

import pytest

from edgeweave.telemetry.prometheus import TelemetryError, tenant_query
from edgeweave.telemetry.promql_scope import QueryRefused, scope_query, verify_scoped

NS = "team-a"


@pytest.mark.parametrize("query", [
    'sum by (source_workload, destination_workload) (rate(edgeweave_flow_bytes_total{namespace="team-a"}[2m]))',
    'rate(edgeweave_flow_bytes_total{namespace="team-b"}[2m])',           # another tenant's namespace
    'rate(edgeweave_flow_bytes_total{namespace=~".+"}[2m])',              # every namespace by regex
    'sum(rate(foo[5m] offset 1m)) / on() group_left bar @ 100',
    '{__name__=~"edgeweave_.*"} + max_over_time(foo[5m:1m]) > 3',         # nameless selector + subquery
    'label_replace(up, "namespace", "team-a", "", "")',
    'absent(nothing) or vector(1) * on() count(up)',
    'x offset -5m + y @ end()',
    'topk(3, sum by (pod) (rate(x{a!="1", b!~"z"}[1m])))',
])
def test_every_selector_is_scoped(query: str) -> None:
    out = scope_query(query, "namespace", NS)
    assert verify_scoped(out.text, "namespace", NS) == out.selectors
    assert out.selectors >= 1
    # A second pass is a fixed point: nothing left to add.
    assert scope_query(out.text, "namespace", NS).text == out.text


def test_a_tenant_regex_only_narrows() -> None:
    out = scope_query('x{namespace=~".*"}', "namespace", NS).text
    assert 'namespace=~".*"' in out and 'namespace="team-a"' in out


def test_values_that_need_escaping_are_refused() -> None:
    # The parser's printer does not escape quotes; such values are outside the subset we accept.
    with pytest.raises(QueryRefused, match="quote"):
        scope_query('x{path="a\\"b"}', "namespace", NS)
    with pytest.raises(QueryRefused, match="quote"):
        scope_query("x", "namespace", 'we"ird')


def test_no_selector_means_nothing_to_scope() -> None:
    assert scope_query("vector(1) + time()", "namespace", NS).selectors == 0


@pytest.mark.parametrize("query, why", [
    ('x{a="1" or b="2"}', "or"),
    ("sum(", "not valid PromQL"),
    ("x" * 5000, "characters"),
])
def test_what_cannot_be_scoped_is_refused(query: str, why: str) -> None:
    with pytest.raises(QueryRefused, match=why):
        scope_query(query, "namespace", NS)


def test_verify_catches_an_unscoped_selector() -> None:
    with pytest.raises(QueryRefused, match="escaped"):
        verify_scoped('x{namespace="team-a"} + y', "namespace", NS)


def test_tenant_query_renders_then_scopes() -> None:
    out = tenant_query('rate(edgeweave_flow_bytes_total{namespace="$namespace"}[2m])', NS)
    assert out.count('namespace="team-a"') == 1
    with pytest.raises(TelemetryError) as err:
        tenant_query("rate(", NS)
    assert err.value.reason == "QueryRefused"
