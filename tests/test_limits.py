"""A caller gets its share of a service: its requests past its limit wait, in
order, while other callers' requests go ahead (`max_in_flight_per_caller`)."""

from __future__ import annotations

import functools
from collections import Counter

import trio
from adversary import open_adversary
from conftest import eventually, serving, unique_resolve

import trizmq

RING = trizmq.Ring.from_mapping({"compute:9601": ["node"]})


class Endpoint:
    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.most: Counter[str] = Counter()  # most handlers of one caller at once
        self.started: list[int] = []
        self.release = trio.Event()

    async def hold(self, ctx: trizmq.Context, n: int) -> int:
        self.started.append(n)
        self.running[ctx.caller] += 1
        self.most[ctx.caller] = max(self.most[ctx.caller], self.running[ctx.caller])
        try:
            await self.release.wait()
        finally:
            self.running[ctx.caller] -= 1
        return n

    async def ping(self, ctx: trizmq.Context) -> str:
        return "pong"


class Counting(Endpoint):
    def __init__(self) -> None:
        super().__init__()
        self.hits = 0

    async def hit(self, ctx: trizmq.Context) -> None:
        self.hits += 1


async def test_a_caller_at_its_limit_does_not_hold_up_another_caller() -> None:
    endpoint = Endpoint()
    resolve = unique_resolve(["node"])
    with trio.fail_after(15):
        async with (
            serving(RING, "compute", endpoint, "node", resolve, max_in_flight_per_caller=3),
            trizmq.open_client(RING, resolve=resolve, name="greedy") as greedy,
            trizmq.open_client(RING, resolve=resolve, name="other") as other,
            trio.open_nursery() as nursery,
        ):
            for n in range(50):
                nursery.start_soon(functools.partial(greedy.cast, "compute", "hold", n=n))
            await eventually(lambda: len(endpoint.started) >= 3)
            assert await other.call("compute", "ping") == "pong"
            await trio.sleep(0.2)  # room for more of greedy's, were they let in
            assert len(endpoint.started) == 3
            endpoint.release.set()
            await eventually(lambda: len(endpoint.started) >= 50)
    assert endpoint.most[greedy.identity] == 3


async def test_requests_past_a_callers_limit_run_in_the_order_sent() -> None:
    endpoint = Endpoint()
    endpoint.release.set()  # each handler waits once, then returns
    resolve = unique_resolve(["node"])
    with trio.fail_after(15):
        async with (
            serving(RING, "compute", endpoint, "node", resolve, max_in_flight_per_caller=1),
            trizmq.open_client(RING, resolve=resolve) as client,
        ):
            await client.cast_many("compute", "hold", [{"n": n} for n in range(300)])
            assert await client.call("compute", "ping") == "pong"
            await eventually(lambda: len(endpoint.started) >= 300)
    assert endpoint.started == list(range(300))


async def test_requests_waiting_for_their_turn_are_refused_when_the_service_stops() -> None:
    endpoint = Endpoint()
    resolve = unique_resolve(["node"])
    outcomes: list[object] = []

    async def call(client: trizmq.Client, n: int) -> None:
        try:
            outcomes.append(await client.call("compute", "hold", n=n))
        except trizmq.ServiceShutdown as exc:
            outcomes.append(type(exc))

    with trio.fail_after(15):
        async with (
            serving(
                RING,
                "compute",
                endpoint,
                "node",
                resolve,
                max_in_flight_per_caller=2,
                grace_period=0.2,
            ) as service,
            trizmq.open_client(RING, resolve=resolve) as client,
            trio.open_nursery() as nursery,
        ):
            for n in range(10):
                nursery.start_soon(call, client, n)
            await eventually(lambda: len(endpoint.started) >= 2)
            await trio.sleep(0.1)  # the other eight are in the service, waiting
            service.cancel()
    assert outcomes == [trizmq.ServiceShutdown] * 10
    assert len(endpoint.started) == 2


async def test_a_call_is_not_kept_waiting_behind_a_huge_casts_message() -> None:
    endpoint = Counting()
    resolve = unique_resolve(["node"])
    casts = 300_000
    with trio.fail_after(60):
        async with serving(RING, "compute", endpoint, "node", resolve):
            url = f"tcp://{resolve['node']}:9601"
            with open_adversary() as adversary:
                await adversary.peer(url, "compute").casts(1, "hit", [{}] * casts)
                await eventually(lambda: endpoint.hits > 0)
                async with trizmq.open_client(RING, resolve=resolve) as client:
                    assert await client.call("compute", "ping") == "pong"
                    hits_when_answered = endpoint.hits
                await eventually(lambda: endpoint.hits == casts, 30)
    assert hits_when_answered < casts
