"""Subscribing to the stats of every service port of a ring.

`watch_ring` keeps one subscription per (host, topic) of the ring, over a
DEALER connected to the service's own port, and fills a `StatsBoard`: plain
data that `trizmq stats` prints and `trizmq-monitor` draws. Trio code fills
the board; readers only look at it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs
import trio
import zmq

from ._curve import Curve
from ._errors import ProtocolError
from ._ring import Ring, Service, resolve_address
from ._transport import open_socket
from ._wire import Stats, StatsSubscribe, decode, encode

#: Seconds between two stats messages of one port.
DEFAULT_INTERVAL = 0.5
#: A port is stale after this many seconds without stats, and down after `DOWN_AFTER`.
STALE_AFTER = 1.2
DOWN_AFTER = 2.5
#: Seconds a subscription lasts unless renewed; renewed three times per lease.
LEASE = 3.0
HISTORY = 120
_RETRY = 0.2
_MIN_RATE_SPAN = 0.1


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
    """

    service: Service
    address: str
    data: dict[str, Any] | None = None
    last_seen: float | None = None
    rate_in: float = 0.0
    rate_out: float = 0.0
    history: deque[float] = attrs.field(factory=lambda: deque(maxlen=HISTORY))

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

    def as_json(self, now: float) -> dict[str, Any]:
        """One object of `trizmq stats --json`."""
        state = self.state(now)
        result: dict[str, Any] = {
            "host": self.service.host,
            "topic": self.service.topic,
            "port": self.service.port,
            "address": self.address,
            "state": "up" if state == "stale" else state,
            "fresh": state == "up",
            "rate_in": self.rate_in,
            "rate_out": self.rate_out,
        }
        fields = (
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
        )
        data = self.data if state != "down" else None
        for name in fields:
            result[name] = None if data is None else data.get(name)
        return result


def _total(data: Mapping[str, Any], field: str) -> int:
    return sum(data.get(field, {}).values())


class StatsBoard:
    """The stats of every service port of a ring, as the feed last saw them."""

    def __init__(self, ring: Ring, resolve: Mapping[str, str] | None = None) -> None:
        self.ring = ring
        self.ports: dict[tuple[str, str], PortView] = {
            (s.host, s.topic): PortView(s, resolve_address(s.host, resolve))
            for s in ring.services()
        }
        self.malformed = 0

    def as_json(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every port as `trizmq stats --json` prints it."""
        at = trio.current_time() if now is None else now
        return [view.as_json(at) for view in self.ports.values()]

    def answered(self) -> bool:
        """Whether every port has sent stats at least once."""
        return all(view.data is not None for view in self.ports.values())


async def watch_ring(
    board: StatsBoard,
    *,
    interval: float = DEFAULT_INTERVAL,
    curve: Curve | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Subscribe to every port of the board's ring and keep the board fresh, until cancelled.

    A port that goes down is retried in the background and comes back by
    itself when its service returns. `curve` (`Curve.client`) reaches CURVE
    services.
    """
    async with trio.open_nursery() as nursery:
        for view in board.ports.values():
            nursery.start_soon(_watch_port, board, view, interval, curve)
        task_status.started()
        await trio.sleep_forever()
    raise AssertionError("unreachable")


async def _watch_port(
    board: StatsBoard, view: PortView, interval: float, curve: Curve | None
) -> None:
    sock = open_socket(zmq.DEALER, linger_ms=0)
    if curve is not None:
        curve.apply(sock.zmq)
    # Queue nothing for a port that is down: a subscription is only sent on a
    # live connection, and reconnection is tried often so a return shows fast.
    sock.zmq.setsockopt(zmq.IMMEDIATE, 1)
    sock.zmq.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.zmq.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    with sock:
        sock.zmq.connect(f"tcp://{view.address}:{view.service.port}")
        renew_at = -math.inf
        while True:
            if trio.current_time() >= renew_at:
                sent = sock.send_nowait([encode(StatsSubscribe(1, interval, LEASE))])
                # Not sent means not connected: try again soon.
                renew_at = trio.current_time() + (LEASE / 3 if sent else _RETRY)
            with trio.move_on_at(renew_at):
                _receive_stats(board, view, await sock.receive())


def _receive_stats(board: StatsBoard, view: PortView, frames: list[bytes]) -> None:
    try:
        envelope = decode(frames[-1])
    except ProtocolError:
        board.malformed += 1
        return
    if isinstance(envelope, Stats):
        view.update(envelope.data, trio.current_time())
    else:
        board.malformed += 1
