from edgeweave.api.edgesite import FlowPolicy, SelectorStrategy
from edgeweave.flows.model import FlowClass
from edgeweave.flows.selector import UplinkState, select_uplink

M, E = FlowClass.Mouse, FlowClass.Elephant


def ups(**over: dict) -> list[UplinkState]:
    base = {"mpls": dict(capacity_bps=10e6, latency_ms=2), "inet": dict(capacity_bps=40e6, latency_ms=10),
            "lte": dict(capacity_bps=30e6, latency_ms=30)}
    return [UplinkState(name=n, healthy=over.get(n, {}).get("healthy", True),
                        **{**v, **{k: x for k, x in over.get(n, {}).items() if k != "healthy"}})
            for n, v in base.items()]


def test_mice_take_lowest_latency_unless_congested() -> None:
    p = FlowPolicy()
    assert select_uplink(M, 1, ups(), p) == "mpls"
    assert select_uplink(M, 1, ups(mpls={"load_bps": 9e6}), p) == "inet"
    assert select_uplink(M, 1, ups(mpls={"healthy": False}), p) == "inet"
    assert select_uplink(M, 1, ups(), FlowPolicy(mice_uplinks=["lte"])) == "lte"


def test_elephants_avoid_mice_link_and_spread() -> None:
    p = FlowPolicy()
    assert select_uplink(E, 0, ups(), p) == "inet"
    assert select_uplink(E, 0, ups(inet={"elephants": 1}), p) == "lte"
    # a much bigger link still does not take every elephant
    big = ups(inet={"capacity_bps": 1e9, "elephants": 3})
    assert select_uplink(E, 0, big, p) == "lte"
    assert select_uplink(E, 0, ups(inet={"healthy": False}, lte={"healthy": False}), p) == "mpls"


def test_no_healthy_uplink_means_default_route() -> None:
    down = {"healthy": False}
    assert select_uplink(E, 0, ups(mpls=down, inet=down, lte=down), FlowPolicy()) is None


def test_hash_strategy_ignores_class() -> None:
    p = FlowPolicy(strategy=SelectorStrategy.Hash)
    picks = {select_uplink(c, h, ups(), p) for h in range(6) for c in (M, E)}
    assert picks == {"mpls", "inet", "lte"}
