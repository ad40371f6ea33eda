"""What a client counts, and batched casts."""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import zmq
from conftest import Cluster, eventually, unique_resolve

import trizmq
from trizmq._transport import AsyncSocket, open_socket
from trizmq._wire import Call, Calls, Reply, decode, encode


async def test_cast_many_sends_one_cast_per_item_round_robin(cluster: Cluster) -> None:
    key = f"many-{secrets.token_hex(4)}"
    async with cluster.client() as client:
        sent = await client.cast_many("compute", "record", [{"key": key}] * 10)
        counts = [
            await eventually(
                lambda host=host: client.call(f"compute.{host}", "count", key=key),
                until=lambda n: n == 5,
            )
            for host in ("controller", "computenodex")
        ]
    assert (sent, counts) == (10, [5, 5])


async def test_a_client_counts_its_side_per_target(cluster: Cluster) -> None:
    async with cluster.client() as client:
        with trio.fail_after(10):
            await client.call("compute.controller", "ping", x=1)
            await client.cast("compute.controller", "ping", x=1)
            await client.fanout("network", "ping", x=1)
            with pytest.raises(trizmq.RemoteError):
                await client.call("compute.controller", "fail", message="no")
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute.controller", "sleep", seconds=5, tag="t", timeout=0.1)
        stats = client.stats()
    # The service's own deadline (the same 0.1 s) answers the timed-out call as
    # the client gives up: that answer may come in first, counted as unmatched.
    assert stats["compute.controller"].pop("unmatched", 1) == 1
    assert stats["compute.controller"] == {
        "call": 3,
        "reply": 1,
        "error": 1,
        "timeout": 1,
        "cast": 1,
    }
    assert stats["network.controller"] == {"fanout": 1}
    assert stats["network.computenodex"] == {"fanout": 1}


async def test_a_result_that_does_not_fit_returns_is_a_type_error_naming_it(
    cluster: Cluster,
) -> None:
    async with cluster.client() as client:
        with pytest.raises(TypeError, match="does not fit returns=int"):
            await client.call("compute.controller", "echo", value="forty-two", returns=int)


async def test_calls_waiting_behind_a_call_that_times_out_still_get_their_replies(
    cluster: Cluster,
) -> None:
    # The first call reads the socket for the calls after it: its timeout must
    # pass the reading on to them.
    answers: list[str] = []
    async with cluster.client() as client:

        async def first() -> None:
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute.controller", "sleep", seconds=3, tag="a", timeout=0.3)

        async def next_one(tag: str) -> None:
            answers.append(
                await client.call("compute.controller", "sleep", seconds=0.8, tag=tag, timeout=5)
            )

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                for i in range(5):
                    nursery.start_soon(next_one, f"next-{i}")
    assert sorted(answers) == [f"next-{i}" for i in range(5)]


@asynccontextmanager
async def raw_service() -> AsyncIterator[tuple[AsyncSocket, trizmq.Ring, dict[str, str]]]:
    """A ROUTER standing for a service, to see what the client sends: its socket,
    a ring naming it (topic `raw`, host `late`) and the resolve map."""
    address = unique_resolve(("late",))["late"]
    with open_socket(zmq.ROUTER) as service:
        service.zmq.bind(f"tcp://{address}:*")
        port = int(service.zmq.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        yield service, trizmq.Ring.from_mapping({f"raw:{port}": ["late"]}), {"late": address}


async def test_a_reply_after_the_caller_gave_up_is_counted_unmatched() -> None:
    # A raw service that answers a call after its caller gave up (and said so).
    async with raw_service() as (service, ring, resolve):

        async def answer_late() -> None:
            identity, first = await service.receive()
            await service.receive()  # its CANCEL
            await service.send([identity, encode(Reply(decode(first).id, "late"))])
            identity, second = await service.receive()
            await service.send([identity, encode(Reply(decode(second).id, "on time"))])

        async with trizmq.open_client(ring, resolve=resolve) as client:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer_late)
                    with pytest.raises(trizmq.CallTimeout):
                        await client.call("raw", "anything", timeout=0.1)
                    answer = await client.call("raw", "anything")
    assert answer == "on time"
    assert client.stats()["raw.late"]["unmatched"] == 1


async def test_calls_cancelled_at_random_moments_leave_every_other_call_its_own_answer(
    cluster: Cluster,
) -> None:
    # Callers give up at random moments while others wait, lead or are being
    # answered, and handlers either answer at once or wait first: every call
    # that is not given up gets its own answer, and the client works after.
    rng = random.Random(6)
    answered: list[bool] = []
    gave_up = {"impatient": 0, "patient": 0}
    async with cluster.client() as client:

        async def one(i: int) -> None:
            seconds = rng.choice([0.0, 0.0, 0.002, 0.01])
            patience = rng.choice([0.001, 0.005, 0.02, 10.0])
            with trio.move_on_after(patience) as scope:
                if seconds:
                    tag = f"storm-{i}"
                    got = await client.call("compute.controller", "sleep", seconds=seconds, tag=tag)
                    answered.append(got == tag)
                else:
                    answered.append(await client.call("compute.controller", "echo", value=i) == i)
            gave_up["patient" if patience == 10.0 else "impatient"] += scope.cancelled_caught

        with trio.fail_after(60):
            for _ in range(4):
                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
            after = await client.call("compute.controller", "echo", value="after")
    assert all(answered)
    assert len(answered) + sum(gave_up.values()) == 400
    assert gave_up["patient"] == 0 < gave_up["impatient"]
    assert after == "after"


