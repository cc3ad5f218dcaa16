"""Process state: the operator's settings (set once at start from the command line) and the runtime every
handler shares, kept in kopf's `memo` (main puts one `Runtime` there; handlers take it from `memo.runtime`)."""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..actuate.actuator import Actuator
from ..actuate.ratelimit import SlidingWindow
from ..actuate.steering import STEERING, SteeringTable
from .context_cache import BreachRegistry, ContextCache, FleetCache
from .site_view import RecentWrites, SiteViewCache


@dataclass
class OperatorState:
    dry_run: bool = False
    namespaces: list[str] = field(default_factory=list)
    prometheus_url: str | None = None
    ready: bool = False
    # Namespaces whose groups may taint shared devices (globs; None: every namespace). Set by the
    # cluster-scoped policy; a group elsewhere records its breaches but never taints.
    taint_namespaces: list[str] | None = None


STATE = OperatorState()


class TaintClaims:
    """Serialises a group's taint claims with its deletion. A round runs in a worker thread and may still be
    claiming when kopf calls the delete handler; without this, a claim landing after the release outlives
    the group (nobody owns it any more, so nobody ever lifts the taint)."""

    # A round still running for a group deleted this many deletions ago cannot exist; the bound keeps a
    # long-lived operator's memory flat however many groups come and go.
    MAX_GONE = 4096

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._gone: dict[str, None] = {}      # uids of groups whose claims were released for good (ordered)
        self._held: dict[str, set[str]] = {}  # group key -> devices claimed by this process (non-empty only)

    def closed(self, uid: str) -> bool:
        return uid in self._gone

    def close(self, uid: str, key: str) -> set[str]:
        """Under `lock`: no claim for `uid` from now on; returns the devices this process claimed for `key`
        (the node index may not have seen the latest claim yet)."""
        if uid:
            self._gone[uid] = None
            while len(self._gone) > self.MAX_GONE:
                del self._gone[next(iter(self._gone))]
        return self._held.pop(key, set())

    def record(self, key: str, devices: frozenset[str]) -> None:
        if devices:
            self._held[key] = set(devices)
        else:
            self._held.pop(key, None)


@dataclass
class Runtime:
    """Everything handlers share across calls. The steering table is the admission webhook's too."""

    settings: OperatorState
    actuator: Actuator
    context: ContextCache = field(default_factory=ContextCache)
    breaches: BreachRegistry = field(default_factory=BreachRegistry)
    steering: SteeringTable = field(default_factory=lambda: STEERING)
    fleet: FleetCache = field(default_factory=FleetCache)
    sites: SiteViewCache = field(default_factory=SiteViewCache)
    site_writes: RecentWrites = field(default_factory=RecentWrites)  # EdgeSite status sent, not yet seen
    taints: TaintClaims = field(default_factory=TaintClaims)

    def may_taint(self, namespace: str) -> bool:
        allowed = self.settings.taint_namespaces
        return allowed is None or any(fnmatch.fnmatchcase(namespace, p) for p in allowed)


def make_runtime(settings: OperatorState, api_client: Any) -> Runtime:
    return Runtime(settings=settings, actuator=Actuator(api_client, dry_run=settings.dry_run, limiter=SlidingWindow(),
                                                        steering=STEERING))


_DEFAULT: Runtime | None = None


def install(rt: Runtime) -> None:
    """The runtime main puts in kopf's memo, also for the few callers that have no memo at hand."""
    global _DEFAULT
    _DEFAULT = rt


def runtime(memo: Mapping[str, Any] | None) -> Runtime:
    """The Runtime in kopf's memo; outside an operator started by main (tests, tools) one made on demand."""
    global _DEFAULT
    if memo is not None and "runtime" in memo:
        return memo["runtime"]
    if _DEFAULT is None:
        from . import kube

        _DEFAULT = make_runtime(STATE, kube.api_client())
    return _DEFAULT


def in_scope(namespace: str | None = None, memo: Mapping[str, Any] | None = None, **_: object) -> bool:
    """kopf `when=` filter for namespaced kinds. The operator always runs cluster-wide (nodes and EdgeSites
    are cluster-scoped, and kopf does not serve those in namespaced mode); --namespace globs only narrow
    which WorkloadGroups and GpuJobs it acts on."""
    settings = memo["runtime"].settings if memo is not None and "runtime" in memo else STATE
    if not settings.namespaces or namespace is None:
        return True
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in settings.namespaces)
