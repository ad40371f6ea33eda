"""The keeper of call timeouts, on Trio's mock clock."""

from __future__ import annotations

import trio
import trio.testing

from trizmq._deadlines import Deadlines


async def expiring(deadlines: Deadlines, keys_and_seconds: list[tuple[str, float]]) -> list[str]:
    """Add each key, run the keeper until all are due, return them in expiry order."""
    expired: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        for key, seconds in keys_and_seconds:
            deadlines.add(key, seconds, lambda key=key: expired.append(key))
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    return expired


async def test_deadlines_expire_in_the_order_they_pass(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expired = await expiring(Deadlines(), [("slow", 30.0), ("fast", 1.0), ("middle", 5.0)])
    assert expired == ["fast", "middle", "slow"]


async def test_a_deadline_expires_on_time(autojump_clock: trio.testing.MockClock) -> None:
    deadlines = Deadlines()
    at: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        await trio.sleep(1)
        start = trio.current_time()
        deadlines.add("k", 60.0, lambda: at.append(trio.current_time() - start))
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert at == [60.0]


async def test_a_shorter_timeout_added_later_wakes_the_keeper_earlier(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = Deadlines()
    at: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        deadlines.add("long", 60.0, lambda: at.setdefault("long", trio.current_time()))
        await trio.sleep(1)
        deadlines.add("short", 2.0, lambda: at.setdefault("short", trio.current_time()))
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert at["short"] - at["long"] == -57.0


async def test_a_discarded_deadline_never_expires(autojump_clock: trio.testing.MockClock) -> None:
    deadlines = Deadlines()
    expired: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deadlines.run)
        deadlines.add("answered", 1.0, lambda: expired.append("answered"))
        deadlines.add("lost", 1.0, lambda: expired.append("lost"))
        deadlines.discard("answered", 1.0)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert expired == ["lost"]
