"""A service outlives what one misbehaving peer does to it, and so do its honest callers.

Each test runs the seed ring's controller as a `trizmq serve` process of its
own (every topic of the host in one process, on loopback addresses no other
test uses) and turns one peer against it: a raw DEALER from `adversary.py`
that reuses ids, never reads, or floods, or an honest client or service frozen
with SIGSTOP. Every flood is bounded in count and time, and every process is
stopped (its whole process group) whatever happens.
"""

from __future__ import annotations

import functools
import os
import signal
import statistics
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from adversary import ERROR, REPLY, STATS, Message, RawPeer, open_adversary, start_flood_calls
from conftest import Cluster

import trizmq

# Each test takes well under a minute; a service that spins takes 10 s more to stop.
pytestmark = pytest.mark.timeout(90)

COMPUTE = "compute.controller"
NETWORK = "network.controller"  # another topic, served by the same process


@pytest.fixture
def controller(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """The seed ring's controller alone: one `trizmq serve` process serving all its topics.

    Mark the test `@pytest.mark.serve_args(...)` to pass options to `trizmq serve`.
    """
    marker = request.node.get_closest_marker("serve_args")
    running = Cluster(tmp_path, hosts=("controller",), serve_args=marker.args if marker else ())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def url_of(cluster: Cluster, target: str) -> str:
    """The `tcp://` address of a `topic.host` of the cluster."""
    return cluster.addresses[target]


def assert_alive(cluster: Cluster, host: str = "controller") -> None:
    """The host's process is still running (else: its exit code and the end of its log)."""
    code = cluster.process(host).poll()
    assert code is None, f"{host} exited with {code}:\n{cluster.log(host)[-3000:]}"


async def timed_call(client: trizmq.Client, target: str, method: str, **args: Any) -> float:
    """Seconds one call took (it raises as the call does)."""
    started = trio.current_time()
    await client.call(target, method, **args)
    return trio.current_time() - started


async def call_until(
    client: trizmq.Client,
    target: str,
    method: str,
    within: float,
    until: Callable[[Any], object] = lambda _: True,
    **args: Any,
) -> Any:
    """Call with 1 s timeouts until an answer satisfies `until`, and return it.

    PeerLost and CallTimeout mean "not yet".

    Raises:
        AssertionError: no such answer within `within` seconds.
    """
    seen: list[object] = []
    with trio.move_on_after(within):
        while True:
            try:
                answer = await client.call(target, method, timeout=1.0, **args)
            except (trizmq.PeerLost, trizmq.CallTimeout) as exc:
                seen.append(type(exc).__name__)
            else:
                if until(answer):
                    return answer
                seen.append(answer)
            await trio.sleep(0.2)
    raise AssertionError(f"no fitting answer within {within} s; got {seen[-10:]}")


async def port_stats(
    cluster: Cluster, target: str, until: Callable[[dict[str, Any]], object], timeout: float = 10
) -> dict[str, Any]:
    """The stats a service port publishes to a subscriber, once `until` holds for them.

    Raises:
        AssertionError: `until` did not hold within `timeout` seconds.
    """
    data: dict[str, Any] = {}
    with open_adversary() as adversary, trio.move_on_after(timeout):
        subscriber = adversary.peer(url_of(cluster, target), target.split(".")[0])
        await subscriber.subscribe_stats(interval=0.1, lease=timeout)
        while True:
            stats = await subscriber.receive_kind(STATS, timeout=timeout)
            if stats is not None:
                data = stats.data
                if until(data):
                    return data
    raise AssertionError(f"not true within {timeout} s; the last stats were {data}")


async def ping(client: trizmq.Client, target: str) -> str:
    """ "answered" if a ping is, else the name of the error the call raised."""
    try:
        assert await client.call(target, "ping", x=1) == 2
    except trizmq.TrizmqError as exc:
        return type(exc).__name__
    return "answered"


async def cast_records(client: trizmq.Client, target: str, key: str, count: int) -> int:
    """Cast `record(key)` `count` times; returns how many casts were sent within 5 s."""
    sent = 0
    with trio.move_on_after(5):
        for _ in range(count):
            await client.cast(target, "record", key=key)
            sent += 1
    return sent


async def records(
    client: trizmq.Client, target: str, key: str, expected: int, within: float = 5
) -> object:
    """How many casts `record(key)` ran: `expected` once it is reached within
    `within` seconds, else the last count seen (or how the last call failed)."""
    last: object = None
    with trio.move_on_after(within):
        while last != expected:
            try:
                last = await client.call(target, "count", key=key, timeout=1.0)
            except (trizmq.PeerLost, trizmq.CallTimeout) as exc:
                last = type(exc).__name__
            if last != expected:
                await trio.sleep(0.2)
    return last


def describe(exc: BaseException) -> str:
    """An error as "ClassName type_name" (a RemoteError) or "ClassName"."""
    type_name = getattr(exc, "type_name", None)
    return f"{type(exc).__name__} {type_name}" if type_name else type(exc).__name__


async def timed_ping(client: trizmq.Client, target: str) -> tuple[str, float]:
    """What `ping` says, and the seconds it took."""
    started = trio.current_time()
    outcome = await ping(client, target)
    return outcome, trio.current_time() - started


def summary(message: Message) -> tuple[Any, ...]:
    """A message as a comparable tuple: ("error", id, code, type_name), ("reply", id, result)..."""
    if message.kind == ERROR:
        return ("error", message.id, message.code, message.type_name)
    if message.kind == REPLY:
        return ("reply", message.id, message.result)
    if message.kind == STATS:
        return ("stats", message.id)
    return ("kind", message.kind, message.id)


# -- 1. a reused id ---------------------------------------------------------------------


async def send_sleep(peer: RawPeer, kind: str, id: int, tag: str) -> None:
    """A call or a cast of `sleep(1.0, tag)` with this id: a handler that waits."""
    if kind == "call":
        await peer.call(id, "sleep", seconds=1.0, tag=tag)
    else:
        await peer.cast(id, "sleep", seconds=1.0, tag=tag)


@pytest.mark.parametrize(
    ("first", "second"), [("call", "call"), ("cast", "cast"), ("call", "cast"), ("cast", "call")]
)
async def test_a_request_reusing_the_id_of_one_in_flight_is_refused_and_the_first_is_answered(
    controller: Cluster, first: str, second: str
) -> None:
    with open_adversary() as adversary:
        peer = adversary.peer(url_of(controller, COMPUTE), "compute")
        await send_sleep(peer, first, 7, "first")
        await send_sleep(peer, second, 7, "second")
        received = await peer.receive_for(2.0)  # the first handler takes 1 s

    assert_alive(controller)
    expected = []
    if second == "call":  # refused at once, under its own id; a refused cast gets no answer
        expected.append(("error", 7, "protocol", "trizmq.ProtocolError"))
    if first == "call":  # untouched: answered when its handler returns
        expected.append(("reply", 7, "first"))
    assert [summary(m) for m in received] == expected
    if second == "call":
        assert "already in flight" in received[0].message
    async with controller.client(timeout=5) as client:
        assert await client.call(COMPUTE, "state", tag="first") == "finished"
        assert await client.call(COMPUTE, "state", tag="second") is None  # never run
        assert await client.call(COMPUTE, "ping", x=1) == 2


# -- 2. callers that do not read ----------------------------------------------------------


async def test_a_caller_that_never_reads_its_large_replies_does_not_stall_the_service(
    controller: Cluster,
) -> None:
    seen: dict[str, str] = {}
    with open_adversary() as adversary, trio.fail_after(90):
        hog = adversary.peer(url_of(controller, COMPUTE), "compute", small_queues=True)
        for id in range(1, 3001):
            await hog.call(id, "blob", n=200_000, timeout=60.0)
        await trio.sleep(0.5)  # its replies back up in the service meanwhile

        async with controller.client(timeout=5) as client:
            # The same port, and another topic of the same process...
            for target in (COMPUTE, NETWORK):
                seen[f"{target}, while it is connected"] = await ping(client, target)
            hog.close()
            await trio.sleep(0.5)
            # ...and after it left.
            for target in (COMPUTE, NETWORK):
                seen[f"{target}, after it left"] = await ping(client, target)
    assert seen == dict.fromkeys(seen, "answered"), seen
    assert_alive(controller)


async def test_a_frozen_client_with_thousands_of_calls_in_flight_does_not_stall_the_service(
    controller: Cluster, tmp_path: Path
) -> None:
    # 3,000 calls whose 200 kB replies come 1 s after they are sent: the
    # client is frozen when the replies are ready.
    flood = start_flood_calls(
        controller.ring_path,
        controller.resolve,
        COMPUTE,
        calls=3000,
        size=200_000,
        delay=1.0,
        lifetime=40,
        env=controller.env(),
        cwd=tmp_path,
    )
    assert flood.stdout is not None
    pings: list[tuple[str, float]] = []
    try:
        with trio.fail_after(20):
            line = await trio.to_thread.run_sync(flood.stdout.readline, abandon_on_cancel=True)
        assert line.startswith(b"in flight"), line
        os.killpg(flood.pid, signal.SIGSTOP)
        try:
            async with controller.client(timeout=5) as client:
                frozen_until = trio.current_time() + 6.0
                while trio.current_time() < frozen_until:  # meanwhile, another client:
                    pings.append(await timed_ping(client, COMPUTE))
                    await trio.sleep(0.1)
        finally:
            os.killpg(flood.pid, signal.SIGCONT)
    finally:
        os.killpg(flood.pid, signal.SIGKILL)
        flood.wait()
    assert_alive(controller)
    assert {outcome for outcome, _ in pings} == {"answered"}, pings
    slowest = max(seconds for _, seconds in pings)
    assert slowest < 1.0, f"pings took up to {slowest:.2f} s"


# -- 3. a reply over the size limit --------------------------------------------------------


@pytest.mark.serve_args("--max-message-size", "65536")
async def test_a_reply_over_the_size_limit_fails_its_call_alone_and_the_client_goes_on(
    controller: Cluster,
) -> None:
    key = uuid.uuid4().hex
    seen: dict[str, object] = {}
    async with controller.client(max_message_size=65536, timeout=5) as client:
        bystanders: list[object] = []

        async def bystander(tag: str) -> None:
            try:
                bystanders.append(await client.call(COMPUTE, "sleep", seconds=0.5, tag=tag))
            except trizmq.TrizmqError as exc:
                bystanders.append(exc)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(bystander, f"bystander-{i}")
                await trio.sleep(0.1)  # they are in flight
                try:
                    await client.call(COMPUTE, "blob", n=100_000)
                except trizmq.RemoteError as exc:
                    seen["the call over the limit"] = exc.type_name
                except trizmq.TrizmqError as exc:
                    seen["the call over the limit"] = describe(exc)
            seen["bystanders answered"] = sum(isinstance(b, str) for b in bystanders)

            # The same client, afterwards: a call, and casts.
            seen["a later call"] = await ping(client, COMPUTE)
            seen["later casts sent"] = await cast_records(client, COMPUTE, key, 10)
            seen["later casts run"] = await records(client, COMPUTE, key, expected=10)

    assert seen == {
        "the call over the limit": "trizmq.MessageTooLarge",  # a RemoteError
        "bystanders answered": 5,
        "a later call": "answered",
        "later casts sent": 10,
        "later casts run": 10,
    }, seen
    assert_alive(controller)


# -- 4. a frozen service -------------------------------------------------------------------


async def test_a_client_gets_through_again_after_its_service_was_frozen(
    controller: Cluster,
) -> None:
    key = uuid.uuid4().hex
    async with controller.client(heartbeat=1.0, timeout=5) as client:
        assert await client.call(COMPUTE, "ping", x=1) == 2
        lost: list[str] = []

        async def in_flight(tag: str) -> None:
            try:  # its 1 MB reply is due while the service is frozen
                await client.call(COMPUTE, "blob", n=1_000_000, delay=3.0, timeout=30)
            except trizmq.PeerLost:
                lost.append(tag)

        async with trio.open_nursery() as nursery:
            for i in range(100):  # calls in flight when the service freezes
                nursery.start_soon(in_flight, f"in-flight-{i}")
            await trio.sleep(0.2)
            controller.send_signal("controller", signal.SIGSTOP)
            try:
                frozen_at = trio.current_time()
                with trio.fail_after(5), pytest.raises(trizmq.PeerLost):
                    await client.call(COMPUTE, "ping", x=1)  # the client noticed the loss
                for _ in range(250):  # casts that wait for the service (else HostUnreachable)
                    nursery.start_soon(
                        functools.partial(
                            client.cast, COMPUTE, "record", key=key, wait_for_ready=True
                        )
                    )
                await trio.sleep_until(frozen_at + 6.0)
            finally:
                controller.send_signal("controller", signal.SIGCONT)
        assert len(lost) == 100  # as documented: calls in flight on a lost connection

        # The same client gets through again...
        assert await call_until(client, COMPUTE, "ping", within=10, x=1) == 2
        # ...and every cast that waited for it runs.
        await call_until(client, COMPUTE, "count", within=5, until=lambda n: n == 250, key=key)
    assert_alive(controller)


# -- 5. refused casts and the log ----------------------------------------------------------


async def test_refused_casts_are_counted_without_flooding_the_log(controller: Cluster) -> None:
    messages, per_message = 20, 1000
    log = controller.log_path("controller")
    async with controller.client(timeout=5) as client:
        assert await client.call(COMPUTE, "ping", x=1) == 2
        size_before = log.stat().st_size
        for m in range(messages):
            batch = [{"key": f"{m:02d}{i:03d}"} for i in range(per_message)]  # ~11 KB a message
            await client.cast_many(COMPUTE, "no_such_method", batch)
        refused = messages * per_message
        await port_stats(
            controller,
            COMPUTE,
            until=lambda data: data.get("rejected", {}).get("no_such_method") == refused,
        )
    await trio.sleep(0.5)  # whatever is still on its way to the log
    grown = log.stat().st_size - size_before
    assert grown < 64 * 1024, f"the log grew by {grown} bytes for {refused} refused casts"
    assert_alive(controller)


# -- 6. stats subscribers ------------------------------------------------------------------


async def test_subscribers_that_never_read_their_stats_do_not_slow_calls(
    controller: Cluster,
) -> None:
    async with controller.client(timeout=5) as client:
        # A busy service: 10,000 casts in the last seconds (its latency window is full).
        await client.cast_many(COMPUTE, "record", [{"key": "busy"}] * 10_000)
        assert await client.call(COMPUTE, "count", key="busy") == 10_000
        with open_adversary() as adversary, trio.fail_after(60):
            for _ in range(300):
                peer = adversary.peer(url_of(controller, COMPUTE), "compute")
                await peer.subscribe_stats(interval=0.1, lease=60)  # and never reads
            await trio.sleep(0.5)
            latencies = []
            for x in range(50):  # a call every 10 ms or so
                latencies.append(await timed_call(client, COMPUTE, "ping", x=x))
                await trio.sleep(0.01)
    p50 = statistics.median(latencies)
    assert p50 < 0.050, f"p50 {p50 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    assert_alive(controller)


async def test_stats_subscribers_past_the_cap_of_64_are_refused(controller: Cluster) -> None:
    answers: list[Message | None] = []
    with open_adversary() as adversary, trio.fail_after(60):
        for _ in range(300):  # one after the other: the first 64 come first
            peer = adversary.peer(url_of(controller, COMPUTE), "compute")
            await peer.subscribe_stats(interval=0.1, lease=60)
            answers.append(await peer.receive(timeout=2.0))
    served = [i for i, m in enumerate(answers) if m is not None and m.kind == STATS]
    refused = [
        i
        for i, m in enumerate(answers)
        if m is not None
        and m.kind == ERROR
        and (m.code, m.type_name) == ("protocol", "trizmq.ProtocolError")
        and "too many stats subscribers" in m.message
    ]
    assert served == list(range(64)), f"{len(served)} subscribers served"
    past_the_cap = [m if m is None else summary(m) for m in answers[64:67]]
    assert refused == list(range(64, 300)), f"answers past the cap: {past_the_cap}..."
    assert_alive(controller)
