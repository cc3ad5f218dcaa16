"""kopf in-memory indexes of nodes and pods, kept current by watch streams (no polling)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.edgesite import EdgeSiteSpec
from ..placement.inventory import Device, PodInfo, device_from_node, pod_info


@kopf.index("nodes")
def devices_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Device]:
    return {name: device_from_node(body)}


class _Recent:
    """The PodInfo of the last few pod versions seen: kopf calls both pod indexes with the same body, one
    after the other, and at 20,000 pods one shared value instead of two is 40 MB and half the parsing."""

    def __init__(self, size: int = 256) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], PodInfo] = OrderedDict()
        self._size = size

    def info(self, body: kopf.Body) -> PodInfo:
        meta = body.get("metadata") or {}
        key = (str(meta.get("uid", "")), str(meta.get("resourceVersion", "")))
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and key[1]:
            return hit
        info = pod_info(body)
        with self._lock:
            self._items[key] = info
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return info


_PODS = _Recent()


@kopf.index("pods")
def pods_by_node(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str | None, PodInfo]:
    return {spec.get("nodeName"): _PODS.info(body)}


@kopf.index("pods")
def pods_by_namespace(body: kopf.Body, namespace: str, **_: Any) -> dict[str, PodInfo]:
    return {namespace: _PODS.info(body)}


def _snapshot(read: Any) -> Any:
    """Rounds read kopf's indexes from worker threads while the event loop updates them: a read that met a
    change ("dictionary changed size during iteration") is simply read again."""
    for _ in range(8):
        try:
            return read()
        except RuntimeError:
            continue
    return read()


def devices_of(index: kopf.Index) -> list[Device]:
    return _snapshot(lambda: [next(iter(store)) for store in index.values() if len(store)])


def pods_on_nodes(index: kopf.Index) -> dict[str, list[PodInfo]]:
    return _snapshot(lambda: {node: list(store) for node, store in index.items() if node})


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
