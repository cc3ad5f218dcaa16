"""The one nodeSelector / required node affinity predicate every planner uses (module nodematch), and what
remediation does with it: a target the pod's affinity excludes is never picked; none allowed means a
Skipped entry naming the rule."""

from __future__ import annotations

from edgeweave.api.context import SourceKind
from edgeweave.api.workloadgroup import Requirement
from edgeweave.placement.context import ContextValue
from edgeweave.placement.model import DeviceState, WorkloadState
from edgeweave.placement.nodematch import (
    NodeTerm,
    expression_holds,
    node_allows,
    node_refusal,
    parse_node_terms,
)
from edgeweave.placement.remediate import margin_scorer, plan_remediation, requirements_checker
from edgeweave.placement.spread import pod_constraints

GiB = 1024.0**3
BATTERY = Requirement.model_validate({"element": "BatteryPercent", "operator": "Gte", "value": "40"})


def affinity(*terms: list[dict], fields: list[dict] | None = None) -> dict:
    out = [{"matchExpressions": t} for t in terms]
    if fields is not None:
        out.append({"matchFields": fields})
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": out}}}}


def test_each_operator_as_the_scheduler_reads_it() -> None:
    labels = {"pool": "a", "gpus": "4", "odd": "x"}
    assert expression_holds(labels, "pool", "In", ("a", "b"))
    assert not expression_holds(labels, "pool", "In", ("b",))
    assert not expression_holds(labels, "zone", "In", ("a",))
    assert expression_holds(labels, "pool", "NotIn", ("b",))
    assert not expression_holds(labels, "pool", "NotIn", ("a",))
    assert expression_holds(labels, "zone", "NotIn", ("a",))  # absent label: NotIn holds
    assert expression_holds(labels, "pool", "Exists", ())
    assert not expression_holds(labels, "zone", "Exists", ())
    assert expression_holds(labels, "zone", "DoesNotExist", ())
    assert not expression_holds(labels, "pool", "DoesNotExist", ())
    assert expression_holds(labels, "gpus", "Gt", ("3",))
    assert not expression_holds(labels, "gpus", "Gt", ("4",))
    assert expression_holds(labels, "gpus", "Lt", ("5",))
    assert not expression_holds(labels, "gpus", "Lt", ("4",))
    assert not expression_holds(labels, "odd", "Gt", ("1",))  # not an integer: no match
    assert not expression_holds(labels, "zone", "Lt", ("9",))  # absent: no match
    assert not expression_holds(labels, "gpus", "Gt", ("1", "2"))  # Gt takes exactly one value
    assert not expression_holds(labels, "pool", "Near", ("a",))


def test_terms_are_ored_and_expressions_anded() -> None:
    spec = affinity([{"key": "pool", "operator": "In", "values": ["a"]},
                     {"key": "gpu", "operator": "Exists"}],
                    [{"key": "pool", "operator": "In", "values": ["b"]}])
    c = pod_constraints(spec)
    assert len(c.node_terms) == 2 and c.empty  # node rules are about the device, not about sharing it
    assert node_allows(c, "n1", {"pool": "a", "gpu": "t4"})
    assert not node_allows(c, "n1", {"pool": "a"})  # the first term needs both
    assert node_allows(c, "n1", {"pool": "b"})  # the second term alone
    assert not node_allows(c, "n1", {"pool": "c", "gpu": "t4"})
    why = node_refusal(c, "n1", {"pool": "c"})
    assert why == "its required node affinity needs (pool In a and gpu Exists) or (pool In b)"


def test_an_empty_term_matches_nothing_and_no_affinity_allows_everything() -> None:
    assert not NodeTerm().matches("n", {"a": "b"})
    c = pod_constraints(affinity([]))
    assert not node_allows(c, "n", {"pool": "a"})
    assert node_allows(pod_constraints({}), "n", {})
    assert parse_node_terms({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}}}) == ()


