"""WorkloadGroup: a set of co-dependent workloads, their requirements and the policies that act on them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from .base import Condition, Mode, Model, StatusModel
from .context import ContextElement

# Kubernetes' label-value grammar: what a selector can match at all. Bounding it in the schema means a
# 300 KB selector value is refused at admission with the field named, never reconciled.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
NUMBER_PATTERN = r"^[-+]?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"


class DependencyKind(StrEnum):
    Trigger = "Trigger"
    Data = "Data"


class Dependency(Model):
    """A declared dependency between two workloads of the group (by workload name)."""

    source: str = Field(description="The workload that calls or sends (value of the workload label).",
                        min_length=1, max_length=253)
    target: str = Field(description="The workload that is woken or receives.", min_length=1, max_length=253)
    kind: DependencyKind = Field(default=DependencyKind.Data, description="Trigger (requests) or Data (bytes).")
    weight: float = Field(default=1.0, ge=0, description="Relative weight when no telemetry is available.")


DEFAULT_TRIGGER_QUERY = (
    'sum by (source_workload, destination_workload) '
    '(rate(istio_requests_total{source_workload_namespace="$namespace"}[2m]))'
)
DEFAULT_DATA_QUERY = (
    'sum by (source_workload, destination_workload) '
    '(rate(edgeweave_flow_bytes_total{namespace="$namespace"}[2m]))'
)


class Discovery(Model):
    """How dependencies beyond the declared ones are found from telemetry."""

    enabled: bool = Field(default=True, description="Read dependencies from Prometheus.")
    trigger_query: str = Field(
        default=DEFAULT_TRIGGER_QUERY, max_length=4096,
        description="PromQL returning requests/s per (source_workload, destination_workload). "
        "`$namespace` is replaced by the group's namespace.")
    data_query: str = Field(
        default=DEFAULT_DATA_QUERY, max_length=4096,
        description="PromQL returning bytes/s per (source_workload, destination_workload).")
    min_rate: float = Field(default=0.0, ge=0, description="Ignore pairs below this rate.")
    bytes_per_request: float = Field(
        default=2048, ge=0,
        description="Weight of one request/s relative to one byte/s when combining trigger and data edges.")


class RequirementOperator(StrEnum):
    Gte = "Gte"
    Lte = "Lte"
    Eq = "Eq"
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"


class Requirement(Model):
    """A constraint on a context element of the device a workload runs on."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!(self.operator in ['Gte', 'Lte', 'Eq']) || has(self.value)",
         "message": "value is required for operators Gte, Lte and Eq", "fieldPath": ".value"},
        {"rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
         "message": "values is required (non-empty) for operators In and NotIn", "fieldPath": ".values"},
        {"rule": "!(self.operator in ['Gte', 'Lte']) || self.element in "
                 "['UplinkBandwidthMbps', 'UplinkLatencyMs', 'UplinkLossPercent', 'BatteryPercent', "
                 "'TemperatureCelsius']",
         "message": "Gte and Lte need a numeric element", "fieldPath": ".operator"},
        # Finite decimal numbers only: "Infinity", "NaN" or "1e999"-style words never reach a comparison.
        {"rule": "!(self.operator in ['Gte', 'Lte', 'Eq']) || !(self.element in ['UplinkBandwidthMbps', "
                 "'UplinkLatencyMs', 'UplinkLossPercent', 'BatteryPercent', 'TemperatureCelsius']) || "
                 "!has(self.value) || (self.value.matches('" + NUMBER_PATTERN + "') && size(self.value) <= 32)",
         "message": "value must be a finite decimal number for a numeric element (e.g. \"50\" or \"12.5\")",
         "fieldPath": ".value"},
    ]})

    element: ContextElement = Field(description="The context element constrained.")
    operator: RequirementOperator = Field(description="Gte, Lte, Eq, In, NotIn or Exists.")
    value: str | None = Field(default=None, max_length=256,
                              description="Operand for Gte, Lte and Eq (numbers as strings, e.g. \"50\").")
    values: list[str] | None = Field(default=None, max_length=64, description="Operands for In and NotIn.")
    uplink: str | None = Field(default=None, max_length=32,
                               description="For uplink elements: which uplink (empty = the best one).")
    grace_period_seconds: int = Field(default=30, ge=0, le=86400,
                                      description="A breach must last this long before anything moves.")
    hysteresis: float = Field(
        default=0.0, ge=0,
        description="For Gte/Lte: how far past the threshold the value must come back before the "
        "device counts as recovered.")


