"""`trizmq bench`: trizmq against raw pyzmq, client and server in separate processes.

Every benchmark has a baseline written with blocking pyzmq and a trizmq
counterpart doing the same work. Each round runs, for each benchmark, the
baseline and then trizmq (A B A B ...), so that a machine getting slower or
faster during the run affects both alike; the report gives the median of each
number over the rounds. The server side of every measurement is a fresh
``python -m trizmq.bench.worker`` process (`trizmq.bench.worker`); the
memory benchmarks measure a fresh client process too. Workers live in their
own process group, which is killed when a measurement ends.

The throughput benchmarks and the latency benchmark also report the CPU each
thread of the client (this process) and of the server spent per message over
the measured window (`trizmq.bench.cpu`): unlike a rate, it does not depend
on what else the machine runs.

Everything runs on loopback addresses of the bench's own block,
``127.77.<pid % 250>.K``, with ports chosen by the OS, so that a bench never
collides with tests or a demo cluster on the same machine. Linux only: the
memory and descriptor counts read ``/proc/self``.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import attrs
import msgpack
import trio
import zmq

from .._client import Client, open_client
from .._ring import Ring
from .._service import DEFAULT_MAX_CONCURRENCY
from .._transport import open_socket
from ..cli.bench import DEFAULT_COUNTS
from .cpu import PROCESSES, THREAD_CLASSES, CpuMeter
from .worker import PAYLOAD

__all__ = ["BENCHMARKS", "METRICS", "Settings", "format_table", "run_bench", "run_benchmarks"]

#: Calls in flight in the pipelining benchmark.
WINDOW = 100
#: Services a fanout reaches.
FANOUT_HOSTS = 8
#: Casts per `cast_many` in the batched cast benchmark.
CAST_BATCH = 100
_TIMES = "\N{MULTIPLICATION SIGN}"
# What the CPU lines of the table show, in the order of `THREAD_CLASSES`.
_CPU_COLUMNS = "Python / ZMQ I/O / other"

#: Bytes of one message of the adapter burst.
BURST_MESSAGE_BYTES = 50

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

# Seconds to wait for a worker's line: its start, or the end of one measurement.
_START_TIMEOUT = 30.0
_MEASURE_TIMEOUT = 300.0


class BenchError(Exception):
    """A benchmark could not run: a worker failed, or did not answer in time."""


@attrs.frozen
class Settings:
    """What one `trizmq bench` run does.

    Attributes:
        rounds: Times every benchmark runs (raw, then trizmq); medians are reported.
        calls: Sequential calls of the latency benchmark.
        pipelined: Calls of the pipelining benchmark, `WINDOW` in flight.
        casts: One-way messages of the cast benchmark.
        fanouts: Fanouts to `FANOUT_HOSTS` services.
        in_flight: Calls held in flight at once for the memory benchmark.
        peers: Service ports one client talks to in the peers benchmark.
        burst: Messages of the adapter burst.
        warmup: Unmeasured calls or messages before each measurement.
        only: The benchmarks to run (names of `BENCHMARKS`).
        prefix: The first three octets of the bench's loopback block.
    """

    rounds: int = 3
    calls: int = DEFAULT_COUNTS["calls"]
    pipelined: int = DEFAULT_COUNTS["pipelined"]
    casts: int = DEFAULT_COUNTS["casts"]
    fanouts: int = DEFAULT_COUNTS["fanouts"]
    in_flight: int = DEFAULT_COUNTS["in_flight"]
    peers: int = DEFAULT_COUNTS["peers"]
    burst: int = DEFAULT_COUNTS["burst"]
    warmup: int = DEFAULT_COUNTS["warmup"]
    only: tuple[str, ...] = ()
    prefix: str = attrs.field(factory=lambda: f"127.77.{os.getpid() % 250}")

    def address(self, k: int) -> str:
        """The bench's `k`-th loopback address (1-based)."""
        return f"{self.prefix}.{k}"