def test_match_fields_name_the_device() -> None:
    c = pod_constraints(affinity(fields=[{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]))
    assert node_allows(c, "edge-1", {}) and not node_allows(c, "edge-2", {})
    c = pod_constraints(affinity(fields=[{"key": "metadata.name", "operator": "NotIn", "values": ["edge-1"]}]))
    assert not node_allows(c, "edge-1", {}) and node_allows(c, "edge-2", {})


def test_node_selector_and_affinity_both_hold() -> None:
    spec = {"nodeSelector": {"zone": "z1"}, **affinity([{"key": "pool", "operator": "NotIn", "values": ["d"]}])}
    c = pod_constraints(spec)
    assert node_allows(c, "n", {"zone": "z1", "pool": "a"})
    assert node_refusal(c, "n", {"zone": "z2", "pool": "a"}) == "its nodeSelector needs zone=z1"
    assert not node_allows(c, "n", {"zone": "z1", "pool": "d"})


# -- remediation -------------------------------------------------------------------------------------

def _dev(name: str, pool: str, cpu_free: float = 4.0) -> DeviceState:
    return DeviceState(name=name, cpu_capacity=4.0, memory_capacity=8 * GiB, cpu_free=cpu_free,
                       memory_free=8 * GiB, labels={"pool": pool})


def _plan(devices: list[DeviceState], workloads: list[WorkloadState], battery: dict[str, float]):
    reqs = {"ns/g": [BATTERY]}
    ctxs = {n: {"BatteryPercent": ContextValue(float(v), 0.0, SourceKind.Prometheus)} for n, v in battery.items()}
    breached = {n: ["battery low"] for n, v in battery.items() if v < 40}
    return plan_remediation(devices, workloads, breached, requirements_checker(reqs, ctxs),
                            margin=margin_scorer(reqs, ctxs))


def test_remediation_skips_the_best_scored_device_the_affinity_excludes() -> None:
    # "b-best" has the most margin and the most room: the best-scored target, but the pod needs pool a.
    devices = [_dev("a-src", "a"), _dev("a-ok", "a", cpu_free=1.0), _dev("b-best", "b")]
    w = WorkloadState(key="ns/pos", workload="pos", group="ns/g", node="a-src", cpu=0.5,
                      constraints=pod_constraints(affinity([{"key": "pool", "operator": "In", "values": ["a"]}])))
    free = WorkloadState(key="ns/free", workload="free", group="ns/g", node="a-src", cpu=0.5)
    plan = _plan(devices, [w, free], {"a-src": 10, "a-ok": 60, "b-best": 100})
    to = {m.pod: m.to_node for m in plan.moves}
    assert to == {"ns/pos": "a-ok", "ns/free": "b-best"}, plan


def test_no_allowed_device_means_a_skip_naming_the_rule_and_no_move() -> None:
    devices = [_dev("a-src", "a"), _dev("b-1", "b"), _dev("b-2", "b")]
    w = WorkloadState(key="ns/pos", workload="pos", group="ns/g", node="a-src", cpu=0.5,
                      constraints=pod_constraints({"nodeSelector": {"pool": "a"}}))
    plan = _plan(devices, [w], {"a-src": 10, "b-1": 100, "b-2": 100})
    assert not plan.moves
    (skip,) = plan.skipped
    assert skip.reason == ("none of the 2 device(s) that satisfy the requirements of ns/g is allowed by the pod: "
                           "its nodeSelector needs pool=a; stays on a-src")


# -- aggregation: the same predicate -----------------------------------------------------------------

def test_aggregation_honours_required_node_affinity_too() -> None:
    """api may run only where pool NotIn (b). Its partner cannot move (not movable), so the only way to put them
    together is api onto the pool-b device: the plan must not do that (the replacement would stay Pending)."""
    from edgeweave.api.workloadgroup import AggregationPolicy
    from edgeweave.placement.aggregate import plan_aggregation
    from edgeweave.placement.model import Edge

    devices = [_dev("a1", "a", cpu_free=3.5), _dev("b1", "b", cpu_free=3.5)]
    cache = WorkloadState(key="ns/cache-0", workload="cache", group="ns/g", node="b1", cpu=0.5, movable=False)
    edges = [Edge(source="api", target="cache", bytes_per_second=5e6, group="ns/g")]
    for spec, expect in ((affinity([{"key": "pool", "operator": "NotIn", "values": ["b"]}]), []),
                         ({}, [("ns/api-0", "b1")])):
        api = WorkloadState(key="ns/api-0", workload="api", group="ns/g", node="a1", cpu=0.5,
                            constraints=pod_constraints(spec))
        for solver_work in (0, 1.0):
            plan = plan_aggregation(devices, [api, cache], edges, AggregationPolicy(), solver_work=solver_work)
            assert [(m.pod, m.to_node) for m in plan.moves] == expect, plan


def test_a_steered_replacements_own_hostname_pin_is_not_the_users_rule() -> None:
    """The steering webhook ANDs `hostname In [target]` into each of the user's terms (or adds a term of its
    own). For a pod edgeweave placed, that pin is dropped: else the next breach could never move it."""
    from edgeweave.actuate.steering import STEERED_ANNOTATION, affinity_patch
    from edgeweave.placement.inventory import pod_info

    user = affinity([{"key": "pool", "operator": "In", "values": ["a"]}])["affinity"]
    for given, allowed_elsewhere in ((user, {"pool": "a"}), (None, {"pool": "z"})):
        spec = {"affinity": affinity_patch(given, "edge-1"), "containers": []}
        steered = pod_info({"metadata": {"name": "p", "namespace": "ns", "annotations": {STEERED_ANNOTATION: "m1"}},
                            "spec": spec})
        assert node_allows(steered.constraints, "edge-2", allowed_elsewhere), steered.constraints
        assert given is None or not node_allows(steered.constraints, "edge-2", {"pool": "b"})
        # The same spec written by a user (no annotation of ours): the pin is theirs and holds.
        pinned = pod_info({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
        assert not node_allows(pinned.constraints, "edge-2", allowed_elsewhere)
        assert node_allows(pinned.constraints, "edge-1", {"pool": "a", "kubernetes.io/hostname": "edge-1"})
