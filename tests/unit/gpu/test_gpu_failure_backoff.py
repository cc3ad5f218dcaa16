"""A failing GpuJob reconcile: the fault named in one line, exponential backoff (pure parts)."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from edgeweave.handlers.gpujob import backoff_delay, describe_failure


def test_backoff_doubles_from_two_seconds_to_five_minutes() -> None:
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_delay(30) == 300.0


def test_api_errors_are_named_with_the_servers_message() -> None:
    exc = ApiException(status=413, reason="Request Entity Too Large")
    exc.body = json.dumps({"kind": "Status", "message": "etcdserver: request is too large"})
    assert describe_failure(exc) == ("API server answered 413 Request Entity Too Large: "
                                     "etcdserver: request is too large")
    assert describe_failure(ValueError("x" * 1000)).startswith("ValueError: xxx")
    assert len(describe_failure(ValueError("x" * 1000))) < 320
