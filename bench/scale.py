"""Scale: 1,000 simulated hosts on this machine, and what one client pays for them.

Worker processes each serve many hosts of one topic (``scale``) with
`trizmq.serve`, all in one Trio loop per process; every host has its own
loopback address, ``127.B.X.Y`` in a /16 block this run claims among
``127.230-249.*.*`` (the tests use ``127.20-219``, ``trizmq bench`` ``127.77``,
``stats_cost.py`` ``127.78``). The bench process measures, in order:

1. descriptors and memory of one client as it connects to 100, 500 and 1,000
   hosts (one call each);
2. fanouts to the first 100, 500 and 1,000 hosts, cold (a new client,
   connecting as it sends) and warm (every connection up): the time from the
   send until the last host ran it, each host stamping its receipt with
   `time.monotonic` (one clock for every process on Linux);
3. stats subscriptions to every port, as `trizmq stats` and the monitor keep
   them (`trizmq.stats.watch_ring`, 0.5 s interval): the subscriber's CPU, and
   the services' CPU with and without it, per port;
4. with ``--registry`` (a ``redis-server`` on loopback, started here): how long
   a client takes to learn the 1,000 members, what following them costs, its
   lag behind a churn of joins and leaves, and how many leaves are announced
   when every worker stops all its services at once.

The Scale section of docs/deploying.md gives a run's tables and what they mean;
tests/test_scale_bench.py runs it at 20 hosts.

Everything is loopback, bounded and stops by itself: workers run in their own
process groups, killed at the end, and exit when this process's end of their
standard input closes.

    .venv/bin/python bench/scale.py [--hosts 1000] [--workers 10] [--registry] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import fcntl
import gc
import itertools
import json
import math
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

import trizmq
from trizmq.bench.runner import environment
from trizmq.bench.worker import free_ports, open_fds, rss_bytes
from trizmq.stats import DEFAULT_INTERVAL, StatsBoard, watch_ring

TOPIC = "scale"
#: Calls in flight while the bench connects or collects.
WINDOW = 100
#: Seconds any one wait of the bench may take before it gives up.
PATIENCE = 60.0
#: Seconds a host that left stays out before it may join again (its port unbound).
REJOIN_AFTER = 2.0
# The second octets this bench may claim, one /16 per run.
_BLOCKS = range(230, 250)
_LOCKS = Path(tempfile.gettempdir()) / "trizmq-scale-networks"


# -- the simulated hosts (worker processes) ---------------------------------------


class Host:
    """The endpoint of one simulated host: answers, and stamps fanouts' arrival."""

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}

    async def ping(self, ctx: trizmq.Context) -> int:
        """This host's process id."""
        return os.getpid()

    async def mark(self, ctx: trizmq.Context, token: int) -> None:
        """Stamp the arrival of fanout `token` (a fanout's handler)."""
        self._seen[token] = time.monotonic()

    async def seen(self, ctx: trizmq.Context, token: int) -> float | None:
        """When fanout `token` ran here (`time.monotonic`), or None if it did not."""
        return self._seen.get(token)


