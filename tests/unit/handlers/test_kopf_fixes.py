"""kopf's index pre-population gate: N listed objects must not cost N^2 wake-ups (handlers/kopf_fixes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kopf._cogs.aiokits import aiotoggles

from edgeweave.handlers import kopf_fixes

N = 400


async def listing(methods: dict[str, Callable], n: int = N) -> tuple[int, int]:
    """kopf's start-up pattern: one toggle per resource kind until its listing ends; each listed object
    adds a toggle, drops it once indexed, then waits for the whole set. Returns (is_on checks, waiters
    released)."""
    ts = aiotoggles.ToggleSet(all)
    calls = 0
    real = ts.is_on

    def counting() -> bool:
        nonlocal calls
        calls += 1
        return real()

    ts.is_on = counting  # type: ignore[method-assign]
    make, drop = methods["make_toggle"], methods["drop_toggle"]
    kind = await make(ts, name="pods listed")
    waiters = []
    for i in range(n):
        t = await make(ts, name=f"pod-{i}")
        await drop(ts, t)
        waiters.append(asyncio.create_task(ts.wait_for(True)))
        await asyncio.sleep(0)  # the waiter starts waiting, as kopf's worker does
    assert not any(w.done() for w in waiters)  # the gate holds while a kind is still listing
    await drop(ts, kind)
    await asyncio.wait_for(asyncio.gather(*waiters), 10)
    return calls, sum(1 for w in waiters if w.done())


async def test_kopfs_own_gate_wakes_every_waiter_on_every_change() -> None:
    calls, released = await listing(kopf_fixes.ORIGINAL)
    assert released == N
    assert calls > N * N // 2  # the quadratic cost the fix removes


async def test_the_fixed_gate_wakes_waiters_only_when_it_flips() -> None:
    fixed = {"make_toggle": kopf_fixes._make_toggle, "drop_toggle": kopf_fixes._drop_toggle}
    calls, released = await listing(fixed)
    assert released == N  # every object goes on to its handlers once all kinds are listed
    assert calls < 10 * N


async def test_a_waiter_for_off_is_woken_when_a_toggle_turns_the_set_off() -> None:
    kopf_fixes.install()
    ts = aiotoggles.ToggleSet(all)
    off = asyncio.create_task(ts.wait_for(False))
    await asyncio.sleep(0)
    assert not off.done()  # empty set is on
    t = await ts.make_toggle(name="x")
    await asyncio.wait_for(off, 5)
    on = asyncio.create_task(ts.wait_for(True))
    await asyncio.sleep(0)
    await t.turn_to(True)  # a toggle turning on still notifies (kopf's own path)
    await asyncio.wait_for(on, 5)
    await ts.drop_toggles([t])
    assert ts.is_on()


def _pod() -> dict:
    """A pod as the API server lists it: projected token volume, managed fields, kwok's statuses."""
    container = {"name": "app", "image": "registry.invalid/app:1", "command": ["/app", "--serve"],
                 "env": [{"name": "MODE", "value": "edge"}], "imagePullPolicy": "IfNotPresent",
                 "resources": {"requests": {"cpu": "100m", "memory": "16Mi", "nvidia.com/gpu": "1"}},
                 "terminationMessagePath": "/dev/termination-log",
                 "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets", "readOnly": True}]}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-0", "namespace": "scale-000", "uid": "u1", "resourceVersion": "7",
                     "labels": {"edgeweave.io/group": "g0000", "app": "api-0"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7d", "controller": True}],
                     "managedFields": [{"manager": "kwok", "operation": "Update", "subresource": "status",
                                        "fieldsV1": {"f:status": {"f:conditions": {".": {}}}}}] * 3},
        "spec": {"nodeName": "edge-000-1", "containers": [container], "initContainers": [dict(container)],
                 "nodeSelector": {"edgeweave.io/site": "site-000"},
                 "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                     {"labelSelector": {"matchLabels": {"app": "api-0"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                 "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "edgeweave.io/site",
                                                "whenUnsatisfiable": "DoNotSchedule",
                                                "labelSelector": {"matchLabels": {"app": "api-0"}}}],
                 "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                     {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]},
        "status": {"phase": "Running", "podIP": "10.244.0.9",
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
                   "containerStatuses": [{"name": "app", "ready": True, "state": {"running": {}}}],
                   "initContainerStatuses": [{"name": "app", "ready": True}]},
    }


def test_a_slimmed_pod_indexes_as_the_whole_one_does() -> None:
    import copy
    import json

    from edgeweave.placement.inventory import pod_info

    pod = _pod()
    slim = kopf_fixes.slim_body("pods", "", copy.deepcopy(pod))
    assert pod_info(slim) == pod_info(pod)
    assert slim["metadata"]["ownerReferences"] == pod["metadata"]["ownerReferences"]  # a GpuJob pod's event
    assert "managedFields" not in slim["metadata"] and "volumes" not in slim["spec"]
    assert "containerStatuses" not in slim["status"]
    assert len(json.dumps(slim)) < len(json.dumps(pod)) * 0.6


