"""Chaos: a cluster under steady honest traffic while an adversary does, in turn,
everything `test_robustness.py` does one thing at a time.

The seed cluster (two `trizmq serve` processes) serves an honest client that
calls `ping` on four targets (5 s timeout) and casts `record` to
compute.controller, without pause, while a scripted adversary reuses ids,
never reads large replies, freezes an honest client process and a service
with SIGSTOP, provokes a reply over the size limit, floods the stats, sends a
CASTS of 200,000 casts and opens 500 connections to a service whose
descriptor limit was lowered to 256. Every step is bounded in count and time.

The invariants, checked at the end:

- every honest call succeeds or fails with a documented error (CallTimeout,
  PeerLost, ServiceShutdown) within its timeout and a small margin;
- no honest cast is lost, except casts in flight when their connection drops
  (documented), so only in a step in which the client saw compute.controller lost;
- every service process is alive, and every service answers the honest client.

The figures (calls made, succeeded and failed by kind; casts sent and
counted; each service process's peak RSS) are printed, and written as JSON
to the path in the environment variable TRIZMQ_CHAOS_REPORT if it is set.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import resource
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from adversary import Adversary, open_adversary, start_flood_calls
from conftest import Cluster

import trizmq

#: The message size limit of every service and client of the test.
LIMIT = 4 * 1024 * 1024
#: The honest calls' timeout, and how much later than it a failure may come.
TIMEOUT = 5.0
MARGIN = 1.0
DOCUMENTED = (trizmq.CallTimeout, trizmq.PeerLost, trizmq.ServiceShutdown)
CALL_TARGETS = ("compute", "network.controller", "network.computenodex", "scheduler.controller")
CAST_TARGET = "compute.controller"
#: The casts of the adversary's one large CASTS message, and the key they count under.
BULK_CASTS = 200_000
BULK_KEY = "chaos-bulk"
#: Seconds between an honest client's calls, and between its casts.
CALL_PACE = 0.02
CAST_PACE = 0.01


@dataclasses.dataclass
class Figures:
    """What happened, for the invariants and the report."""

    calls: int = 0
    succeeded: int = 0
    failed: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Calls that took longer than TIMEOUT + MARGIN, or failed in an undocumented way.
    overdue: list[str] = dataclasses.field(default_factory=list)
    undocumented: list[str] = dataclasses.field(default_factory=list)
    #: Per step: casts sent, casts the service ran.
    casts_sent: Counter[str] = dataclasses.field(default_factory=Counter)
    casts_counted: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Casts not sent within TIMEOUT (the queue to the service stayed full).
    casts_blocked: int = 0
    #: Steps in which the honest client saw its connection to CAST_TARGET lost.
    cast_target_lost_in: set[str] = dataclasses.field(default_factory=set)
    steps: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The casts of the adversary's CASTS message that ran (a figure, not an invariant).
    adversary_casts_counted: dict[str, Any] = dataclasses.field(default_factory=dict)
    answering: dict[str, str] = dataclasses.field(default_factory=dict)
    exit_codes: dict[str, int | None] = dataclasses.field(default_factory=dict)
    peak_rss_kib: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cast_target_lost_in"] = sorted(self.cast_target_lost_in)
        data["casts_sent"] = dict(self.casts_sent)
        data["failed"] = dict(self.failed)
        return data


class Traffic:
    """The honest client's calls and casts, tagged with the adversary's current step."""

    def __init__(self, client: trizmq.Client, figures: Figures) -> None:
        self.client = client
        self.figures = figures
        self.step = "warm-up"
        self.run = uuid.uuid4().hex[:8]

    def cast_key(self, step: str) -> str:
        return f"chaos-{self.run}-{step}"

    async def call_forever(self, targets: tuple[str, ...]) -> None:
        """Call `ping` on each target in turn, checking how every call ends."""
        figures = self.figures
        for target in itertools.cycle(targets):
            step = self.step
            started = trio.current_time()
            try:
                with trio.fail_after(TIMEOUT + MARGIN):
                    await self.client.call(target, "ping", x=1, timeout=TIMEOUT)
                figures.succeeded += 1
            except DOCUMENTED as exc:
                figures.failed[type(exc).__name__] += 1
                if isinstance(exc, trizmq.PeerLost) and f"{exc.topic}.{exc.host}" == CAST_TARGET:
                    figures.cast_target_lost_in.add(step)
            except trio.TooSlowError:
                figures.failed["overdue"] += 1
                figures.overdue.append(f"{step}: {target}: no answer within {TIMEOUT + MARGIN} s")
            except Exception as exc:
                figures.failed[type(exc).__name__] += 1
                elapsed = trio.current_time() - started
                figures.undocumented.append(f"{step}: {target}: {exc!r} after {elapsed:.2f} s")
            figures.calls += 1
            await trio.sleep(CALL_PACE)

    async def cast_forever(self) -> None:
        """Cast `record` to CAST_TARGET, under the key of the current step."""
        while True:
            step = self.step
            with trio.move_on_after(TIMEOUT) as waited:
                await self.client.cast(CAST_TARGET, "record", key=self.cast_key(step))
            if waited.cancelled_caught:
                self.figures.casts_blocked += 1
            else:
                self.figures.casts_sent[step] += 1
            await trio.sleep(CAST_PACE)


# -- the adversary's steps: each returns what it saw, in a few words ---------------------


async def reused_ids(cluster: Cluster, adversary: Adversary) -> str:
    """Two calls, then two casts, each pair under one id, to handlers that wait."""
    peer = adversary.peer(cluster.addresses[CAST_TARGET], "compute")
    for id, send in ((7, peer.call), (9, peer.cast)):
        await send(id, "sleep", seconds=1.0, tag=f"chaos-{id}-a")
        await send(id, "sleep", seconds=1.0, tag=f"chaos-{id}-b")
    answers = await peer.receive_for(1.5)
    return f"answers: {[(m.kind, m.id) for m in answers]}"


async def non_reader(cluster: Cluster, adversary: Adversary) -> str:
    """3,000 calls whose 200 kB replies are never read, for 3 s."""
    hog = adversary.peer(cluster.addresses[CAST_TARGET], "compute", small_queues=True)
    for id in range(1, 3001):
        await hog.call(id, "blob", n=200_000, timeout=60.0)
    await trio.sleep(3.0)
    hog.close()
    return "3000 calls sent, none read"


async def frozen_client(cluster: Cluster, adversary: Adversary) -> str:
    """An honest client process with 2,000 calls in flight, SIGSTOPped for 3 s."""
    flood = start_flood_calls(
        cluster.ring_path,
        cluster.resolve,
        CAST_TARGET,
        calls=2000,
        size=100_000,
        delay=1.0,
        lifetime=20,
        env=cluster.env(),
        cwd=cluster.workdir,
    )
    assert flood.stdout is not None
    try:
        with trio.fail_after(10):
            line = await trio.to_thread.run_sync(flood.stdout.readline, abandon_on_cancel=True)
        os.killpg(flood.pid, signal.SIGSTOP)
        try:
            await trio.sleep(3.0)
        finally:
            os.killpg(flood.pid, signal.SIGCONT)
        await trio.sleep(1.0)
    finally:
        os.killpg(flood.pid, signal.SIGKILL)
        await trio.to_thread.run_sync(flood.wait)
    return f"frozen with {line.decode().strip()!r}"


async def frozen_service(cluster: Cluster, adversary: Adversary) -> str:
    """computenodex SIGSTOPped for 4 s (longer than the 3 s heartbeat)."""
    cluster.send_signal("computenodex", signal.SIGSTOP)
    try:
        await trio.sleep(4.0)
    finally:
        cluster.send_signal("computenodex", signal.SIGCONT)
    return "computenodex frozen for 4 s"


async def oversize_reply(cluster: Cluster, adversary: Adversary) -> str:
    """A call whose reply is 1 MiB over the size limit, from a client of its own."""
    async with cluster.client(max_message_size=LIMIT, timeout=TIMEOUT) as client:
        try:
            await client.call(CAST_TARGET, "blob", n=LIMIT + 1024 * 1024)
        except trizmq.TrizmqError as exc:
            return f"{type(exc).__name__} {getattr(exc, 'type_name', '')}".strip()
    return "answered (over the limit!)"


async def stats_flood(cluster: Cluster, adversary: Adversary) -> str:
    """300 stats subscribers (every 0.1 s, 60 s lease) that never read, for 3 s."""
    peers = [adversary.peer(cluster.addresses[CAST_TARGET], "compute") for _ in range(300)]
    for peer in peers:
        await peer.subscribe_stats(interval=0.1, lease=60)
    await trio.sleep(3.0)
    for peer in peers:
        peer.close()
    return "300 subscribers for 3 s"


async def large_casts(cluster: Cluster, adversary: Adversary) -> str:
    """One CASTS message of 200,000 tiny casts (within the size limit)."""
    peer = adversary.peer(cluster.addresses[CAST_TARGET], "compute")
    await peer.casts(1, "record", [{"key": BULK_KEY}] * BULK_CASTS)
    await trio.sleep(2.0)
    return f"{BULK_CASTS} casts in one message"


async def connection_flood(cluster: Cluster, adversary: Adversary) -> str:
    """500 connections at once to controller, whose descriptor limit is now 256."""
    controller = cluster.process("controller")
    if controller.poll() is not None:
        return "controller is not running"
    resource.prlimit(controller.pid, resource.RLIMIT_NOFILE, (256, 256))
    opened = await adversary.connection_flood(
        cluster.addresses[CAST_TARGET], "compute", 500, batch=500
    )
    return f"{opened} connections opened and closed under RLIMIT_NOFILE 256"


#: (step, seconds it may take at most).
STEPS: tuple[tuple[Callable[[Cluster, Adversary], Awaitable[str]], float], ...] = (
    (reused_ids, 5),
    (non_reader, 15),
    (frozen_client, 20),
    (frozen_service, 8),
    (oversize_reply, 10),
    (stats_flood, 10),
    (large_casts, 10),
    (connection_flood, 10),
)


# -- the end: figures and invariants ----------------------------------------------------


async def answers(client: trizmq.Client, target: str, within: float) -> str:
    """Whether `target` answers a ping: "answered", else how the last try failed.

    Documented failures are retried for `within` seconds.
    """
    last = "no call made"
    with trio.move_on_after(within):
        while True:
            try:
                await client.call(target, "ping", x=1, timeout=1.0)
                return "answered"
            except DOCUMENTED as exc:
                last = type(exc).__name__
            await trio.sleep(0.2)
    return last


async def counted(client: trizmq.Client, key: str, expected: int, within: float) -> Any:
    """How many casts `record(key)` ran: polled until `expected` or `within` seconds."""
    last: Any = None
    with trio.move_on_after(within):
        while last != expected:
            try:
                last = await client.call(CAST_TARGET, "count", key=key, timeout=1.0)
            except DOCUMENTED as exc:
                last = type(exc).__name__
            if last != expected:
                await trio.sleep(0.2)
    return last


async def check_answers(client: trizmq.Client, target: str, figures: Figures) -> None:
    """Record whether `target` answers the honest client within 10 s."""
    figures.answering[target] = await answers(client, target, within=10)


async def check_counted(
    client: trizmq.Client, key: str, sent: int, results: dict[str, Any], name: str
) -> None:
    """Record as `results[name]` how many of the `sent` casts `record(key)` ran."""
    results[name] = await counted(client, key, sent, within=10)


def report(figures: Figures) -> None:
    """Print the figures, and write them to $TRIZMQ_CHAOS_REPORT if it is set."""
    text = json.dumps(figures.as_json(), indent=2, sort_keys=True)
    print(f"\nchaos figures:\n{text}")
    if path := os.environ.get("TRIZMQ_CHAOS_REPORT"):
        Path(path).write_text(text + "\n")


def peak_rss_kib(pid: int) -> int:
    """A process's peak resident set size (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def violations(figures: Figures) -> list[str]:
    """Every invariant the run broke, in words."""
    broken = [*figures.overdue, *figures.undocumented]
    for step, sent in figures.casts_sent.items():
        ran = figures.casts_counted.get(step)
        lost_allowed = step in figures.cast_target_lost_in
        if ran != sent and not (lost_allowed and isinstance(ran, int) and ran <= sent):
            broken.append(f"{step}: {sent} casts sent, {ran} ran")
    broken += [f"{t} does not answer: {a}" for t, a in figures.answering.items() if a != "answered"]
    broken += [f"{h} exited with {c}" for h, c in figures.exit_codes.items() if c is not None]
    return broken


