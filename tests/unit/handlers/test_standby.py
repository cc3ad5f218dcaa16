"""Which replica is acting under kopf peering (handlers/standby.py): kopf's own rule, from the peers' status."""

from __future__ import annotations

import datetime

from edgeweave.handlers.standby import higher_live_peers

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def peer(priority: object, seen_s_ago: float, lifetime: object = 60) -> dict:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - datetime.timedelta(seconds=seen_s_ago)).isoformat()}


def test_a_live_peer_of_higher_priority_makes_this_replica_standby() -> None:
    assert higher_live_peers({"a@x": peer(10, 5), "me@y": peer(3, 1)}, 3, NOW) == ["a@x"]


def test_dead_lower_and_equal_peers_do_not() -> None:
    peers = {"dead@x": peer(10, 61), "low@x": peer(1, 1), "same@x": peer(3, 1)}
    assert higher_live_peers(peers, 3, NOW) == []


def test_garbage_in_the_status_is_ignored_not_fatal() -> None:
    peers = {"a": "nonsense", "b": {"priority": "high", "lastseen": "x"}, "c": {"priority": 9, "lastseen": None},
             "d": peer(9, 1, lifetime="soon")}
    assert higher_live_peers(peers, 0, NOW) == []
    assert higher_live_peers(None, 0, NOW) == []
