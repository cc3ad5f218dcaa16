"""The steering patch adds the target device and takes away none of the user's placement rules."""

from __future__ import annotations

from edgeweave.actuate.steering import affinity_patch

HOST = "kubernetes.io/hostname"


def test_user_required_node_terms_are_kept_and_the_target_is_anded_into_each() -> None:
    existing = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "edgeweave.io/site", "operator": "In", "values": ["s1"]}]},
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": "api"}}}]}}
    out = affinity_patch(existing, "edge-7")
    terms = out["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for t, key in zip(terms, ("edgeweave.io/site", "tier"), strict=True):
        keys = [e["key"] for e in t["matchExpressions"]]
        assert keys == [key, HOST] and t["matchExpressions"][-1]["values"] == ["edge-7"]
    assert out["podAntiAffinity"] == existing["podAntiAffinity"]  # the scheduler keeps enforcing it


def test_an_earlier_steer_is_replaced_not_anded() -> None:
    first = affinity_patch(None, "edge-1")
    again = affinity_patch(first, "edge-2")
    (term,) = again["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": HOST, "operator": "In", "values": ["edge-2"]}]


def test_a_user_host_list_stays_so_a_target_outside_it_cannot_schedule() -> None:
    existing = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": HOST, "operator": "In", "values": ["edge-1", "edge-2"]}]}]}}}
    out = affinity_patch(existing, "edge-3")
    (term,) = out["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == ["edge-1", "edge-2"]