@pytest.mark.timeout(180)
@pytest.mark.serve_args("--max-message-size", str(LIMIT))
async def test_honest_traffic_rides_out_every_attack_in_turn(fresh_cluster: Cluster) -> None:
    cluster = fresh_cluster
    figures = Figures()
    async with cluster.client(timeout=TIMEOUT, max_message_size=LIMIT, name="honest") as client:
        traffic = Traffic(client, figures)
        async with trio.open_nursery() as honest:
            honest.start_soon(traffic.call_forever, CALL_TARGETS)
            honest.start_soon(traffic.call_forever, CALL_TARGETS[::-1])
            honest.start_soon(traffic.cast_forever)
            await trio.sleep(1.0)
            with open_adversary() as adversary:
                for step, budget in STEPS:
                    traffic.step = step.__name__
                    try:
                        with trio.move_on_after(budget) as scope:
                            figures.steps[step.__name__] = await step(cluster, adversary)
                        if scope.cancelled_caught:
                            figures.steps[step.__name__] = f"cut off after {budget} s"
                    except Exception as exc:
                        figures.steps[step.__name__] = f"failed: {exc!r}"
                    await trio.sleep(1.0)  # honest traffic goes on
            traffic.step = "after"
            await trio.sleep(2.0)
            honest.cancel_scope.cancel()

        # All at once, each within its own bound: a dead service costs its bound, once.
        async with trio.open_nursery() as checks:
            for target in cluster.addresses:
                checks.start_soon(check_answers, client, target, figures)
            for step, sent in figures.casts_sent.items():
                key = traffic.cast_key(step)
                checks.start_soon(check_counted, client, key, sent, figures.casts_counted, step)
            bulk = figures.adversary_casts_counted
            checks.start_soon(check_counted, client, BULK_KEY, BULK_CASTS, bulk, "large_casts")

    for host in cluster.hosts:
        pid = cluster.process(host).pid
        figures.exit_codes[host] = cluster.process(host).poll()
        if figures.exit_codes[host] is None:
            figures.peak_rss_kib[host] = peak_rss_kib(pid)

    report(figures)
    broken = violations(figures)
    assert not broken, "\n".join(broken)
