"""Prometheus metrics of the operator, in one place so names stay consistent."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("edgeweave_reconciles_total", "Reconciliations by kind and result", ["kind", "result"])
INVALID_SPECS = Counter("edgeweave_invalid_specs_total", "Objects whose spec could not be served", ["kind"])
SITE_NODES = Gauge("edgeweave_site_nodes", "Nodes per EdgeSite", ["site"])
SITE_READY_NODES = Gauge("edgeweave_site_ready_nodes", "Ready nodes per EdgeSite", ["site"])
SITE_CPU_UTILISATION = Gauge("edgeweave_site_cpu_utilisation_ratio", "CPU requested / allocatable", ["site"])
GROUP_MEMBERS = Gauge("edgeweave_workloadgroup_members", "Member pods", ["namespace", "group"])
GROUP_DEVICES = Gauge("edgeweave_workloadgroup_devices", "Devices the members span", ["namespace", "group"])
PLAN_SECONDS = Histogram("edgeweave_plan_duration_seconds", "Time to compute a plan", ["kind"],
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
MIGRATIONS = Counter("edgeweave_migrations_total", "Moves finished, by plan kind and result", ["kind", "result"])
PLANS = Counter("edgeweave_plans_total", "Plans recorded, by kind and mode", ["kind", "mode"])
PLANS_SKIPPED = Counter("edgeweave_plans_skipped_total", "Planning rounds skipped, by reason", ["reason"])
CROSS_DEVICE_TRAFFIC = Gauge("edgeweave_cross_device_traffic_bytes_per_second",
                             "Cross-device traffic of a group's co-dependent workloads (before/after its plan)",
                             ["namespace", "group", "when"])
MOVES_IN_FLIGHT = Gauge("edgeweave_moves_in_flight", "Moves started and not finished", ["namespace", "group"])
BREACHES_TOTAL = Counter("edgeweave_context_breaches_total", "Breaches that outlasted their grace period",
                         ["namespace", "group"])
BREACH_TO_RUNNING = Histogram("edgeweave_breach_to_running_seconds",
                              "From the context change to the workload Running on another device",
                              buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
TAINTS = Counter("edgeweave_taint_changes_total", "Breach taints added or removed", ["action"])

# Tenancy and hostile input (admission, backoff, wedged reconciles).
ADMISSION_REFUSALS = Counter("edgeweave_admission_refusals_total", "Objects refused by the validating webhook",
                             ["kind", "field"])
RECONCILE_FAILURES = Counter("edgeweave_reconcile_failures_total",
                             "Reconcile rounds that raised (each then backs off)", ["kind"])
