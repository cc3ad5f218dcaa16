"""A fix for kopf's start-up at fleet scale, installed by `main` before the operator starts.

kopf holds every object's handlers until all index handlers have seen the initial listing. It does so
with one `ToggleSet`: each listed object of an indexed kind adds a toggle, drops it once indexed, and
then waits for the whole set to be on. Every add and drop calls `notify_all()` on the set's condition,
which wakes *every* waiting object to re-check the set: N objects cost ~N^2 wake-ups. Measured here
(kopf 1.45.2, one core): 1,000 objects 18 s, 2,000 objects 53 s; a fleet of 20,000 pods and 2,000
nodes would sit in start-up for hours with the operator's one core busy and no status written.

The set's value can only change its waiters' minds when it flips, so adding or dropping a toggle
notifies only then. Waiters on one toggle (`Toggle.wait_for`) do not care about membership, and a
toggle that turns on or off still notifies as before. `tests/unit/handlers/test_kopf_fixes.py` counts
the wake-ups with and without the fix.

The second fix is memory. Until that gate opens, kopf holds every listed object's raw event (the whole
parsed body) in its per-object queue; a kwok pod is ~14 KB as Python objects, and the heap does not
shrink after (20,000 pods: ~300 MB of peak that stays as RSS). Pods and nodes are only indexed here
(and a GpuJob pod's event reads its owner): `slim_body` drops, as each event arrives, the parts nothing
in edgeweave or kopf reads for them — managed fields, volumes and mounts, container statuses, a node's
image list — before kopf queues the event. `tests/unit/handlers/test_kopf_fixes.py` checks that the
indexes see the same values from a slimmed body.

The third: an object none of whose other handlers can run for it need not wait at the gate at all. kopf
parks every listed object (its event, body wrapper, patch, loggers and worker) until every index is
complete, because handlers read indexes; a pod that only feeds indexes has no such handler, yet 20,000 of
them waited, all alive at once (the start-up peak that stayed as RSS). `_process_resource_event` passes
such an object through without the gate (it is indexed first, as kopf does, and its toggle is dropped
once it is). Whether a handler can run is decided conservatively from its label filter: a handler that
requires a label the object lacks cannot; any other handler (no filter, an absent-label or callable
filter) keeps the object at the gate. A GpuJob pod (labelled) still waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import watching
from kopf._core.intents import filters
from kopf._core.reactor import processing

_INSTALLED = False
# kopf's own methods, kept for the test that shows what the fix removes.
ORIGINAL = {name: getattr(aiotoggles.ToggleSet, name) for name in ("make_toggle", "drop_toggle", "drop_toggles")}


async def _make_toggle(self: aiotoggles.ToggleSet, __val: bool = False, *,
                       name: str | None = None) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


_CONTAINER_KEEP = ("name", "resources")  # pod_requests reads these; nothing reads a container's rest


def slim_body(plural: str, group: str, body: dict[str, Any]) -> dict[str, Any]:
    """Drop, in place, what nothing reads of a core pod or node (the indexes' inputs are kept whole)."""
    if group or plural not in ("pods", "nodes"):
        return body
    meta = body.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    spec, status = body.get("spec"), body.get("status")
    if plural == "pods":
        if isinstance(spec, dict):
            spec.pop("volumes", None)
            for key in ("containers", "initContainers"):
                if isinstance(spec.get(key), list):
                    spec[key] = [{k: c[k] for k in _CONTAINER_KEEP if k in c} if isinstance(c, dict) else c
                                 for c in spec[key]]
        if isinstance(status, dict):
            for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
                status.pop(key, None)
    elif isinstance(status, dict):
        for key in ("images", "volumesInUse", "volumesAttached"):
            status.pop(key, None)
    return body


_CONTINUOUS_WATCH = watching.continuous_watch


async def _slim_continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
    plural, group = getattr(resource, "plural", ""), getattr(resource, "group", "")
    async for event in _CONTINUOUS_WATCH(resource=resource, **kwargs):
        obj = event.get("object") if isinstance(event, dict) else None
        if isinstance(obj, dict):
            slim_body(plural, group, obj)
        yield event


def can_run_for(handler: Any, body: dict[str, Any]) -> bool:
    """Whether a watching/changing/spawning handler may match this object (False only when its label filter
    requires a label the object does not have)."""
    required = getattr(handler, "labels", None)
    if not required:
        return True
    labels = (body.get("metadata") or {}).get("labels") or {}
    return not any(key not in labels and (isinstance(value, str) or value is filters.MetaFilterToken.PRESENT)
                   for key, value in required.items())


def other_handlers(registry: Any, resource: Any) -> list[Any]:
    """The handlers other than indexes that kopf would look for on this resource kind."""
    out: list[Any] = []
    for reg in (registry._watching, registry._changing, registry._spawning):
        out += [h for h in reg.get_all_handlers() if h.selector is None or h.selector.check(resource)]
    return out


_PROCESS = processing.process_resource_event
_HANDLERS: dict[Any, list[Any]] = {}


async def _process_resource_event(*, registry: Any, resource: Any, raw_event: Any,
                                  resource_indexed: aiotoggles.Toggle | None = None,
                                  operator_indexed: aiotoggles.ToggleSet | None = None, **kwargs: Any) -> Any:
    if operator_indexed is not None and isinstance(raw_event, dict):
        handlers = _HANDLERS.get(resource)
        if handlers is None:
            handlers = _HANDLERS[resource] = other_handlers(registry, resource)
        if not any(can_run_for(h, raw_event.get("object") or {}) for h in handlers):
            try:
                return await _PROCESS(registry=registry, resource=resource, raw_event=raw_event, **kwargs)
            finally:
                if resource_indexed is not None:
                    await operator_indexed.drop_toggle(resource_indexed)
    return await _PROCESS(registry=registry, resource=resource, raw_event=raw_event,
                          resource_indexed=resource_indexed, operator_indexed=operator_indexed, **kwargs)


def install(*, slim: bool = True) -> None:
    """Idempotent. Replaces the three membership methods of kopf's ToggleSet, and slims pod and node
    bodies as kopf's watch yields them (`infinite_watch` looks `continuous_watch` up at each call)."""
    global _INSTALLED
    if _INSTALLED:
        return
    if slim:
        watching.continuous_watch = _slim_continuous_watch  # type: ignore[assignment]
    # kopf's running.py builds its processor from `processing.process_resource_event` when it starts.
    processing.process_resource_event = _process_resource_event  # type: ignore[assignment]
    aiotoggles.ToggleSet.make_toggle = _make_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggles = _drop_toggles  # type: ignore[method-assign]
    _INSTALLED = True
