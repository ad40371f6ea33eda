"""Scale: 1,000 simulated hosts on this machine, and what one client pays for them.

Worker processes each serve many hosts of one topic (``scale``) with
`trizmq.serve`, all in one Trio loop per process; every host has its own
loopback address, ``127.B.X.Y`` in a /16 block this run claims among
``127.230-249.*.*`` (the tests use ``127.20-219``, ``trizmq bench`` ``127.77``,
``stats_cost.py`` ``127.78``). The bench process measures, in order:

1. descriptors and memory of one client as it connects to 100, 500 and 1,000
   hosts (one call each);
2. a fanout to every host, warm (every connection up) and cold (a new client,
   connecting as it sends): the time from the send until the last host ran it,
   each host stamping its receipt with `time.monotonic` (one clock for every
   process on Linux);
3. stats subscriptions to every port, as `trizmq stats` and the monitor keep
   them (`trizmq.stats.watch_ring`, 0.5 s interval): the subscriber's CPU, and
   the services' CPU with and without it, per port;
4. with ``--registry`` (a ``redis-server`` on loopback, started here): how long
   a client takes to learn the 1,000 members, and its lag behind a churn of
   joins and leaves.

Everything is loopback, bounded and stops by itself: workers run in their own
process groups, killed at the end, and exit when this process's end of their
standard input closes.

    .venv/bin/python bench/scale.py [--hosts 1000] [--workers 10] [--registry] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import itertools
import json
import math
import os
import resource
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
    """Serve this worker's hosts until standard input closes."""
    ring = trizmq.Ring.load(spec["ring"])
    resolve: dict[str, str] = spec["resolve"]
    serve_options: dict[str, Any] = {"grace_period": 0.5}
    async with trio.open_nursery() as nursery:
        scopes: dict[str, trio.CancelScope] = {}

        async def serve(host: str, task_status: trio.TaskStatus[str]) -> None:
            with scopes.setdefault(host, trio.CancelScope()):
                await trizmq.serve(
                    ring, TOPIC, Host(), host, resolve, task_status=task_status, **serve_options
                )

        for host in spec["workers"][index]:
            await nursery.start(serve, host)
        emit({"ready": os.getpid(), "fds": open_fds()})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while await stdin.receive_some():
                pass  # nothing to do yet: the bench only closes it
        nursery.cancel_scope.cancel()


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


class Run:
    """One run of the bench: its hosts, workers and results."""

    def __init__(self, args: argparse.Namespace, work: Path, block: int) -> None:
        self.args = args
        self.work = work
        self.hosts = [f"h{i:04d}" for i in range(args.hosts)]
        self.resolve = {
            host: f"127.{block}.{1 + i // 250}.{1 + i % 250}" for i, host in enumerate(self.hosts)
        }
        addresses = list(self.resolve.values())
        (self.port,) = free_ports([addresses[0], addresses[-1]], 1)
        self.ring_path = work / "ring.json"
        self.ring_path.write_text(json.dumps({f"{TOPIC}:{self.port}": self.hosts}))
        self.ring = trizmq.Ring.load(self.ring_path)
        per = math.ceil(len(self.hosts) / args.workers)
        self.slices = [self.hosts[i : i + per] for i in range(0, len(self.hosts), per)]
        self.workers: list[trio.Process] = []
        self.results: dict[str, Any] = {
            "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
            "hosts": args.hosts,
            "workers": len(self.slices),
            "block": f"127.{block}.0.0/16",
            "descriptor_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "environment": environment(),
        }

    # -- workers ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running_workers(self) -> AsyncIterator[None]:
        spec = self.work / "spec.json"
        spec.write_text(
            json.dumps(
                {"ring": str(self.ring_path), "resolve": self.resolve, "workers": self.slices}
            )
        )
        started = time.monotonic()
        try:
            for index in range(len(self.slices)):
                self.workers.append(
                    await trio.lowlevel.open_process(
                        [sys.executable, __file__, "--worker", str(spec), str(index)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        start_new_session=True,
                    )
                )
            fds = []
            with trio.fail_after(PATIENCE):
                for worker in self.workers:
                    assert worker.stdout is not None
                    line = await _read_line(worker.stdout)
                    fds.append(json.loads(line)["fds"])
            self.results["start_s"] = time.monotonic() - started
            self.results["worker_pids"] = [w.pid for w in self.workers]
            self.results["worker_fds_idle"] = max(fds)
            yield
        finally:
            for worker in self.workers:
                if worker.stdin is not None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await worker.stdin.aclose()
            with trio.move_on_after(5):
                for worker in self.workers:
                    await worker.wait()
            for worker in self.workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await worker.wait()

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(w.pid) for w in self.workers)

    # -- the measurements --------------------------------------------------------

    def marks(self) -> list[int]:
        """The peer counts measured: those of `--peers` this run has hosts for."""
        return [n for n in self.args.peers if n <= len(self.hosts)]

    async def peers(self) -> None:
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
            self.results["worker_fds_connected"] = max(fd_count(w.pid) for w in self.workers)

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

    async def stats(self) -> None:
        """The CPU of stats subscriptions to every port: the subscriber's, each service's."""
        window = self.args.window
        await trio.sleep(1)  # the last client's connections closed, the services idle
        before = self.worker_cpu()
        await trio.sleep(window)
        idle = self.worker_cpu() - before
        board = StatsBoard(self.ring, self.resolve)
        async with trio.open_nursery() as nursery:
            started = time.monotonic()
            await nursery.start(watch_ring, board)
            await poll(board.answered)
            first = time.monotonic() - started
            await trio.sleep(1)  # past the first snapshots
            mine, theirs = cpu_seconds(), self.worker_cpu()
            await trio.sleep(window)
            mine, theirs = cpu_seconds() - mine, self.worker_cpu() - theirs
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

    async def run(self) -> None:
        async with self.running_workers():
            await self.peers()
            await self.fanouts()
            await self.stats()


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise RuntimeError(f"a worker exited before it was ready: {data!r}")
        data += chunk
    return data.decode()


async def poll(ready: Callable[[], bool], interval: float = 0.05) -> None:
    """Return once `ready()` is true; fail after `PATIENCE` seconds."""
    with trio.fail_after(PATIENCE):
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
    out = [
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
    return "\n".join(out)


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