class SpreadPolicy(Model):
    """How far aggregation may pile replicas of one workload together. Required anti-affinity and
    DoNotSchedule topology spread in the pods' own specs are always kept, whatever this says."""

    max_replicas_per_device: int = Field(
        default=1, ge=0, le=1000,
        description="Never put more than this many replicas of a multi-replica workload on one device "
        "(0: no limit). A placement already past it is never made worse.")
    respect_preferred: bool = Field(
        default=False,
        description="Treat preferred pod anti-affinity and ScheduleAnyway topology spread (hostname) as "
        "rules too. Off: they are scheduling hints that aggregation may override (replicas still stay "
        "apart by maxReplicasPerDevice).")


class AggregationPolicy(Model):
    """Bring co-dependent workloads onto one device; optionally pack lightly used devices."""

    enabled: bool = True
    gain_threshold: float = Field(
        default=0.2, ge=0, le=1,
        description="Move only when the plan cuts cross-device traffic by at least this fraction.")
    min_gain_bytes_per_second: float = Field(default=1024, ge=0,
                                             description="And by at least this much in absolute terms.")
    cooldown_seconds: int = Field(default=600, ge=0, description="A moved workload stays put this long.")
    move_cost: float = Field(
        default=1024, ge=0,
        description="What one pod move costs, in bytes/s of cross-device traffic it must save to be worth "
        "it: plans maximise traffic saved minus moveCost per move, so a move that saves less is never "
        "made. Raise it to trade traffic for fewer restarts (docs/aggregation.md: how to pick it).")
    spread: SpreadPolicy = Field(default_factory=SpreadPolicy)
    defragment: bool = Field(default=False, description="Pack workloads off devices below the threshold.")
    defragment_below_utilisation: float = Field(default=0.25, ge=0, le=1,
                                                description="Devices below this CPU request share are packed.")


class RemediationPolicy(Model):
    enabled: bool = True
    taint_breached_devices: bool = Field(default=True,
                                         description="Taint a breached device so nothing new lands there.")


class ActuationLimits(Model):
    """Rate limits on what the operator changes."""

    max_moves_per_interval: int = Field(default=5, ge=1, le=1000)
    interval_seconds: int = Field(default=60, ge=1, le=86400)
    max_in_flight: int = Field(default=2, ge=1, le=100)


class TelemetrySettings(Model):
    max_age_seconds: int = Field(default=120, ge=1, description="Older snapshots mean no action.")
    resync_seconds: int = Field(default=30, ge=5, le=3600, description="How often to re-plan.")


class MemoryRecovery(Model):
    """Remote-memory recovery for the group's stateful members."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!self.enabled || has(self.storeClaim)",
         "message": "storeClaim is required when memory recovery is enabled", "fieldPath": ".storeClaim"},
    ]})

    enabled: bool = False
    region_size_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, description="Size of each region.")
    page_size_bytes: int = Field(default=4096, ge=4096, le=2 * 1024 * 1024,
                                 description="Tracking granularity (4 KiB or a huge page).")
    baseline_interval_seconds: int = Field(default=300, ge=1, description="How often to write a baseline.")
    store_claim: str | None = Field(default=None, max_length=253,
                                    description="ReadWriteMany PVC holding baselines.")
    token_secret: str | None = Field(default=None, max_length=253,
                                     description="Secret whose `token` key authenticates page reads.")


class WorkloadGroupSpec(Model):
    """Which workloads belong together, what they require, and what edgeweave may do about it."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.dependencies.all(d, d.source != d.target)",
         "message": "a dependency cannot point a workload at itself", "fieldPath": ".dependencies"},
    ]})

    selector: dict[str, LabelValue] = Field(description="Pods whose labels match all of these are members.",
                                            min_length=1, max_length=32)
    workload_label: str = Field(default="app", max_length=316,
                                description="Pod label whose value names the workload a pod belongs to.")
    mode: Mode = Field(default=Mode.Enforce, description="Enforce, or DryRun: compute and record, change nothing.")
    dependencies: list[Dependency] = Field(default_factory=list, max_length=512)
    discovery: Discovery = Field(default_factory=Discovery)
    requirements: list[Requirement] = Field(default_factory=list, max_length=32)
    aggregation: AggregationPolicy = Field(default_factory=AggregationPolicy)
    remediation: RemediationPolicy = Field(default_factory=RemediationPolicy)
    limits: ActuationLimits = Field(default_factory=ActuationLimits)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    memory_recovery: MemoryRecovery = Field(default_factory=MemoryRecovery)


