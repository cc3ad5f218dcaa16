"""Process-wide operator settings, set once at start from the command line."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


@dataclass
class OperatorState:
    dry_run: bool = False
    namespaces: list[str] = field(default_factory=list)
    prometheus_url: str | None = None
    ready: bool = False


STATE = OperatorState()


def in_scope(namespace: str | None = None, **_: object) -> bool:
    """kopf `when=` filter for namespaced kinds. The operator always runs cluster-wide (nodes and EdgeSites
    are cluster-scoped, and kopf does not serve those in namespaced mode); --namespace globs only narrow
    which WorkloadGroups and GpuJobs it acts on."""
    if not STATE.namespaces or namespace is None:
        return True
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in STATE.namespaces)
