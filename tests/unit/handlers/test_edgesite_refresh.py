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
