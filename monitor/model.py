"""What the monitor shows, as plain data: rows, node totals, sorting, filtering, formatting.

The feed fills a `trizmq.stats.StatsBoard`; every refresh the app copies it
into immutable `PortRow` values with `take_rows`, the smoothed rates and the
recent history coming from `trends.Trends`. Widgets draw those rows and never
look at the board, so a paused display is simply a list that is not replaced,
and everything here is testable without a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trizmq import Ring
from trizmq.stats import StatsBoard

if TYPE_CHECKING:
    from .trends import Trends

__all__ = [
    "SORTS",
    "ErrorEntry",
    "MethodRow",
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
    "last_errors",
    "membership_status",
    "method_rows",
    "node_history",
    "node_totals",
    "shown_value",
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
        rate_in: Messages received per second, over the smoothing window
            (`trends.SMOOTHING` seconds of snapshots).
        rate_out: Messages sent per second, over the same window.
        data: The latest stats snapshot, or None if the port never answered.
            Kept when the port goes down: it is then the last one known.
        seen_ago: Seconds since the latest snapshot, or None.
        history: Recent `rate_in` values, one per snapshot, oldest first.
        error_rate: Handler errors per second, over the smoothing window.
        error_history: Recent `error_rate` values, oldest first.
        p50_history: Recent median handler latencies (ms), oldest first.
        p99_history: Recent 99th percentile handler latencies (ms), oldest first.
        method_rates: Requests per second of each method, over the smoothing window.
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
    error_rate: float = 0.0
    error_history: tuple[float, ...] = ()
    p50_history: tuple[float, ...] = ()
    p99_history: tuple[float, ...] = ()
    method_rates: Mapping[str, float] = field(default_factory=dict)

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
        """Handler exceptions since the service started, all types together, or None.

        A port that is down keeps the count of its last snapshot: a count does
        not go backwards because its port died. None only if it never answered.
        """
        if self.data is None:
            return None
        return int(sum((self.data.get("errors") or {}).values()))

    @property
    def pid(self) -> int | None:
        """The service's process id, from the latest snapshot."""
        value = None if self.data is None else self.data.get("pid")
        return None if value is None else int(value)

    @property
    def endpoint(self) -> str | None:
        """The address the service is bound to (`tcp://...`), from the latest snapshot."""
        value = None if self.data is None else self.data.get("endpoint")
        return None if value is None else str(value)


def take_rows(
    ring: Ring, board: StatsBoard | None, now: float, trends: Trends | None = None
) -> list[PortRow]:
    """Copy the board into rows, one per (host, topic) of the ring, in ring order.

    Args:
        ring: The ring being watched; gives the rows before the board exists.
        board: The feed's board, or None while the feed is starting.
        now: The feed clock's current time, to tell up, stale and down apart.
        trends: The smoothed rates and histories (`Trends.observe` must have
            seen the board); None gives every row zero rates and no history.

    Returns:
        The rows, sorted by host, then port (the ring's order); then the ports
        of registered members the ring does not list, as the board found them.
    """
    rows = []
    services = list(ring.services())
    if board is not None and len(board.ports) > len(services):
        services += [v.service for k, v in board.ports.items() if not ring.serves(k[1], k[0])]
    for service in services:
        key = (service.host, service.topic)
        view = None if board is None else board.ports.get(key)
        if view is None:
            rows.append(PortRow(service.host, service.topic, service.port, address="?"))
            continue
        trend = None if trends is None else trends.get(key)
        rows.append(
            PortRow(
                service.host,
                service.topic,
                service.port,
                address=view.address,
                state=view.state(now),
                # The feed replaces the dict on each update and never mutates it.
                data=view.data,
                seen_ago=None if view.last_seen is None else max(0.0, now - view.last_seen),
                **({} if trend is None else trend.row_fields()),
            )
        )
    return rows