class MovePhase(StrEnum):
    Planned = "Planned"
    Evicting = "Evicting"  # controller-owned pod: replacement is steered to the target at admission
    Copying = "Copying"  # bare pod: make-before-break copy on the target
    WaitingReady = "WaitingReady"
    DeletingOriginal = "DeletingOriginal"
    Done = "Done"
    Failed = "Failed"
    RolledBack = "RolledBack"


TERMINAL_PHASES = frozenset({MovePhase.Done, MovePhase.Failed, MovePhase.RolledBack})


class MoveStatus(StatusModel):
    id: str
    workload: str
    pod: str = Field(description="namespace/name of the pod being moved.")
    pod_uid: str = ""
    owner: str = Field(default="", description="Kind/name of the pod's controller; empty for a bare pod.")
    from_node: str
    to_node: str
    reason: str
    phase: MovePhase = MovePhase.Planned
    message: str = ""
    new_pod: str | None = None
    attempts: int = Field(default=0, description="Re-steers after a replacement landed elsewhere.")
    recovery: dict[str, str] | None = Field(
        default=None, description="Memory recovery of the replacement: mode, epoch, pages, bytes, durationS.")
    context_changed_at: str | None = Field(default=None,
                                           description="Remediation: when the breach that caused it began.")
    started_at: str = ""
    updated_at: str = ""

    @property
    def namespace(self) -> str:
        return self.pod.split("/", 1)[0]

    @property
    def pod_name(self) -> str:
        return self.pod.split("/", 1)[-1]

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def steerable(self) -> bool:
        """Controller-owned: its replacement comes from the controller and must be steered at admission."""
        return self.owner.split("/")[0] in STEERABLE_OWNERS


STEERABLE_OWNERS = ("ReplicaSet", "StatefulSet")


class PlanStatus(StatusModel):
    id: str
    kind: str = Field(description="Aggregation, Defragmentation or Remediation.")
    created_at: str
    mode: Mode
    summary: str = ""
    cross_device_traffic_before: float = Field(default=0, description="Cross-device bytes/s before the plan.")
    cross_device_traffic_after: float = Field(default=0, description="Expected cross-device bytes/s after it.")
    moves: list[MoveStatus] = Field(default_factory=list)
    skipped: list[dict[str, str]] = Field(default_factory=list,
                                          description="Workloads that could not be placed, and why.")


class WorkloadBackoff(StatusModel):
    """A workload whose moves rolled back: it is not planned again until `until`."""

    failures: int = Field(default=0, description="Consecutive moves of this workload that did not complete.")
    until: str = Field(default="", description="Not moved again before this time (RFC 3339).")
    last_failure: str = Field(default="", description="Why the last move did not complete.")


class BreachRecord(StatusModel):
    """One (device, requirement) breach state this group tracks, kept in status so that a restarted
    operator, or the replica that takes over, resumes grace clocks and hysteresis where they were."""

    device: str
    requirement: str = Field(description="The requirement, as named in conditions: 'BatteryPercent Gte 40'.")
    phase: str = Field(description="Pending, Breached or Recovered (OK is not recorded).")
    since: float | None = Field(default=None, description="First breached observation of this breach (Unix s).")
    accrued_seconds: float = Field(default=0, description="Pending with the clock stopped by an Unknown gap: "
                                                          "breach seen so far.")
    clock_start: float | None = Field(
        default=None, description="While Pending on fresh data: the grace clock reads now minus this (Unix s).")
    grace_seconds: float = 0
    frozen: bool = Field(default=False, description="The last observation was Unknown: held, not acted on.")
    changed_at: float | None = Field(default=None, description="When the phase last changed (Unix s).")
    detail: str = ""


class WorkloadGroupStatus(StatusModel):
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    members: int = 0
    devices: int = Field(default=0, description="How many devices the members span.")
    plan: PlanStatus | None = None
    last_telemetry_at: str | None = None
    last_moved: dict[str, str] = Field(default_factory=dict,
                                       description="Workload -> when it last moved (for the cooldown).")
    moves_total: int = 0
    breach_state: list[BreachRecord] = Field(
        default_factory=list, description="Breach state machines not at OK, by device and requirement.")
    backoff: dict[str, WorkloadBackoff] = Field(
        default_factory=dict, description="Workloads whose moves rolled back, backing off exponentially.")
