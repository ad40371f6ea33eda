"""Failing fast: a host that cannot be reached fails calls and casts with
`HostUnreachable` in bounded time, unless the caller waits for it; nothing
reported unreachable runs later, and nothing waiting at close is lost silently."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from cluster_app import Endpoint
from conftest import eventually, serving, unique_resolve

import trizmq

#: What a refused connection may take to fail a call: ZeroMQ retries every
#: 0.1 s (plus up to 0.1 s of jitter); generous for a loaded machine.
REFUSED_BOUND = 2.0

Caller = Callable[[trizmq.Client, str], Awaitable[Any]]


def two_hosts() -> tuple[trizmq.Ring, dict[str, str]]:
    """compute on "up" and "ghost", at addresses of their own (nothing listens yet)."""
    return trizmq.Ring.from_mapping({"compute:9501": ["up", "ghost"]}), unique_resolve(
        ["up", "ghost"]
    )


@asynccontextmanager
async def ghost_client(**kwargs: Any) -> AsyncIterator[tuple[trizmq.Client, dict[str, str]]]:
    ring, resolve = two_hosts()
    async with trizmq.open_client(ring, resolve=resolve, **kwargs) as client:
        yield client, resolve


async def test_a_call_to_a_host_with_nothing_listening_fails_fast_naming_it() -> None:
    async with ghost_client() as (client, resolve):
        began = trio.current_time()
        with trio.fail_after(10), pytest.raises(trizmq.HostUnreachable) as caught:
            await client.call("compute.ghost", "ping", x=1)
        took = trio.current_time() - began
        stats = client.stats()["compute.ghost"]
    error = caught.value
    address = f"tcp://{resolve['ghost']}:9501"
    assert (error.topic, error.host, error.address) == ("compute", "ghost", address)
    assert str(error).startswith(f"compute.ghost at {address}: cannot connect")
    assert isinstance(error, ConnectionError)
    assert took < REFUSED_BOUND
    assert stats == {"unreachable": 1}


async def test_a_host_that_accepts_but_never_answers_fails_within_the_connect_timeout() -> None:
    ring, resolve = two_hosts()
    # A TCP listener that never speaks ZMTP: the connection is made, its handshake never is.
    listeners = await trio.open_tcp_listeners(9501, host=resolve["ghost"])
    async with trizmq.open_client(ring, resolve=resolve, connect_timeout=0.5) as client:
        began = trio.current_time()
        with trio.fail_after(10), pytest.raises(trizmq.HostUnreachable) as caught:
            await client.call("compute.ghost", "ping", x=1)
        took = trio.current_time() - began
    for listener in listeners:
        await listener.aclose()
    assert str(caught.value).endswith(": not connected within 0.5 s")
    assert 0.4 < took < 0.5 + REFUSED_BOUND


async def call_waiting(client: trizmq.Client, target: str) -> Any:
    return await client.call(target, "whoami", wait_for_ready=True, timeout=10)


async def call_of_waiting_target(client: trizmq.Client, target: str) -> Any:
    return await client.prepare(target, timeout=10, wait_for_ready=True).call("whoami")


async def call_of_waiting_client(client: trizmq.Client, target: str) -> Any:
    return await client.call(target, "whoami", timeout=10)


@pytest.mark.parametrize(
    ("how", "client_waits"),
    [(call_waiting, False), (call_of_waiting_target, False), (call_of_waiting_client, True)],
    ids=["call", "prepare", "open_client"],
)
async def test_wait_for_ready_waits_for_a_service_that_starts_later(
    how: Caller, client_waits: bool
) -> None:
    ring, resolve = two_hosts()
    answers: list[Any] = []
    with trio.fail_after(20):
        async with (
            trizmq.open_client(ring, resolve=resolve, wait_for_ready=client_waits) as client,
            trio.open_nursery() as nursery,
        ):

            async def call() -> None:
                answers.append(await how(client, "compute.ghost"))

            nursery.start_soon(call)
            await trio.sleep(0.5)  # refused, and refused again: the call waits
            assert answers == []
            async with serving(ring, "compute", Endpoint(), "ghost", resolve):
                await eventually(lambda: answers)
    assert answers[0]["host"] == "ghost"


async def test_wait_for_ready_still_ends_at_the_call_timeout() -> None:
    async with ghost_client() as (client, _):
        with trio.fail_after(10), pytest.raises(trizmq.CallTimeout):
            await client.call("compute.ghost", "ping", x=1, wait_for_ready=True, timeout=0.5)


async def test_round_robin_skips_an_unreachable_host_and_returns_to_it_once_it_serves() -> None:
    ring, resolve = two_hosts()
    with trio.fail_after(20):
        async with (
            serving(ring, "compute", Endpoint(), "up", resolve),
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            alone = [(await client.call("compute", "whoami"))["host"] for _ in range(6)]
            async with serving(ring, "compute", Endpoint(), "ghost", resolve):
                both = await eventually(
                    lambda: client.call("compute", "whoami"),
                    until=lambda answer: answer["host"] == "ghost",
                )
                later = [(await client.call("compute", "whoami"))["host"] for _ in range(4)]
    assert alone == ["up"] * 6
    assert both["host"] == "ghost"
    assert sorted(later) == ["ghost", "ghost", "up", "up"]


async def test_a_call_reported_unreachable_never_runs_on_the_service_later() -> None:
    key = secrets.token_hex(4)
    ring, resolve = two_hosts()
    with trio.fail_after(20):
        async with trizmq.open_client(ring, resolve=resolve) as client:
            for _ in range(3):
                with pytest.raises(trizmq.HostUnreachable):
                    await client.call("compute.ghost", "record", key=key)
                with pytest.raises(trizmq.HostUnreachable):
                    await client.cast("compute.ghost", "record", key=key)
            async with serving(ring, "compute", Endpoint(), "ghost", resolve):
                await trio.sleep(0.5)  # whatever was queued would have arrived by now
                seen = await client.call("compute.ghost", "count", key=key, wait_for_ready=True)
    assert seen == 0


async def test_a_fanout_reaches_the_hosts_it_can_and_names_the_others() -> None:
    key = secrets.token_hex(4)
    ring, resolve = two_hosts()
    with trio.fail_after(20):
        async with (
            serving(ring, "compute", Endpoint(), "up", resolve),
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            with pytest.raises(trizmq.HostUnreachable) as caught:
                await client.fanout("compute", "record", key=key)
            seen = await eventually(lambda: client.call("compute.up", "kinds_of", key=key))
    assert caught.value.host == "ghost"
    assert seen == ["fanout"]


async def test_casts_waiting_for_a_connection_when_the_client_closes_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ring, resolve = two_hosts()
    failures: list[BaseException] = []

    async def cast(client: trizmq.Client) -> None:
        try:
            await client.cast("compute.ghost", "ping", x=1, wait_for_ready=True)
        except trio.ClosedResourceError as exc:
            failures.append(exc)

    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="trizmq.client"):
        async with (
            trio.open_nursery() as nursery,
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            for _ in range(3):
                nursery.start_soon(functools.partial(cast, client))
            await trio.sleep(0.3)  # they wait: nothing listens
    assert len(failures) == 3
    assert client.stats()["compute.ghost"] == {"lost_at_close": 3}
    assert [r.getMessage() for r in caplog.records] == [
        "3 casts or fanouts were still waiting for a connection when the client closed, "
        "and were not sent: compute.ghost: 3"
    ]


async def test_a_client_that_closes_with_nothing_waiting_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ring, resolve = two_hosts()
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="trizmq.client"):
        async with (
            serving(ring, "compute", Endpoint(), "up", resolve),
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            await client.cast("compute.up", "ping", x=1)
            # A call after it on the same connection: the cast was taken before
            # the service stops (else the service logs it refused, at shutdown).
            await client.call("compute.up", "whoami")
    assert caplog.records == []
    assert "lost_at_close" not in client.stats()["compute.up"]
