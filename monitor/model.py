"""What the monitor shows, as plain data: rows, node totals, sorting, filtering, formatting.

The feed fills a `trizmq.stats.StatsBoard`; every refresh the app copies it
into immutable `PortRow` values with `take_rows`. Widgets draw those rows and
never look at the board, so a paused display is simply a list that is not
replaced, and everything here is testable without a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trizmq import Ring
from trizmq.stats import StatsBoard

__all__ = [
    "SORTS",
    "NodeTotal",
    "PortRow",
    "Sort",
    "filter_rows",
    "format_bytes",
    "format_clock",
    "format_count",
    "format_duration",
    "format_ms",
    "format_rate",
    "node_totals",
    "sort_rows",
    "take_rows",
]

#: Port states, best first.
STATES = ("up", "stale", "down")


@dataclass(frozen=True)
class PortRow:
    """One service port as the display shows it, frozen at one refresh.

    Attributes:
        host: The ring host.
        topic: The topic served.
        port: The TCP port.
        address: The address the monitor reaches the port at.
        state: `"up"`, `"stale"` (stats are late) or `"down"` (no stats for 2.5 s).
        rate_in: Messages received per second, over the last stats interval.
        rate_out: Messages sent per second, over the last stats interval.
        data: The latest stats snapshot, or None if the port never answered.
            Kept when the port goes down: it is then the last one known.
        seen_ago: Seconds since the latest snapshot, or None.
        history: Recent `rate_in` values, oldest first.
    """

    host: str
    topic: str
    port: int
    address: str
    state: str = "down"
    rate_in: float = 0.0
    rate_out: float = 0.0
    data: Mapping[str, Any] | None = None
    seen_ago: float | None = None
    history: tuple[float, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """The row's identity, `(host, topic)`, as in `StatsBoard.ports`."""
        return (self.host, self.topic)

    @property
    def name(self) -> str:
        """`"topic:port"`, as in the ring file."""
        return f"{self.topic}:{self.port}"

    @property
    def live(self) -> bool:
        """Whether the numbers are current enough to show (up or stale)."""
        return self.state != "down" and self.data is not None

    def latency(self, quantile: str) -> float | None:
        """A latency figure in milliseconds (`"p50"`, `"p90"`, `"p99"`, `"max"`), or None."""
        if not self.live:
            return None
        assert self.data is not None
        value = (self.data.get("latency_ms") or {}).get(quantile)
        return None if value is None else float(value)

    def number(self, field: str) -> int | None:
        """An integer field of the snapshot (`"in_flight"`, `"peers"`...), or None."""
        if not self.live:
            return None
        assert self.data is not None
        value = self.data.get(field)
        return None if value is None else int(value)

    @property
    def errors(self) -> int | None:
        """Handler exceptions since the service started, all types together, or None."""
        if not self.live:
            return None
        assert self.data is not None
        return int(sum((self.data.get("errors") or {}).values()))


def take_rows(ring: Ring, board: StatsBoard | None, now: float) -> list[PortRow]:
    """Copy the board into rows, one per (host, topic) of the ring, in ring order.

    Args:
        ring: The ring being watched; gives the rows before the board exists.
        board: The feed's board, or None while the feed is starting.
        now: The feed clock's current time, to tell up, stale and down apart.

    Returns:
        The rows, sorted by host, then port (the ring's order).
    """
    rows = []
    for service in ring.services():
        view = None if board is None else board.ports.get((service.host, service.topic))
        if view is None:
            rows.append(PortRow(service.host, service.topic, service.port, address="?"))
            continue
        rows.append(
            PortRow(
                service.host,
                service.topic,
                service.port,
                address=view.address,
                state=view.state(now),
                rate_in=view.rate_in,
                rate_out=view.rate_out,
                # The feed replaces the dict on each update and never mutates it.
                data=view.data,
                seen_ago=None if view.last_seen is None else max(0.0, now - view.last_seen),
                history=tuple(view.history),
            )
        )
    return rows