async def test_cast_many_over_the_size_limit_arrives_whole_in_several_messages(
    cluster: Cluster,
) -> None:
    key = f"split-{secrets.token_hex(4)}"
    # About 40 bytes a cast: 300 of them need several messages of at most 2 KB.
    async with cluster.client(max_message_size=2048) as client:
        sent = await client.cast_many("compute.controller", "record", [{"key": key}] * 300)
        count = await eventually(
            lambda: client.call("compute.controller", "count", key=key),
            until=lambda n: n == 300,
        )
        with pytest.raises(trizmq.MessageTooLarge):
            await client.cast_many("compute.controller", "record", [{"key": "x" * 4096}])
    assert (sent, count) == (300, 300)


async def test_calls_started_together_while_one_is_in_flight_travel_as_one_calls_message() -> None:
    async with (
        raw_service() as (service, ring, resolve),
        trizmq.open_client(ring, resolve=resolve) as client,
    ):
        answers: dict[int, Any] = {}

        async def call(n: int) -> None:
            answers[n] = await client.call("raw", "double", n=n)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, 0)
                identity, first = await service.receive()  # the lone call, at once
                for n in range(1, 6):
                    nursery.start_soon(call, n)
                _, batch = await service.receive()
                received = [decode(first), *decode(batch).batch]  # type: ignore[union-attr]
                # Answered out of order, each under its own id.
                for call_ in reversed(received):
                    reply = Reply(call_.id, call_.args["n"] * 2)
                    await service.send([identity, encode(reply)])
    assert type(decode(first)) is Call
    assert type(decode(batch)) is Calls
    assert sorted(c.args["n"] for c in received) == [0, 1, 2, 3, 4, 5]
    assert len({c.id for c in received}) == 6
    assert all(c.timeout is not None and c.timeout > 59 for c in received)
    assert answers == {n: n * 2 for n in range(6)}
    assert client.stats()["raw.late"]["call"] == 6


async def test_cast_nowait_hands_each_cast_to_zeromq_without_a_schedule_point(
    cluster: Cluster,
) -> None:
    key = f"nowait-{secrets.token_hex(4)}"
    async with cluster.client() as client:
        target = client.prepare("compute.controller")
        await client.call("compute.controller", "count", key=key)  # connects
        with trio.testing.assert_no_checkpoints():
            for _ in range(100):
                client.cast_nowait("compute.controller", "record", key=key)
            target.cast_nowait("record", key=key)
        count = await eventually(
            lambda: client.call("compute.controller", "count", key=key),
            until=lambda n: n == 101,
        )
        sent = client.stats()["compute.controller"]["cast"]
    assert (count, sent) == (101, 101)


async def test_cast_nowait_before_the_connection_is_up_raises_would_block_and_sends_nothing() -> (
    None
):
    # Nothing listens there: the connection never comes up.
    address = unique_resolve(("down",))["down"]
    with open_socket(zmq.ROUTER) as gone:
        port = gone.zmq.bind_to_random_port(f"tcp://{address}")
    ring = trizmq.Ring.from_mapping({f"raw:{port}": ["down"]})
    async with trizmq.open_client(ring, resolve={"down": address}) as client:
        with pytest.raises(trio.WouldBlock, match=r"the connection to raw\.down is not up yet"):
            client.cast_nowait("raw", "anything")
    assert "cast" not in client.stats()["raw.down"]


async def test_cast_nowait_to_a_service_that_reads_nothing_raises_would_block_once_full() -> None:
    async with (
        raw_service() as (service, ring, resolve),
        trizmq.open_client(ring, resolve=resolve) as client,
    ):
        await client.cast("raw", "first")  # waits for the connection
        await service.receive()
        # The service reads no more: its queue, the kernel's and the client's fill up.
        sent = 0
        with pytest.raises(trio.WouldBlock, match=r"the queue to raw\.late is full"):
            while sent < 100_000:
                client.cast_nowait("raw", "anything", blob=b"x" * 10_000)
                sent += 1
        counted = client.stats()["raw.late"]["cast"]
    assert 0 < sent < 100_000
    assert counted == sent + 1


async def test_calls_queued_while_the_services_queue_is_full_leave_as_it_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Queues of one message each way, so that a service not reading fills them soon.
    open_dealer = trizmq._client.open_socket

    def small(kind: int, **options: Any) -> AsyncSocket:
        sock = open_dealer(kind, **options)
        sock.zmq.setsockopt(zmq.SNDHWM, 1)
        return sock

    monkeypatch.setattr(trizmq._client, "open_socket", small)
    address = unique_resolve(("late",))["late"]
    with open_socket(zmq.ROUTER) as service:
        service.zmq.setsockopt(zmq.RCVHWM, 1)
        port = service.zmq.bind_to_random_port(f"tcp://{address}")
        ring = trizmq.Ring.from_mapping({f"raw:{port}": ["late"]})
        async with trizmq.open_client(ring, resolve={"late": address}) as client:
            answers: dict[int, int] = {}

            async def call(n: int) -> None:
                answers[n] = await client.call("raw", "echo", n=n, blob=b"x" * 10_000)

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, 0)
                    await trio.testing.wait_all_tasks_blocked()
                    peer = client._peers[("raw", "late")]
                    started = 1
                    while not peer.stalled:  # the service reads nothing yet
                        nursery.start_soon(call, started)
                        started += 1
                        if started % 10 == 0:
                            await trio.sleep(0.001)
                    replied = 0
                    while replied < started:
                        for identity, frame in await service.receive_batch():
                            request = decode(frame)
                            batch = request.batch if isinstance(request, Calls) else [request]
                            for one in batch:
                                reply = Reply(one.id, one.args["n"])  # type: ignore[union-attr]
                                await service.send([identity, encode(reply)])
                                replied += 1
    assert answers == {n: n for n in range(started)}
    assert not peer.stalled and not peer.queued
