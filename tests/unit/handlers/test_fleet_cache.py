"""FleetCache: device states are rebuilt at most once per TTL, and a round that finds a rebuild under way
plans on the last states instead of waiting for it."""

from __future__ import annotations

import threading
import time

from edgeweave.handlers.context_cache import FleetCache
from edgeweave.placement.inventory import device_from_node
from edgeweave.sim.fleet import FleetShape, node_manifest


def _devices() -> list:
    return [device_from_node(node_manifest(FleetShape(), 0, i)) for i in range(2)]


def test_states_are_rebuilt_once_per_ttl_and_not_waited_for_while_rebuilding() -> None:
    cache, devices = FleetCache(), _devices()
    builds: list[float] = []
    gate = threading.Event()

    def pods() -> dict:
        builds.append(time.monotonic())
        if len(builds) == 2:
            gate.wait(5)  # the second rebuild is slow
        return {}

    first = cache.get(devices, pods, ttl=0.2)
    assert [s.name for s in first] == [d.name for d in devices] and len(builds) == 1
    assert cache.get(devices, pods, ttl=0.2) is first and len(builds) == 1  # within the TTL: no rebuild
    time.sleep(0.25)
    slow = threading.Thread(target=cache.get, args=(devices, pods, 0.2))
    slow.start()
    while len(builds) < 2:
        time.sleep(0.01)
    t0 = time.monotonic()
    assert cache.get(devices, pods, ttl=0.2) is first  # the rebuild is under way: the last states, at once
    assert time.monotonic() - t0 < 0.5 and len(builds) == 2
    gate.set()
    slow.join(5)
    assert cache.get(devices, pods, ttl=0.2) is not first and len(builds) == 2
