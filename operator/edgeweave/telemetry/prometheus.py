"""A small client of the Prometheus HTTP API, and telemetry snapshots that carry their age.

Sync on purpose: callers run in kopf's handler threads, and a query must time out rather than hang a
reconcile. A failed query raises TelemetryError; nothing downstream guesses a value.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from ..placement.model import Edge
from .promql_scope import QueryRefused, scope_query

# The label every tenant series carries (kube-prometheus and the agent both set `namespace`).
TENANT_SCOPE_LABEL = "namespace"


class TelemetryError(RuntimeError):
    """Prometheus is unreachable, answered with an error, or sent something we cannot read."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # CamelCase, for a condition's reason


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    query: str
    samples: tuple[Sample, ...]
    evaluated_at: float  # Prometheus' evaluation time (unix seconds)


# One kept-alive connection per thread and Prometheus: every group round queries, and a fresh connection
# each time (name lookup, socket, handshake) was ~10% of the operator's samples at 500 groups.
_CONNS = threading.local()


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a GET. Through urllib (proxies, credentials in the URL, redirects) unless the URL
    is a plain http(s) one with no proxy for its scheme: then on this thread's kept-alive connection."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.username or urllib.request.getproxies().get(parts.scheme):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured URL
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
    key = (parts.scheme, parts.netloc, timeout)
    pool: dict = _CONNS.__dict__.setdefault("pool", {})
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for attempt in (0, 1):
        conn = pool.get(key)
        fresh = conn is None
        if fresh:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = pool[key] = cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request("GET", target, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.will_close:
                conn.close()
                pool.pop(key, None)
            return resp.status, body
        except (OSError, http.client.HTTPException):
            conn.close()
            pool.pop(key, None)
            if fresh or attempt:  # a kept connection the server closed meanwhile is retried once, afresh
                raise
    raise AssertionError("unreachable")


@dataclass
class PrometheusClient:
    base_url: str
    timeout: float = 5.0

    def query(self, promql: str) -> QueryResult:
        # Prometheus' own evaluation timeout too: a heavy tenant query is cut off server-side, not only
        # abandoned by us while it keeps Prometheus busy.
        params = {"query": promql, "timeout": f"{max(int(self.timeout * 1000), 100)}ms"}
        url = f"{self.base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            code, body = _get(url, self.timeout)
            if code >= 400:
                detail = body.decode(errors="replace")[:300]
                raise TelemetryError("QueryFailed", f"Prometheus rejected {promql!r}: {code} {detail}")
            payload = json.loads(body)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise TelemetryError("QueryFailed", f"Prometheus rejected {promql!r}: {e.code} {detail}") from e
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise TelemetryError("PrometheusUnavailable", f"Prometheus at {self.base_url} unreachable: {e}") from e
        if payload.get("status") != "success":
            raise TelemetryError("QueryFailed", f"query {promql!r} failed: {payload.get('error', payload)}")
        data = payload.get("data", {})
        if data.get("resultType") not in ("vector", "scalar"):
            raise TelemetryError("QueryFailed", f"query {promql!r} returned {data.get('resultType')}, not a vector")
        samples: list[Sample] = []
        evaluated_at = time.time()
        if data["resultType"] == "scalar":
            ts, val = data["result"]
            return QueryResult(promql, (Sample({}, float(val)),), float(ts))
        for item in data.get("result", []):
            ts, val = item["value"]
            evaluated_at = float(ts)
            try:
                samples.append(Sample(dict(item.get("metric", {})), float(val)))
            except ValueError:
                continue
        return QueryResult(promql, tuple(samples), evaluated_at)


@dataclass(frozen=True)
class DependencySnapshot:
    """Dependency edges observed at one instant; planners refuse a snapshot older than their limit."""

    taken_at: float
    edges: tuple[Edge, ...] = ()
    queries: tuple[str, ...] = field(default_factory=tuple)

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.taken_at


def render_query(template: str, namespace: str) -> str:
    return template.replace("$namespace", namespace)


def edges_from_results(trigger: QueryResult | None, data: QueryResult | None, min_rate: float) -> tuple[Edge, ...]:
    """Merge requests/s and bytes/s series into one Edge per (source, destination) workload pair."""
    pairs: dict[tuple[str, str], dict[str, float]] = {}
    for result, key in ((trigger, "requests_per_second"), (data, "bytes_per_second")):
        if result is None:
            continue
        for s in result.samples:
            src, dst = s.labels.get("source_workload"), s.labels.get("destination_workload")
            if not src or not dst or src == dst or s.value < min_rate:
                continue
            slot = pairs.setdefault((src, dst), {})
            slot[key] = slot.get(key, 0.0) + s.value
    return tuple(Edge(source=a, target=b, **vals) for (a, b), vals in sorted(pairs.items()))


def tenant_query(template: str, namespace: str, scope_label: str = TENANT_SCOPE_LABEL) -> str:
    """A tenant's query, rendered and scoped to its namespace (enforced label matcher); TelemetryError
    with reason QueryRefused when it cannot be scoped."""
    try:
        return scope_query(render_query(template, namespace), scope_label, namespace).text
    except QueryRefused as err:
        raise TelemetryError("QueryRefused", f"query {template[:200]!r} refused: {err}") from err


def fetch_dependencies(client: PrometheusClient, trigger_query: str | None, data_query: str | None,
                       namespace: str, min_rate: float = 0.0) -> DependencySnapshot:
    """Dependencies of one tenant's group: both queries are scoped to its namespace before they run."""
    trigger = client.query(tenant_query(trigger_query, namespace)) if trigger_query else None
    data = client.query(tenant_query(data_query, namespace)) if data_query else None
    taken = min(r.evaluated_at for r in (trigger, data) if r is not None) if (trigger or data) else time.time()
    return DependencySnapshot(
        taken_at=taken, edges=edges_from_results(trigger, data, min_rate),
        queries=tuple(r.query for r in (trigger, data) if r is not None))
