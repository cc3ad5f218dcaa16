"""GpuJob: a compute kernel run as slices over vGPUs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from .base import Condition, Model, StatusModel


class BuiltinKernel(StrEnum):
    saxpy = "saxpy"
    stencil = "stencil"
    matmul = "matmul"


class SchedulingPolicy(StrEnum):
    Fifo = "Fifo"
    ShortestFirst = "ShortestFirst"
    Priority = "Priority"
    FairShare = "FairShare"
    Deadline = "Deadline"


def _dims(v: list[int]) -> tuple[int, int, int]:
    padded = [*v, 1, 1, 1]
    return padded[0], padded[1], padded[2]


# Grid and block are lists [x, y, z] rather than {x, y, z} maps: YAML 1.1 readers (kubectl) turn a
# bare `y:` key into the boolean true, which would make `block: {x: 64, y: 4}` fail to decode.
def _product_rule(field: str) -> str:
    f = f"self.{field}"
    return (f"(size({f}) > 0 ? {f}[0] : 1) * (size({f}) > 1 ? {f}[1] : 1) * "
            f"(size({f}) > 2 ? {f}[2] : 1)")


class Kernel(Model):
    """The kernel to run: a built-in one, or CUDA C source with an entry point."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.builtin) != has(self.source)",
         "message": "exactly one of builtin or source must be set"},
        {"rule": "!has(self.source) || has(self.entry)",
         "message": "entry is required with source", "fieldPath": ".entry"},
    ]})

    builtin: BuiltinKernel | None = Field(default=None, description="saxpy, stencil or matmul.")
    source: str | None = Field(default=None, max_length=65536, description="CUDA C source of the kernel.")
    entry: str | None = Field(default=None, max_length=256, description="Name of the __global__ function.")
    problem_size: int = Field(default=1 << 20, ge=1, description="Elements (saxpy/stencil) or N (matmul N×N).")


class KernelProfile(Model):
    time_per_block_us: float | None = Field(default=None, gt=0,
                                            description="Measured or declared time per thread block.")
    launch_overhead_us: float = Field(default=8.0, ge=0, description="Cost of one launch.")


class VGpu(Model):
    resource: str = Field(default="nvidia.com/gpu", max_length=253,
                          description="Extended resource each job pod requests (e.g. a MIG profile).")
    count: int = Field(default=1, ge=1, le=64, description="How many vGPUs (job pods) the job may use.")


class GpuJobSpec(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": _product_rule("block") + " <= 1024",
         "message": "block may hold at most 1024 threads (x*y*z)", "fieldPath": ".block"},
        {"rule": "self.policy != 'Deadline' || has(self.deadlineSeconds)",
         "message": "deadlineSeconds is required for policy Deadline", "fieldPath": ".deadlineSeconds"},
    ]})

    kernel: Kernel
    grid: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1, max_length=3, description="Grid of thread blocks as [x], [x, y] or [x, y, z]; each ≥ 1.")
    block: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        min_length=1, max_length=3, description="Threads per block as [x], [x, y] or [x, y, z]; x*y*z ≤ 1024.")
    vgpu: VGpu = Field(default_factory=VGpu)
    policy: SchedulingPolicy = Field(default=SchedulingPolicy.Fifo)
    priority: int = Field(default=0, ge=-1000, le=1000)
    latency_target_ms: float = Field(default=10.0, gt=0, description="Longest other tenants should wait.")
    deadline_seconds: float | None = Field(default=None, gt=0)
    profile: KernelProfile = Field(default_factory=KernelProfile)
    image: str | None = Field(default=None, max_length=512, description="Image of the slice runtime.")

    @property
    def grid_dims(self) -> tuple[int, int, int]:
        return _dims(self.grid)

    @property
    def block_dims(self) -> tuple[int, int, int]:
        return _dims(self.block)

    @property
    def total_blocks(self) -> int:
        x, y, z = self.grid_dims
        return x * y * z

    @property
    def threads_per_block(self) -> int:
        x, y, z = self.block_dims
        return x * y * z


class GpuJobPhase(StrEnum):
    Pending = "Pending"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Unschedulable = "Unschedulable"


class SlicePodState(StatusModel):
    name: str
    node: str | None = None
    phase: str = "Pending"
    slices: str = Field(default="", max_length=4096, description="Slice indices of this pod attempt, as runs ('0-9,12').")
    done: str = Field(default="", max_length=4096, description="Slices it finished, as runs.")


class GpuJobStatus(StatusModel):
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    phase: str = GpuJobPhase.Pending.value
    slice_blocks: int = 0
    slices_total: int = 0
    slices_done: int = 0
    pods: list[SlicePodState] = Field(default_factory=list)
