"""The other process of `trizmq bench`: servers, sinks and fresh measuring clients.

Run as ``python -m trizmq.bench.worker ROLE CONFIG_JSON``. The worker speaks
JSON lines on stdout: a server role prints one ``ready`` line (its endpoints,
or the ring it serves) and then, for a sink, one report per phase; a client
role prints its one result and exits. The worker exits as soon as its standard
input closes, so it never outlives the bench that started it, even one killed
with ``SIGKILL``.

Server roles (they run until stopped):

- ``raw-echo``: blocking pyzmq ROUTER sockets that echo msgpack payloads.
- ``raw-sink``: blocking pyzmq PULL or ROUTER sockets that count messages.
- ``raw-hold``: a blocking ROUTER that answers nothing until it holds N requests.
- ``adapter-sink``: a ROUTER read through `trizmq._transport.AsyncSocket`.
- ``trizmq-serve``: `trizmq.serve` of `BenchEndpoint` on a generated ring.

Client roles (each measures itself in a fresh process, then exits):

- ``mem-raw`` / ``mem-trizmq``: memory per request in flight.
- ``peers-raw`` / ``peers-trizmq``: file descriptors and memory per peer.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack
import trio
import zmq

from .._client import open_client
from .._context import Context
from .._ring import Ring
from .._service import serve
from .._transport import open_socket

#: What every call, cast and raw request carries.
PAYLOAD: dict[str, Any] = {"x": 1, "name": "instance-0001"}

_HOLD_TIMEOUT = 120.0


# -- the endpoint the trizmq side serves --------------------------------------


class BenchEndpoint:
    """The methods the benchmarks call on a trizmq service.

    Timestamps are `time.monotonic`, which on Linux is one clock for every
    process of the machine, so the bench compares them with its own.
    """

    def __init__(self) -> None:
        self.hits = 0
        self.last_hit = 0.0
        self.holding = 0
        self._release = trio.Event()
        # Set when `hits` or `holding` reaches `_wanted`.
        self._wanted = 0
        self._reached = trio.Event()

    async def echo(self, ctx: Context, x: Any) -> Any:
        """Return `x`: the round trip of the latency and pipelining benchmarks."""
        return x

    async def hit(self, ctx: Context, x: Any) -> None:
        """Count one cast or fanout and note when it arrived."""
        self.hits += 1
        self.last_hit = time.monotonic()
        if self.hits == self._wanted:
            self._reached.set()

    async def count(self, ctx: Context, n: int) -> dict[str, float]:
        """Wait until `n` hits have arrived.

        Returns:
            ``{"hits": count, "last": monotonic time of the last hit}``.
        """
        if self.hits < n:
            await self._wait_for(n)
        return {"hits": self.hits, "last": self.last_hit}

    async def _wait_for(self, n: int) -> None:
        self._wanted = n
        self._reached = trio.Event()
        try:
            await self._reached.wait()
        finally:
            self._wanted = 0

    async def reset(self, ctx: Context) -> None:
        """Forget the hits counted so far."""
        self.hits = 0
        self.last_hit = 0.0

    async def hold(self, ctx: Context) -> None:
        """Stay in flight until `release` is called."""
        self.holding += 1
        if self.holding == self._wanted:
            self._reached.set()
        try:
            await self._release.wait()
        finally:
            self.holding -= 1

    async def held(self, ctx: Context, n: int) -> int:
        """Wait until `n` `hold` calls are in flight; return how many are."""
        if self.holding < n:
            await self._wait_for(n)
        return self.holding

    async def release(self, ctx: Context) -> None:
        """Let every `hold` call in flight return."""
        self._release.set()
        self._release = trio.Event()

    async def rss(self, ctx: Context) -> int:
        """The service process's resident memory, in bytes."""
        return rss_bytes()


# -- helpers -------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS`` of ``/proc/self/status``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (the bench needs Linux)")


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def bench_ring(prefix: str, hosts: int, topics: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """A ring of `topics` topics, each served by the same `hosts` loopback hosts.

    Host ``bK`` lives on ``PREFIX.K``; topic ``tNNN`` has one port, free on
    every host's address when this returns.

    Returns:
        The ring mapping (for `Ring.from_mapping`) and the resolve map.
    """
    resolve = {f"b{k}": f"{prefix}.{k}" for k in range(1, hosts + 1)}
    ports = free_ports(list(resolve.values()), topics)
    mapping = {f"t{i:03d}:{port}": list(resolve) for i, port in enumerate(ports)}
    return mapping, resolve


def free_ports(addresses: list[str], count: int) -> list[int]:
    """`count` distinct TCP ports that the OS says are free on every address."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            probe = socket.socket()
            held.append(probe)
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
            try:
                for address in addresses[1:]:
                    other = socket.socket()
                    held.append(other)
                    other.bind((address, port))
            except OSError:
                continue
            ports.append(port)
    finally:
        # Held until every port is chosen, so the OS cannot hand one out twice.
        for sock in held:
            sock.close()
    return ports


def emit(message: dict[str, Any]) -> None:
    """Write one JSON line to the bench."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _exit_with_parent() -> None:
    """Exit the whole process once the bench closes our standard input."""

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, name="bench-stdin-watch", daemon=True).start()


