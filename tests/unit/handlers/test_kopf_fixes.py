"""kopf's index pre-population gate: N listed objects must not cost N^2 wake-ups (handlers/kopf_fixes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kopf._cogs.aiokits import aiotoggles

from edgeweave.handlers import kopf_fixes

N = 400


async def listing(methods: dict[str, Callable], n: int = N) -> tuple[int, int]:
    """kopf's start-up pattern: one toggle per resource kind until its listing ends; each listed object
    adds a toggle, drops it once indexed, then waits for the whole set. Returns (is_on checks, waiters
    released)."""
    ts = aiotoggles.ToggleSet(all)
    calls = 0
    real = ts.is_on

    def counting() -> bool:
        nonlocal calls
        calls += 1
        return real()

    ts.is_on = counting  # type: ignore[method-assign]
    make, drop = methods["make_toggle"], methods["drop_toggle"]
    kind = await make(ts, name="pods listed")
    waiters = []
    for i in range(n):
        t = await make(ts, name=f"pod-{i}")
        await drop(ts, t)
        waiters.append(asyncio.create_task(ts.wait_for(True)))
        await asyncio.sleep(0)  # the waiter starts waiting, as kopf's worker does
    assert not any(w.done() for w in waiters)  # the gate holds while a kind is still listing
    await drop(ts, kind)
    await asyncio.wait_for(asyncio.gather(*waiters), 10)
    return calls, sum(1 for w in waiters if w.done())


async def test_kopfs_own_gate_wakes_every_waiter_on_every_change() -> None:
    calls, released = await listing(kopf_fixes.ORIGINAL)
    assert released == N
    assert calls > N * N // 2  # the quadratic cost the fix removes


async def test_the_fixed_gate_wakes_waiters_only_when_it_flips() -> None:
    fixed = {"make_toggle": kopf_fixes._make_toggle, "drop_toggle": kopf_fixes._drop_toggle}
    calls, released = await listing(fixed)
    assert released == N  # every object goes on to its handlers once all kinds are listed
    assert calls < 10 * N


async def test_a_waiter_for_off_is_woken_when_a_toggle_turns_the_set_off() -> None:
    kopf_fixes.install()
    ts = aiotoggles.ToggleSet(all)
    off = asyncio.create_task(ts.wait_for(False))
    await asyncio.sleep(0)
    assert not off.done()  # empty set is on
    t = await ts.make_toggle(name="x")
    await asyncio.wait_for(off, 5)
    on = asyncio.create_task(ts.wait_for(True))
    await asyncio.sleep(0)
    await t.turn_to(True)  # a toggle turning on still notifies (kopf's own path)
    await asyncio.wait_for(on, 5)
    await ts.drop_toggles([t])
    assert ts.is_on()
