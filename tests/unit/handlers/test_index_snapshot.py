"""Index reads from worker threads see one consistent view (handlers/indexes.py `_snapshot`).

kopf's own Index is used as kopf uses it: its event loop replaces one whole object at a time (here: pods
moving between devices) while a thread reads, as a group round does."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from kopf._core.engines.indexing import Index

from edgeweave.handlers import indexes

PODS = 200
DEVICES = 40


@pytest.fixture
def churning_index():
    """An index on a running loop in its own thread, with every pod moving to another device all the time."""
    index: Index = Index()
    for i in range(PODS):
        index._replace(("ns", f"p{i}", f"u{i}"), {f"d{i % DEVICES}": f"p{i}"})
    loop = asyncio.new_event_loop()
    stop = threading.Event()
    moves = [0]

    async def churn() -> None:
        step = 0
        while not stop.is_set():
            for i in range(PODS):  # one object per replace, as kopf applies one watch event
                index._replace(("ns", f"p{i}", f"u{i}"), {f"d{(i + step) % DEVICES}": f"p{i}"})
                moves[0] += 1
                if i % 20 == 0:
                    await asyncio.sleep(0)  # let other callbacks (the snapshot reads) run between updates
            step += 1

    thread = threading.Thread(target=lambda: loop.run_until_complete(churn()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    indexes.bind_loop(loop)
    try:
        yield index, moves
    finally:
        indexes.bind_loop(None)
        stop.set()
        thread.join(10)
        loop.close()


def test_reads_from_a_thread_are_consistent_while_the_loop_changes_the_index(churning_index) -> None:
    index, moves = churning_index
    before = moves[0]
    for _ in range(200):
        view = indexes.pods_on_nodes(index)
        placed = [p for pods in view.values() for p in pods]
        # Every pod exactly once: never on two devices, never on none.
        assert sorted(placed) == sorted(f"p{i}" for i in range(PODS))
        one = indexes.store_of(index, "d0")  # a later view: only its own consistency can be checked
        assert len(one) == len(set(one)) and set(one) <= {f"p{i}" for i in range(PODS)}
    assert moves[0] > before, "the index did not change while it was read: the test proves nothing"


def test_without_a_bound_loop_the_read_is_direct() -> None:
    index: Index = Index()
    index._replace(("ns", "p", "u"), {"d": "p"})
    assert indexes.pods_on_nodes(index) == {"d": ["p"]}
    assert indexes.store_of(index, "missing") == []


def test_a_read_on_the_loop_itself_does_not_wait_for_the_loop() -> None:
    index: Index = Index()
    index._replace(("ns", "p", "u"), {"d": "p"})

    async def on_loop() -> dict:
        indexes.bind_loop(asyncio.get_running_loop())
        try:
            return indexes.pods_on_nodes(index)
        finally:
            indexes.bind_loop(None)

    assert asyncio.run(on_loop()) == {"d": ["p"]}
