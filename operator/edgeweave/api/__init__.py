"""The custom resources: pydantic models are the single source; CRD YAML is generated from them."""

from .edgesite import EdgeSiteSpec, EdgeSiteStatus
from .gpujob import GpuJobSpec, GpuJobStatus
from .workloadgroup import WorkloadGroupSpec, WorkloadGroupStatus

__all__ = [
    "EdgeSiteSpec", "EdgeSiteStatus", "GpuJobSpec", "GpuJobStatus", "WorkloadGroupSpec", "WorkloadGroupStatus",
]
