"""kopf in-memory indexes of nodes and pods, kept current by watch streams (no polling)."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from ..api.edgesite import EdgeSiteSpec
from ..placement.inventory import Device, PodInfo, device_from_node, pod_info


@kopf.index("nodes")
def devices_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Device]:
    return {name: device_from_node(body)}


@kopf.index("pods")
def pods_by_node(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str | None, PodInfo]:
    return {spec.get("nodeName"): pod_info(body)}


@kopf.index("pods")
def pods_by_namespace(body: kopf.Body, namespace: str, **_: Any) -> dict[str, PodInfo]:
    return {namespace: pod_info(body)}


def devices_of(index: kopf.Index) -> list[Device]:
    return [next(iter(store)) for store in index.values() if len(store)]


def pods_on_nodes(index: kopf.Index) -> dict[str, list[PodInfo]]:
    return {node: list(store) for node, store in index.items() if node}


@kopf.index("edgesites")
def sites_index(body: kopf.Body, name: str, **_: Any) -> dict[str, EdgeSiteSpec | None]:
    try:
        return {name: EdgeSiteSpec.model_validate(dict(body.get("spec") or {}))}
    except ValidationError:
        return {name: None}


def sites_of(index: kopf.Index) -> dict[str, EdgeSiteSpec]:
    out = {}
    for name, store in index.items():
        spec = next(iter(store), None)
        if spec is not None:
            out[name] = spec
    return out
