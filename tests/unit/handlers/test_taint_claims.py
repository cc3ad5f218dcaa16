"""A group's taint claims and its deletion are serialised: once the delete handler closed a group, no round
of it claims again, and the release covers what this process claimed even before the node index saw it.
Across replicas: the release reads the live nodes, and a replica that claims looks at the group right after,
taking the claim back if the group is being deleted (or gone, or recreated)."""

import logging

from edgeweave.actuate.actuator import Outcome, Result
from edgeweave.handlers import wg_round
from edgeweave.handlers.state import OperatorState, TaintClaims, make_runtime


def test_a_closed_group_stays_closed_and_hands_over_what_it_claimed() -> None:
    claims = TaintClaims()
    claims.record("ns/pay", frozenset({"edge-1", "edge-2"}))
    assert not claims.closed("uid-1")
    with claims.lock:
        held = claims.close("uid-1", "ns/pay")
    assert held == {"edge-1", "edge-2"}
    assert claims.closed("uid-1")
    # A group of the same name created again is a new object (new uid): it may claim.
    assert not claims.closed("uid-2")
    with claims.lock:
        assert claims.close("uid-2", "ns/pay") == set()


def test_closing_without_a_uid_still_returns_the_claims() -> None:
    claims = TaintClaims()
    claims.record("ns/a", frozenset({"d"}))
    with claims.lock:
        assert claims.close("", "ns/a") == {"d"}
    assert not claims.closed("")


def test_the_closed_set_is_bounded_and_forgets_the_oldest_first() -> None:
    claims = TaintClaims()
    for i in range(TaintClaims.MAX_GONE + 10):
        with claims.lock:
            claims.close(f"uid-{i}", f"ns/g{i}")
    assert not claims.closed("uid-0")
    assert claims.closed(f"uid-{TaintClaims.MAX_GONE + 9}")
    assert len(claims._gone) == TaintClaims.MAX_GONE


def test_a_group_that_claims_nothing_is_not_kept() -> None:
    claims = TaintClaims()
    claims.record("ns/a", frozenset({"d"}))
    claims.record("ns/a", frozenset())
    with claims.lock:
        assert claims.close("u", "ns/a") == set()


# -- across replicas: claim, then look; release from the live nodes ----------------------------------

class Nodes:
    """The owners annotation of each node, as the API server holds it (what Actuator.claim_taint edits)."""

    def __init__(self) -> None:
        self.owners: dict[str, set[str]] = {}
        self.list_fails = False

    def claim_taint(self, node: str, owner: str, present: bool, *, message: str = "") -> Result:
        s = self.owners.setdefault(node, set())
        (s.add if present else s.discard)(owner)
        return Result(Outcome.Done)

    def nodes_claimed_by(self, owner: str) -> set[str]:
        if self.list_fails:
            raise OSError("connection refused")
        return {n for n, s in self.owners.items() if owner in s}

    def release_taints(self, owner: str, nodes) -> int:
        for n in nodes:
            self.claim_taint(n, owner, False)
        return 0


def controller(monkeypatch, group: dict | None) -> tuple[wg_round.GroupController, Nodes]:
    rt = make_runtime(OperatorState(), api_client=None)
    nodes = Nodes()
    rt.actuator = nodes  # type: ignore[assignment]
    monkeypatch.setattr(wg_round.kube, "read_custom", lambda plural, ns, name: group)
    ctl = wg_round.GroupController("ns", "pay", rt, logging.getLogger("test"))
    ctl.claimed = frozenset()
    return ctl, nodes


def test_a_claim_made_while_the_group_is_being_deleted_elsewhere_is_taken_back(monkeypatch) -> None:
    # This replica's view is behind: its body shows no deletion, but the API server has marked the group
    # (another replica's delete handler may already have read the nodes and released).
    ctl, nodes = controller(monkeypatch, {"metadata": {"uid": "u1", "deletionTimestamp": "2026-12-01T00:00:00Z"}})
    ctl._act_taints((frozenset({"edge-1"}), frozenset()), None, uid="u1")
    assert nodes.owners["edge-1"] == set() and ctl.claimed == frozenset()


def test_a_claim_for_a_group_that_is_gone_or_was_recreated_is_taken_back(monkeypatch) -> None:
    for group in (None, {"metadata": {"uid": "u2"}}):
        ctl, nodes = controller(monkeypatch, group)
        ctl._act_taints((frozenset({"edge-1"}), frozenset()), None, uid="u1")
        assert nodes.owners["edge-1"] == set(), group


def test_a_live_groups_claim_stays(monkeypatch) -> None:
    ctl, nodes = controller(monkeypatch, {"metadata": {"uid": "u1"}})
    ctl._act_taints((frozenset({"edge-1"}), frozenset()), None, uid="u1")
    assert nodes.owners["edge-1"] == {"ns/pay"} and ctl.claimed == frozenset({"edge-1"})


def test_the_release_reads_the_live_nodes_not_the_index(monkeypatch) -> None:
    ctl, nodes = controller(monkeypatch, {"metadata": {"uid": "u1"}})
    nodes.owners = {"edge-7": {"ns/pay", "other/g"}}  # claimed by another replica; no index, no record here
    assert ctl.release_all_taints([], uid="u1") == 0
    assert nodes.owners["edge-7"] == {"other/g"}
    assert ctl.rt.taints.closed("u1")


def test_an_unreadable_node_list_is_retried(monkeypatch) -> None:
    ctl, nodes = controller(monkeypatch, {"metadata": {"uid": "u1"}})
    nodes.owners = {"edge-7": {"ns/pay"}}
    nodes.list_fails = True
    assert ctl.release_all_taints([], uid="u1") > 0  # the delete handler raises TemporaryError: kopf retries
    nodes.list_fails = False
    assert ctl.release_all_taints([], uid="u1") == 0 and nodes.owners["edge-7"] == set()
