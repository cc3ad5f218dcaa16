"""EdgeSite: one SD-WAN edge location, the nodes (devices) it runs, its uplinks and context sources."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from .base import Condition, Model, StatusModel
from .context import ContextSource
from .workloadgroup import LabelValue

# Dotted quad, each octet 0-255: a gateway the agent cannot route to is refused at admission.
IPV4_PATTERN = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"


class UplinkKind(StrEnum):
    MPLS = "MPLS"
    Broadband = "Broadband"
    LTE = "LTE"
    Satellite = "Satellite"
    Other = "Other"


class Uplink(Model):
    """One WAN uplink of the site."""

    name: str = Field(description="Uplink name, unique within the site (e.g. mpls, inet, lte).",
                      min_length=1, max_length=32, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    kind: UplinkKind = Field(default=UplinkKind.Other, description="Transport type.")
    interface: str = Field(description="Interface on the edge device that leads to this uplink.",
                           min_length=1, max_length=15)
    bandwidth_mbps: float = Field(description="Provisioned bandwidth in Mbit/s.", gt=0)
    latency_ms: float = Field(default=0, description="Nominal one-way latency to the hub in ms.", ge=0)
    cost_per_gb: float = Field(default=0, alias="costPerGB", description="Metered cost per GB sent (0 = flat rate).", ge=0)
    gateway: str | None = Field(default=None, description="Next hop on this uplink (IPv4).", max_length=15,
                                pattern=IPV4_PATTERN)


class SelectorStrategy(StrEnum):
    ClassAware = "ClassAware"
    Hash = "Hash"


class FlowPolicy(Model):
    """How the agent classifies new flows and pins them to uplinks."""

    strategy: SelectorStrategy = Field(
        default=SelectorStrategy.ClassAware,
        description="ClassAware: mice to the lowest-latency healthy uplink, elephants spread by residual "
        "capacity. Hash: ECMP-style 5-tuple hash (the baseline).",
    )
    elephant_threshold_bytes: int = Field(default=1_000_000, ge=1,
                                          description="A flow larger than this is an elephant.")
    decision_packets: int = Field(default=5, ge=1, le=16,
                                  description="Classify after this many packets of a new flow.")
    mice_max_utilisation: float = Field(
        default=0.7, gt=0, le=1,
        description="Mice avoid an uplink whose utilisation is above this fraction.")
    mice_uplinks: list[str] = Field(default_factory=list, max_length=8,
                                    description="Restrict mice to these uplinks (empty = any).")


class EdgeSiteSpec(Model):
    """Which nodes form the site's edge devices, its uplinks, and how its context is read."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "size(self.nodeSelector) > 0 || size(self.nodeNames) > 0",
         "message": "one of nodeSelector or nodeNames must select at least one node"},
        {"rule": "self.flowPolicy.miceUplinks.all(u, self.uplinks.exists(x, x.name == u))",
         "message": "flowPolicy.miceUplinks may only name uplinks listed in uplinks",
         "fieldPath": ".flowPolicy.miceUplinks"},
    ]})

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Nodes whose labels match all of these belong to this site.")
    node_names: list[str] = Field(default_factory=list, max_length=256,
                                  description="Nodes that belong to this site, by name.")
    region: str | None = Field(default=None, description="Free-form region or hub this site reports to.",
                               max_length=63)
    uplinks: list[Uplink] = Field(default_factory=list, max_length=8, description="WAN uplinks of the site.",
                                  json_schema_extra={"x-kubernetes-list-type": "map",
                                                     "x-kubernetes-list-map-keys": ["name"]})
    context: list[ContextSource] = Field(
        default_factory=list, max_length=32,
        description="Overrides of the fleet-wide context sources, one per element.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["element"]})
    flow_policy: FlowPolicy = Field(default_factory=FlowPolicy,
                                    description="Flow classification and uplink pinning policy.")




# At most this many devices are listed in status (the rest are counted): a site's status stays a few KB
# however many devices it has, so its patches stay cheap for the API server and etcd.
MAX_LISTED_NODES = 32


class NodeState(StatusModel):
    """One device of the site that needs attention: not Ready, or found breached by a WorkloadGroup."""

    name: str
    ready: bool = False
    breached: list[str] = Field(default_factory=list, max_length=16,
                                description="Requirements a WorkloadGroup finds this device breaching "
                                "(e.g. LatencyMs<=50 via uplink mpls).")
    cpu_capacity: float = Field(default=0, description="Allocatable CPU cores.")
    memory_capacity_bytes: float = Field(default=0, description="Allocatable memory in bytes.")
    gpu_capacity: int = Field(default=0, description="Allocatable nvidia.com/gpu.")
    cpu_requested: float = Field(default=0, description="CPU cores requested by pods bound here.")
    memory_requested_bytes: float = Field(default=0, description="Memory requested by pods bound here.")
    pods: int = 0


class ContextObservation(StatusModel):
    element: str
    uplink: str | None = None
    node: str | None = None
    value: str
    observed_at: str = Field(description="When the value was observed (RFC 3339).")


class EdgeSiteStatus(StatusModel):
    """Counts for the whole site; per-device detail only for the devices that need attention."""

    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    node_count: int = 0
    ready_nodes: int = 0
    pods: int = Field(default=0, description="Active pods bound to the site's devices.")
    cpu_capacity: float = 0
    cpu_requested: float = 0
    memory_capacity_bytes: float = 0
    memory_requested_bytes: float = 0
    cpu_utilisation_percent: int = Field(default=0, description="CPU requested / allocatable, percent.")
    gpu_capacity: int = 0
    breached_nodes: int = Field(default=0, description="Devices some WorkloadGroup finds breached.")
    unhealthy_nodes: list[NodeState] = Field(
        default_factory=list, max_length=MAX_LISTED_NODES,
        description=f"Devices that are not Ready or are breached, by name (at most {MAX_LISTED_NODES}; "
        "unlistedUnhealthyNodes counts the rest). Healthy devices are only counted.")
    unlisted_unhealthy_nodes: int = Field(default=0, description="Unhealthy devices beyond those listed.")
    context: list[ContextObservation] = Field(
        default_factory=list, description="What the listed breached devices read now (the values behind "
        "the Breached condition); healthy devices' readings are in Prometheus, not here.")