def emit(message: dict[str, Any]) -> None:
    """One JSON line to the bench."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run_worker(spec: dict[str, Any], index: int) -> None:
    """Serve this worker's hosts until standard input closes.

    With a registry, each line ``join HOST`` or ``leave HOST`` on standard
    input starts or stops one host's service (it registers, or deregisters).
    """
    ring = trizmq.Ring.load(spec["ring"])
    resolve: dict[str, str] = spec["resolve"]
    options: dict[str, Any] = {"grace_period": 0.5}
    if spec.get("registry"):
        options["registry"] = spec["registry"]
    async with trio.open_nursery() as nursery:
        scopes: dict[str, trio.CancelScope] = {}

        async def serve(
            host: str, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
        ) -> None:
            scope = scopes[host] = trio.CancelScope()
            try:
                with scope:
                    await trizmq.serve(
                        ring, TOPIC, Host(), host, resolve, task_status=task_status, **options
                    )
            finally:
                if scopes.get(host) is scope:
                    del scopes[host]

        for host in spec["workers"][index]:
            await nursery.start(serve, host)
        emit({"ready": os.getpid(), "fds": open_fds()})

        async def join(host: str) -> None:
            await nursery.start(serve, host)  # registered once started
            emit({"registered": host, "at": time.monotonic()})

        async for command, host in _commands():
            if command == "join" and host not in scopes:
                nursery.start_soon(join, host)
            elif command == "leave" and host in scopes:
                scopes.pop(host).cancel()
        nursery.cancel_scope.cancel()


async def _commands() -> AsyncIterator[tuple[str, str]]:
    """``(command, host)`` for each line of standard input, until it closes."""
    buffer = b""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while data := await stdin.receive_some():
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                command, host = line.decode().split()
                yield command, host


# -- measuring -------------------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time of every thread of a process so far (`schedstat`, in ns), in seconds."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError),  # a thread that just ended
            open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f,
        ):
            total += int(f.read().split()[0])
    return total / 1e9


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def each(hosts: Sequence[str], fn: Callable[[str], Awaitable[Any]]) -> list[Any]:
    """`fn(host)` for every host, `WINDOW` at a time; the results in host order."""
    results: list[Any] = [None] * len(hosts)
    limit = trio.CapacityLimiter(WINDOW)

    async def one(i: int, host: str) -> None:
        async with limit:
            results[i] = await fn(host)

    async with trio.open_nursery() as nursery:
        for i, host in enumerate(hosts):
            nursery.start_soon(one, i, host)
    return results


async def fanout_time(client: trizmq.Client, hosts: Sequence[str], token: int) -> dict[str, float]:
    """Fanout `token` to every host: seconds until the send returned, and until
    the median and the last host ran it."""
    started = time.monotonic()
    await client.fanout(TOPIC, "mark", token=token)
    sent = time.monotonic() - started

    async def arrival(host: str) -> float:
        with trio.fail_after(PATIENCE):
            while True:  # a cold fanout may still be on its way
                at = await client.call(f"{TOPIC}.{host}", "seen", token=token)
                if at is not None:
                    return float(at) - started
                await trio.sleep(0.01)

    arrivals = await each(hosts, arrival)
    return {"send_s": sent, "median_s": statistics.median(arrivals), "all_s": max(arrivals)}


class Workers:
    """The worker processes of a run, and which of them serves which host."""

    def __init__(self, slices: Sequence[Sequence[str]], spares: Sequence[str], logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir()
        self.procs: list[trio.Process] = []
        self.fds: list[int] = []
        self.start_s = math.nan
        self.stopped = False
        self.owner = {host: i for i, hosts in enumerate(slices) for host in hosts}
        self.owner.update({host: i % len(slices) for i, host in enumerate(spares)})

    def log(self, index: int) -> Path:
        """Where worker `index` writes its standard error (trizmq's warnings)."""
        return self.logs / f"worker-{index}.log"

    def logged(self, text: str) -> int:
        """How many lines of the workers' logs hold `text`."""
        return sum(
            text in line
            for index in range(len(self.procs))
            for line in self.log(index).read_text(errors="replace").splitlines()
        )

    def cpu(self) -> float:
        """CPU seconds of every worker so far."""
        return sum(cpu_seconds(w.pid) for w in self.procs)

    async def command(self, command: str, host: str) -> None:
        """Tell the host's worker to start (``join``) or stop (``leave``) it."""
        worker = self.procs[self.owner[host]]
        if worker.poll() is not None:
            raise RuntimeError(f"worker {worker.pid} exited with {worker.returncode}")
        assert worker.stdin is not None
        stdin = worker.stdin
        await stdin.send_all(f"{command} {host}\n".encode())

    async def stop(self) -> None:
        """Close their standard input; kill their process groups if they linger."""
        if self.stopped:
            return
        self.stopped = True
        with trio.CancelScope(shield=True):
            for worker in self.procs:
                if worker.stdin is not None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await worker.stdin.aclose()
            with trio.move_on_after(5):
                for worker in self.procs:
                    await worker.wait()
            for worker in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                await worker.wait()


class Run:
    """One run of the bench: its hosts, workers and results."""

    def __init__(self, args: argparse.Namespace, work: Path, block: int) -> None:
        self.args = args
        self.work = work
        self.hosts = [f"h{i:04d}" for i in range(args.hosts)]
        self.block = block
        self.resolve = {host: self.address(i) for i, host in enumerate(self.hosts)}
        addresses = list(self.resolve.values())
        (self.port,) = free_ports([addresses[0], addresses[-1]], 1)
        self.ring_path = work / "ring.json"
        self.ring_path.write_text(json.dumps({f"{TOPIC}:{self.port}": self.hosts}))
        self.ring = trizmq.Ring.load(self.ring_path)
        per = math.ceil(len(self.hosts) / args.workers)
        self.slices = [self.hosts[i : i + per] for i in range(0, len(self.hosts), per)]
        self.results: dict[str, Any] = {
            "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
            "hosts": args.hosts,
            "workers": len(self.slices),
            "block": f"127.{block}.0.0/16",
            "descriptor_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "environment": environment(),
            "load_average": [round(os.getloadavg()[0], 2)],
        }

    # -- workers ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running_workers(
        self, ring_path: Path, registry: str | None = None, spares: Sequence[str] = ()
    ) -> AsyncIterator[Workers]:
        """The worker processes serving every host (and able to serve the spares)."""
        spec = self.work / f"spec-{ring_path.stem}.json"
        resolve = {
            **self.resolve,
            **{h: self.address(len(self.resolve) + i) for i, h in enumerate(spares)},
        }
        spec.write_text(
            json.dumps(
                {
                    "ring": str(ring_path),
                    "resolve": resolve,
                    "workers": self.slices,
                    "registry": registry,
                }
            )
        )
        workers = Workers(self.slices, spares, self.work / ring_path.stem)
        started = time.monotonic()
        try:
            for index in range(len(self.slices)):
                with workers.log(index).open("wb") as log:
                    workers.procs.append(
                        await trio.lowlevel.open_process(
                            [sys.executable, __file__, "--worker", str(spec), str(index)],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=log,
                            start_new_session=True,
                        )
                    )
            with trio.fail_after(PATIENCE):
                for worker in workers.procs:
                    assert worker.stdout is not None
                    line = await _read_line(worker.stdout)
                    workers.fds.append(json.loads(line)["fds"])
            workers.start_s = time.monotonic() - started
            self.results.setdefault("worker_pids", []).extend(w.pid for w in workers.procs)
            yield workers
        finally:
            await workers.stop()

    def address(self, i: int) -> str:
        """The loopback address of the `i`-th host."""
        return f"127.{self.block}.{1 + i // 250}.{1 + i % 250}"

    # -- the measurements --------------------------------------------------------

    def marks(self) -> list[int]:
        """The peer counts measured: those of `--peers` this run has hosts for."""
        return [n for n in self.args.peers if n <= len(self.hosts)]

    async def peers(self, workers: Workers) -> None:
        """One client's descriptors and memory as it connects to more and more hosts."""
        rows = []
        async with trizmq.open_client(self.ring, resolve=self.resolve, timeout=PATIENCE) as client:
            # The first peer starts ZeroMQ's I/O thread: the figures per peer leave it out.
            await client.call(f"{TOPIC}.{self.hosts[0]}", "ping")
            gc.collect()
            base_fds, base_rss = open_fds(), rss_bytes()
            done = 1
            for n in self.marks():
                started = time.monotonic()
                await each(self.hosts[done:n], lambda h: client.call(f"{TOPIC}.{h}", "ping"))
                took = time.monotonic() - started
                gc.collect()
                fds, rss = open_fds(), rss_bytes()
                rows.append(
                    {
                        "peers": n,
                        "fds": fds,
                        "fds_per_peer": (fds - base_fds) / (n - 1),
                        "rss_mb": rss / 2**20,
                        "rss_kb_per_peer": (rss - base_rss) / 1024 / (n - 1),
                        "connect_s": took,
                    }
                )
                done = n
            self.results["client_base"] = {"fds": base_fds, "rss_mb": base_rss / 2**20}
            self.results["peers"] = rows
            self.results["worker_fds_connected"] = max(fd_count(w.pid) for w in workers.procs)

    async def fanouts(self) -> None:
        """Fanouts to the first N hosts, for each N of the marks: first from a new
        client (cold: it connects as it sends), then with every connection up (warm)."""
        rows = []
        tokens = itertools.count()
        for n in self.marks():
            # The client's ring lists the first n hosts: its fanout reaches those.
            ring = trizmq.Ring.from_mapping({f"{TOPIC}:{self.port}": self.hosts[:n]})
            async with trizmq.open_client(ring, resolve=self.resolve, timeout=PATIENCE) as client:
                cold = await fanout_time(client, self.hosts[:n], next(tokens))
                warm = [
                    await fanout_time(client, self.hosts[:n], next(tokens))
                    for _ in range(self.args.fanouts)
                ]
            rows.append({"hosts": n, "cold": cold, "warm": _medians(warm)})
        self.results["fanout"] = rows

    async def stats(self, workers: Workers) -> None:
        """The CPU of stats subscriptions to every port: the subscriber's, each service's."""
        window = self.args.window
        await trio.sleep(1)  # the last client's connections closed, the services idle
        before = workers.cpu()
        await trio.sleep(window)
        idle = workers.cpu() - before
        board = StatsBoard(self.ring, self.resolve)
        async with trio.open_nursery() as nursery:
            started = time.monotonic()
            await nursery.start(watch_ring, board)
            await poll(board.answered)
            first = time.monotonic() - started
            await trio.sleep(1)  # past the first snapshots
            mine, theirs = cpu_seconds(), workers.cpu()
            await trio.sleep(window)
            mine, theirs = cpu_seconds() - mine, workers.cpu() - theirs
            now = trio.current_time()
            up = sum(view.state(now) == "up" for view in board.ports.values())
            fds = open_fds()
            nursery.cancel_scope.cancel()
        ports = len(board.ports)
        self.results["stats"] = {
            "ports": ports,
            "interval_s": DEFAULT_INTERVAL,
            "window_s": window,
            "first_full_board_s": first,
            "ports_up": up,
            "subscriber_cpu_pct": 100 * mine / window,
            "subscriber_fds": fds,
            "services_cpu_pct_idle": 100 * idle / window,
            "services_cpu_pct_watched": 100 * theirs / window,
            "per_port_cpu_us_per_s": 1e6 * (theirs - idle) / window / ports,
            "subscriber_cpu_us_per_port_per_s": 1e6 * mine / window / ports,
        }

    async def membership(self) -> None:
        """A registry of every host: how long a client takes to learn it, what following
        it costs, and its lag behind churn."""
        # The ring names the topic and its port; the members come from Redis.
        ring_path = self.work / "ring-registry.json"
        ring_path.write_text(json.dumps({f"{TOPIC}:{self.port}": ["seed"]}))
        ring = trizmq.Ring.load(ring_path)
        # Hosts that join during the churn: each leaver rejoins once its leave is seen
        # and REJOIN_AFTER passed, the spares fill in until then.
        spares = [f"s{i:04d}" for i in range(math.ceil(self.args.churn * (REJOIN_AFTER + 2)))]
        window = self.args.window
        async with (
            redis_server(self.work, f"127.{self.block}.0.1") as (url, redis),
            self.running_workers(ring_path, url, spares) as workers,
        ):
            result: dict[str, Any] = {
                "members": len(self.hosts),
                "start_s": workers.start_s,
                "redis_pid": redis.pid,
            }
            # Every service registered (and coredis imported: the clients' opens
            # below are not charged for it).
            members = await trizmq.Registry(url).members()
            if len(members) != len(self.hosts):
                raise RuntimeError(f"{len(members)} members registered of {len(self.hosts)}")
            # The services alone, renewing their leases.
            redis_cpu, theirs = cpu_seconds(redis.pid), workers.cpu()
            await trio.sleep(window)
            result["redis_cpu_pct_services"] = 100 * (cpu_seconds(redis.pid) - redis_cpu) / window
            result["services_cpu_pct_registered"] = 100 * (workers.cpu() - theirs) / window
            result["redis_fds"] = fd_count(redis.pid)
            result["worker_fds"] = max(fd_count(w.pid) for w in workers.procs)
            # A ring that lists every member too (configured, and live): the client
            # orders the live hosts by the ring's.
            started = time.monotonic()
            async with trizmq.open_client(self.ring, registry=url, timeout=PATIENCE):
                result["listed_open_s"] = time.monotonic() - started
                mine = cpu_seconds()
                result["listed_client_stall_ms"] = 1000 * await longest_stall(window)
                result["listed_client_cpu_pct_idle"] = 100 * (cpu_seconds() - mine) / window
            # A ring that names the topic alone: every member is known from Redis only.
            started = time.monotonic()
            async with trizmq.open_client(ring, registry=url, timeout=PATIENCE) as client:
                result["open_s"] = time.monotonic() - started
                await poll(lambda: all(routable(client, h) for h in self.hosts), 0.005)
                result["learn_s"] = time.monotonic() - started
                # Following them while nothing changes: a reload of every member per renewal.
                mine, redis_cpu = cpu_seconds(), cpu_seconds(redis.pid)
                result["client_stall_ms"] = 1000 * await longest_stall(window)
                result["client_cpu_pct_idle"] = 100 * (cpu_seconds() - mine) / window
                result["redis_cpu_pct_idle"] = 100 * (cpu_seconds(redis.pid) - redis_cpu) / window
                mine, redis_cpu = cpu_seconds(), cpu_seconds(redis.pid)
                result["churn"] = await churn(client, workers, self.hosts, spares, self.args)
                seconds = result["churn"]["seconds"]
                result["client_cpu_pct_churn"] = 100 * (cpu_seconds() - mine) / seconds
                result["redis_cpu_pct_churn"] = 100 * (cpu_seconds(redis.pid) - redis_cpu) / seconds
            # Every service stops at once as its worker exits: the leaves announced
            # (the others end with the lease), and those that timed out.
            live = len(await trizmq.Registry(url).members())
            leaves: list[float] = []
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(follow_leaves, url, leaves, stop)
                stopping = time.monotonic()
                await workers.stop()
                await trio.sleep(0.5)  # the last announcements on their way
                stop.set()
            result["stop"] = {
                "members": live,
                "deregistered": len(leaves),
                "all_s": max(leaves, default=math.nan) - stopping,
            }
        result["leaves_timed_out_at_stop"] = workers.logged("cannot deregister")
        self.results["registry"] = result

    async def run(self) -> None:
        async with self.running_workers(self.ring_path) as workers:
            self.results["worker_fds_idle"] = max(workers.fds)
            self.results["start_s"] = workers.start_s
            await self.peers(workers)
            await self.fanouts()
            await self.stats(workers)
        if self.args.registry:
            await self.membership()
        self.results["load_average"].append(round(os.getloadavg()[0], 2))


