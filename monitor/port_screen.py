"""`PortScreen`: one port in full, its methods, its trends and its last errors (Enter on a port)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from trizmq.stats import HISTORY

from .model import (
    ErrorEntry,
    MethodRow,
    PortRow,
    format_clock,
    format_count,
    format_duration,
    format_ms,
    format_rate,
    last_errors,
    method_rows,
)
from .port_table import STATE_STYLES
from .trend import Trend

__all__ = ["LastErrors", "MethodTable", "PortHeading", "PortScreen", "port_heading"]


class PortHeading(Static):
    """Two lines: the port, its state (and uptime), process id and endpoint; then its counts."""

    DEFAULT_CSS = """
    PortHeading {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    """


def port_heading(row: PortRow) -> Group:
    """The two lines of `PortHeading` for a row, each cut to the width with an ellipsis."""
    data = row.data or {}
    first = Text(no_wrap=True, overflow="ellipsis")
    first.append(row.name, style="bold")
    first.append(f" on {row.host} · ")
    first.append(row.state, style=STATE_STYLES[row.state])
    if row.seen_ago is None:
        first.append(", never answered", style="dim")
    elif row.state == "up":
        first.append(f" {format_duration(data.get('uptime'))}")
    elif row.state == "stale":
        first.append(f", seen {format_duration(row.seen_ago)} ago", style="dim")
    else:
        first.append(f", last seen {format_duration(row.seen_ago)} ago", style="dim")
    if row.pid is not None:
        first.append(f" · pid {row.pid}")
    first.append(f" · {row.endpoint or f'{row.address}:{row.port}'}", style="dim")
    second = Text(no_wrap=True, overflow="ellipsis")
    live = row.live
    counts = [
        ("in", f"{format_rate(row.rate_in if live else None)}/s"),
        ("out", f"{format_rate(row.rate_out if live else None)}/s"),
        ("err", format_count(row.errors)),
        ("busy", format_count(row.number("in_flight"))),
        ("timeouts", format_count(data.get("timeouts"))),
        ("cancelled", format_count(data.get("cancelled"))),
        ("peers", format_count(row.number("peers"))),
    ]
    for i, (label, value) in enumerate(counts):
        if i:
            second.append("  ")
        second.append(f"{label} ", style="dim")
        style = "bold red" if label == "err" and row.errors else "bold"
        second.append(value, style=style)
    return Group(first, second)


class MethodTable(DataTable[Text]):
    """One row per exposed method of the port: rate, total, latency, errors, load.

    | Key | Action |
    | :- | :- |
    | up, down, pageup, pagedown, home, end | Move through the methods. |
    """

    DEFAULT_CSS = """
    MethodTable {
        height: auto;
        min-height: 3;
        scrollbar-size-vertical: 1;
    }
    MethodTable > .datatable--header {
        text-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    #: (key, header, width of the content, right-aligned); 0 is as wide as the longest name.
    COLUMNS: ClassVar[tuple[tuple[str, str, int, bool], ...]] = (
        ("method", "method", 0, False),
        ("in", "in/s", 5, True),
        ("total", "total", 5, True),
        ("p50", "p50", 4, True),
        ("p99", "p99", 4, True),
        ("err", "err", 5, True),
        ("busy", "busy", 4, True),
        ("timeouts", "timeouts", 8, True),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", cell_padding=0, zebra_stripes=True, id=id)
        self._names: list[str] = []
        self._shown: list[tuple[str, ...]] = []

    def show(self, methods: Sequence[MethodRow], *, live: bool) -> None:
        """Show these methods in this order; the cursor stays on its method."""
        cells = [_method_cells(m) for m in methods]
        if cells == self._shown:
            return
        names = [m.name for m in methods]
        if names != self._names or not self.columns:
            width = max([len("method"), *(len(n) for n in names)])
            selected = self._names[self.cursor_row] if self._names else None
            self.clear(columns=True)
            for key, label, size, right in self.COLUMNS:
                header = Text(" " + label, style="bold", justify="right" if right else "left")
                self.add_column(header, key=key, width=(size or width) + 1)
            for method, row in zip(methods, cells, strict=True):
                self.add_row(*self._styled(method, row, live), key=method.name)
            self._names = names
            if selected in names:
                self.move_cursor(row=names.index(selected), animate=False)
        else:
            for method, row, old in zip(methods, cells, self._shown, strict=True):
                if row != old:
                    styled = self._styled(method, row, live)
                    for (key, *_), cell in zip(self.COLUMNS, styled, strict=True):
                        self.update_cell(method.name, key, cell)
        self._shown = cells

    def _styled(self, method: MethodRow, cells: tuple[str, ...], live: bool) -> list[Text]:
        base = "" if live else "dim"
        styled = []
        for (key, _, _, right), text in zip(self.COLUMNS, cells, strict=True):
            style = base
            if key == "method":
                style = f"bold {base}".strip()
            elif key == "err" and method.errors:
                style = "bold red" if live else "red"
            elif key == "timeouts" and method.timeouts:
                style = "bold yellow" if live else "yellow"
            styled.append(Text(" " + text, style=style, justify="right" if right else "left"))
        return styled


def _method_cells(method: MethodRow) -> tuple[str, ...]:
    return (
        method.name,
        format_rate(method.rate_in),
        format_count(method.received),
        format_ms(method.p50),
        format_ms(method.p99),
        format_count(method.errors),
        format_count(method.in_flight),
        format_count(method.timeouts),
    )


class LastErrors(VerticalScroll, can_focus=True):
    """Errors by type, refusals by reason, then the last failed handlers, newest first.

    Each failure: when, the method, the exception's type and message, and the
    end of its remote traceback (one line each, cut to the width). Takes the
    focus (Tab) to scroll.

    | Key | Action |
    | :- | :- |
    | up, down, pageup, pagedown, home, end | Scroll. |
    """

    DEFAULT_CSS = """
    LastErrors {
        height: 1fr;
        min-height: 3;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    LastErrors:focus {
        background-tint: $foreground 4%;
    }
    LastErrors > Static {
        width: 100%;
    }
    """

    def compose(self) -> ComposeResult:
        """The text."""
        yield Static()

    def show(self, row: PortRow) -> None:
        """Redraw for this port."""
        self.query_one(Static).update(errors_text(row))


def _pairs(title: str, counts: dict[str, int] | None, empty: str) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{title} ", style="bold")
    if not counts:
        text.append(empty, style="dim")
        return text
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    for i, (name, count) in enumerate(items):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{name} ")
        text.append(format_count(count), style="bold")
    return text


def _entry(entry: ErrorEntry) -> list[Text]:
    head = Text(overflow="fold")
    head.append(format_clock(entry.time, seconds=True), style="dim")
    head.append(f" {entry.method} ", style="bold")
    head.append(entry.type, style="bold red")
    if entry.message:
        head.append(f": {entry.message}")
    lines = [head]
    for line in entry.traceback:
        lines.append(Text("  " + line, style="dim", no_wrap=True, overflow="ellipsis"))
    return lines


def errors_text(row: PortRow) -> Group:
    """What `LastErrors` shows for a row."""
    data = row.data or {}
    lines = [
        _pairs("errors", data.get("errors"), "none"),
        _pairs("rejected", data.get("rejected"), "none"),
    ]
    entries = last_errors(row)
    if entries:
        lines.append(Text(f"last {len(entries)} failures, newest first", style="bold underline"))
        for entry in entries:
            lines.extend(_entry(entry))
    else:
        lines.append(Text("no failures since the service started", style="dim"))
    return Group(*lines)


class PortScreen(Screen[None]):
    """One port: heading, per-method table, last errors, and in/s, latency, errors/s trends.

    The app keeps it up to date (`show`) with the main table. A port that is
    down keeps showing its last snapshot, dimmed.

    | Key | Action |
    | :- | :- |
    | escape | Back. |
    | tab | Move between the methods and the errors. |

    Args:
        key: The port's `(host, topic)`.
        interval: Seconds between two stats messages (one bar each in the trends).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="back to the previous view"),
    ]

    def __init__(self, key: tuple[str, str], interval: float) -> None:
        super().__init__()
        self.key = key
        self.interval = interval
        self.row: PortRow | None = None

    def compose(self) -> ComposeResult:
        """Heading; methods and errors left, trends right (under each other when narrow)."""
        yield Header(icon="◆")
        yield PortHeading(id="port-heading")
        with Horizontal(id="port-main"):
            with Vertical(id="port-left"):
                yield MethodTable(id="methods")
                yield LastErrors(id="errors")
            with Vertical(id="port-trends") as trends:
                trends.border_title = f"last {HISTORY * self.interval:g} s"
                yield Trend(id="trend-in")
                yield Trend(id="trend-p50")
                yield Trend(id="trend-p99")
                yield Trend(id="trend-err", classes="-errors")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        """The methods have the focus."""
        self.query_one(MethodTable).focus()

    def show(self, rows: Sequence[PortRow]) -> None:
        """Redraw from the rows of the latest refresh (this screen picks its own)."""
        row = next((r for r in rows if r.key == self.key), None)
        if row is None or not self.is_mounted:
            return
        previous, self.row = self.row, row
        self.query_one(PortHeading).update(port_heading(row))
        live = row.live
        if previous is not None and previous.data is row.data and previous.live == live:
            return  # no new snapshot: only the heading's "seen ago" moved
        self.query_one(MethodTable).show(method_rows(row), live=live)
        self.query_one(LastErrors).show(row)
        trends = (
            ("#trend-in", "in/s", row.history, format_rate(row.rate_in if live else None),
             format_rate),
            ("#trend-p50", "p50 ms", row.p50_history, format_ms(row.latency("p50")), format_ms),
            ("#trend-p99", "p99 ms", row.p99_history, format_ms(row.latency("p99")), format_ms),
            ("#trend-err", "err/s", row.error_history,
             format_rate(row.error_rate if live else None), format_rate),
        )  # fmt: skip
        for selector, label, values, now, fmt in trends:
            peak = fmt(max(values, default=0.0))
            self.query_one(selector, Trend).show(f"[b]{label}[/] {now} · peak {peak}", values)

    def action_back(self) -> None:
        """Back to where Enter was pressed."""
        self.app.pop_screen()