@attrs.frozen
class Metric:
    """One row of the report.

    Attributes:
        key: The name in the JSON results.
        label: What is measured; formatted with the `Settings` fields.
        unit: The unit of both columns.
        higher_is_better: Throughput (True) or a cost (False).
        target: The ratio trizmq / raw to reach, when there is one: at most
            this for a cost, at least this for throughput.
        digits: Decimals shown in the table.
        per: What one message of the row is (``call``, ``cast`` ...) when the
            row also reports the CPU each thread spent per message.
        user_cpu: The table also shows the part of that CPU spent in user
            space (counted in clock ticks: meaningful over long windows).
    """

    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None
    digits: int = 0
    per: str = ""
    user_cpu: bool = False

    def describe(self, settings: Settings) -> str:
        """The row's label with its unit, e.g. ``call latency, median (µs)``."""
        return f"{self.label.format(**attrs.asdict(settings))} ({self.unit})"

    def met(self, ratio: float | None) -> bool | None:
        """Whether a trizmq / raw ratio reaches the target (None without one)."""
        if self.target is None or ratio is None:
            return None
        return ratio >= self.target if self.higher_is_better else ratio <= self.target

    def target_text(self) -> str:
        """The target as the table shows it, e.g. ``≤ 1.5× raw``."""  # noqa: RUF002
        if self.target is None:
            return ""
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}{_TIMES} raw"


#: Every row of the report, in order.
METRICS: tuple[Metric, ...] = (
    Metric(
        "latency_median",
        "sequential call latency, median",
        "µs",
        False,
        1.5,
        per="call",
        user_cpu=True,
    ),
    Metric("latency_p99", "sequential call latency, p99", "µs", False),
    Metric(
        "pipelined",
        "pipelined calls, {pipelined:,} with 100 in flight",
        "calls/s",
        True,
        0.75,
        per="call",
    ),
    Metric("casts", "casts counted at the receiver, {casts:,}", "msgs/s", True, 0.3, per="cast"),
    Metric(
        "cast_many",
        f"casts in batches of {CAST_BATCH} (cast_many) at the receiver, {{casts:,}}",
        "msgs/s",
        True,
        0.5,
        per="cast",
    ),
    Metric("fanout", "fanout to 8 services, {fanouts:,}", "fanouts/s", True, per="fanout"),
    Metric("in_flight_client", "{in_flight:,} calls in flight, client", "B/call", False),
    Metric("in_flight_server", "{in_flight:,} calls in flight, server", "B/call", False),
    Metric("peer_fds", "{peers} service ports, descriptors", "fds/peer", False, digits=2),
    Metric("peer_memory", "{peers} service ports, client memory", "KiB/peer", False, digits=1),
    Metric(
        "burst",
        "adapter burst, {burst:,} msgs of 50 B DEALER→ROUTER",
        "msgs/s",
        True,
        per="message",
    ),
)


# -- worker processes ------------------------------------------------------------


