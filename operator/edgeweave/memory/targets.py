"""Which node agents pre-stage which baselines: the devices a workload would fail over to.

Pure. The operator computes this per WorkloadGroup with memory recovery on and writes it onto
each target Node as one annotation per group (`annotation_key(group)`, value `encode(...)`); the
node agent on that Node (`memory serve --prestage-node`) reads its Node's annotations and pulls
the union of the regions named there (`decode`). A target is a device other than the one the
workload runs on, in the same site, whose free capacity holds the workload's requests and where
the group's requirements hold — the devices a failover could land on. At most `per_workload`
targets per workload (most free CPU first): each pull costs store bandwidth and node memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..placement.fit import CapacityLedger
from ..placement.model import DeviceState, WorkloadState
from .naming import RegionId

ANNOTATION_PREFIX = "prestage.memory.edgeweave.io/"
PER_WORKLOAD = 2


def annotation_key(group: str) -> str:
    """One key per group (namespace/name), so groups never overwrite each other's lists; hashed to fit
    the 63-character name part of an annotation key."""
    return ANNOTATION_PREFIX + hashlib.sha256(group.encode()).hexdigest()[:20]


def store_name(namespace: str, workload: str) -> str:
    """The store name a replacement shares with the pod it replaces (`naming.RegionId.store_name`)."""
    return RegionId(namespace, "0", workload).store_name


def prestage_targets(namespace: str, workloads: Sequence[WorkloadState], devices: Sequence[DeviceState],
                     requirements_ok: Callable[[WorkloadState, DeviceState], bool] | None = None,
                     per_workload: int = PER_WORKLOAD) -> dict[str, list[str]]:
    """device name -> sorted store names its agent should pre-stage."""
    ledger = CapacityLedger(devices)
    by_name = {d.name: d for d in devices}
    out: dict[str, set[str]] = {}
    for w in sorted(workloads, key=lambda w: w.key):
        here = by_name.get(w.node)
        if here is None:
            continue
        try:
            name = store_name(namespace, w.workload)
        except ValueError:
            continue  # not a region name a workload can register: nothing to pre-stage
        fits = [d for d in devices if d.name != w.node and d.site == here.site and d.schedulable
                and ledger.fits(d.name, [w]) and (requirements_ok is None or requirements_ok(w, d))]
        fits.sort(key=lambda d: (-d.cpu_free, -d.memory_free, d.name))
        for d in fits[:per_workload]:
            out.setdefault(d.name, set()).add(name)
    return {dev: sorted(names) for dev, names in out.items()}


def encode(group: str, regions: Iterable[str]) -> str:
    return json.dumps({"group": group, "regions": sorted(regions)}, separators=(",", ":"))


def decode(annotations: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(store names to pre-stage, problems) from a Node's annotations; a bad value is reported, skipped."""
    names: set[str] = set()
    problems: list[str] = []
    for k, v in sorted(annotations.items()):
        if not k.startswith(ANNOTATION_PREFIX):
            continue
        try:
            doc = json.loads(v)
            regions = doc["regions"]
            if not isinstance(regions, list):
                raise TypeError("regions is not a list")
            for r in regions:
                ns, _, name = str(r).partition(".")
                RegionId(ns, "0", name)  # validates both parts
                names.add(str(r))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{k}: {exc}")
    return sorted(names), problems


def annotation_changes(group: str, targets: Mapping[str, Sequence[str]],
                       current: Mapping[str, Mapping[str, str]]) -> dict[str, str | None]:
    """node -> new annotation value (None: remove) for the nodes whose value must change.

    `current` is every device's annotations: a node that carries this group's key but is no longer a
    target loses it."""
    key = annotation_key(group)
    changes: dict[str, str | None] = {}
    for node, anns in current.items():
        want = encode(group, targets[node]) if targets.get(node) else None
        if anns.get(key) != want:
            changes[node] = want
    return changes
