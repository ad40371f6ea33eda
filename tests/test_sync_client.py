"""The blocking client, `trizmq.sync`: the async client's calls from threads, scripts and asyncio.

Plain (not Trio) tests, against the real `trizmq serve` processes of the seed
cluster; and the bridge that turns an async stream into a blocking iterator,
against a small async generator of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
import trio
from cluster_app import BootRequest, Disk, Instance
from conftest import Cluster

import trizmq
import trizmq.sync
from trizmq.sync import _BlockingStream, _Loop

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A key or tag no other test uses, since the module's cluster is shared."""
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_until(fn: Callable[[], T], until: Callable[[T], object], timeout: float = 5.0) -> T:
    """Call `fn` until `until(result)` holds; return that result."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"not true within {timeout} s; last {value!r}"
        time.sleep(0.02)


def loop_threads() -> list[threading.Thread]:
    """The threads of blocking clients (and bridge loops) still running."""
    return [t for t in threading.enumerate() if t.name == "trizmq.sync"]


@contextlib.contextmanager
def blocking_client(cluster: Cluster, **options: Any) -> Iterator[trizmq.sync.Client]:
    """`trizmq.sync.open_client` on a fresh ring, with the cluster's addresses."""
    with trizmq.sync.open_client(cluster.ring(), resolve=cluster.resolve, **options) as client:
        yield client


def counts(client: trizmq.sync.Client, topic: str, key: str) -> dict[str, int]:
    """How many messages each host of `topic` counted under `key`."""
    hosts = client.ring.hosts_of(topic)
    return {host: client.call(f"{topic}.{host}", "count", key=key) for host in hosts}


def async_call_error(cluster: Cluster, target: str, method: str, **args: Any) -> Exception:
    """What the async client raises for this call."""

    async def main() -> Exception:
        async with cluster.client() as client:
            try:
                await client.call(target, method, **args)
            except Exception as exc:
                return exc
        raise AssertionError("the call did not fail")

    return trio.run(main)


# -- the calls ------------------------------------------------------------------


