"""Each service fails alone, failure is fast and clear, and hostile input is refused.

Every test runs real `trizmq serve` processes on loopback addresses of its own
and stops them, whatever happens.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import trio
import zmq
from conftest import (
    SEED_RING,
    Cluster,
    eventually,
    serving,
    subprocess_env,
    trizmq_command,
    unique_resolve,
)

import trizmq
from trizmq._transport import open_socket
from trizmq._wire import VERSION, Call, Kind, Replies, Reply, decode, encode
from trizmq.stats import StatsBoard, watch_ring


class SplitCluster:
    """The seed cluster with one process per (host, topic), as `trizmq demo` runs it."""

    def __init__(self, workdir: Path, services: list[tuple[str, str]]) -> None:
        self.workdir = workdir
        self.services = services
        self.resolve = unique_resolve()
        self._procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}

    def start(self, host: str, topic: str) -> None:
        log = self.workdir / f"{topic}.{host}.log"
        offset = log.stat().st_size if log.exists() else 0
        resolve = [a for h, addr in self.resolve.items() for a in ("--resolve", f"{h}={addr}")]
        command = trizmq_command(
            "serve",
            str(SEED_RING),
            "--host",
            host,
            "--topic",
            topic,
            "--app",
            "cluster_app:SERVICES",
            *resolve,
        )
        with log.open("ab") as out:
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=subprocess_env(),
                start_new_session=True,
            )
        self._procs[(host, topic)] = proc
        deadline = time.monotonic() + 15
        while f"{topic}.{host} serving on" not in log.read_text()[offset:]:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)

    def kill(self, host: str, topic: str) -> None:
        proc = self._procs[(host, topic)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def client(self, **kwargs: object) -> trizmq.Client:
        return trizmq.open_client(trizmq.Ring.load(SEED_RING), resolve=self.resolve, **kwargs)  # type: ignore[arg-type, return-value]


@pytest.fixture
def split(tmp_path: Path) -> Iterator[SplitCluster]:
    services = [
        ("controller", "compute"),
        ("computenodex", "compute"),
        ("computenodex", "network"),
        ("controller", "scheduler"),
    ]
    running = SplitCluster(tmp_path, services)
    try:
        for host, topic in services:
            running.start(host, topic)
        yield running
    finally:
        running.stop_all()


# -- peer loss ------------------------------------------------------------------


async def test_a_call_in_flight_to_a_killed_service_fails_with_peer_lost_at_once(
    fresh_cluster: Cluster,
) -> None:
    async with fresh_cluster.client() as client:
        assert await client.call("compute.computenodex", "ping", x=1) == 2

        async def kill_soon() -> None:
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(fresh_cluster.kill, "computenodex")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_soon)
                started = trio.current_time()
                with pytest.raises(trizmq.PeerLost) as lost:
                    await client.call(
                        "compute.computenodex", "sleep", seconds=30, tag="t", timeout=60
                    )
    assert trio.current_time() - started < 3.0
    assert lost.value.host == "computenodex"
    assert lost.value.topic == "compute"


async def test_a_frozen_service_is_lost_within_the_heartbeat_window(
    fresh_cluster: Cluster,
) -> None:
    async with fresh_cluster.client(heartbeat=1.0) as client:
        assert await client.call("compute.computenodex", "ping", x=1) == 2
        # SIGSTOP freezes ZeroMQ's I/O thread too: no heartbeat is answered.
        fresh_cluster.send_signal("computenodex", signal.SIGSTOP)
        try:
            started = trio.current_time()
            with trio.fail_after(10), pytest.raises(trizmq.PeerLost):
                await client.call("compute.computenodex", "ping", x=1, timeout=60)
            # The window, and the 50 ms left to replies already on their way.
            assert trio.current_time() - started < 1.0 + 0.3
        finally:
            fresh_cluster.send_signal("computenodex", signal.SIGCONT)


async def test_a_busy_service_is_never_reported_lost(cluster: Cluster) -> None:
    # Handlers six times longer than the heartbeat window: one async, one
    # blocking its worker thread. ZeroMQ's I/O thread answers heartbeats anyway.
    async with cluster.client(heartbeat=1.0) as client:
        results: list[str] = []

        async def call(method: str) -> None:
            results.append(
                await client.call("compute.controller", method, seconds=6.0, tag=method, timeout=30)
            )

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "sleep")
                nursery.start_soon(call, "blocking")
    assert len(results) == 2


# -- restarts -------------------------------------------------------------------


async def test_killing_one_service_leaves_the_other_services_serving(
    split: SplitCluster,
) -> None:
    async with split.client() as client:
        split.kill("computenodex", "compute")
        with trio.fail_after(10):
            assert await client.call("network.computenodex", "ping", x=1) == 2
            assert await client.call("compute.controller", "ping", x=2) == 3
            assert await client.call("scheduler.controller", "ping", x=3) == 4


async def test_callers_reach_a_restarted_service_without_restarting(split: SplitCluster) -> None:
    async with split.client() as client:
        assert await client.call("compute.computenodex", "ping", x=1) == 2
        split.kill("computenodex", "compute")
        await trio.to_thread.run_sync(split.start, "computenodex", "compute")
        with trio.fail_after(10):
            assert await client.call("compute.computenodex", "ping", x=5, timeout=5) == 6


async def test_round_robin_skips_a_down_host_and_uses_it_again_when_back(
    split: SplitCluster,
) -> None:
    async def hosts_answering(client: trizmq.Client, calls: int) -> list[str]:
        return [(await client.call("compute", "whoami", timeout=2))["host"] for _ in range(calls)]

    async with split.client() as client:
        assert set(await hosts_answering(client, 4)) == {"controller", "computenodex"}
        split.kill("computenodex", "compute")
        await trio.sleep(0.3)  # the client learns of the lost connection from ZeroMQ
        with trio.fail_after(10):
            assert await hosts_answering(client, 10) == ["controller"] * 10
        await trio.to_thread.run_sync(split.start, "computenodex", "compute")
        await eventually(
            lambda: hosts_answering(client, 2), until=lambda hosts: "computenodex" in hosts
        )


# -- delivery semantics -----------------------------------------------------------


async def test_a_cast_to_a_down_service_fails_fast_and_never_runs_later(
    split: SplitCluster,
) -> None:
    key = uuid.uuid4().hex
    async with split.client() as client:
        assert await client.call("compute.computenodex", "ping", x=1) == 2
        split.kill("computenodex", "compute")
        await eventually(lambda: not client.connected("compute.computenodex"))
        with trio.fail_after(5), pytest.raises(trizmq.HostUnreachable):
            await client.cast("compute.computenodex", "record", key=key)
        await trio.to_thread.run_sync(split.start, "computenodex", "compute")
        with trio.fail_after(10):
            seen = await client.call("compute.computenodex", "count", key=key, wait_for_ready=True)
    assert seen == 0


async def test_a_cast_waiting_for_a_down_service_is_delivered_when_it_returns(
    split: SplitCluster,
) -> None:
    key = uuid.uuid4().hex
    async with split.client() as client:
        assert await client.call("compute.computenodex", "ping", x=1) == 2
        split.kill("computenodex", "compute")
        await eventually(lambda: not client.connected("compute.computenodex"))
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(
                        functools.partial(
                            client.cast,
                            "compute.computenodex",
                            "record",
                            key=key,
                            wait_for_ready=True,
                        )
                    )
                await trio.sleep(0.5)  # the casts wait: nothing listens
                await trio.to_thread.run_sync(split.start, "computenodex", "compute")
            await eventually(
                lambda: client.call("compute.computenodex", "count", key=key, timeout=2),
                until=lambda n: n == 5,
            )


async def test_a_lost_call_is_not_run_again_when_its_service_returns(
    split: SplitCluster,
) -> None:
    async with split.client() as client:

        async def kill_soon() -> None:
            await eventually(
                lambda: client.call("compute.computenodex", "state", tag="once"),
                until=lambda state: state == "started",
            )
            split.kill("computenodex", "compute")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_soon)
                with pytest.raises(trizmq.PeerLost):
                    await client.call("compute.computenodex", "sleep", seconds=30, tag="once")
        await trio.to_thread.run_sync(split.start, "computenodex", "compute")
        with trio.fail_after(10):
            await client.call("compute.computenodex", "ping", x=1, timeout=5)
            await trio.sleep(0.5)  # time enough for a replay, if there were one
            assert await client.call("compute.computenodex", "state", tag="once") is None


# -- hostile input ----------------------------------------------------------------

_LIMIT = 4096


def _hostile_messages(count: int, rng: random.Random) -> Iterator[tuple[str, list[bytes]]]:
    """(what is wrong, frames) for `count` malformed requests, every kind of them."""
    good = encode(Call(1, "compute", "ping", {"x": 1}, {}, 5.0))
    makers = [
        ("random bytes", lambda: [rng.randbytes(rng.randint(0, 64))]),
        ("truncated", lambda: [good[: rng.randint(0, len(good) - 1)]]),
        ("wrong types", lambda: [msgpack.packb([VERSION, Kind.CALL, "1", 5, None, [], 1, "x"])]),
        ("unknown kind", lambda: [msgpack.packb([VERSION, rng.randint(9, 120), 1])]),
        ("future version", lambda: [msgpack.packb([VERSION + rng.randint(1, 9), Kind.CALL, 1])]),
        ("frame count", lambda: [good] * rng.randint(2, 4)),
        ("oversized", lambda: [b"\x00" * rng.randint(_LIMIT + 1, 2 * _LIMIT)]),
        ("a reply sent to a service", lambda: [encode(Reply(1, "surprise"))]),
    ]
    for i in range(count):
        what, make = makers[i % len(makers)]
        yield what, make()


async def test_a_fuzzed_service_refuses_and_counts_every_bad_message_and_keeps_serving() -> None:
    count = 10_000
    resolve = unique_resolve(("controller",))
    ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})

    class Compute:
        async def ping(self, ctx: trizmq.Context, x: int) -> int:
            return x + 1

    async with serving(ring, "compute", Compute(), "controller", resolve, max_message_size=_LIMIT):
        board = StatsBoard(ring, resolve)
        raw = open_socket(zmq.DEALER)
        raw.zmq.connect(f"tcp://{resolve['controller']}:9501")
        errors = 0
        good_calls = 0
        with raw, trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_ring, board)

                async def read_errors() -> None:
                    nonlocal errors
                    while True:
                        for frames in await raw.receive_batch():
                            reply = decode(frames[-1])
                            # Refusals read together are answered together.
                            for answer in reply.answers if isinstance(reply, Replies) else [reply]:
                                assert answer.code == "protocol"  # type: ignore[union-attr]
                                errors += 1

                async def call_meanwhile(done: trio.Event) -> None:
                    nonlocal good_calls
                    async with trizmq.open_client(ring, resolve=resolve) as client:
                        while not done.is_set():
                            assert await client.call("compute", "ping", x=good_calls) == (
                                good_calls + 1
                            )
                            good_calls += 1

                nursery.start_soon(read_errors)
                done = trio.Event()
                nursery.start_soon(call_meanwhile, done)
                for _, frames in _hostile_messages(count, random.Random(7)):
                    await raw.send(frames)
                await eventually(lambda: errors, until=lambda n: n == count, timeout=30)

                def rejected() -> int:
                    data = board.ports[("controller", "compute")].data or {}
                    return sum(data.get("rejected", {}).values())

                await eventually(rejected, until=lambda n: n == count, timeout=10)
                done.set()
                nursery.cancel_scope.cancel()
    assert good_calls > 0


async def test_a_client_refuses_to_send_a_message_over_the_size_limit(cluster: Cluster) -> None:
    async with cluster.client(max_message_size=1000) as client:
        with pytest.raises(trizmq.MessageTooLarge, match="over the limit of 1000"):
            await client.call("compute.controller", "echo", value="x" * 2000)
        assert await client.call("compute.controller", "echo", value="x" * 10) == "x" * 10


# -- overload -------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.serve_args("--max-concurrency", "200")
async def test_ten_thousand_concurrent_calls_on_a_slow_service_are_all_answered(
    fresh_cluster: Cluster,
) -> None:
    calls = 10_000
    pid = fresh_cluster.process("controller").pid
    before = _rss_kib(pid)
    peak = before
    answers: dict[int, str] = {}
    async with fresh_cluster.client() as client:

        async def one(i: int) -> None:
            answers[i] = await client.call(
                "compute.controller", "sleep", seconds=0.02, tag=str(i), timeout=120
            )

        async def watch_memory() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss_kib(pid))
                await trio.sleep(0.1)

        with trio.fail_after(110):
            async with trio.open_nursery() as watcher:
                watcher.start_soon(watch_memory)
                async with trio.open_nursery() as nursery:
                    for i in range(calls):
                        nursery.start_soon(one, i)
                watcher.cancel_scope.cancel()
    assert answers == {i: str(i) for i in range(calls)}
    # Bounded: the limit and ZeroMQ's high-water marks hold the rest back.
    assert (peak - before) < 64 * 1024, f"service grew by {(peak - before) // 1024} MiB"
