"""Misbehaving peers of a trizmq service, for the robustness and chaos tests.

`RawPeer` is a bare pyzmq DEALER that speaks the wire by hand: it packs each
envelope with msgpack itself (`[version, kind, *fields]`, docs/protocol.md),
so it can send what trizmq's own client never would (a reused id, a CASTS of
200,000 casts) and read, or never read, what comes back. Every raw peer lives
in an `Adversary`, which owns a zmq context of its own (its own I/O thread,
apart from the honest clients of the test process) and closes every socket,
without lingering, when its block ends.

The waits are Trio-friendly: sends retry without blocking and receives poll,
so honest trizmq clients in the same Trio run keep going meanwhile.

Run as a script, the module is an honest client that floods instead
(`python adversary.py flood-calls --help`): a process the tests freeze with
SIGSTOP while its calls are in flight. It exits by itself after `--lifetime`.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack
import trio
import zmq

import trizmq

# The wire, by hand (docs/protocol.md): the version and the message kinds.
VERSION: Final = 1
CALL: Final = 1
CAST: Final = 2
FANOUT: Final = 3
REPLY: Final = 4
ERROR: Final = 5
CANCEL: Final = 6
STATS_SUBSCRIBE: Final = 7
STATS: Final = 8
CASTS: Final = 9
REPLIES: Final = 13

#: Seconds between two looks at a socket while waiting.
_POLL = 0.002


def pack(kind: int, *fields: Any) -> bytes:
    """One envelope, `[VERSION, kind, *fields]`, as msgpack with the bin type."""
    frame: bytes = msgpack.packb([VERSION, kind, *fields], use_bin_type=True)
    return frame


@attrs.frozen
class Message:
    """A message a service sent back: its kind, its id and the rest of its fields."""

    kind: int
    id: int
    fields: tuple[Any, ...]

    @classmethod
    def unpack(cls, frame: bytes) -> list[Message]:
        """Decode one frame: one message, or each answer of a REPLIES (raises
        on anything that is not an envelope)."""
        data = msgpack.unpackb(frame, raw=False)
        if data[:2] == [VERSION, REPLIES]:
            return [cls.of(answer) for answer in data[2]]
        return [cls.of(data)]

    @classmethod
    def of(cls, data: list[Any]) -> Message:
        """The message of one decoded envelope."""
        version, kind, id, *fields = data
        assert version == VERSION, f"a message of version {version!r}"
        return cls(kind, id, tuple(fields))

    @property
    def result(self) -> Any:
        """A REPLY's result."""
        assert self.kind == REPLY, self
        return self.fields[0]

    @property
    def code(self) -> str:
        """An ERROR's code ("protocol", "no_such_method"...)."""
        assert self.kind == ERROR, self
        return str(self.fields[0])

    @property
    def type_name(self) -> str:
        """An ERROR's type name."""
        assert self.kind == ERROR, self
        return str(self.fields[1])

    @property
    def message(self) -> str:
        """An ERROR's message."""
        assert self.kind == ERROR, self
        return str(self.fields[2])

    @property
    def data(self) -> dict[str, Any]:
        """A STATS message's counters."""
        assert self.kind == STATS, self
        data: dict[str, Any] = self.fields[0]
        return data


class RawPeer:
    """One DEALER connection to a service port that speaks the wire by hand.

    Ids are the caller's to choose: nothing stops a raw peer from reusing one.
    """

    def __init__(self, sock: zmq.Socket[bytes], url: str, topic: str) -> None:
        self.sock = sock
        self.url = url
        self.topic = topic
        self._unread: collections.deque[Message] = collections.deque()  # of a REPLIES

    # -- sending ------------------------------------------------------------------

    async def send(self, frame: bytes, *, timeout: float = 10.0) -> None:
        """Send one frame, waiting (without blocking Trio) while the queue is full.

        Raises:
            trio.TooSlowError: ZeroMQ did not take it within `timeout` seconds.
        """
        with trio.fail_after(timeout):
            while True:
                try:
                    self.sock.send(frame, zmq.NOBLOCK)
                    return
                except zmq.Again:
                    await trio.sleep(_POLL)

    async def call(self, id: int, method: str, timeout: float | None = 30.0, **args: Any) -> None:
        """Send a CALL with this id (the reply is for `receive` to read, or not)."""
        await self.send(pack(CALL, id, self.topic, method, args, {}, timeout))

    async def cast(self, id: int, method: str, **args: Any) -> None:
        """Send a CAST with this id."""
        await self.send(pack(CAST, id, self.topic, method, args, {}))

    async def casts(self, id: int, method: str, batch: Sequence[dict[str, Any]]) -> None:
        """Send one CASTS message: a cast of `method` per element of `batch`."""
        await self.send(pack(CASTS, id, self.topic, method, list(batch), {}))

    async def subscribe_stats(self, id: int = 1, interval: float = 0.1, lease: float = 60) -> None:
        """Send a STATS_SUBSCRIBE."""
        await self.send(pack(STATS_SUBSCRIBE, id, interval, lease))

    # -- receiving ----------------------------------------------------------------

    async def receive(self, timeout: float = 5.0) -> Message | None:
        """The next message the service sent (each answer of a REPLIES on its
        own), or None if none came within `timeout`."""
        with trio.move_on_after(timeout):
            while not self._unread:
                try:
                    self._unread.extend(Message.unpack(self.sock.recv(zmq.NOBLOCK)))
                except zmq.Again:
                    await trio.sleep(_POLL)
            return self._unread.popleft()
        return None

    async def receive_for(self, seconds: float) -> list[Message]:
        """Every message the service sends in the next `seconds`."""
        received: list[Message] = []
        with trio.move_on_after(seconds):
            while True:
                message = await self.receive(timeout=seconds)
                if message is not None:
                    received.append(message)
        return received

    async def receive_kind(self, kind: int, timeout: float = 5.0) -> Message | None:
        """The next message of `kind`, skipping others; None if none came in time."""
        with trio.move_on_after(timeout):
            while True:
                message = await self.receive(timeout=timeout)
                if message is not None and message.kind == kind:
                    return message
        return None

    def close(self) -> None:
        """Close the connection at once, dropping whatever is queued."""
        self.sock.close(linger=0)