def test_a_slimmed_node_is_the_same_device_and_other_kinds_are_left_whole() -> None:
    import copy

    from edgeweave.placement.inventory import device_from_node
    from edgeweave.sim.fleet import FleetShape, node_manifest

    node = node_manifest(FleetShape(gpu_every=1), 0, 0)
    node["metadata"]["managedFields"] = [{"manager": "kwok"}]
    node["spec"]["taints"] = [{"key": "edgeweave.io/breach", "effect": "NoSchedule", "value": "x"}]
    node["status"]["images"] = [{"names": [f"registry.invalid/i{i}:1"], "sizeBytes": i} for i in range(50)]
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    slim = kopf_fixes.slim_body("nodes", "", copy.deepcopy(node))
    assert device_from_node(slim) == device_from_node(node)
    assert "images" not in slim["status"] and "managedFields" not in slim["metadata"]
    group = {"metadata": {"name": "g", "managedFields": [{}]}, "spec": {"volumes": [1]}}
    assert kopf_fixes.slim_body("workloadgroups", "edgeweave.io", copy.deepcopy(group)) == group
    assert kopf_fixes.slim_body("pods", "metrics.k8s.io", copy.deepcopy(group)) == group


async def test_the_installed_watch_slims_pods_before_kopf_queues_them(monkeypatch) -> None:
    from types import SimpleNamespace

    async def stream(**_: object):
        yield {"type": None, "object": _pod()}
        yield "a bookmark, not an event"
        yield {"type": "MODIFIED", "object": _pod()}

    monkeypatch.setattr(kopf_fixes, "_CONTINUOUS_WATCH", stream)
    got = [e async for e in kopf_fixes._slim_continuous_watch(resource=SimpleNamespace(plural="pods", group=""))]
    assert got[1] == "a bookmark, not an event"
    assert all("volumes" not in e["object"]["spec"] for e in (got[0], got[2]))
    kopf_fixes.install()
    from kopf._cogs.clients import watching

    assert watching.continuous_watch is kopf_fixes._slim_continuous_watch


def _registry():
    import kopf

    reg = kopf.OperatorRegistry()

    @kopf.index("pods", registry=reg)
    def by_node(**_: object) -> dict:
        return {}

    @kopf.on.event("pods", labels={"edgeweave.io/gpujob": kopf.PRESENT}, registry=reg)
    def job_pod(**_: object) -> None: ...

    @kopf.on.event("pods", labels={"tier": "db"}, registry=reg)
    def db_pod(**_: object) -> None: ...

    @kopf.on.update("edgeweave.io", "v1alpha1", "workloadgroups", registry=reg)
    def group(**_: object) -> None: ...

    return reg


def _resource(plural: str, group: str = ""):
    from kopf._cogs.structs.references import Resource

    return Resource(group=group, version="v1" if not group else "v1alpha1", plural=plural, namespaced=True)


def test_only_objects_that_a_handler_may_run_for_wait_at_the_gate() -> None:
    reg = _registry()
    pods = kopf_fixes.other_handlers(reg, _resource("pods"))
    assert len(pods) == 2  # the index is not among them
    plain = {"metadata": {"labels": {"app": "x"}}}
    job = {"metadata": {"labels": {"edgeweave.io/gpujob": "j1"}}}
    db = {"metadata": {"labels": {"tier": "db"}}}
    assert not any(kopf_fixes.can_run_for(h, plain) for h in pods)
    assert any(kopf_fixes.can_run_for(h, job) for h in pods)
    assert any(kopf_fixes.can_run_for(h, db) for h in pods)
    groups = kopf_fixes.other_handlers(reg, _resource("workloadgroups", "edgeweave.io"))
    assert groups and all(kopf_fixes.can_run_for(h, plain) for h in groups)  # no label filter: always waits


async def test_an_object_no_handler_runs_for_is_indexed_without_waiting(monkeypatch) -> None:
    reg = _registry()
    calls: list[dict] = []

    async def process(**kwargs: object) -> None:
        calls.append(kwargs)

    monkeypatch.setattr(kopf_fixes, "_PROCESS", process)
    monkeypatch.setattr(kopf_fixes, "_HANDLERS", {})
    gate = aiotoggles.ToggleSet(all)
    listing = await gate.make_toggle(name="pods listing")  # the gate is closed
    mine = await gate.make_toggle(name="pod-1")
    plain = {"type": None, "object": {"metadata": {"name": "p", "labels": {}}}}
    await asyncio.wait_for(kopf_fixes._process_resource_event(
        registry=reg, resource=_resource("pods"), raw_event=plain, resource_indexed=mine, operator_indexed=gate), 5)
    assert "operator_indexed" not in calls[0]  # processed with no gate to wait on
    assert mine not in gate._toggles  # and its toggle dropped: the gate can open once the listing ends
    job = {"type": None, "object": {"metadata": {"name": "j", "labels": {"edgeweave.io/gpujob": "j1"}}}}
    await kopf_fixes._process_resource_event(registry=reg, resource=_resource("pods"), raw_event=job,
                                             resource_indexed=None, operator_indexed=gate)
    assert calls[1]["operator_indexed"] is gate  # kopf's own path: it waits at the gate
    await gate.drop_toggle(listing)
