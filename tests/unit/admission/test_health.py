"""Backoff and the wedged-reconcile watchdog behind /readyz."""

from __future__ import annotations

import time

from edgeweave.api.conditions import MAX_CONDITION_MESSAGE, set_condition
from edgeweave.handlers.health import Backoff, Watchdog, describe_error


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(base_s=1, cap_s=30)
    delays = [b.failed("E")[0] for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert b.failed("E")[1] is False and b.failed("other")[1] is True
    assert b.succeeded() is True and b.failures == 0 and b.succeeded() is False


def test_watchdog_names_a_round_that_runs_too_long() -> None:
    w = Watchdog(wedged_after_s=0.05)
    with w.round("WorkloadGroup", "ns/a"):
        assert w.wedged() == []
        time.sleep(0.1)
        (kind, key, age), = w.wedged()
        assert (kind, key) == ("WorkloadGroup", "ns/a") and age >= 0.05
    assert w.wedged() == []


def test_messages_are_bounded() -> None:
    cond, = set_condition([], "Ready", False, "X", "m" * 300_000)
    assert len(cond["message"]) == MAX_CONDITION_MESSAGE
    assert len(describe_error(ValueError("v" * 10_000))) < MAX_CONDITION_MESSAGE


def test_per_object_backoffs() -> None:
    from edgeweave.handlers.health import Backoffs

    b = Backoffs()
    key = ("ns", "job")
    assert b.due(key, now=0)
    _, delay, new = b.failed(key, RuntimeError("413 Request Entity Too Large"), now=100)
    assert (delay, new) == (1, True) and not b.due(key, now=100.5) and b.due(key, now=101)
    _, delay, new = b.failed(key, RuntimeError("413 Request Entity Too Large"), now=101)
    assert (delay, new) == (2, False) and not b.due(key, now=102.5)
    assert b.succeeded(key) and b.due(key, now=102.5) and not b.succeeded(key)