class _Worker:
    """A `trizmq.bench.worker` process in its own process group.

    Entering reads its first line (kept in `ready`): a server's endpoints, or
    a measuring client's result. Leaving kills the group. Its standard input
    stays open while the bench runs: the worker exits by itself when it
    closes, whatever happens to the bench.
    """

    def __init__(
        self, role: str, config: dict[str, Any], *, start_timeout: float = _START_TIMEOUT
    ) -> None:
        self.role = role
        self.ready: dict[str, Any] = {}
        self._start_timeout = start_timeout
        self._buffer = b""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "trizmq.bench.worker", role, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self._proc.pid

    def read(self, timeout: float = _MEASURE_TIMEOUT) -> dict[str, Any]:
        """The worker's next JSON line.

        Raises:
            BenchError: The worker exited or said nothing for `timeout` seconds.
        """
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"bench worker {self.role}: no answer within {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self._proc.wait()
                    raise BenchError(f"bench worker {self.role} exited with code {code}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        """Kill the worker's process group and reap the worker."""
        if self._proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, sig)
                try:
                    self._proc.wait(timeout=2.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> _Worker:
        try:
            self.ready = self.read(self._start_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _serve(settings: Settings, *, hosts: int = 1, topics: int = 1, concurrency: int = 0) -> _Worker:
    return _Worker(
        "trizmq-serve",
        {
            "prefix": settings.prefix,
            "hosts": hosts,
            "topics": topics,
            "max_concurrency": concurrency or DEFAULT_MAX_CONCURRENCY,
        },
    )


def _measured(role: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run a measuring client role in a fresh process; what it measured."""
    with _Worker(role, config, start_timeout=_MEASURE_TIMEOUT) as client:
        return client.ready


def _meter(server: _Worker) -> CpuMeter:
    """The CPU of this process, the client, and of `server` over a measured window."""
    return CpuMeter(client=os.getpid(), server=server.pid)


def _cpu_of(keys: Sequence[str], per_message: dict[str, float]) -> dict[str, float]:
    """A window's CPU figures (`CpuMeter.stop`), named for the rows they belong to."""
    return {f"{key}/cpu/{name}": value for key in keys for name, value in per_message.items()}


def _ring_of(worker: _Worker) -> tuple[Ring, dict[str, str]]:
    resolve: dict[str, str] = worker.ready["resolve"]
    return Ring.from_mapping(worker.ready["ring"]), resolve


@contextlib.contextmanager
def _raw_sockets(kind: int, endpoints: Sequence[str]) -> Iterator[list[zmq.Socket[bytes]]]:
    """Blocking pyzmq sockets of `kind`, one connected to each endpoint, on a fresh context."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []
    try:
        for endpoint in endpoints:
            sock = ctx.socket(kind)
            socks.append(sock)
            sock.connect(endpoint)
        yield socks
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()


# -- 1. sequential call latency ----------------------------------------------------


@contextlib.contextmanager
def _raw_echo(settings: Settings) -> Iterator[tuple[_Worker, zmq.Socket[bytes]]]:
    """A ``raw-echo`` worker and a blocking DEALER connected to it."""
    with (
        _Worker("raw-echo", {"address": settings.address(1)}) as server,
        _raw_sockets(zmq.DEALER, server.ready["endpoints"]) as (sock,),
    ):
        yield server, sock


def _latency(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return {"latency_median": statistics.median(ordered) / 1000, "latency_p99": p99 / 1000}


def _raw_latency(settings: Settings) -> dict[str, float]:
    with _raw_echo(settings) as (server, sock):
        packb, unpackb, clock = msgpack.packb, msgpack.unpackb, time.perf_counter_ns
        for _ in range(settings.warmup):
            sock.send(packb(PAYLOAD))
            unpackb(sock.recv())
        meter = _meter(server)
        meter.start()
        samples = []
        for _ in range(settings.calls):
            start = clock()
            sock.send(packb(PAYLOAD))
            unpackb(sock.recv())
            samples.append(clock() - start)
        cpu = meter.stop(settings.calls)
    return {**_latency(samples), **_cpu_of(["latency_median"], cpu)}


def _trizmq_latency(settings: Settings) -> dict[str, float]:
    async def measure(meter: CpuMeter, ring: Ring, resolve: dict[str, str]) -> dict[str, float]:
        async with open_client(ring, resolve=resolve, name="bench") as client:
            for _ in range(settings.warmup):
                await client.call("t000", "echo", x=PAYLOAD)
            clock = time.perf_counter_ns
            meter.start()
            samples = []
            for _ in range(settings.calls):
                start = clock()
                await client.call("t000", "echo", x=PAYLOAD)
                samples.append(clock() - start)
            cpu = meter.stop(settings.calls)
            return {**_latency(samples), **_cpu_of(["latency_median"], cpu)}

    with _serve(settings) as server:
        return trio.run(measure, _meter(server), *_ring_of(server))


# -- 2. pipelined calls -------------------------------------------------------------


def _raw_window(sock: zmq.Socket[bytes], total: int) -> None:
    """`total` request/reply pairs on a blocking DEALER, keeping `WINDOW` outstanding."""
    packb, unpackb = msgpack.packb, msgpack.unpackb
    sent = 0
    while sent < min(WINDOW, total):
        sock.send(packb(PAYLOAD))
        sent += 1
    for _ in range(total):
        unpackb(sock.recv())
        if sent < total:
            sock.send(packb(PAYLOAD))
            sent += 1


def _raw_pipelined(settings: Settings) -> dict[str, float]:
    with _raw_echo(settings) as (server, sock):
        _raw_window(sock, settings.warmup * 5)
        meter = _meter(server)
        meter.start()
        start = time.perf_counter()
        _raw_window(sock, settings.pipelined)
        elapsed = time.perf_counter() - start
        cpu = meter.stop(settings.pipelined)
    return {"pipelined": settings.pipelined / elapsed, **_cpu_of(["pipelined"], cpu)}


async def pipeline_calls(client: Client, target: str, total: int, window: int = WINDOW) -> None:
    """Make `total` calls of ``echo`` from `window` concurrent tasks.

    Args:
        client: The client to call with.
        target: The topic served by `BenchEndpoint`.
        total: Calls in all.
        window: Tasks calling at once.
    """
    share, extra = divmod(total, window)

    async def caller(count: int) -> None:
        for _ in range(count):
            await client.call(target, "echo", x=PAYLOAD)

    async with trio.open_nursery() as nursery:
        for i in range(window):
            nursery.start_soon(caller, share + (1 if i < extra else 0))


def _trizmq_pipelined(settings: Settings) -> dict[str, float]:
    async def measure(meter: CpuMeter, ring: Ring, resolve: dict[str, str]) -> dict[str, float]:
        async with open_client(ring, resolve=resolve, name="bench") as client:
            await pipeline_calls(client, "t000", settings.warmup * 5)
            meter.start()
            start = time.perf_counter()
            await pipeline_calls(client, "t000", settings.pipelined)
            elapsed = time.perf_counter() - start
            cpu = meter.stop(settings.pipelined)
            return {"pipelined": settings.pipelined / elapsed, **_cpu_of(["pipelined"], cpu)}

    with _serve(settings) as server:
        return trio.run(measure, _meter(server), *_ring_of(server))


# -- 3. casts and 4. fanouts, counted at the receiver ------------------------------------


def _raw_pushes(
    settings: Settings, hosts: int, count: int, keys: Sequence[str]
) -> dict[str, float]:
    """Messages/s from one PUSH per host to PULL sockets, measured at the receivers.

    The rate and the CPU per message are reported under each of `keys`.
    """
    addresses = [settings.address(k) for k in range(1, hosts + 1)]
    config = {"type": "PULL", "addresses": addresses, "phases": [settings.warmup, count]}
    with (
        _Worker("raw-sink", config) as sink,
        _raw_sockets(zmq.PUSH, sink.ready["endpoints"]) as socks,
    ):
        packb = msgpack.packb
        for _ in range(settings.warmup):
            frame = packb(PAYLOAD)
            for sock in socks:
                sock.send(frame)
        sink.read()
        meter = _meter(sink)
        meter.start()
        start = time.monotonic()
        for _ in range(count):
            frame = packb(PAYLOAD)
            for sock in socks:
                sock.send(frame)
        last: float = sink.read()["last"]
        cpu = meter.stop(count)
    return {**dict.fromkeys(keys, count / (last - start)), **_cpu_of(keys, cpu)}


def _raw_casts(settings: Settings) -> dict[str, float]:
    # One baseline for both ways of casting: PUSH→PULL is as fast as ZeroMQ goes.
    return _raw_pushes(settings, 1, settings.casts, ["casts", "cast_many"])


def _raw_fanout(settings: Settings) -> dict[str, float]:
    return _raw_pushes(settings, FANOUT_HOSTS, settings.fanouts, ["fanout"])


async def _counted(client: Client, ring: Ring, count: int) -> float:
    """Wait until every service of ``t000`` counted `count` hits; the last hit's time."""
    lasts: list[float] = []
    for host in ring.hosts_of("t000"):
        got = await client.call(f"t000.{host}", "count", n=count)
        lasts.append(got["last"])
    return max(lasts)


async def _reset(client: Client, ring: Ring) -> None:
    for host in ring.hosts_of("t000"):
        await client.call(f"t000.{host}", "reset")


def _trizmq_sends(
    settings: Settings, hosts: int, count: int, how: Literal["casts", "cast_many", "fanout"]
) -> dict[str, float]:
    """The rate and CPU per message of `count` sends, measured at the receivers.

    Reported under `how`, the name of the row.
    """

    async def measure(meter: CpuMeter, ring: Ring, resolve: dict[str, str]) -> dict[str, float]:
        async with open_client(ring, resolve=resolve, name="bench") as client:

            async def send(n: int) -> None:
                if how == "cast_many":
                    batch = [{"x": PAYLOAD}] * CAST_BATCH
                    for _ in range(n // CAST_BATCH):
                        await client.cast_many("t000", "hit", batch)
                    await client.cast_many("t000", "hit", batch[: n % CAST_BATCH])
                    return
                one = client.fanout if how == "fanout" else client.cast
                for _ in range(n):
                    await one("t000", "hit", x=PAYLOAD)

            await send(settings.warmup)
            await _counted(client, ring, settings.warmup)
            await _reset(client, ring)
            meter.start()
            start = time.monotonic()
            await send(count)
            last = await _counted(client, ring, count)
            cpu = meter.stop(count)
            return {how: count / (last - start), **_cpu_of([how], cpu)}

    with _serve(settings, hosts=hosts) as server:
        return trio.run(measure, _meter(server), *_ring_of(server))


def _trizmq_casts(settings: Settings) -> dict[str, float]:
    return {
        **_trizmq_sends(settings, 1, settings.casts, "casts"),
        **_trizmq_sends(settings, 1, settings.casts, "cast_many"),
    }


def _trizmq_fanout(settings: Settings) -> dict[str, float]:
    return _trizmq_sends(settings, FANOUT_HOSTS, settings.fanouts, "fanout")


# -- 5. memory of calls in flight ------------------------------------------------------


def _in_flight(client: dict[str, Any], server_before: int, server_during: int) -> dict[str, float]:
    n: int = client["n"]
    return {
        "in_flight_client": (client["rss_during"] - client["rss_before"]) / n,
        "in_flight_server": (server_during - server_before) / n,
    }


def _raw_in_flight(settings: Settings) -> dict[str, float]:
    n = settings.in_flight
    with _Worker("raw-hold", {"address": settings.address(1), "n": n}) as server:
        got = _measured("mem-raw", {"endpoint": server.ready["endpoints"][0], "n": n})
        held = server.read()
    return _in_flight(got, held["rss_before"], held["rss_during"])


def _trizmq_in_flight(settings: Settings) -> dict[str, float]:
    n = settings.in_flight
    with _serve(settings, concurrency=n + 100) as server:
        got = _measured("mem-trizmq", {**server.ready, "n": n})
    return _in_flight(got, got["server_rss_before"], got["server_rss_during"])


# -- 6. one client, many service ports ---------------------------------------------------


def _per_peer(got: dict[str, Any]) -> dict[str, float]:
    peers: int = got["peers"]
    return {
        "peer_fds": (got["fds_after"] - got["fds_before"]) / peers,
        "peer_memory": (got["rss_after"] - got["rss_before"]) / 1024 / peers,
    }


def _raw_peers(settings: Settings) -> dict[str, float]:
    config = {"address": settings.address(1), "sockets": settings.peers + 1}
    with _Worker("raw-echo", config) as server:
        return _per_peer(_measured("peers-raw", server.ready))


def _trizmq_peers(settings: Settings) -> dict[str, float]:
    with _serve(settings, topics=settings.peers + 1) as server:
        return _per_peer(_measured("peers-trizmq", server.ready))


# -- 7. the adapter's burst ------------------------------------------------------------------


def _burst_sink(settings: Settings, role: str) -> _Worker:
    config = {
        "type": "ROUTER",
        "address": settings.address(1),
        "addresses": [settings.address(1)],
        "phases": [settings.warmup * 10, settings.burst],
    }
    return _Worker(role, config)


def _raw_burst(settings: Settings) -> dict[str, float]:
    message = b"x" * BURST_MESSAGE_BYTES
    with (
        _burst_sink(settings, "raw-sink") as sink,
        _raw_sockets(zmq.DEALER, sink.ready["endpoints"]) as (sock,),
    ):
        for _ in range(settings.warmup * 10):
            sock.send(message)
        sink.read()
        meter = _meter(sink)
        meter.start()
        start = time.monotonic()
        for _ in range(settings.burst):
            sock.send(message)
        last: float = sink.read()["last"]
        cpu = meter.stop(settings.burst)
    return {"burst": settings.burst / (last - start), **_cpu_of(["burst"], cpu)}


def _adapter_burst(settings: Settings) -> dict[str, float]:
    message = [b"x" * BURST_MESSAGE_BYTES]

    async def measure(sink: _Worker) -> dict[str, float]:
        with open_socket(zmq.DEALER) as sock:
            sock.zmq.connect(sink.ready["endpoints"][0])
            for _ in range(settings.warmup * 10):
                await sock.send(message)
            await trio.to_thread.run_sync(sink.read)
            meter = _meter(sink)
            meter.start()
            start = time.monotonic()
            for _ in range(settings.burst):
                await sock.send(message)
            report = await trio.to_thread.run_sync(sink.read)
            last: float = report["last"]
            cpu = meter.stop(settings.burst)
            return {"burst": settings.burst / (last - start), **_cpu_of(["burst"], cpu)}

    with _burst_sink(settings, "adapter-sink") as sink:
        return trio.run(measure, sink)


# -- running and reporting -------------------------------------------------------------------


@attrs.frozen
class Benchmark:
    """One benchmark: its baseline and its trizmq side, each giving metric values."""

    name: str
    raw: Callable[[Settings], dict[str, float]]
    trizmq: Callable[[Settings], dict[str, float]]


#: Every benchmark, in the order a round runs them.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("latency", _raw_latency, _trizmq_latency),
    Benchmark("pipelined", _raw_pipelined, _trizmq_pipelined),
    Benchmark("casts", _raw_casts, _trizmq_casts),
    Benchmark("fanout", _raw_fanout, _trizmq_fanout),
    Benchmark("in-flight", _raw_in_flight, _trizmq_in_flight),
    Benchmark("peers", _raw_peers, _trizmq_peers),
    Benchmark("burst", _raw_burst, _adapter_burst),
)
_SIDES = ("raw", "trizmq")


def run_benchmarks(
    settings: Settings, progress: Callable[[str], None] = lambda _: None
) -> dict[str, dict[str, list[float]]]:
    """Run every selected benchmark `settings.rounds` times, raw then trizmq.

    Args:
        settings: What to run, and how much.
        progress: Called with a line of text after each measurement.

    Returns:
        ``{metric key: {"raw": [one value a round], "trizmq": [...]}}``.

    Raises:
        BenchError: A worker failed or did not answer in time.
    """
    values: dict[str, dict[str, list[float]]] = {}
    selected = [b for b in BENCHMARKS if not settings.only or b.name in settings.only]
    for round_ in range(1, settings.rounds + 1):
        for bench in selected:
            for side in _SIDES:
                measure = bench.raw if side == "raw" else bench.trizmq
                try:
                    got = measure(settings)
                except Exception as exc:
                    exc.add_note(f"trizmq bench: while measuring {bench.name}, {side} side")
                    raise
                for key, value in got.items():
                    values.setdefault(key, {s: [] for s in _SIDES})[side].append(value)
                progress(
                    f"round {round_}/{settings.rounds}  {bench.name:<9} {side:<6}  {_shown(got)}"
                )
    return values


def _shown(got: dict[str, float]) -> str:
    """One measurement's values for the progress line, each with its CPU per message."""
    shown = []
    for key, value in got.items():
        if "/" in key:  # a CPU figure (`_cpu_of`), shown with its row
            continue
        cpu = [
            f"{process} {sum(got[f'{key}/cpu/{process}/{cls}'] for cls in THREAD_CLASSES):.1f}"
            for process in PROCESSES
            if f"{key}/cpu/{process}/python" in got
        ]
        shown.append(f"{key} {value:,.1f}" + (f" (CPU µs {', '.join(cpu)})" if cpu else ""))
    return ", ".join(shown)


def _cpu_summary(
    metric: Metric, values: dict[str, dict[str, list[float]]]
) -> dict[str, Any] | None:
    """Medians over the rounds of a row's CPU per message, per process and thread class.

    Returns:
        None if the row has no CPU figures, else ``{"unit": "µs/call",
        "trizmq": {process: {class: µs}}, "raw": {...}, "ratio": {process:
        trizmq's total over raw's}, "rounds": {side: {process: {class: [one
        value a round]}}}, "user": the same for the part in user space}``.
    """
    prefix = f"{metric.key}/cpu/"
    if not metric.per or f"{prefix}client/python" not in values:
        return None

    def medians(suffix: str) -> dict[str, Any]:
        rounds = {
            side: {
                process: {
                    cls: values[f"{prefix}{process}/{cls}{suffix}"][side] for cls in THREAD_CLASSES
                }
                for process in PROCESSES
            }
            for side in _SIDES
        }
        got: dict[str, Any] = {
            side: {
                process: {cls: statistics.median(each) for cls, each in classes.items()}
                for process, classes in processes.items()
            }
            for side, processes in rounds.items()
        }
        got["ratio"] = {}
        for process in PROCESSES:
            trizmq, raw = (sum(got[side][process].values()) for side in ("trizmq", "raw"))
            got["ratio"][process] = trizmq / raw if raw > 0 else None
        got["rounds"] = rounds
        return got

    return {"unit": f"µs/{metric.per}", **medians(""), "user": medians("/user")}


def summarize(
    settings: Settings, values: dict[str, dict[str, list[float]]]
) -> dict[str, dict[str, Any]]:
    """Medians over the rounds, the trizmq / raw ratio and whether the target is met.

    Args:
        settings: The settings of the run.
        values: What `run_benchmarks` returned.

    Returns:
        One entry per measured metric, keyed like `METRICS`; a row measured
        with its CPU per message has it under ``"cpu"`` (see `_cpu_summary`).
    """
    summary: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        if metric.key not in values:
            continue
        rounds = values[metric.key]
        trizmq, raw = statistics.median(rounds["trizmq"]), statistics.median(rounds["raw"])
        ratio = trizmq / raw if raw > 0 else None
        summary[metric.key] = {
            "label": metric.describe(settings),
            "unit": metric.unit,
            "trizmq": trizmq,
            "raw": raw,
            "ratio": ratio,
            "target": metric.target_text() or None,
            "met": metric.met(ratio),
            "rounds": rounds,
        }
        cpu = _cpu_summary(metric, values)
        if cpu is not None:
            summary[metric.key]["cpu"] = cpu
    return summary


def _ratio_text(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}{_TIMES}"


def _cpu_rows(metric: Metric, cpu: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The table's lines of a row's CPU per message (`_cpu_summary`), one per process.

    Then, if the metric says so, one per process for the part in user space.
    """
    parts = [("", cpu), (" in user space", cpu["user"])] if metric.user_cpu else [("", cpu)]

    def classes(figures: dict[str, Any], side: str, process: str) -> str:
        return " / ".join(f"{figures[side][process][cls]:.1f}" for cls in THREAD_CLASSES)

    return [
        (
            f"  CPU per {metric.per}{part} (µs), {process}: {_CPU_COLUMNS}",
            classes(figures, "trizmq", process),
            classes(figures, "raw", process),
            _ratio_text(figures["ratio"][process]),
            "",
            "",
        )
        for part, figures in parts
        for process in PROCESSES
    ]


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """Render the summary as a text table: benchmark, trizmq, raw pyzmq, ratio, target, met.

    A row measured with its CPU per message is followed by one line per
    process: the microseconds of CPU its Python thread, its ZeroMQ I/O threads
    and its other threads spent per message, and the ratio of the totals; the
    latency row, by one more per process for the part in user space.

    Args:
        summary: What `summarize` returned.

    Returns:
        The table, followed by a line counting the targets met.
    """
    rows = [("benchmark", "trizmq", "raw pyzmq", "ratio", "target", "met")]
    metrics = {m.key: m for m in METRICS}
    for key, entry in summary.items():
        d = metrics[key].digits
        met = {True: "yes", False: "NO", None: ""}[entry["met"]]
        rows.append(
            (
                entry["label"],
                f"{entry['trizmq']:,.{d}f}",
                f"{entry['raw']:,.{d}f}",
                _ratio_text(entry["ratio"]),
                entry["target"] or "",
                met,
            )
        )
        if "cpu" in entry:
            rows += _cpu_rows(metrics[key], entry["cpu"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:4], widths[1:4], strict=True)]
        cells += [row[4].ljust(widths[4]), row[5]]
        lines.append("  ".join(cells).rstrip())
    judged = [e["met"] for e in summary.values() if e["met"] is not None]
    lines.append("")
    lines.append(f"targets met: {sum(judged)} of {len(judged)}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """The versions and machine a run's numbers belong to."""
    try:
        version = importlib.metadata.version("trizmq")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "trio": trio.__version__,
        "msgpack": importlib.metadata.version("msgpack"),
        "trizmq": version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
    }


def run_bench(settings: Settings, json_path: Path | None = None) -> int:
    """Run the benchmarks, print progress to stderr and the table to stdout.

    Args:
        settings: What to run, and how much.
        json_path: Where to write every number as JSON too, or None.

    Returns:
        The exit code: 0, 1 when a benchmark could not run, 130 when interrupted.
    """
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    print(
        f"trizmq bench: {settings.rounds} round(s), client and servers on {settings.prefix}.*",
        file=sys.stderr,
        flush=True,
    )
    try:
        values = run_benchmarks(settings, lambda line: print(line, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"trizmq bench: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("trizmq bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = summarize(settings, values)
    print(format_table(summary))
    if json_path is not None:
        document = {
            "date": started.isoformat(timespec="seconds"),
            "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "environment": environment(),
            # Other work on the machine skews every number: the 1-minute load, before and after.
            "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "settings": attrs.asdict(settings),
            "results": summary,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK
