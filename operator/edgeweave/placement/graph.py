"""The weighted dependency graph planners reason about: who talks to whom, and how much.

Nodes are workloads (group, workload-label value); a workload may have several pods (replicas).
Edge weight is the combined traffic of both directions, bytes/s + requests/s * bytesPerRequest, so a
chatty trigger dependency and a bulky data dependency compare on one scale. Traffic between two
workloads is assumed to spread evenly over their pod pairs (what a Service does), so the traffic of
one pod pair is weight / (replicas(A) * replicas(B)); that makes replicas first-class without
enumerating pod pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..api.workloadgroup import Dependency
from .model import Edge, WorkloadState

WKey = tuple[str, str]  # (group, workload)
Placement = Mapping[str, str]  # pod key -> node


def edges_with_declared(edges: Iterable[Edge], dependencies: Iterable[Dependency], *, group: str | None = None,
                        declared_bytes_per_second: float = 1024.0) -> list[Edge]:
    """Observed edges plus declared dependencies that telemetry has not (yet) seen.

    A declared dependency with observed traffic (either direction) adds nothing: measurements win. One
    without traffic gets weight * declared_bytes_per_second bytes/s, so declared pairs are co-located
    even before the first request flows.
    """
    out = list(edges)
    seen = {(e.group, frozenset((e.source, e.target))) for e in out}
    seen_any = {frozenset((e.source, e.target)) for e in out if e.group is None}
    for d in dependencies:
        pair = frozenset((d.source, d.target))
        if (group, pair) in seen or pair in seen_any:
            continue
        seen.add((group, pair))
        out.append(Edge(source=d.source, target=d.target, bytes_per_second=d.weight * declared_bytes_per_second,
                        declared=True, group=group))
    return out


class DependencyGraph:
    """Undirected weighted graph over workloads, with their pods."""

    def __init__(self, workloads: Iterable[WorkloadState], edges: Iterable[Edge], *,
                 bytes_per_request: float = 2048.0) -> None:
        self.bytes_per_request = bytes_per_request
        self.pods: dict[str, WorkloadState] = {}
        members: dict[WKey, list[str]] = {}
        groups_of: dict[str, set[str]] = {}
        for w in sorted(workloads, key=lambda w: w.key):
            self.pods[w.key] = w
            members.setdefault((w.group, w.workload), []).append(w.key)
            groups_of.setdefault(w.workload, set()).add(w.group)
        self.members: dict[WKey, tuple[str, ...]] = {k: tuple(v) for k, v in sorted(members.items())}
        self.wkey_of: dict[str, WKey] = {w.key: (w.group, w.workload) for w in self.pods.values()}
        adj: dict[WKey, dict[WKey, float]] = {}
        for e in edges:
            weight = e.weight(bytes_per_request)
            if e.source == e.target or weight <= 0:
                continue
            if e.group is not None:
                groups: Iterable[str] = (e.group,)
            else:
                groups = groups_of.get(e.source, set()) & groups_of.get(e.target, set())
            for g in groups:
                a, b = (g, e.source), (g, e.target)
                if a not in self.members or b not in self.members:
                    continue  # no pod in this snapshot: nothing to place
                adj.setdefault(a, {})[b] = adj.get(a, {}).get(b, 0.0) + weight
                adj.setdefault(b, {})[a] = adj.get(b, {}).get(a, 0.0) + weight
        self.adj = {k: dict(sorted(v.items())) for k, v in sorted(adj.items())}
        # per workload: (partner, traffic per pod pair), what pod_affinity sums on every call
        self._per_pair: dict[WKey, tuple[tuple[WKey, float], ...]] = {
            k: tuple((b, w / (len(self.members[k]) * len(self.members[b]))) for b, w in nb.items())
            for k, nb in self.adj.items()}

    # --- structure ---------------------------------------------------------------------------------

    def neighbours(self, k: WKey) -> Mapping[WKey, float]:
        return self.adj.get(k, {})

    def weight(self, a: WKey, b: WKey) -> float:
        return self.adj.get(a, {}).get(b, 0.0)

    def pairs(self) -> Iterable[tuple[WKey, WKey, float]]:
        """Each undirected pair once."""
        for a, nb in self.adj.items():
            for b, w in nb.items():
                if a < b:
                    yield a, b, w

    def components(self) -> list[tuple[WKey, ...]]:
        """Connected groups of co-dependent workloads (two or more), each sorted, in a stable order."""
        seen: set[WKey] = set()
        out: list[tuple[WKey, ...]] = []
        for start in self.adj:
            if start in seen:
                continue
            seen.add(start)
            stack, comp = [start], []
            while stack:
                k = stack.pop()
                comp.append(k)
                for n in self.adj[k]:
                    if n not in seen:
                        seen.add(n)
                        stack.append(n)
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))
        return sorted(out)

    def total_weight(self, k: WKey) -> float:
        return sum(self.adj.get(k, {}).values())

    # --- traffic under a placement -----------------------------------------------------------------

    def placement(self) -> dict[str, str]:
        """Where the pods are in the snapshot."""
        return {p: w.node for p, w in self.pods.items()}

    def counts(self, placement: Placement | None = None) -> dict[WKey, dict[str, int]]:
        """Pods of each workload per node."""
        placement = placement if placement is not None else self.placement()
        out: dict[WKey, dict[str, int]] = {}
        for k, pods in self.members.items():
            c: dict[str, int] = {}
            for p in pods:
                n = placement[p]
                c[n] = c.get(n, 0) + 1
            out[k] = c
        return out

    def pair_cross_traffic(self, a: WKey, b: WKey, counts: Mapping[WKey, Mapping[str, int]]) -> float:
        """Traffic between a and b that crosses devices (bytes/s)."""
        w = self.weight(a, b)
        if not w:
            return 0.0
        ca, cb = counts[a], counts[b]
        if len(ca) > len(cb):
            ca, cb = cb, ca
        local = sum(n * cb.get(node, 0) for node, n in ca.items())
        return w * (1.0 - local / (len(self.members[a]) * len(self.members[b])))

    def cross_device_traffic(self, placement: Placement | None = None) -> float:
        """Total traffic (bytes/s) between pods on different devices."""
        counts = self.counts(placement)
        return sum(self.pair_cross_traffic(a, b, counts) for a, b, _ in self.pairs())

    def pod_affinity(self, pod: str, counts: Mapping[WKey, Mapping[str, int]]) -> dict[str, float]:
        """Traffic (bytes/s) this pod exchanges with the pods on each node."""
        out: dict[str, float] = {}
        get = out.get
        for b, u in self._per_pair.get(self.wkey_of[pod], ()):
            for node, n in counts[b].items():
                out[node] = get(node, 0.0) + u * n
        return out

    def per_pair(self, pod: str) -> tuple[tuple[WKey, float], ...]:
        """(partner workload, traffic per pod pair) of this pod's workload, what pod_affinity sums."""
        return self._per_pair.get(self.wkey_of[pod], ())

    def pod_traffic(self, pod: str) -> float:
        """All traffic (bytes/s) of one pod, local or not."""
        k = self.wkey_of[pod]
        return self.total_weight(k) / len(self.members[k])

    @staticmethod
    def label(k: WKey) -> str:
        return k[1]


def cross_device_traffic(workloads: Iterable[WorkloadState], edges: Iterable[Edge], *,
                         bytes_per_request: float = 2048.0, placement: Placement | None = None) -> float:
    """Convenience: cross-device traffic (bytes/s) of workloads placed as in the snapshot or `placement`."""
    return DependencyGraph(workloads, edges, bytes_per_request=bytes_per_request).cross_device_traffic(placement)


def human_rate(bps: float) -> str:
    """1234567 -> '1.2 MB/s' (decimal units, as network people read them)."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if abs(bps) >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} B/s"
