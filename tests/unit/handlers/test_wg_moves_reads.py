"""One sweep's reads (handlers/wg_moves.py `_SweepReads`): a namespace's pods are listed once per sweep,
and several moves' pod reads in one namespace are answered from that one list."""

from __future__ import annotations

from types import SimpleNamespace

from kubernetes import client

from edgeweave.handlers.wg_moves import _SweepReads


class RecordingCore:
    """The two CoreV1Api reads a sweep makes, answering from a fixed set of real V1Pod objects and
    counting the requests."""

    def __init__(self, names: list[str]) -> None:
        self.pods = [client.V1Pod(metadata=client.V1ObjectMeta(name=n, namespace="ns", uid=f"u-{n}")) for n in names]
        self.requests: list[tuple[str, str]] = []

    def list_namespaced_pod(self, namespace: str, **kwargs: object) -> SimpleNamespace:
        self.requests.append(("list", namespace))
        return SimpleNamespace(items=list(self.pods))

    def read_namespaced_pod(self, name: str, namespace: str, **kwargs: object) -> client.V1Pod:
        self.requests.append(("read", name))
        return next(p for p in self.pods if p.metadata.name == name)


def test_batched_namespace_reads_come_from_one_list() -> None:
    core = RecordingCore(["a", "b", "c"])
    reads = _SweepReads(core, frozenset({"ns"}))
    assert [reads.read_namespaced_pod(n, "ns").metadata.uid for n in ("a", "b", "c")] == ["u-a", "u-b", "u-c"]
    assert reads.read_namespaced_pod("gone", "ns") is None  # read as a 404
    assert len(reads.list_namespaced_pod("ns").items) == 3  # the same list serves the replacement checks
    assert core.requests == [("list", "ns")]


def test_other_namespaces_and_filtered_lists_go_to_the_server() -> None:
    core = RecordingCore(["a"])
    reads = _SweepReads(core)
    reads.read_namespaced_pod("a", "ns")
    reads.list_namespaced_pod("ns", label_selector="x=y")
    reads.list_namespaced_pod("ns")
    reads.list_namespaced_pod("ns")
    assert core.requests == [("read", "a"), ("list", "ns"), ("list", "ns")]
