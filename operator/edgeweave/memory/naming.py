"""Region identity: a workload's region is named by its namespace, its pod's UID and its own name.

The node agent keys regions by `namespace/pod-uid/name`, so two namespaces (or two pods of one
Deployment) never collide; the baseline store keys them by `namespace.name`, which a replacement
pod (new UID) shares with the pod it replaces. Namespaces are DNS-1123 labels (no dots), so the
store name splits back unambiguously.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NS = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_UID = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@dataclass(frozen=True)
class RegionId:
    namespace: str
    pod_uid: str
    name: str

    def __post_init__(self) -> None:
        if not _NS.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a DNS-1123 label")
        if not _UID.fullmatch(self.pod_uid):
            raise ValueError(f"pod UID {self.pod_uid!r} is not a UID")
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"region name {self.name!r}: letters, digits, '-' and '_', at most 128")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod_uid}/{self.name}"

    @property
    def store_name(self) -> str:
        return f"{self.namespace}.{self.name}"

    @classmethod
    def parse(cls, key: str) -> RegionId:
        parts = key.split("/")
        if len(parts) != 3:
            raise ValueError(f"region {key!r} is not namespace/pod-uid/name")
        return cls(*parts)


def pod_in_cgroup(pod_uid: str, cgroup_text: str) -> bool:
    """Whether a /proc/<pid>/cgroup text puts the process inside the pod's cgroup.

    The kubelet names pod cgroups `pod<uid>` (cgroupfs driver) or `...-pod<uid with _>.slice`
    (systemd driver); both forms are accepted, on any hierarchy line.
    """
    forms = {f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}"}
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        for comp in path.split("/"):
            comp = comp.removesuffix(".slice")
            if comp in forms or any(comp.endswith("-" + f) for f in forms):
                return True
    return False
