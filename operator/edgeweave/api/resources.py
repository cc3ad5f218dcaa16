"""The three kinds, as data: names, scope, models and printer columns."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from .. import GROUP, VERSION
from .edgesite import EdgeSiteSpec, EdgeSiteStatus
from .gpujob import GpuJobSpec, GpuJobStatus
from .workloadgroup import WorkloadGroupSpec, WorkloadGroupStatus


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"


def _cond(ctype: str) -> str:
    return f'.status.conditions[?(@.type=="{ctype}")].status'


EDGESITE = Resource(
    kind="EdgeSite", plural="edgesites", short_names=("es",), namespaced=False,
    spec=EdgeSiteSpec, status=EdgeSiteStatus,
    description="An SD-WAN edge site: the nodes (edge devices) it runs, its WAN uplinks, and how its "
    "context (uplink quality, power, temperature, zone, security posture, GPU health) is read.",
    columns=(
        {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodeCount"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyNodes"},
        {"name": "CPU%", "type": "integer", "jsonPath": ".status.cpuUtilisationPercent",
         "description": "CPU requested / allocatable"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpuCapacity"},
        {"name": "Breached", "type": "string", "jsonPath": _cond("Breached")},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)
WORKLOADGROUP = Resource(
    kind="WorkloadGroup", plural="workloadgroups", short_names=("wg",), namespaced=True,
    spec=WorkloadGroupSpec, status=WorkloadGroupStatus,
    description="Co-dependent workloads, the context they require, and how edgeweave may aggregate, "
    "remediate and recover them.",
    columns=(
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Members", "type": "integer", "jsonPath": ".status.members"},
        {"name": "Devices", "type": "integer", "jsonPath": ".status.devices"},
        {"name": "Ready", "type": "string", "jsonPath": _cond("Ready")},
        {"name": "Context", "type": "string", "jsonPath": _cond("ContextSatisfied")},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)
GPUJOB = Resource(
    kind="GpuJob", plural="gpujobs", short_names=("gj",), namespaced=True,
    spec=GpuJobSpec, status=GpuJobStatus,
    description="A GPU compute kernel run as load-aware slices over vGPUs.",
    columns=(
        {"name": "Policy", "type": "string", "jsonPath": ".spec.policy"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Done", "type": "integer", "jsonPath": ".status.slicesDone"},
        {"name": "Slices", "type": "integer", "jsonPath": ".status.slicesTotal"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)
RESOURCES: tuple[Resource, ...] = (EDGESITE, WORKLOADGROUP, GPUJOB)