def membership_status(board: StatsBoard) -> str:
    """The status line's part on the board's registry: the ring against its members."""
    membership = board.membership()
    if membership is None:
        return "registry not reached"
    parts = [f"{len(membership.registered)} registered"]
    if membership.missing:
        parts.append("missing " + ", ".join(s.target for s in membership.missing))
    if membership.unlisted:
        parts.append("not in the ring " + ", ".join(m.target for m in membership.unlisted))
    if board.registry_error is not None:
        parts.append("registry not reached now")
    return ", ".join(parts)


# -- the port view ---------------------------------------------------------------------


@dataclass(frozen=True)
class MethodRow:
    """One exposed method of a port, as the port view shows it.

    Attributes:
        name: The method's name.
        rate_in: Requests per second over the smoothing window; None when the port is down.
        received: Requests that reached the handler since the service started, every kind.
        p50: Median handler latency in ms over the latency window; None when down.
        p99: 99th percentile handler latency in ms; None when down.
        errors: Handler exceptions since the service started.
        in_flight: Handlers running now; None when down.
        timeouts: Handlers cancelled because the call's deadline passed.
    """

    name: str
    rate_in: float | None
    received: int
    p50: float | None
    p99: float | None
    errors: int
    in_flight: int | None
    timeouts: int


def method_rows(row: PortRow) -> list[MethodRow]:
    """The port's methods, busiest first (by requests since start, then by name).

    A method's place changes only when its total overtakes another's, so the
    list does not reorder on every refresh as rates would make it.
    """
    if row.data is None:
        return []
    result = []
    for name, stats in (row.data.get("methods") or {}).items():
        latency = stats.get("latency_ms") or {}
        result.append(
            MethodRow(
                name=str(name),
                rate_in=row.method_rates.get(name, 0.0) if row.live else None,
                received=int(sum((stats.get("received") or {}).values())),
                p50=float(latency.get("p50", 0.0)) if row.live else None,
                p99=float(latency.get("p99", 0.0)) if row.live else None,
                errors=int(sum((stats.get("errors") or {}).values())),
                in_flight=int(stats.get("in_flight", 0)) if row.live else None,
                timeouts=int(stats.get("timeouts", 0)),
            )
        )
    result.sort(key=lambda m: (-m.received, m.name))
    return result


@dataclass(frozen=True)
class ErrorEntry:
    """One failed handler of `last_errors`.

    Attributes:
        time: When it failed, Unix time.
        method: The method.
        type: The exception's qualified type name.
        message: Its message.
        traceback: The end of its traceback, where it was raised, without the
            lines that only underline (`^^^^`) and without the final
            `Type: message` line, which `type` and `message` already say.
    """

    time: float | None
    method: str
    type: str
    message: str
    traceback: tuple[str, ...]


def last_errors(row: PortRow) -> list[ErrorEntry]:
    """The port's last failed handlers, newest first."""
    if row.data is None:
        return []
    entries = []
    for item in reversed(row.data.get("last_errors") or []):
        type_name = str(item.get("type", "?"))
        short = type_name.rpartition(".")[2]
        lines = []
        for line in item.get("traceback") or []:
            text = str(line).rstrip()
            stripped = text.strip()
            if not stripped or set(stripped) <= set("^~"):
                continue
            if stripped.startswith((f"{type_name}:", f"{short}:")) or stripped in (
                type_name,
                short,
            ):
                continue
            lines.append(text)
        when = item.get("time")
        entries.append(
            ErrorEntry(
                time=None if when is None else float(when),
                method=str(item.get("method", "?")),
                type=type_name,
                message=str(item.get("message", "")),
                traceback=tuple(lines),
            )
        )
    return entries


