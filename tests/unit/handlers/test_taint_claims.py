"""A group's taint claims and its deletion are serialised: once the delete handler closed a group, no round
of it claims again, and the release covers what this process claimed even before the node index saw it."""

from edgeweave.handlers.state import TaintClaims


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
