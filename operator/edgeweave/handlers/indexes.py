"""kopf in-memory indexes of nodes and pods, kept current by watch streams (no polling)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from ..api.edgesite import EdgeSiteSpec
from ..placement.inventory import Device, PodInfo, device_from_node, pod_info

_T = TypeVar("_T")


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


# The event loop that owns kopf's indexes: kopf changes them there, one whole object at a time.
_LOOP: asyncio.AbstractEventLoop | None = None
SNAPSHOT_TIMEOUT_S = 30.0


def bind_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Called once at start-up, on the loop kopf runs (and updates its indexes) on."""
    global _LOOP
    _LOOP = loop


def _snapshot(read: Callable[[], _T]) -> _T:
    """`read` run where kopf changes the indexes: on its event loop, between two of its updates. Rounds run
    in worker threads; iterating an index there while the loop updates it raised "dictionary changed size
    during iteration", and even a read that did not raise could see a pod that moved on both devices or
    on none. On the loop the read is one consistent view. Called on the loop itself (or with no loop
    bound: unit tests, scripts) it reads directly: nothing can interleave then."""
    loop = _LOOP
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if loop is None or here is loop or loop.is_closed() or not loop.is_running():
        return read()
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def on_loop() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(read())
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            done.set_exception(err)

    loop.call_soon_threadsafe(on_loop)
    try:
        return done.result(timeout=SNAPSHOT_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        # The loop is stuck or stopping: the caller's round fails and backs off rather than hang.
        done.cancel()
        raise TimeoutError(f"kopf's event loop did not answer an index read in {SNAPSHOT_TIMEOUT_S:.0f}s") from None


def store_of(index: kopf.Index, key: Any) -> list[Any]:
    """The values kopf keeps under one key of an index, as one consistent list."""
    return _snapshot(lambda: list(index.get(key, ())))


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
    def read() -> dict[str, EdgeSiteSpec]:
        out = {}
        for name, store in index.items():
            spec = next(iter(store), None)
            if spec is not None:
                out[name] = spec
        return out

    return _snapshot(read)