# -- sorting and filtering ------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    """One way to order the rows: `s` cycles through `SORTS`.

    Attributes:
        column: The key of the table column it sorts by.
        label: The column's header, which the title bar repeats.
        key: The sort key of a row, or None for a row without that number
            (a port that is down or never answered): those go last.
        descending: Largest first (the numbers) rather than smallest first (the names).
    """

    column: str
    label: str
    key: Callable[[PortRow], Any]
    descending: bool = True


def shown_value(text: str) -> float:
    """The number a formatted cell shows: `"12.3k"` is 12300, `"12s"` 12000 (ms), `"-"` -1.

    Sorting by what is shown, rather than by the exact figure, keeps rows whose
    numbers look the same in their place.
    """
    scale = {"k": 1e3, "M": 1e6, "s": 1e3, "m": 6e4}
    if text == "-":
        return -1.0
    if text[-1] in scale:
        return float(text[:-1]) * scale[text[-1]]
    return float(text)


def _shown(fmt: Callable[[Any], str], value: float | None) -> float | None:
    return None if value is None else shown_value(fmt(value))


SORTS: tuple[Sort, ...] = (
    Sort("host", "host", lambda r: (r.host, r.port, r.topic), descending=False),
    Sort("port", "topic:port", lambda r: (r.topic, r.host), descending=False),
    Sort("state", "state", lambda r: STATES.index(r.state)),
    Sort("in", "in/s", lambda r: _shown(format_rate, r.rate_in if r.live else None)),
    Sort("out", "out/s", lambda r: _shown(format_rate, r.rate_out if r.live else None)),
    Sort("p50", "p50", lambda r: _shown(format_ms, r.latency("p50"))),
    Sort("p99", "p99", lambda r: _shown(format_ms, r.latency("p99"))),
    Sort("err", "err", lambda r: r.errors),
    Sort("busy", "busy", lambda r: r.number("in_flight")),
    Sort("peers", "peers", lambda r: r.number("peers")),
)


def sort_rows(rows: Iterable[PortRow], sort: Sort, *, reverse: bool = False) -> list[PortRow]:
    """Order rows by `sort`, the other way round if `reverse`; ties keep the order given.

    Numbers compare as they are shown (`shown_value`), and rows without one
    (down ports) go last whichever the direction. Give the rows in the order
    they are on screen and a row moves only when its shown number does.

    Args:
        rows: The rows, in the order ties should keep (ring order, or the current one).
        sort: One of `SORTS`.
        reverse: Smallest first for the numbers, Z to A for the names.

    Returns:
        A new, sorted list.
    """
    present: list[tuple[Any, PortRow]] = []
    missing: list[PortRow] = []
    for row in rows:
        value = sort.key(row)
        if value is None:
            missing.append(row)
        else:
            present.append((value, row))
    # `sorted` is stable, also with reverse=True: ties keep the order they came in.
    ordered = sorted(present, key=lambda pair: pair[0], reverse=sort.descending != reverse)
    return [row for _, row in ordered] + missing


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
        errors: Handler exceptions of its ports since each started; a port that
            is down counts with its last known snapshot, so the total does not
            drop when a port dies.
        in_flight: Handlers running now on its live ports.
        peers: Connections to its live ports now.
        error_rate: Handler errors per second of its live ports.
    """

    host: str
    total: int
    up: int
    stale: int
    rate_in: float
    rate_out: float
    errors: int
    in_flight: int = 0
    peers: int = 0
    error_rate: float = 0.0

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
                errors=sum(row.errors or 0 for row in mine),
                in_flight=sum(row.number("in_flight") or 0 for row in live),
                peers=sum(row.number("peers") or 0 for row in live),
                error_rate=sum(row.error_rate for row in live),
            )
        )
    return totals


def node_history(
    rows: Sequence[PortRow], series: Callable[[PortRow], Sequence[float]]
) -> list[float]:
    """A host's history: the ports' series added up, aligned on their newest values.

    Args:
        rows: The host's rows.
        series: Which history of a row to add (`lambda r: r.history`...).
    """
    length = max((len(series(row)) for row in rows), default=0)
    total = [0.0] * length
    for row in rows:
        values = series(row)
        for i, value in enumerate(values):
            total[length - len(values) + i] += value
    return total


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


def format_clock(epoch: float | None, *, seconds: bool = False) -> str:
    """A wall-clock time as `HH:MM:SS` today, `YYYY-MM-DD HH:MM` on another day.

    With `seconds`, another day's time keeps its seconds too: `YYYY-MM-DD HH:MM:SS`.
    """
    if epoch is None:
        return "-"
    when = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", when)
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", when)