def test_call_returns_the_result_of_the_remote_method(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        assert client.call("compute", "ping", x=41) == 42


def test_calls_to_a_topic_alternate_between_its_hosts(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        hosts = [client.call("compute", "whoami")["host"] for _ in range(4)]
    assert hosts == ["controller", "computenodex", "controller", "computenodex"]


def test_returns_structures_the_result_into_its_type(cluster: Cluster) -> None:
    request = BootRequest("vm", "cirros", [Disk("root", 10)], {"a": "b"}, b"\x00")
    with blocking_client(cluster) as client:
        instance = client.call("compute.controller", "boot", request=request, returns=Instance)
    assert instance == Instance(
        "controller/vm", "vm", "controller", [Disk("root", 10)], {"a": "b", "image": "cirros"},
        b"\x00", 10,
    )  # fmt: skip


def test_cast_reaches_the_host_it_is_sent_to(cluster: Cluster) -> None:
    key = unique("cast")
    with blocking_client(cluster) as client:
        for _ in range(5):
            client.cast("compute.computenodex", "record", key=key)
        seen = wait_until(lambda: counts(client, "compute", key), lambda c: sum(c.values()) >= 5)
        kinds = client.call("compute.computenodex", "kinds_of", key=key)
    assert seen == {"controller": 0, "computenodex": 5}
    assert kinds == ["cast"] * 5


def test_cast_many_sends_one_cast_per_item_round_robin(cluster: Cluster) -> None:
    key = unique("many")
    with blocking_client(cluster) as client:
        sent = client.cast_many("compute", "record", ({"key": key} for _ in range(10)))
        seen = wait_until(lambda: counts(client, "compute", key), lambda c: sum(c.values()) >= 10)
    assert sent == 10
    assert seen == {"controller": 5, "computenodex": 5}


def test_fanout_reaches_every_host_of_the_topic_once(cluster: Cluster) -> None:
    key = unique("fanout")
    with blocking_client(cluster) as client:
        client.fanout("network", "record", key=key)
        wait_until(lambda: counts(client, "network", key), lambda c: all(c.values()))
        seen = counts(client, "network", key)
        kinds = client.call("network.controller", "kinds_of", key=key)
    assert seen == {"controller": 1, "computenodex": 1}
    assert kinds == ["fanout"]


def test_open_client_passes_its_options_on(cluster: Cluster) -> None:
    options = {"context": {"user": "alice", "project": "p1"}, "name": "nova-api"}
    with blocking_client(cluster, **options) as client:
        answer = client.call("compute", "whoami", context={"project": "p2"})
        identity = client.identity
    assert answer["values"] == {"user": "alice", "project": "p2"}
    assert answer["caller"] == identity
    assert identity.startswith("nova-api/")


def test_prepare_gives_a_target_with_its_own_timeout_and_context(cluster: Cluster) -> None:
    with blocking_client(cluster, context={"a": 1, "b": 1}) as client:
        target = client.prepare("conductor.controller", timeout=0.3, context={"b": 2})
        with pytest.raises(trizmq.CallTimeout) as caught:
            target.call("sleep", seconds=5, tag=unique("prepared"))
        answer = target.call("whoami", context={"c": 3})
    assert caught.value.timeout == 0.3
    assert answer["values"] == {"a": 1, "b": 2, "c": 3}
    assert (target.target, target.timeout, target.context) == (
        "conductor.controller",
        0.3,
        {"b": 2},
    )


def test_a_prepared_target_casts_and_fans_out(cluster: Cluster) -> None:
    key = unique("prepared")
    with blocking_client(cluster) as client:
        client.prepare("network.computenodex").cast("record", key=key)
        client.prepare("network").fanout("record", key=key)
        seen = wait_until(lambda: counts(client, "network", key), lambda c: sum(c.values()) >= 3)
    assert seen == {"controller": 1, "computenodex": 2}


def test_connected_url_and_stats_answer_for_the_client(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        assert client.call("compute.controller", "ping", x=1) == 2
        # The handshake's monitor event may come in after the reply.
        assert wait_until(lambda: client.connected("compute.controller"), bool)
        url = client.url("compute.controller")
        stats = client.stats()
    assert url == cluster.addresses["compute.controller"]
    assert stats["compute.controller"]["call"] == 1


# -- errors, as the async client raises them ------------------------------------


def test_a_remote_error_is_raised_as_the_async_client_raises_it(cluster: Cluster) -> None:
    expected = async_call_error(cluster, "scheduler", "fail", message="10 cores max")
    with blocking_client(cluster) as client, pytest.raises(trizmq.RemoteError) as caught:
        client.call("scheduler", "fail", message="10 cores max")
    error = caught.value
    assert type(error) is type(expected) is trizmq.RemoteError
    fields = ("type_name", "message", "remote_traceback", "topic", "host")
    assert [getattr(error, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert error.type_name == "cluster_app.QuotaExceeded"


def test_a_refused_call_raises_the_same_subclass_as_the_async_client(cluster: Cluster) -> None:
    expected = async_call_error(cluster, "compute.controller", "ping", x="one")
    with blocking_client(cluster) as client, pytest.raises(trizmq.RemoteError) as caught:
        client.call("compute.controller", "ping", x="one")
    assert type(caught.value) is type(expected) is trizmq.BadArguments
    assert caught.value.message == expected.message


def test_a_slow_call_raises_call_timeout_after_its_timeout(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        started = time.monotonic()
        with pytest.raises(trizmq.CallTimeout) as caught:
            client.call("compute.controller", "sleep", seconds=5, tag=unique("slow"), timeout=0.3)
        elapsed = time.monotonic() - started
    assert (caught.value.topic, caught.value.host, caught.value.method) == (
        "compute",
        "controller",
        "sleep",
    )
    assert 0.3 <= elapsed < 2


def test_a_target_not_in_the_ring_raises_ring_error(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        with pytest.raises(trizmq.RingError):
            client.call("no_such_topic", "ping", x=1)
        with pytest.raises(trizmq.RingError):
            client.prepare("compute.no_such_host")


# -- threads, asyncio, Trio -------------------------------------------------------


def test_eight_threads_calling_at_once_each_get_their_own_answers(cluster: Cluster) -> None:
    threads, calls = 8, 200
    answers: dict[int, list[int]] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def caller(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            answers[n] = [client.call("compute", "ping", x=n * 1000 + i) for i in range(calls)]
        except BaseException as exc:
            failures.append(exc)

    with blocking_client(cluster) as client:
        workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        stats = client.stats()
    assert failures == []
    assert answers == {n: [n * 1000 + i + 1 for i in range(calls)] for n in range(threads)}
    assert sum(s["call"] for s in stats.values()) == threads * calls


def test_an_asyncio_program_calls_through_to_thread(cluster: Cluster) -> None:
    async def main(client: trizmq.sync.Client) -> list[int]:
        calls = [asyncio.to_thread(client.call, "compute", "ping", x=x) for x in range(20)]
        return await asyncio.gather(*calls)

    with blocking_client(cluster) as client:
        assert asyncio.run(main(client)) == list(range(1, 21))


def test_a_call_from_inside_a_trio_run_raises_runtime_error(cluster: Cluster) -> None:
    async def call_in_trio(client: trizmq.sync.Client) -> None:
        client.call("compute", "ping", x=1)

    with blocking_client(cluster) as client:
        with pytest.raises(RuntimeError, match="outside any Trio run"):
            trio.run(call_in_trio, client)
        assert client.call("compute", "ping", x=1) == 2


def test_a_call_from_the_clients_own_thread_raises_rather_than_deadlocks(
    cluster: Cluster,
) -> None:
    with blocking_client(cluster) as client:
        with pytest.raises(RuntimeError, match="outside any Trio run"):
            client._loop.run_sync(lambda: client.call("compute", "ping", x=1))
        assert client.call("compute", "ping", x=1) == 2


def test_opening_inside_a_trio_run_raises_runtime_error(cluster: Cluster) -> None:
    async def open_in_trio() -> None:
        with blocking_client(cluster):
            pass

    with pytest.raises(RuntimeError, match="outside any Trio run"):
        trio.run(open_in_trio)
    assert loop_threads() == []


# -- opening and closing -----------------------------------------------------------


def test_a_wrong_argument_raises_in_the_calling_thread_before_any_thread_starts(
    cluster: Cluster,
) -> None:
    with (
        pytest.raises(TypeError, match="no_such_option"),
        blocking_client(cluster, no_such_option=1),
    ):
        pass
    assert loop_threads() == []


def test_an_error_opening_the_client_is_raised_in_the_calling_thread(cluster: Cluster) -> None:
    with pytest.raises(TypeError), trizmq.sync.open_client(cluster.ring(), resolve=5):  # type: ignore[arg-type]
        pass
    assert loop_threads() == []


def test_closing_ends_a_call_waiting_in_another_thread_and_the_clients_thread(
    cluster: Cluster,
) -> None:
    tag = unique("closed")
    outcome: list[BaseException] = []

    def long_call() -> None:
        try:
            client.call("compute.controller", "sleep", seconds=30, tag=tag, timeout=60)
        except BaseException as exc:
            outcome.append(exc)

    with blocking_client(cluster) as client:
        waiter = threading.Thread(target=long_call)
        waiter.start()
        wait_until(lambda: client.call("compute.controller", "state", tag=tag), bool)
        closing = time.monotonic()
    closed_in = time.monotonic() - closing
    waiter.join(5)
    assert not waiter.is_alive()
    assert closed_in < 2
    assert loop_threads() == []
    assert len(outcome) == 1
    assert type(outcome[0]) is RuntimeError
    assert "closed" in str(outcome[0])
    # The service was told: the handler was cancelled, as for a cancelled async call.
    with blocking_client(cluster) as checker:
        state = lambda: checker.call("compute.controller", "state", tag=tag)  # noqa: E731
        assert wait_until(state, lambda s: s != "started") == "cancelled"


def test_a_call_after_close_raises_runtime_error(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        assert client.call("compute", "ping", x=1) == 2
    with pytest.raises(RuntimeError, match="the client is closed"):
        client.call("compute", "ping", x=1)
    with pytest.raises(RuntimeError, match="the client is closed"):
        client.stats()
    client.close()  # closing again does nothing


def test_close_from_another_thread_ends_the_client(cluster: Cluster) -> None:
    with blocking_client(cluster) as client:
        closer = threading.Thread(target=client.close)
        closer.start()
        closer.join(5)
        assert loop_threads() == []
        with pytest.raises(RuntimeError, match="the client is closed"):
            client.call("compute", "ping", x=1)


def test_the_blocking_methods_take_the_arguments_of_the_async_ones() -> None:
    pairs = [
        *((getattr(trizmq.sync.Client, m), getattr(trizmq.Client, m)) for m in CLIENT_METHODS),
        *((getattr(trizmq.sync.BoundTarget, m), getattr(trizmq.BoundTarget, m)) for m in BOUND),
    ]
    for blocking, asynchronous in pairs:
        assert inspect.signature(blocking).parameters == inspect.signature(asynchronous).parameters


CLIENT_METHODS = [
    "call", "cast", "cast_many", "fanout", "prepare", "stream", "connected", "url", "stats"
]  # fmt: skip
BOUND = ["call", "cast", "cast_many", "fanout", "prepare", "can_send_version", "stream"]


def test_a_stream_is_an_iterator_of_the_items_in_order(cluster: Cluster) -> None:
    with blocking_client(cluster) as client, client.stream("compute", "numbers", n=5) as items:
        assert list(items) == [0, 1, 2, 3, 4]


def test_leaving_a_stream_early_stops_its_generator_on_the_service(cluster: Cluster) -> None:
    tag = unique("early")
    with blocking_client(cluster) as client:
        target = client.prepare("compute.controller")
        with target.stream("numbers", n=10**6, tag=tag, window=4) as items:
            assert [next(items) for _ in range(3)] == [0, 1, 2]
        state = wait_until(lambda: target.call("state", tag=tag), lambda s: s == "closed")
        assert state == "closed"
        assert target.call("produced", tag=tag) < 20


def test_an_error_in_the_generator_is_raised_after_the_items_before_it(cluster: Cluster) -> None:
    got: list[int] = []
    with (
        blocking_client(cluster) as client,
        pytest.raises(trizmq.RemoteError, match="no more after 2 items"),
        client.stream("compute.controller", "numbers", n=5, fail_at=2) as items,
    ):
        got.extend(items)
    assert got == [0, 1]


# -- the stream bridge: an async stream as a blocking iterator ------------------------


@pytest.fixture
def loop() -> Iterator[_Loop]:
    """A blocking client's loop, holding nothing but the streams the test opens."""
    running = _Loop()
    running.start(contextlib.nullcontext(None))
    try:
        yield running
    finally:
        running.close()
    assert loop_threads() == []


class Numbers:
    """An async context manager yielding an async generator of numbers, logging
    what happens to it. It holds a nursery, as a real stream's context may: one
    task must enter and exit it."""

    def __init__(
        self, n: int, *, fail_at: int | None = None, fail_exit: bool = False, wait: bool = False
    ) -> None:
        self.n = n
        self.fail_at = fail_at
        self.fail_exit = fail_exit
        self.wait = wait  # each item waits forever
        self.log: list[str] = []
        self.exited = threading.Event()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[int]]:
        async with trio.open_nursery():
            self.log.append("entered")
            try:
                yield self._items()
            finally:
                self.log.append("exited")
                self.exited.set()
        if self.fail_exit:
            raise ValueError("exit failed")

    async def _items(self) -> AsyncIterator[int]:
        for i in range(self.n):
            if self.wait:
                await trio.sleep_forever()
            if i == self.fail_at:
                raise KeyError(i)
            self.log.append(f"pulled {i}")
            yield i


def test_a_stream_pulls_one_item_per_next(loop: _Loop) -> None:
    numbers = Numbers(5)
    with _BlockingStream(loop, numbers.open) as items:
        assert next(items) == 0
        assert next(items) == 1
        log = list(numbers.log)
    assert log == ["entered", "pulled 0", "pulled 1"]
    assert numbers.log[-1] == "exited"


def test_a_stream_read_to_its_end_exits_its_context_there(loop: _Loop) -> None:
    numbers = Numbers(3)
    with _BlockingStream(loop, numbers.open) as items:
        assert list(items) == [0, 1, 2]
        assert numbers.exited.wait(5)
        assert list(items) == []


def test_breaking_out_early_and_leaving_the_block_exits_the_context(loop: _Loop) -> None:
    numbers = Numbers(100)
    with _BlockingStream(loop, numbers.open) as items:
        for item in items:
            if item == 2:
                break
    assert numbers.log == ["entered", "pulled 0", "pulled 1", "pulled 2", "exited"]


def test_a_stream_dropped_as_garbage_exits_its_context(loop: _Loop) -> None:
    numbers = Numbers(100)
    stream = _BlockingStream(loop, numbers.open)
    assert next(stream.__enter__()) == 0
    del stream
    gc.collect()
    assert numbers.exited.wait(5)
    assert numbers.log == ["entered", "pulled 0", "exited"]


def test_an_error_of_the_stream_is_raised_by_next_and_ends_it(loop: _Loop) -> None:
    numbers = Numbers(5, fail_at=1)
    with _BlockingStream(loop, numbers.open) as items:
        assert next(items) == 0
        with pytest.raises(KeyError):
            next(items)
        assert list(items) == []
        assert numbers.exited.wait(5)


def test_an_error_exiting_the_stream_is_raised_leaving_the_block(loop: _Loop) -> None:
    numbers = Numbers(5, fail_exit=True)
    with (
        pytest.raises(ValueError, match="exit failed"),
        _BlockingStream(loop, numbers.open) as items,
    ):
        assert next(items) == 0


def test_an_error_entering_the_stream_is_raised_entering_the_block(loop: _Loop) -> None:
    @contextlib.asynccontextmanager
    async def refused() -> AsyncIterator[AsyncIterator[int]]:
        raise PermissionError("no stream for you")
        yield Numbers(1)._items()  # an async generator, never reached

    with pytest.raises(PermissionError), _BlockingStream(loop, refused):
        pass
    assert loop.run(trio.lowlevel.checkpoint) is None  # the loop is unharmed


def test_leaving_the_block_ends_a_pull_waiting_in_another_thread(loop: _Loop) -> None:
    numbers = Numbers(5, wait=True)
    ended: list[object] = []
    with _BlockingStream(loop, numbers.open) as items:
        puller = threading.Thread(target=lambda: ended.append(next(items, "end")))
        puller.start()
        time.sleep(0.2)
    puller.join(5)
    assert ended == ["end"]
    assert numbers.log == ["entered", "exited"]


def test_closing_the_loop_ends_a_pull_waiting_in_another_thread() -> None:
    running = _Loop()
    running.start(contextlib.nullcontext(None))
    numbers = Numbers(5, wait=True)
    raised: list[BaseException] = []

    def pull(items: Iterator[int]) -> None:
        try:
            next(items)
        except BaseException as exc:
            raised.append(exc)

    with _BlockingStream(running, numbers.open) as items:
        puller = threading.Thread(target=pull, args=(items,))
        puller.start()
        time.sleep(0.2)
        running.close()
        puller.join(5)
    assert [type(e) for e in raised] == [RuntimeError]
    assert numbers.log == ["entered", "exited"]
    assert loop_threads() == []