# -- sorting and filtering ------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    """One way to order the rows: `s` cycles through `SORTS`.

    Attributes:
        column: The key of the table column it sorts by.
        label: How the header and the title bar name it.
        key: The sort key of a row; rows that tie keep the ring's order.
        descending: Largest first (the numbers) rather than smallest first (the names).
    """

    column: str
    label: str
    key: Callable[[PortRow], Any]
    descending: bool = True


def _number_or_minus(value: float | None) -> float:
    # Down ports have no numbers: they sort below every live port.
    return -1.0 if value is None else value


def _live_rate(attr: str) -> Callable[[PortRow], float]:
    return lambda row: getattr(row, attr) if row.live else -1.0


SORTS: tuple[Sort, ...] = (
    Sort("host", "host", lambda r: (r.host, r.port, r.topic), descending=False),
    Sort("port", "topic", lambda r: (r.topic, r.host), descending=False),
    Sort("state", "state", lambda r: STATES.index(r.state)),
    Sort("in", "in/s", _live_rate("rate_in")),
    Sort("out", "out/s", _live_rate("rate_out")),
    Sort("p50", "p50", lambda r: _number_or_minus(r.latency("p50"))),
    Sort("p99", "p99", lambda r: _number_or_minus(r.latency("p99"))),
    Sort("err", "errors", lambda r: _number_or_minus(r.errors)),
    Sort("busy", "in flight", lambda r: _number_or_minus(r.number("in_flight"))),
    Sort("peers", "peers", lambda r: _number_or_minus(r.number("peers"))),
)


def sort_rows(rows: Iterable[PortRow], sort: Sort) -> list[PortRow]:
    """Order rows by `sort`; ties stay in ring order (host, then port).

    Args:
        rows: Rows in ring order.
        sort: One of `SORTS`.

    Returns:
        A new, sorted list.
    """
    # `sorted` is stable, so ties keep the order they came in: the ring's.
    return sorted(rows, key=sort.key, reverse=sort.descending)


def filter_rows(rows: Iterable[PortRow], text: str) -> list[PortRow]:
    """Keep the rows whose host or topic contains `text` (case-insensitive).

    `text` is matched against the host, `topic:port` and the direct target
    `topic.host`, so `compute.c` or `:9501` narrow as one would expect.
    Several words separated by spaces must all match.

    Args:
        rows: The rows to narrow.
        text: What the user typed; blank keeps every row.

    Returns:
        The matching rows, in their order.
    """
    words = text.lower().split()
    if not words:
        return list(rows)

    def matches(row: PortRow) -> bool:
        names = f"{row.host}\n{row.name}\n{row.topic}.{row.host}".lower()
        return all(word in names for word in words)

    return [row for row in rows if matches(row)]


# -- node totals ----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeTotal:
    """One host's ports added up.

    Attributes:
        host: The ring host.
        total: Its ports in the ring.
        up: Ports up (stats arriving on time).
        stale: Ports whose stats are late.
        rate_in: Messages received per second by its live ports.
        rate_out: Messages sent per second by its live ports.
        errors: Handler exceptions of its live ports, since each started.
    """

    host: str
    total: int
    up: int
    stale: int
    rate_in: float
    rate_out: float
    errors: int

    @property
    def down(self) -> int:
        """Ports that sent no stats for 2.5 s, or never did."""
        return self.total - self.up - self.stale


def node_totals(rows: Sequence[PortRow]) -> list[NodeTotal]:
    """Add up the rows per host.

    Args:
        rows: Every row of the ring (not only the filtered ones).

    Returns:
        One total per host, sorted by host.
    """
    totals = []
    for host in sorted({row.host for row in rows}):
        mine = [row for row in rows if row.host == host]
        live = [row for row in mine if row.live]
        totals.append(
            NodeTotal(
                host=host,
                total=len(mine),
                up=sum(row.state == "up" for row in mine),
                stale=sum(row.state == "stale" for row in mine),
                rate_in=sum(row.rate_in for row in live),
                rate_out=sum(row.rate_out for row in live),
                errors=sum(row.errors or 0 for row in live),
            )
        )
    return totals


# -- formatting -----------------------------------------------------------------------


def format_rate(value: float | None) -> str:
    """Messages per second in at most 5 characters: `0`, `9.5`, `123`, `12.3k`, `1.2M`."""
    if value is None:
        return "-"
    # Each bound is where the next format's rounding would need a character more.
    if value < 0.05:
        return "0"
    if value < 99.95:
        return f"{value:.1f}"
    if value < 9_999.5:
        return f"{value:.0f}"
    if value < 99_950:
        return f"{value / 1e3:.1f}k"
    if value < 999_500:
        return f"{value / 1e3:.0f}k"
    return f"{value / 1e6:.1f}M"


def format_ms(value: float | None) -> str:
    """Milliseconds in at most 4 characters: `0.05`, `1.23`, `12.3`, `123`, `12s`, `20m`."""
    if value is None:
        return "-"
    if value < 9.995:
        return f"{value:.2f}"
    if value < 99.95:
        return f"{value:.1f}"
    if value < 9_999.5:
        return f"{value:.0f}"
    if value < 99_500:
        return f"{value / 1e3:.0f}s"
    return f"{value / 6e4:.0f}m"


def format_count(value: int | None) -> str:
    """A counter in at most 5 characters: `12345`, `123k`, `12.3M`."""
    if value is None:
        return "-"
    if value < 100_000:
        return str(value)
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1e6:.1f}M"


def format_bytes(value: int | None) -> str:
    """A byte count with a binary unit: `512 B`, `12.3 KiB`, `1.5 MiB`."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """A duration in two units at most: `0.4s`, `45s`, `12m03s`, `3h04m`, `2d03h`."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_clock(epoch: float | None) -> str:
    """A wall-clock time as `HH:MM:SS` today, `YYYY-MM-DD HH:MM` on another day."""
    if epoch is None:
        return "-"
    when = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", when)
    return time.strftime("%Y-%m-%d %H:%M", when)