def _wait_forever() -> NoReturn:
    while True:
        time.sleep(3600)


def _bind(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, address: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.bind(f"tcp://{address}:*")
    return sock


def _endpoint(sock: zmq.Socket[bytes]) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


# -- raw pyzmq servers -----------------------------------------------------------


def raw_echo(config: dict[str, Any]) -> NoReturn:
    """Echo every request on `sockets` ROUTER sockets, decoding and re-encoding it."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks = [_bind(ctx, zmq.ROUTER, config["address"]) for _ in range(config.get("sockets", 1))]
    emit({"ready": True, "endpoints": [_endpoint(s) for s in socks]})
    packb, unpackb = msgpack.packb, msgpack.unpackb
    if len(socks) == 1:
        sock = socks[0]
        while True:
            identity, frame = sock.recv_multipart()
            sock.send_multipart([identity, packb(unpackb(frame))])
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    while True:
        for ready, _ in poller.poll():
            identity, frame = ready.recv_multipart()
            ready.send_multipart([identity, packb(unpackb(frame))])


def raw_sink(config: dict[str, Any]) -> NoReturn:
    """Count messages on one socket per address, reporting after each phase.

    Each phase waits for `phase` messages on every socket, then prints
    ``{"last": monotonic time of the last message, "count": total}``. After
    the last phase the sink stays, idle, until stopped: the bench reads the
    CPU its threads spent once it has the report, and a thread that has
    ended (zmq's, when its context goes) can no longer be read.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    kind = zmq.ROUTER if config["type"] == "ROUTER" else zmq.PULL
    socks = [_bind(ctx, kind, address) for address in config["addresses"]]
    emit({"ready": True, "endpoints": [_endpoint(s) for s in socks]})
    for phase in config["phases"]:
        if len(socks) == 1:
            sock = socks[0]
            recv: Callable[[], object] = sock.recv_multipart if kind == zmq.ROUTER else sock.recv
            for _ in range(phase):
                recv()
        else:
            _drain_all(socks, phase)
        emit({"last": time.monotonic(), "count": phase * len(socks)})
    _wait_forever()


def _drain_all(socks: list[zmq.Socket[bytes]], phase: int) -> None:
    remaining = {sock: phase for sock in socks}
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    while remaining:
        for sock, _ in poller.poll():
            left = remaining[sock]
            try:
                while left:
                    sock.recv(zmq.NOBLOCK)
                    left -= 1
            except zmq.Again:
                pass
            if left:
                remaining[sock] = left
            else:
                del remaining[sock]
                poller.unregister(sock)


def raw_hold(config: dict[str, Any]) -> None:
    """Echo the first request at once; then hold `n` requests and answer them all.

    Prints its resident memory before and while it holds them.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = _bind(ctx, zmq.ROUTER, config["address"])
    # Past the high-water mark a ROUTER drops replies; made mandatory, a send waits.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    emit({"ready": True, "endpoints": [_endpoint(sock)]})
    sock.send_multipart(sock.recv_multipart())
    before = rss_bytes()
    held = [sock.recv_multipart() for _ in range(config["n"])]
    emit({"rss_before": before, "rss_during": rss_bytes()})
    for frames in held:
        sock.send_multipart(frames)
    _wait_forever()  # exiting now could drop replies zmq has not sent yet


async def adapter_sink(config: dict[str, Any]) -> NoReturn:
    """`raw_sink` for one ROUTER read through the Trio adapter (`receive_batch`)."""
    with open_socket(zmq.ROUTER) as sock:
        sock.zmq.bind(f"tcp://{config['address']}:*")
        emit({"ready": True, "endpoints": [_endpoint(sock.zmq)]})
        for phase in config["phases"]:
            got = 0
            while got < phase:
                got += len(await sock.receive_batch())
            emit({"last": time.monotonic(), "count": got})
        await trio.sleep_forever()


# -- the trizmq server -----------------------------------------------------------


async def trizmq_serve(config: dict[str, Any]) -> None:
    """Serve `BenchEndpoint` for every topic of every host of a generated ring."""
    mapping, resolve = bench_ring(config["prefix"], config["hosts"], config["topics"])
    ring = Ring.from_mapping(mapping)
    max_concurrency: int = config["max_concurrency"]
    async with trio.open_nursery() as nursery:
        for topic in ring.topics:
            for host in ring.hosts_of(topic):
                run = functools.partial(
                    serve,
                    ring,
                    topic,
                    BenchEndpoint(),
                    host,
                    resolve,
                    max_concurrency=max_concurrency,
                    # One client holds every call of the memory benchmark in flight.
                    max_in_flight_per_caller=max_concurrency,
                    grace_period=0.0,
                )
                await nursery.start(run)
        emit({"ready": True, "ring": mapping, "resolve": resolve})
        await trio.sleep_forever()


# -- measuring clients in a fresh process ----------------------------------------


def mem_raw(config: dict[str, Any]) -> None:
    """Memory of `n` requests in flight on a blocking pyzmq DEALER.

    The client keeps the least a real one must: the send time of each request,
    by id. The server (`raw_hold`) answers once it holds all of them.
    """
    n: int = config["n"]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(config["endpoint"])
    packb, unpackb = msgpack.packb, msgpack.unpackb
    sock.send(packb([0, PAYLOAD]))
    sock.recv()
    gc.collect()
    before = rss_bytes()
    pending: dict[int, float] = {}
    for id in range(1, n + 1):
        pending[id] = time.perf_counter()
        sock.send(packb([id, PAYLOAD]))
    reply = sock.recv()  # the first answer comes once the server holds all n
    during = rss_bytes()
    del pending[unpackb(reply)[0]]
    while pending:
        del pending[unpackb(sock.recv())[0]]
    emit({"rss_before": before, "rss_during": during, "n": n})


async def mem_trizmq(config: dict[str, Any]) -> None:
    """Memory of `n` calls in flight from one trizmq client, each in its own task."""
    n: int = config["n"]
    ring = Ring.from_mapping(config["ring"])
    async with open_client(
        ring, resolve=config["resolve"], name="bench-mem", timeout=_HOLD_TIMEOUT
    ) as client:
        await client.call("t000", "echo", x=PAYLOAD)
        server_before: int = await client.call("t000", "rss")
        gc.collect()
        before = rss_bytes()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(client.call, "t000", "hold")
            await client.call("t000", "held", n=n)
            during = rss_bytes()
            server_during: int = await client.call("t000", "rss")
            await client.call("t000", "release")
    emit(
        {
            "rss_before": before,
            "rss_during": during,
            "server_rss_before": server_before,
            "server_rss_during": server_during,
            "n": n,
        }
    )


def peers_raw(config: dict[str, Any]) -> None:
    """File descriptors and memory of one blocking DEALER per endpoint, each used once."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoints: list[str] = config["endpoints"]
    frame = msgpack.packb(PAYLOAD)

    def talk_to(endpoint: str) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        sock.send(frame)
        sock.recv()
        return sock

    socks = [talk_to(endpoints[0])]  # warms up zmq (its I/O thread); not counted
    gc.collect()
    fds, rss = open_fds(), rss_bytes()
    socks += [talk_to(endpoint) for endpoint in endpoints[1:]]
    gc.collect()
    emit(
        {
            "fds_before": fds,
            "fds_after": open_fds(),
            "rss_before": rss,
            "rss_after": rss_bytes(),
            "peers": len(endpoints) - 1,
        }
    )


async def peers_trizmq(config: dict[str, Any]) -> None:
    """File descriptors and memory of one trizmq client talking to every topic once."""
    ring = Ring.from_mapping(config["ring"])
    async with open_client(ring, resolve=config["resolve"], name="bench-peers") as client:
        topics = ring.topics
        await client.call(topics[0], "echo", x=PAYLOAD)  # warms up, not counted
        gc.collect()
        fds, rss = open_fds(), rss_bytes()
        for topic in topics[1:]:
            await client.call(topic, "echo", x=PAYLOAD)
        gc.collect()
        emit(
            {
                "fds_before": fds,
                "fds_after": open_fds(),
                "rss_before": rss,
                "rss_after": rss_bytes(),
                "peers": len(topics) - 1,
            }
        )


_SYNC_ROLES: dict[str, Callable[[dict[str, Any]], object]] = {
    "raw-echo": raw_echo,
    "raw-sink": raw_sink,
    "raw-hold": raw_hold,
    "mem-raw": mem_raw,
    "peers-raw": peers_raw,
}
_TRIO_ROLES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "adapter-sink": adapter_sink,
    "trizmq-serve": trizmq_serve,
    "mem-trizmq": mem_trizmq,
    "peers-trizmq": peers_trizmq,
}
#: Every role a worker can play.
ROLES = frozenset(_SYNC_ROLES) | frozenset(_TRIO_ROLES)


def main(argv: list[str]) -> int:
    """Play one role: ``ROLE CONFIG_JSON``.

    Args:
        argv: The role and its JSON configuration.

    Returns:
        The exit code: 0, or 2 for an unknown role.
    """
    if len(argv) != 2 or argv[0] not in ROLES:
        print(f"usage: python -m trizmq.bench.worker {{{','.join(sorted(ROLES))}}} CONFIG_JSON")
        return 2
    role, config = argv[0], json.loads(argv[1])
    _exit_with_parent()
    if role in _SYNC_ROLES:
        _SYNC_ROLES[role](config)
    else:
        trio.run(_TRIO_ROLES[role], config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
