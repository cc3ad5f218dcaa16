"""Prometheus series the agent exports (its own registry: no process/platform noise)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        # The data-dependency series the aggregation planner reads (WorkloadGroup default query).
        self.flow_bytes = Counter("edgeweave_flow_bytes_total",
                                  "Bytes sent from one workload to another, as seen by the edge agent.",
                                  ["source_workload", "destination_workload", "namespace"], registry=r)
