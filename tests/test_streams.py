"""Streams between real `trizmq serve` processes: an async-generator method's
items reach `Client.stream` in order, within the consumer's credit."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import zmq
from cluster_app import Disk
from conftest import Cluster, eventually

import trizmq
from trizmq._wire import MAX_CREDIT, Credit, Envelope, Error, Items, Reply, Stream, decode, encode


def unique(prefix: str) -> str:
    """A tag no other test uses, since the module's cluster is shared."""
    return f"{prefix}-{secrets.token_hex(4)}"


async def closed(target: trizmq.BoundTarget, tag: str) -> str:
    """`state(tag)` once the generator's `finally` ran (or what it was after 5 s)."""
    with trio.move_on_after(5):
        return await eventually(
            lambda: target.call("state", tag=tag), until=lambda s: s == "closed"
        )
    return str(await target.call("state", tag=tag))


def rss_kib(pid: int) -> int:
    """The resident memory of process `pid`, in KiB (`VmRSS`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


async def test_a_stream_delivers_every_item_in_order_then_ends(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with (
            cluster.client() as client,
            client.stream("compute", "numbers", n=1000) as items,
        ):
            received = [item async for item in items]
    assert received == list(range(1000))


async def test_a_stream_with_nothing_to_yield_ends_at_once(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client, client.stream("compute", "numbers", n=0) as items:
            assert [item async for item in items] == []


async def test_items_are_structured_into_the_type_returns_names(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with (
            cluster.client() as client,
            client.stream("compute", "disks", n=3, returns=Disk) as items,
        ):
            received = [item async for item in items]
    assert received == [Disk("disk-0", 0), Disk("disk-1", 1), Disk("disk-2", 2)]


async def test_a_prepared_target_streams_too(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            target = client.prepare("compute.computenodex", timeout=5)
            async with target.stream("numbers", n=3) as items:
                assert [item async for item in items] == [0, 1, 2]


async def test_an_exception_in_the_generator_reaches_the_consumer_after_the_items_before_it(
    cluster: Cluster,
) -> None:
    received = []
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.RemoteError) as caught:
                async with client.stream("compute", "numbers", n=100, fail_at=42) as items:
                    async for item in items:
                        received.append(item)
    assert received == list(range(42))
    assert caught.value.type_name == "cluster_app.QuotaExceeded"
    assert caught.value.message == "no more after 42 items"


async def test_leaving_the_block_early_runs_the_generators_finally_on_the_service(
    cluster: Cluster,
) -> None:
    tag = unique("break")
    with trio.fail_after(10):
        async with cluster.client() as client:
            target = client.prepare("compute.controller")
            async with target.stream("numbers", n=10**9, tag=tag) as items:
                async for item in items:
                    if item == 10:
                        break
            assert await closed(target, tag) == "closed"
            # The service serves on: the same method streams again.
            async with target.stream("numbers", n=2) as items:
                assert [item async for item in items] == [0, 1]


async def test_cancelling_the_consumer_stops_the_generator(cluster: Cluster) -> None:
    tag = unique("cancel")
    with trio.fail_after(10):
        async with cluster.client() as client:
            target = client.prepare("compute.controller")
            with trio.move_on_after(0.5):
                async with target.stream("numbers", n=10**9, delay=0.01, tag=tag) as items:
                    async for _ in items:
                        pass
            assert await closed(target, tag) == "closed"


async def test_the_deadline_covers_the_whole_stream_and_stops_the_generator(
    cluster: Cluster,
) -> None:
    tag = unique("deadline")
    received = []
    with trio.fail_after(10):
        async with cluster.client() as client:
            target = client.prepare("compute.controller")
            with pytest.raises(trizmq.CallTimeout):
                # Each item comes in time; all of them would take 10 s.
                async with target.stream(
                    "numbers", n=1000, delay=0.01, tag=tag, timeout=0.5
                ) as items:
                    async for item in items:
                        received.append(item)
            assert await closed(target, tag) == "closed"
    assert 0 < len(received) < 1000
    assert received == list(range(len(received)))


async def test_the_service_never_runs_ahead_of_the_consumers_credit(cluster: Cluster) -> None:
    tag = unique("credit")
    window = 16
    with trio.fail_after(10):
        async with cluster.client() as client:
            target = client.prepare("compute.controller")
            async with target.stream("numbers", n=10**6, tag=tag, window=window) as items:
                async for _ in items:
                    break  # one read: not enough to grant more credit
                produced = await eventually(
                    lambda: target.call("produced", tag=tag), until=lambda n: n >= window
                )
                await trio.sleep(0.5)
                assert await target.call("produced", tag=tag) == produced == window
                # Read on: credit flows back, and the generator with it.
                assert [await anext(items) for _ in range(100)] == list(range(1, 101))
                assert window <= await target.call("produced", tag=tag) <= 101 + window


async def test_a_slow_consumer_of_100_000_items_keeps_the_services_memory_flat(
    cluster: Cluster,
) -> None:
    service = cluster.process("controller").pid
    memory: dict[int, int] = {}
    count = 0
    with trio.fail_after(60):
        async with (
            cluster.client() as client,
            client.stream("compute.controller", "numbers", n=100_000) as items,
        ):
            async for item in items:
                assert item == count
                count += 1
                if count % 1000 == 0:
                    await trio.sleep(0.005)  # a consumer slower than the service
                if count in (10_000, 100_000):
                    memory[count] = rss_kib(service)
    assert count == 100_000
    growth = memory[100_000] - memory[10_000]
    assert growth < 1024, f"the service grew by {growth} KiB from 10,000 to 100,000 items"


async def test_a_stream_to_a_plain_method_is_refused(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.NoSuchMethod) as caught:
                async with client.stream("compute", "ping", x=1) as items:
                    await anext(items)
    assert caught.value.message == ("compute.ping is not a stream: send it a CALL (Client.call)")


async def test_a_call_to_a_stream_method_is_refused(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.NoSuchMethod) as caught:
                await client.call("compute", "numbers", n=3)
    assert caught.value.message == (
        "compute.numbers is a stream: open it with STREAM (Client.stream)"
    )


async def test_a_stream_with_bad_arguments_is_refused(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.BadArguments):
                async with client.stream("compute", "numbers", n="three") as items:
                    await anext(items)


async def test_a_window_out_of_range_is_refused_before_anything_is_sent(
    cluster: Cluster,
) -> None:
    async with cluster.client() as client:
        for window in (0, MAX_CREDIT + 1, 64.0, True):
            with pytest.raises(ValueError, match="window must be an int between 1 and 65536"):
                client.stream("compute", "numbers", n=1, window=window)


def exchange(endpoint: str, frames: list[bytes], replies: int) -> list[bytes]:
    """Send frames from a raw pyzmq DEALER, one after the other; the first `replies` answers."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(endpoint)
        for frame in frames:
            sock.send(frame)
        return [sock.recv() for _ in range(replies)]


