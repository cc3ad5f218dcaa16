"""Both pod indexes hold one PodInfo per pod version, not one each."""

from __future__ import annotations

from edgeweave.handlers.indexes import _Recent


def body(rv: str, node: str = "n1") -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": rv, "labels": {"a": "b"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running"}}


def test_same_version_shares_one_value_and_a_new_version_is_read_afresh() -> None:
    recent = _Recent(size=2)
    first = recent.info(body("1"))
    assert recent.info(body("1")) is first
    moved = recent.info(body("2", node="n2"))
    assert moved is not first and moved.node == "n2" and first.node == "n1"
    recent.info(body("3"))
    recent.info(body("4"))  # evicts "1" and "2": bounded
    assert recent.info(body("1")) is not first
