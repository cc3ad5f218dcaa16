"""What the fleet looks like: devices (nodes) and the pods on them, parsed from API objects.

Pure: parsing takes plain dicts (as the API server sends them) and returns frozen values, so
planners and status summaries are testable without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..api.base import parse_quantity
from .nodematch import placed_by_us
from .spread import PodConstraints, pod_constraints

SITE_LABEL = "edgeweave.io/site"
GPU_RESOURCE = "nvidia.com/gpu"


class Device(BaseModel):
    """An edge device: one node, with its allocatable resources."""

    model_config = ConfigDict(frozen=True)

    name: str
    site: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    ready: bool = False
    unschedulable: bool = False
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    cpu: float = 0.0
    memory: float = 0.0
    extended: dict[str, float] = Field(default_factory=dict)
    conditions: dict[str, str] = Field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return int(self.extended.get(GPU_RESOURCE, 0))


class PodInfo(BaseModel):
    """A pod as placement sees it: where it runs, what it requests, who owns it."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    uid: str = ""
    node: str | None = None
    phase: str = "Pending"
    ready: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    cpu: float = 0.0
    memory: float = 0.0
    extended: dict[str, float] = Field(default_factory=dict)
    owner_kind: str | None = None
    owner_name: str | None = None
    deleting: bool = False
    constraints: PodConstraints = Field(default_factory=PodConstraints)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def active(self) -> bool:
        return self.phase not in ("Succeeded", "Failed") and not self.deleting


def device_from_node(node: Mapping[str, Any]) -> Device:
    meta = node.get("metadata", {})
    spec = node.get("spec", {}) or {}
    status = node.get("status", {}) or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    conds = {c.get("type", ""): c.get("status", "Unknown") for c in status.get("conditions") or []}
    labels = dict(meta.get("labels") or {})
    return Device(
        name=meta.get("name", ""),
        site=labels.get(SITE_LABEL),
        labels=labels,
        annotations=dict(meta.get("annotations") or {}),
        ready=conds.get("Ready") == "True",
        unschedulable=bool(spec.get("unschedulable")),
        taints=tuple((t.get("key", ""), t.get("value", "") or "", t.get("effect", ""))
                     for t in spec.get("taints") or []),
        cpu=parse_quantity(alloc.get("cpu", 0)),
        memory=parse_quantity(alloc.get("memory", 0)),
        extended={k: parse_quantity(v) for k, v in alloc.items() if "/" in k},
        conditions=conds,
    )


def pod_requests(pod_spec: Mapping[str, Any]) -> tuple[float, float, dict[str, float]]:
    """Effective requests: sum of containers, or the largest init container if that is bigger."""
    def total(containers: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        acc: dict[str, float] = {}
        for c in containers:
            for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
                acc[k] = acc.get(k, 0.0) + parse_quantity(v)
        return acc

    main = total(pod_spec.get("containers") or [])
    for init in pod_spec.get("initContainers") or []:
        for k, v in total([init]).items():
            main[k] = max(main.get(k, 0.0), v)
    extended = {k: v for k, v in main.items() if "/" in k}
    return main.get("cpu", 0.0), main.get("memory", 0.0), extended


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {}) or {}
    status = pod.get("status", {}) or {}
    cpu, mem, ext = pod_requests(spec)
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        node=spec.get("nodeName"),
        phase=status.get("phase", "Pending"),
        ready=ready,
        labels=dict(meta.get("labels") or {}),
        cpu=cpu, memory=mem, extended=ext,
        owner_kind=owner.get("kind") if owner else None,
        owner_name=owner.get("name") if owner else None,
        deleting=bool(meta.get("deletionTimestamp")),
        constraints=pod_constraints(spec, placed_by_us=placed_by_us(meta.get("annotations"))),
    )


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def requested_on(pods: Iterable[PodInfo]) -> tuple[float, float, dict[str, float]]:
    cpu = mem = 0.0
    ext: dict[str, float] = {}
    for p in pods:
        if not p.active:
            continue
        cpu += p.cpu
        mem += p.memory
        for k, v in p.extended.items():
            ext[k] = ext.get(k, 0.0) + v
    return cpu, mem, ext