@pytest.mark.parametrize("credit", [0, -1, MAX_CREDIT + 1])
async def test_a_stream_opened_with_credit_out_of_range_is_refused(
    cluster: Cluster, credit: int
) -> None:
    stream = encode(Stream(3, "compute", "numbers", {"n": 5}, {}, 5.0, credit))
    endpoint = cluster.addresses["compute.controller"]
    with trio.fail_after(10):
        (reply,) = await trio.to_thread.run_sync(exchange, endpoint, [stream], 1)
    assert decode(reply) == Error(
        3,
        "protocol",
        "trizmq.ProtocolError",
        f"credit {credit} is not between 1 and 65536",
        "",
    )


async def test_credit_out_of_range_ends_the_stream_with_a_protocol_error(
    cluster: Cluster,
) -> None:
    tag = unique("bad-credit")
    frames = [
        encode(Stream(4, "compute", "numbers", {"n": 100, "tag": tag}, {}, 5.0, 2)),
        encode(Credit(99, 5)),  # no such stream: ignored
        encode(Credit(4, 0)),
    ]
    endpoint = cluster.addresses["compute.controller"]
    with trio.fail_after(10):
        answers = await trio.to_thread.run_sync(exchange, endpoint, frames, 2)
        async with cluster.client() as client:
            state = await closed(client.prepare("compute.controller"), tag)
    assert [decode(frame) for frame in answers] == [
        Items(4, [0, 1]),
        Error(4, "protocol", "trizmq.ProtocolError", "credit 0 is not between 1 and 65536", ""),
    ]
    assert state == "closed"


