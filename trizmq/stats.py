"""The stats of every service port of a ring, live: the feed of `trizmq stats` and the monitor.

Every service publishes stats on its own port to whoever subscribes (see the
monitor page for the fields). `watch_ring` keeps one subscription per
(host, topic) of a ring, over a DEALER connected to the service's port, and
fills a `StatsBoard`: plain data, a `PortView` per port, that ``trizmq stats``
prints and ``trizmq-monitor`` draws. Trio code fills the board; readers only
look at it, and never wait on a service.

```python
async def show(ring: trizmq.Ring) -> None:
    board = StatsBoard(ring, {"controller": "127.0.0.2"})
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_ring, board)
        await trio.sleep(1)
        print(board.as_json())
        nursery.cancel_scope.cancel()
```
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import attrs
import trio
import zmq

from . import _stats
from ._curve import Curve
from ._errors import ProtocolError
from ._registry import Member, Registry, describe_failure, failures
from ._ring import Ring, Service, is_ipv6, resolve_address, tcp_url
from ._transport import open_socket
from ._wire import Stats, StatsSubscribe, decode, encode

__all__ = [
    "DEFAULT_INTERVAL",
    "DOWN_AFTER",
    "HISTORY",
    "LATENCY_WINDOW",
    "LEASE",
    "STALE_AFTER",
    "Membership",
    "PortView",
    "StatsBoard",
    "watch_ring",
]

DEFAULT_INTERVAL = 0.5
"""Seconds between two stats messages of one port, unless `watch_ring` asks otherwise."""
STALE_AFTER = 1.2
"""Seconds without stats after which a port is stale: up, but its numbers are old."""
DOWN_AFTER = 2.5
"""Seconds without stats after which a port is down."""
LEASE = 3.0
"""Seconds a subscription lasts unless renewed; `watch_ring` renews it three times a lease."""
HISTORY = 120
"""How many `rate_in` values a `PortView` keeps in its `history`."""
LATENCY_WINDOW = _stats.LATENCY_WINDOW
"""Seconds of handler run times that a snapshot's `latency_ms` summarizes (the services' own)."""
_RETRY = 0.2
_MIN_RATE_SPAN = 0.1
# The snapshot's fields that `trizmq stats --json` passes through, in its order.
_SNAPSHOT_FIELDS = (
    "pid",
    "endpoint",
    "received",
    "sent",
    "bytes_in",
    "bytes_out",
    "in_flight",
    "errors",
    "rejected",
    "timeouts",
    "cancelled",
    "peers",
    "uptime",
    "latency_ms",
    "methods",
    "last_errors",
)


@attrs.define
class PortView:
    """What the board knows of one service port.

    Attributes:
        service: The (host, topic, port) of the ring.
        address: The address the port was reached at.
        data: The latest stats snapshot (see the monitor page), or None.
        last_seen: `trio.current_time()` when it arrived, or None.
        rate_in: Messages received per second, between the last two snapshots.
        rate_out: Messages sent per second, between the last two snapshots.
        history: The recent `rate_in` values, oldest first.
        malformed: Messages from the port that were not stats (undecodable, or
            another kind): a service of another protocol version, or not a
            trizmq service at all.
    """

    service: Service
    address: str
    data: dict[str, Any] | None = None
    last_seen: float | None = None
    rate_in: float = 0.0
    rate_out: float = 0.0
    history: deque[float] = attrs.field(factory=lambda: deque(maxlen=HISTORY))
    malformed: int = 0

    def state(self, now: float) -> str:
        """`"up"`, `"stale"` (no stats for `STALE_AFTER` s) or `"down"`."""
        if self.last_seen is None or now - self.last_seen > DOWN_AFTER:
            return "down"
        return "stale" if now - self.last_seen > STALE_AFTER else "up"

    def update(self, data: dict[str, Any], now: float) -> None:
        """Take a new snapshot and derive the rates from the previous one."""
        previous = self.data
        elapsed = data.get("uptime", 0) - (previous or {}).get("uptime", 0)
        if previous is not None and 0 < elapsed < _MIN_RATE_SPAN:
            # Too close to the last one for a rate that means anything.
            self.data, self.last_seen = data, now
            return
        if previous is not None and elapsed > 0:
            self.rate_in = (_total(data, "received") - _total(previous, "received")) / elapsed
            self.rate_out = (_total(data, "sent") - _total(previous, "sent")) / elapsed
        else:
            self.rate_in = self.rate_out = 0.0  # first snapshot, or the service restarted
        self.history.append(self.rate_in)
        self.data = data
        self.last_seen = now

    @property
    def pid(self) -> int | None:
        """The service's process id, from the latest snapshot; None before the first.

        Like every field of `data`, it is kept when the port goes down: it is
        then the last one known.
        """
        return None if self.data is None else self.data.get("pid")

    @property
    def endpoint(self) -> str | None:
        """The address the service is bound to (``tcp://127.0.0.2:9501``), or None."""
        return None if self.data is None else self.data.get("endpoint")

    @property
    def methods(self) -> Mapping[str, Mapping[str, Any]]:
        """Per exposed method, what went through it, from the latest snapshot.

        A mapping of method name to ``{"received": {kind: n}, "errors": {type: n},
        "in_flight": n, "timeouts": n, "latency_ms": {...}}`` (see the monitor
        page); every exposed method is present from the start. Empty before the
        first snapshot, or from a service that does not publish them.
        """
        return {} if self.data is None else self.data.get("methods") or {}

    @property
    def last_errors(self) -> Sequence[Mapping[str, Any]]:
        """The port's last failed handlers, oldest first, from the latest snapshot.

        Each is ``{"time", "method", "type", "message", "traceback"}``, the
        traceback its last lines. Empty before the first snapshot.
        """
        return () if self.data is None else self.data.get("last_errors") or ()

    def as_json(self, now: float) -> dict[str, Any]:
        """One object of `trizmq stats --json`: every number None for a port that is down."""
        state = self.state(now)
        data = self.data if state != "down" else None
        result: dict[str, Any] = {
            "host": self.service.host,
            "topic": self.service.topic,
            "port": self.service.port,
            "address": self.address,
            "state": "up" if state == "stale" else state,
            "fresh": state == "up",
            # The last rates of a port that died are not its rates now.
            "rate_in": None if data is None else self.rate_in,
            "rate_out": None if data is None else self.rate_out,
            "malformed": self.malformed,
        }
        for name in _SNAPSHOT_FIELDS:
            result[name] = None if data is None else data.get(name)
        return result


def _total(data: Mapping[str, Any], field: str) -> int:
    return sum(data.get(field, {}).values())


@attrs.frozen
class Membership:
    """The ring (configured) against a registry (live), as a `StatsBoard` last saw them.

    Attributes:
        registered: Every member registered, sorted by topic and host.
        missing: The ring's services that are not registered.
        unlisted: The members whose host the ring does not list for their topic.
    """

    registered: tuple[Member, ...]
    missing: tuple[Service, ...]
    unlisted: tuple[Member, ...]


class StatsBoard:
    """The stats of every service port of a ring, as the feed last saw them.

    Args:
        ring: The ring whose ports to watch.
        resolve: Host name to address overrides (``--resolve``), or None.
        registry: A registry of live members to hold against the ring: its
            members are loaded with the stats, and the ports of members the
            ring does not list are watched too.

    Attributes:
        ring: The ring.
        ports: A `PortView` per ``(host, topic)``, in ring order, then the
            registered ports the ring does not list, as they are found.
        registry: The registry, or None.
        members: The members registered when the registry last answered;
            None before it first did (or without a registry).
        registry_error: Why the registry's last load failed, or None if it did not.

    Raises:
        RingError: A host of the ring cannot be resolved.
    """

    def __init__(
        self,
        ring: Ring,
        resolve: Mapping[str, str] | None = None,
        *,
        registry: Registry | None = None,
    ) -> None:
        self.ring = ring
        self.ports: dict[tuple[str, str], PortView] = {
            (s.host, s.topic): PortView(s, resolve_address(s.host, resolve))
            for s in ring.services()
        }
        self.registry = registry
        self.members: tuple[Member, ...] | None = None
        self.registry_error: str | None = None

    def membership(self) -> Membership | None:
        """The ring against the registry; None without one, or before it first answered."""
        if self.members is None:
            return None
        live = {(m.host, m.topic) for m in self.members}
        return Membership(
            registered=self.members,
            missing=tuple(s for s in self.ring.services() if (s.host, s.topic) not in live),
            unlisted=tuple(m for m in self.members if not self.ring.serves(m.topic, m.host)),
        )

    def as_json(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every port as ``trizmq stats --json`` prints it.

        Args:
            now: The time to judge the ports' state at; None means
                `trio.current_time()` (in the Trio run that fills the board).
        """
        at = trio.current_time() if now is None else now
        rows = [view.as_json(at) for view in self.ports.values()]
        if self.registry is not None:
            # Whether each port is registered: None while the registry never answered.
            live = None if self.members is None else {(m.host, m.topic) for m in self.members}
            for row in rows:
                row["registered"] = None if live is None else (row["host"], row["topic"]) in live
        return rows

    def answered(self) -> bool:
        """Whether every port has sent stats at least once (and the registry answered)."""
        if self.registry is not None and self.members is None and self.registry_error is None:
            return False
        return all(view.data is not None for view in self.ports.values())


async def watch_ring(
    board: StatsBoard,
    *,
    interval: float = DEFAULT_INTERVAL,
    curve: Curve | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Subscribe to every port of the board's ring and keep the board fresh, until cancelled.

    Start it with `nursery.start`: it has started once every port's
    subscription is under way. A port that goes down is retried in the
    background and comes back by itself when its service returns. With the
    board's registry, its members are loaded three times a lease, and a
    registered port the ring does not list is watched from then on.

    Args:
        board: The board to fill.
        interval: Seconds between two stats messages of a port.
        curve: The client's keys (`Curve.client`), for CURVE services.
        task_status: Set by `nursery.start`.
    """
    async with trio.open_nursery() as nursery:
        for view in board.ports.values():
            nursery.start_soon(_watch_port, view, interval, curve)
        if board.registry is not None:
            nursery.start_soon(_watch_registry, board, board.registry, nursery, interval, curve)
        task_status.started()
        await trio.sleep_forever()
    raise AssertionError("unreachable")


async def _watch_port(view: PortView, interval: float, curve: Curve | None) -> None:
    sock = open_socket(zmq.DEALER, linger_ms=0)
    if curve is not None:
        curve.apply(sock.zmq)
    # Queue nothing for a port that is down: a subscription is only sent on a
    # live connection, and reconnection is tried often so a return shows fast.
    sock.zmq.setsockopt(zmq.IMMEDIATE, 1)
    sock.zmq.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.zmq.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    with sock:
        if is_ipv6(view.address):
            sock.zmq.setsockopt(zmq.IPV6, 1)
        sock.zmq.connect(tcp_url(view.address, view.service.port))
        renew_at = -math.inf
        while True:
            if trio.current_time() >= renew_at:
                sent = sock.send_nowait([encode(StatsSubscribe(1, interval, LEASE))])
                # Not sent means not connected: try again soon.
                renew_at = trio.current_time() + (LEASE / 3 if sent else _RETRY)
            with trio.move_on_at(renew_at):
                _receive_stats(view, await sock.receive())


async def _watch_registry(
    board: StatsBoard,
    registry: Registry,
    nursery: trio.Nursery,
    interval: float,
    curve: Curve | None,
) -> NoReturn:
    while True:
        try:
            members = await registry.members()
        except failures() as exc:
            board.registry_error = describe_failure(exc)
        else:
            board.members, board.registry_error = tuple(members), None
            for member in members:
                key = (member.host, member.topic)
                if key not in board.ports:
                    service = Service(host=member.host, topic=member.topic, port=member.port)
                    view = board.ports[key] = PortView(service, member.address)
                    nursery.start_soon(_watch_port, view, interval, curve)
        await trio.sleep(registry.renew_interval)


def _receive_stats(view: PortView, frames: list[bytes]) -> None:
    try:
        envelope = decode(frames[-1])
    except ProtocolError:
        view.malformed += 1
        return
    if isinstance(envelope, Stats):
        view.update(envelope.data, trio.current_time())
    else:
        view.malformed += 1
