"""The values planners work on and produce. A Plan is data: print it, diff it, record it, then act."""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .spread import PodConstraints


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class DeviceState(Frozen):
    """A device as planners see it: free capacity after the requests already bound to it."""

    name: str
    site: str | None = None
    cpu_capacity: float
    memory_capacity: float
    cpu_free: float
    memory_free: float
    extended_free: dict[str, float] = Field(default_factory=dict)
    schedulable: bool = True  # Ready, not cordoned, not tainted by us
    context: dict[str, str] = Field(default_factory=dict)  # element (or element/uplink) -> value
    labels: dict[str, str] = Field(default_factory=dict)  # the node's labels (pods' nodeSelectors match these)

    @property
    def cpu_used_fraction(self) -> float:
        return 1.0 - self.cpu_free / self.cpu_capacity if self.cpu_capacity else 1.0


class WorkloadState(Frozen):
    """One movable unit: a pod of a WorkloadGroup, on a device."""

    key: str  # namespace/pod-name
    workload: str  # value of the group's workload label (dependency edges are between these)
    group: str  # namespace/workloadgroup-name
    node: str
    cpu: float = 0.0
    memory: float = 0.0
    extended: dict[str, float] = Field(default_factory=dict)
    movable: bool = True
    cooling_down: bool = False  # moved within the cooldown: never move again yet
    labels: dict[str, str] = Field(default_factory=dict)  # the pod's labels: what others' selectors match
    constraints: PodConstraints = Field(default_factory=PodConstraints)  # anti-affinity, spread

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]


class Edge(Frozen):
    """Traffic between two workloads (directed as observed; planners treat it as undirected)."""

    source: str
    target: str
    bytes_per_second: float = 0.0
    requests_per_second: float = 0.0
    declared: bool = False
    # Which group the edge belongs to. None: it joins same-named workloads within every group that has both.
    group: str | None = None

    def weight(self, bytes_per_request: float) -> float:
        return self.bytes_per_second + self.requests_per_second * bytes_per_request


class PlanKind(StrEnum):
    Aggregation = "Aggregation"
    Defragmentation = "Defragmentation"
    Remediation = "Remediation"


class Move(Frozen):
    workload: str
    pod: str  # namespace/name
    from_node: str
    to_node: str
    reason: str
    gain: float = 0.0  # cross-device traffic removed (bytes/s), or 0 for remediation

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.pod}|{self.from_node}|{self.to_node}".encode()).hexdigest()[:10]


class Skipped(Frozen):
    workload: str
    reason: str


class Plan(Frozen):
    kind: PlanKind
    moves: tuple[Move, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    traffic_before: float = 0.0  # cross-device bytes/s
    traffic_after: float = 0.0
    freed_devices: tuple[str, ...] = ()
    summary: str = ""

    @property
    def empty(self) -> bool:
        return not self.moves

    @property
    def traffic_saved(self) -> float:
        return self.traffic_before - self.traffic_after

    @property
    def traffic_saved_per_move(self) -> float:
        """Cross-device bytes/s this plan removes per pod it moves (0 for a plan without moves)."""
        return self.traffic_saved / len(self.moves) if self.moves else 0.0