async def follow_leaves(
    url: str,
    leaves: list[float],
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Append when each leave is announced in the registry (`time.monotonic`), once
    subscribed, until `stop` is set."""
    import coredis

    channel = trizmq.Registry(url).channel
    redis: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)

    async def tell_stop() -> None:
        await stop.wait()
        await redis.publish(channel, "stop")

    # Not cancelled: coredis fails its unsubscribing on the connection a cancel closed.
    async with (
        redis,
        redis.pubsub(channels=[channel], ignore_subscribe_messages=True) as pubsub,
        trio.open_nursery() as nursery,
    ):
        await redis.publish(channel, "subscribed")  # no member: the clients ignore it
        async for message in pubsub:
            data = message["data"]
            if data == "subscribed":
                task_status.started()
                nursery.start_soon(tell_stop)
            elif data == "stop":
                break
            elif isinstance(data, str) and json.loads(data).get("event") == "leave":
                leaves.append(time.monotonic())


async def longest_stall(seconds: float, tick: float = 0.01) -> float:
    """For `seconds`, the longest a `tick` s sleep overran: how long the Trio loop
    was kept from running anything else (what a call would have waited)."""
    longest = 0.0
    end = trio.current_time() + seconds
    while (now := trio.current_time()) < end:
        await trio.sleep(tick)
        longest = max(longest, trio.current_time() - now - tick)
    return longest


def routable(client: trizmq.Client, host: str) -> bool:
    """Whether the client's view of the registry has `host` (a target it can route to)."""
    try:
        client.prepare(f"{TOPIC}.{host}")
    except trizmq.RingError:
        return False
    return True


async def churn(
    client: trizmq.Client,
    workers: Workers,
    hosts: Sequence[str],
    spares: Sequence[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """`args.churn` leaves and as many joins a second for `args.churn_seconds`: how long
    after the bench told a worker until the client's view showed it."""
    rng = random.Random(13)
    live = list(hosts)
    joinable = collections.deque(spares)
    pending: dict[str, tuple[str, float]] = {}  # host -> (event, when it was told)
    left: collections.deque[tuple[float, str]] = collections.deque()  # seen gone, since when
    lags: dict[str, list[float]] = {"join": [], "leave": [], "join_registering": []}
    joins: list[tuple[str, float]] = []  # (host, when told), for each join seen
    registered: dict[str, list[float]] = collections.defaultdict(list)

    async def observe() -> None:
        while True:
            now = time.monotonic()
            for host, (event, told) in list(pending.items()):
                if routable(client, host) == (event == "join"):
                    lags[event].append(now - told)
                    del pending[host]
                    if event == "leave":
                        left.append((now, host))
                    else:
                        joins.append((host, told))
            while left and now - left[0][0] >= REJOIN_AFTER:
                joinable.append(left.popleft()[1])
            await trio.sleep(0.002)

    async def tell(event: str, host: str) -> None:
        pending[host] = (event, time.monotonic())
        await workers.command(event, host)

    def registration(host: str, told: float) -> float | None:
        return min((t for t in registered[host] if t >= told), default=None)

    async def registrations(worker: trio.Process) -> None:
        assert worker.stdout is not None
        async for line in _lines(worker.stdout):
            message = json.loads(line)
            registered[message["registered"]].append(message["at"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(observe)
        for worker in workers.procs:
            nursery.start_soon(registrations, worker)
        started, tick = time.monotonic(), trio.current_time()
        for _ in range(round(args.churn * args.churn_seconds)):
            # A host whose join is not seen yet stays: each change is measured alone.
            if candidates := [host for host in live if host not in pending]:
                leaver = rng.choice(candidates)
                live.remove(leaver)
                await tell("leave", leaver)
            if joinable:
                joiner = joinable.popleft()
                live.append(joiner)
                await tell("join", joiner)
            tick += 1 / args.churn
            await trio.sleep_until(tick)
        seconds = time.monotonic() - started
        with contextlib.suppress(trio.TooSlowError):  # what is never seen is counted
            await poll(lambda: not pending, timeout=PATIENCE / 4)
        with contextlib.suppress(trio.TooSlowError):  # the workers' last lines read
            await poll(lambda: all(registration(*join) for join in joins), timeout=5)
        nursery.cancel_scope.cancel()
    # The worker's part of a join: starting the service, which registers it.
    for host, told in joins:
        if (at := registration(host, told)) is not None:
            lags["join_registering"].append(at - told)
    result: dict[str, Any] = {"seconds": seconds, "rate": args.churn, "unseen": len(pending)}
    for event, values in lags.items():
        values.sort()
        result[event] = {
            "count": len(values),
            "median_ms": 1000 * statistics.median(values) if values else math.nan,
            "p99_ms": 1000 * values[int(0.99 * (len(values) - 1))] if values else math.nan,
            "max_ms": 1000 * values[-1] if values else math.nan,
        }
    return result


@contextlib.asynccontextmanager
async def redis_server(work: Path, address: str) -> AsyncIterator[tuple[str, trio.Process]]:
    """A throwaway redis-server on `address`: its URL and process, killed at the end."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("--registry needs redis-server (make redis installs it)")
    (port,) = free_ports([address], 1)
    (work / "redis").mkdir()
    command = [executable, "--bind", address, "--port", str(port), "--dir", str(work / "redis")]
    command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
    proc = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        with trio.fail_after(PATIENCE / 4):
            while True:
                try:
                    stream = await trio.open_tcp_stream(address, port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        yield f"redis://{address}:{port}/0", proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await proc.wait()


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    """The lines of a worker's standard output, until it closes."""
    buffer = b""
    while data := await stream.receive_some():
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            yield line


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise RuntimeError(f"a worker exited before it was ready: {data!r}")
        data += chunk
    return data.decode()


async def poll(
    ready: Callable[[], bool], interval: float = 0.05, timeout: float = PATIENCE
) -> None:
    """Return once `ready()` is true; raise `trio.TooSlowError` after `timeout` seconds."""
    with trio.fail_after(timeout):
        while True:
            if ready():
                return
            await trio.sleep(interval)


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


# -- the address block and the report --------------------------------------------


@contextlib.contextmanager
def claimed_block() -> Iterator[int]:
    """A second octet of `_BLOCKS` no other running scale bench holds."""
    _LOCKS.mkdir(exist_ok=True)
    for block in _BLOCKS:
        fd = os.open(_LOCKS / str(block), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield block
        finally:
            os.close(fd)
        return
    raise RuntimeError(f"every scale bench block 127.{_BLOCKS[0]}-{_BLOCKS[-1]} is taken")


def format_report(r: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    hosts = r["hosts"]
    load = r["load_average"]
    out = [
        f"`{r['command']}`, {r['date']}, {r['environment']['cores']} cores,"
        f" load average {load[0]} before, {load[-1]} after.",
        "",
        f"{hosts:,} hosts (one topic, one port, each host its own address) in {r['workers']}"
        f" processes, serving in {r['start_s']:.1f} s; descriptor limit {r['descriptor_limit']:,};"
        f" a serving process holds {r['worker_fds_idle']:,} fds idle,"
        f" {r['worker_fds_connected']:,} with one client connected to all.",
        "",
        "| client connected to | fds | fds per peer | RSS (MB) | RSS per peer (KB) |"
        " connecting took (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = r["client_base"]
    out.append(f"| 1 peer | {base['fds']:,} | | {base['rss_mb']:.1f} | | |")
    for p in r["peers"]:
        out.append(
            f"| {p['peers']:,} peers | {p['fds']:,} | {p['fds_per_peer']:.2f} | {p['rss_mb']:.1f}"
            f" | {p['rss_kb_per_peer']:.0f} | {p['connect_s']:.2f} |"
        )
    out += [
        "",
        "| fanout to | send returns (ms) | half the hosts ran it (ms) | all ran it (ms) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for f in r["fanout"]:
        for name, label in (("warm", "connected"), ("cold", "new client")):
            t = f[name]
            out.append(
                f"| {f['hosts']:,} hosts, {label} | {1000 * t['send_s']:.0f}"
                f" | {1000 * t['median_s']:.0f} | {1000 * t['all_s']:.0f} |"
            )
    s = r["stats"]
    out += [
        "",
        f"| stats of {s['ports']:,} ports, every {s['interval_s']} s | CPU (% of a core)"
        " | per port (µs of CPU per s) |",
        "| --- | ---: | ---: |",
        f"| subscriber (`watch_ring`, as the monitor); {s['subscriber_fds']:,} fds,"
        f" full board in {s['first_full_board_s']:.2f} s, {s['ports_up']:,} up"
        f" | {s['subscriber_cpu_pct']:.1f} | {s['subscriber_cpu_us_per_port_per_s']:.0f} |",
        f"| the services, not watched | {s['services_cpu_pct_idle']:.1f} | |",
        f"| the services, watched | {s['services_cpu_pct_watched']:.1f}"
        f" | {s['per_port_cpu_us_per_s']:.0f} added |",
    ]
    if "registry" in r:
        out += ["", *format_registry(r["registry"])]
    return "\n".join(out)


def format_registry(g: dict[str, Any]) -> list[str]:
    """The registry's results as Markdown tables."""
    c = g["churn"]
    out = [
        f"| registry: {g['members']:,} members in one redis-server | value |",
        "| --- | --- |",
        f"| the services registered and serving | in {g['start_s']:.1f} s;"
        f" {g['services_cpu_pct_registered']:.1f} % of a core renewing leases,"
        f" redis-server {g['redis_cpu_pct_services']:.1f} %; it holds {g['redis_fds']:,} fds |",
        f"| a client learns them (its ring names the topic only): open / all routable"
        f" | {1000 * g['open_s']:.0f} ms / {1000 * g['learn_s']:.0f} ms |",
        f"| that client following them, nothing changing: CPU (% of a core); its longest"
        f" stall | client {g['client_cpu_pct_idle']:.1f}, redis-server"
        f" {g['redis_cpu_pct_idle']:.1f} (with the renewals); {g['client_stall_ms']:.0f} ms |",
        f"| a client whose ring lists the {g['members']:,} hosts too: open; CPU following;"
        f" longest stall | {1000 * g['listed_open_s']:.0f} ms;"
        f" {g['listed_client_cpu_pct_idle']:.1f} % of a core;"
        f" {g['listed_client_stall_ms']:.0f} ms |",
        f"| during the churn below (CPU, % of a core) | client {g['client_cpu_pct_churn']:.1f},"
        f" redis-server {g['redis_cpu_pct_churn']:.1f}; {c['unseen']} changes never seen |",
        f"| all {g['stop']['members']:,} stopping at once | {g['stop']['deregistered']:,}"
        f" deregistered, the last {1000 * g['stop']['all_s']:.0f} ms after the stop;"
        f" {g['leaves_timed_out_at_stop']:,} timed out (1 s), left when their lease ended |",
        "",
        f"| churn: {c['rate']:g} joins and {c['rate']:g} leaves a second for {c['seconds']:.0f} s"
        " | count | median (ms) | p99 (ms) | max (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (
        ("join", "a join: told → in the client's view"),
        ("join_registering", "of which its worker starting and registering it"),
        ("leave", "a leave: told → out of the client's view"),
    ):
        lag = c[key]
        out.append(
            f"| {label} | {lag['count']} | {lag['median_ms']:.0f} | {lag['p99_ms']:.0f}"
            f" | {lag['max_ms']:.0f} |"
        )
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000, help="simulated hosts (default 1000)")
    parser.add_argument("--workers", type=int, default=10, help="processes serving them")
    parser.add_argument(
        "--peers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[100, 500, 1000],
        help="peer counts at which the client is measured (default 100,500,1000)",
    )
    parser.add_argument("--fanouts", type=int, default=5, help="warm fanouts (median reported)")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of each CPU measurement")
    parser.add_argument(
        "--registry",
        action="store_true",
        help="also measure membership in a registry (starts a redis-server on loopback)",
    )
    parser.add_argument("--churn", type=float, default=50, help="joins and leaves a second")
    parser.add_argument("--churn-seconds", type=float, default=10, help="seconds of churn")
    parser.add_argument("--json", type=Path, help="write the results here too")
    return parser.parse_args(argv)


def raise_descriptor_limit() -> None:
    """The soft limit up to the hard one: the bench is about running out of them."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str]) -> int:
    raise_descriptor_limit()
    if argv and argv[0] == "--worker":
        spec = json.loads(Path(argv[1]).read_text())
        trio.run(run_worker, spec, int(argv[2]))
        return 0
    args = parse_args(argv)
    with claimed_block() as block, tempfile.TemporaryDirectory(prefix="trizmq-scale-") as work:
        run = Run(args, Path(work), block)
        trio.run(run.run)
    print(format_report(run.results))
    if args.json is not None:
        args.json.write_text(json.dumps(run.results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
