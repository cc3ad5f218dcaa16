"""EdgeSite refresh is coalesced: a refresh where only observation times moved is not written."""

from __future__ import annotations

from edgeweave.api.base import parse_rfc3339, rfc3339
from edgeweave.handlers.edgesite import OBSERVED_AT_REFRESH_SECONDS, only_times_moved

NOW = parse_rfc3339("2026-01-01T00:10:00Z")


def status(value: str, at: float) -> dict:
    return {"nodeCount": 2, "context": [{"element": "BatteryPercent", "node": "n1", "value": value,
                                         "observedAt": rfc3339(at)}]}


def test_only_times_moved_is_skipped_until_they_age() -> None:
    assert only_times_moved(status("80", NOW - 10), status("80", NOW), NOW)
    assert not only_times_moved(status("80", NOW - OBSERVED_AT_REFRESH_SECONDS - 1), status("80", NOW), NOW)
    assert not only_times_moved(status("80", NOW - 10), status("20", NOW), NOW)  # a value changed
    assert not only_times_moved({**status("80", NOW - 10), "nodeCount": 1}, status("80", NOW), NOW)


def test_a_refresh_sees_what_was_sent_until_the_hold_passes() -> None:
    from edgeweave.handlers.site_view import RecentWrites

    w = RecentWrites(hold=60)
    assert w.in_flight("uid-1", now=0) == {}
    w.sent("uid-1", {"pods": 3, "nodeCount": 2}, now=0)
    assert w.in_flight("uid-1", now=10) == {"pods": 3, "nodeCount": 2}  # the watch has not shown it yet
    assert w.in_flight("uid-2", now=10) == {}  # another site (or the same name made again: a new uid)
    w.sent("uid-1", {"pods": 4}, now=20)  # news is merged over what was sent
    assert w.in_flight("uid-1", now=79) == {"pods": 4, "nodeCount": 2}
    assert w.in_flight("uid-1", now=81) == {}  # after the hold the body alone counts