async def test_a_raw_caller_gets_the_items_within_its_credit_then_the_end(
    cluster: Cluster,
) -> None:
    def stream_with_credit(endpoint: str) -> list[Envelope]:
        with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.connect(endpoint)
            sock.send(encode(Stream(5, "compute", "numbers", {"n": 5}, {}, 5.0, 3)))
            answers = [decode(sock.recv())]  # within the first credit: 3 items
            sock.send(encode(Credit(5, 10)))
            while not isinstance(answers[-1], Reply):
                answers.append(decode(sock.recv()))
            return answers

    endpoint = cluster.addresses["compute.controller"]
    with trio.fail_after(10):
        answers = await trio.to_thread.run_sync(stream_with_credit, endpoint)
    assert answers[0] == Items(5, [0, 1, 2])
    # The rest may leave in one burst or more, as the generator and the sends go.
    assert [i for a in answers[1:-1] if isinstance(a, Items) for i in a.items] == [3, 4]
    assert answers[-1] == Reply(5, None)


CONSUMER = textwrap.dedent(
    """
    import json, os, sys, trio, trizmq

    async def main() -> None:
        ring = trizmq.Ring.load(os.environ["TRIZMQ_TEST_RING"])
        resolve = json.loads(os.environ["TRIZMQ_TEST_RESOLVE"])
        async with trizmq.open_client(ring, resolve=resolve) as client:
            async with client.stream("compute.controller", "numbers", n=10**9,
                                     tag=sys.argv[1], window=4) as items:
                await anext(items)
                print("reading", flush=True)
                await trio.sleep_forever()

    trio.run(main)
    """
)


async def test_a_consumer_that_dies_stops_its_generator(cluster: Cluster) -> None:
    tag = unique("killed")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", CONSUMER, tag],
        stdout=subprocess.PIPE,
        env=cluster.env(),
        start_new_session=True,
    )
    try:
        with trio.fail_after(20):
            assert process.stdout is not None
            assert b"reading" in await process.stdout.receive_some()
            async with cluster.client() as client:
                target = client.prepare("compute.controller")
                assert await target.call("state", tag=tag) == "started"
                os.killpg(process.pid, signal.SIGKILL)
                assert await closed(target, tag) == "closed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@pytest.mark.serve_args("--grace", "1")
async def test_a_stream_in_flight_at_sigterm_goes_on_for_the_grace_then_gets_service_shutdown(
    fresh_cluster: Cluster,
) -> None:
    received: list[int] = []
    with trio.fail_after(15):
        async with fresh_cluster.client() as client:
            with pytest.raises(trizmq.ServiceShutdown):
                async with client.stream(
                    "compute.controller", "numbers", n=10**6, window=4
                ) as items:
                    async for item in items:
                        received.append(item)
                        if item == 10:
                            fresh_cluster.send_signal("controller", signal.SIGTERM)
                            signalled = trio.current_time()
                        await trio.sleep(0.01)
            ended = trio.current_time()
        code = await trio.to_thread.run_sync(fresh_cluster.wait, "controller")
    assert received == list(range(len(received)))
    assert len(received) > 20  # it went on after the signal, within the grace
    assert 0.8 < ended - signalled < 3
    assert code == 0


async def test_a_stream_whose_service_dies_raises_peer_lost(fresh_cluster: Cluster) -> None:
    received: list[int] = []
    with trio.fail_after(15):
        async with fresh_cluster.client() as client:
            with pytest.raises(trizmq.PeerLost):
                async with client.stream("compute.controller", "numbers", n=10**9) as items:
                    async for item in items:
                        received.append(item)
                        if item == 100:
                            await trio.to_thread.run_sync(fresh_cluster.kill, "controller")
    assert received == list(range(len(received)))
    assert len(received) >= 101


async def test_streams_and_calls_share_a_connection_each_getting_its_own_answers(
    cluster: Cluster,
) -> None:
    streamed: dict[int, list[int]] = {}
    answers: list[int] = []
    with trio.fail_after(20):
        async with cluster.client() as client:
            target = client.prepare("compute.computenodex")

            async def consume(k: int) -> None:
                async with target.stream("numbers", n=2000 + k, window=8 * (k + 1)) as items:
                    streamed[k] = [item async for item in items]

            async def calls(k: int) -> None:
                for i in range(20):
                    answers.append(await target.call("ping", x=k * 100 + i) - 1 - k * 100 - i)

            async with trio.open_nursery() as nursery:
                for k in range(4):
                    nursery.start_soon(consume, k)
                for k in range(100):
                    nursery.start_soon(calls, k)
    assert streamed == {k: list(range(2000 + k)) for k in range(4)}
    assert answers == [0] * 2000