class Adversary:
    """A zmq context of its own and the raw peers opened on it.

    Use `open_adversary()`; every peer is closed when its block ends.
    """

    def __init__(self) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # Room for connection floods: libzmq's default is 1023 sockets.
        self.context.set(zmq.MAX_SOCKETS, 4096)
        self.peers: list[RawPeer] = []

    def peer(
        self,
        url: str,
        topic: str,
        *,
        small_queues: bool = False,
    ) -> RawPeer:
        """Connect a new raw DEALER to `url`, which serves `topic`.

        Args:
            small_queues: Keep the peer's own receive queues tiny, so that what
                it does not read backs up in the service at once. (Without, ZeroMQ
                takes 1,000 messages for it first. Either way, once its queues are
                full it stops reading the connection, heartbeats included, and the
                service drops it a heartbeat window later.)
        """
        sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if small_queues:
            sock.setsockopt(zmq.RCVHWM, 1)
            sock.setsockopt(zmq.RCVBUF, 64 * 1024)
        sock.connect(url)
        peer = RawPeer(sock, url, topic)
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        """Close every peer and the context."""
        for peer in self.peers:
            peer.close()
        self.peers.clear()
        self.context.term()

    async def connection_flood(
        self, url: str, topic: str, count: int, *, batch: int = 100, hold: float = 1.0
    ) -> int:
        """Open `count` connections to `url`, `batch` at a time, each saying hello
        with a ping it does not wait for, and close each batch after `hold`
        seconds; returns how many were opened."""
        opened = 0
        while opened < count:
            peers = [self.peer(url, topic) for _ in range(min(batch, count - opened))]
            for peer in peers:
                with trio.move_on_after(0.5):
                    await peer.call(1, "ping", x=1)
            await trio.sleep(hold)  # time for the connections to be made, or refused
            for peer in peers:
                peer.close()
                self.peers.remove(peer)
            opened += len(peers)
        return opened


@contextmanager
def open_adversary() -> Iterator[Adversary]:
    """An `Adversary` for the block: its peers and context are closed at its end."""
    adversary = Adversary()
    try:
        yield adversary
    finally:
        adversary.close()


# -- an honest client process that floods -------------------------------------------


async def _flood_calls(args: argparse.Namespace) -> None:
    ring = trizmq.Ring.load(args.ring)
    resolve = json.loads(args.resolve)
    with trio.move_on_after(args.lifetime):
        async with trizmq.open_client(ring, resolve=resolve, name="flood") as client:
            answered = 0

            async def one() -> None:
                nonlocal answered
                try:
                    await client.call(
                        args.target,
                        "blob",
                        n=args.size,
                        delay=args.delay,
                        timeout=args.lifetime,
                    )
                    answered += 1
                except trizmq.TrizmqError:
                    pass

            async with trio.open_nursery() as nursery:
                for _ in range(args.calls):
                    nursery.start_soon(one)
                await trio.sleep(0.5)  # every call has been sent by now
                print(f"in flight: {args.calls}", flush=True)
            print(f"answered: {answered}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """`python adversary.py flood-calls ...`: see the module's docstring."""
    parser = argparse.ArgumentParser(prog="adversary.py")
    commands = parser.add_subparsers(dest="command", required=True)
    flood = commands.add_parser("flood-calls", help="many calls in flight, then wait for them")
    flood.add_argument("ring")
    flood.add_argument("--resolve", required=True, help="a JSON host -> address map")
    flood.add_argument("--target", required=True)
    flood.add_argument("--size", type=int, default=200_000, help="bytes of each reply")
    flood.add_argument("--delay", type=float, default=1.0, help="seconds before each reply")
    flood.add_argument("--calls", type=int, default=3000)
    flood.add_argument("--lifetime", type=float, default=30.0, help="seconds before it exits")
    args = parser.parse_args(argv)
    trio.run(_flood_calls, args)


def start_flood_calls(
    ring: Path,
    resolve: dict[str, str],
    target: str,
    *,
    calls: int,
    size: int,
    delay: float,
    lifetime: float,
    env: dict[str, str],
    cwd: Path,
) -> subprocess.Popen[bytes]:
    """Start an honest client process that sends `target` `calls` calls of
    `blob(size, delay)` at once and waits for their replies.

    It prints "in flight: N" once every call is sent (their replies come
    `delay` seconds later), and exits after `lifetime` seconds at most. It runs
    in a session of its own: signal it with `os.killpg`.
    """
    command = [
        sys.executable,
        __file__,
        "flood-calls",
        str(ring),
        "--resolve",
        json.dumps(resolve),
        "--target",
        target,
        "--calls",
        str(calls),
        "--size",
        str(size),
        "--delay",
        str(delay),
        "--lifetime",
        str(lifetime),
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


if __name__ == "__main__":
    main()
