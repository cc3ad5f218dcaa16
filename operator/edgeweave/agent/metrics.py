"""Prometheus series the agent exports (its own registry: no process/platform noise)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger("edgeweave.agent")


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.flows = Gauge("edgeweave_agent_flows", "Active flows the agent pinned, by class and uplink.",
                           ["class", "uplink"], registry=r)
        self.classified = Counter("edgeweave_agent_flows_classified_total",
                                  "Flows classified, by class and the uplink chosen.", ["class", "uplink"],
                                  registry=r)
        self.uplink_bytes = Counter("edgeweave_agent_uplink_bytes_total",
                                    "Bytes sent by LAN flows, by the uplink they were pinned to "
                                    "(default = not yet pinned).", ["uplink"], registry=r)
        self.uplink_up = Gauge("edgeweave_agent_uplink_up", "1 when the uplink is up.", ["uplink"], registry=r)
        self.repins = Counter("edgeweave_agent_repins_total", "Flows moved off an uplink that went down.",
                              ["from_uplink"], registry=r)
        self.classify_seconds = Histogram(
            "edgeweave_agent_classification_seconds", "Time to evaluate the classifier for one flow.",
            buckets=(1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3), registry=r)
        self.decision_delay = Histogram(
            "edgeweave_agent_decision_delay_seconds",
            "From a flow's first packet to its uplink mark being written.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.table_entries = Gauge("edgeweave_agent_flow_table_entries", "Entries in the BPF flow table.",
                                   registry=r)
        self.assign_failures = Counter("edgeweave_agent_assign_failures_total",
                                       "Marks that could not be written (flow evicted or gone).", registry=r)
        self.decisions = Counter("edgeweave_agent_decisions_total",
                                 "Flow decisions by what made them: history (packet 1), tree, tree+hint "
                                 "(in the datapath) or user (fallback).", ["by"], registry=r)
        self.history_keys = Gauge("edgeweave_agent_history_keys", "Keys the history learner holds.",
                                  registry=r)
        self.uplink_config_error = Gauge("edgeweave_agent_uplink_config_error",
                                         "1 when the uplink is left out because its EdgeSite entry cannot be "
                                         "served (e.g. a gateway that is not an address).", ["uplink"],
                                         registry=r)
        # The data-dependency series the aggregation planner reads (WorkloadGroup default query).
        self.flow_bytes = Counter("edgeweave_flow_bytes_total",
                                  "Bytes sent from one workload to another, as seen by the edge agent.",
                                  ["source_workload", "destination_workload", "namespace"], registry=r)


def _uplink_addresses(interfaces: Sequence[str]) -> set[str]:
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return set()
    out: set[str] = set()
    with IPRoute() as ipr:
        for name in interfaces:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                out |= {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx[0])}
    return out


def metrics_bind_address(addr: str, uplink_interfaces: Sequence[str]) -> str:
    """The address to listen on: never a WAN uplink's own address or the wildcard on a node
    with uplinks (that is every uplink); those fall back to loopback with an error logged."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        log.error("--metrics-addr %r is not an IP address; listening on 127.0.0.1", addr)
        return "127.0.0.1"
    if ip.is_unspecified and uplink_interfaces:
        log.error("--metrics-addr %s would listen on the WAN uplinks %s; listening on 127.0.0.1 "
                  "(give the node's pod-network address, or expose through kube-rbac-proxy)",
                  addr, list(uplink_interfaces))
        return "127.0.0.1"
    if addr in _uplink_addresses(uplink_interfaces):
        log.error("--metrics-addr %s is a WAN uplink address; listening on 127.0.0.1", addr)
        return "127.0.0.1"
    return addr


def serve_metrics(registry: CollectorRegistry, addr: str, port: int, token_file: str | None,
                  uplink_interfaces: Sequence[str] = ()) -> ThreadingHTTPServer:
    """/metrics on addr:port in a daemon thread; with a token file every request must carry
    `Authorization: Bearer <token>` (compared in constant time) or gets 401."""
    token = Path(token_file).read_text().strip().encode() if token_file else None
    bind = metrics_bind_address(addr, uplink_interfaces)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if token is not None:
                got = (self.headers.get("Authorization") or "").encode()
                if not hmac.compare_digest(got, b"Bearer " + token):
                    self.send_response(401)
                    self.end_headers()
                    return
            if self.path.split("?")[0] != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # one line per scrape is noise
            pass

    srv = ThreadingHTTPServer((bind, port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics%s", bind, port, " (bearer token)" if token else "")
    return srv
