"""`PortDetail`: every field of the selected port's latest stats snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.dom import NoScreen
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from trizmq.stats import LATENCY_WINDOW

from .model import (
    PortRow,
    format_bytes,
    format_clock,
    format_count,
    format_duration,
    format_ms,
    format_rate,
)
from .port_table import STATE_STYLES

__all__ = ["PortDetail"]

#: Width from which the fields are laid out in two columns.
TWO_COLUMNS = 76


class PortDetail(Widget):
    """The selected port: a title line, then every stats field as label and value.

    In a narrow terminal the fields take two columns when the pane is at
    least 76 characters wide (under the table, where height is short; long
    values are cut with an ellipsis); otherwise one column, where long values
    (an exception's type) wrap rather than being cut. A port that is down
    shows its last snapshot, marked as such. Set `row` to redraw.
    """

    DEFAULT_CSS = """
    PortDetail {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    """

    row: reactive[PortRow | None] = reactive(None, layout=True)
    """The port shown."""
    fit_width: int | None = None
    """The width `width: auto` gives it (the app sets the table's), or None for the content's."""

    def get_content_width(self, container: Size, viewport: Size) -> int:
        """`fit_width` less the padding, when set."""
        if self.fit_width is None:
            return super().get_content_width(container, viewport)
        return max(1, self.fit_width - 2)

    def render(self) -> Group | Text:
        """The title and the fields, fitted to the pane's width."""
        return _layout(self.row, self.size.width, two=self._two_columns)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """The lines the content takes at `width` (the layout depends on it)."""
        console = self.app.console
        renderable = _layout(self.row, width, two=self._two_columns)
        return len(console.render_lines(renderable, console.options.update_width(width)))

    @property
    def _two_columns(self) -> bool:
        # Only where height is short: the narrow layout (no screen yet: assume it).
        try:
            return not self.screen.has_class("-wide")
        except NoScreen:
            return True

    def watch_row(self) -> None:
        """Measure again: Textual caches a widget's height by width only."""
        self.clear_cached_dimensions()


def _layout(row: PortRow | None, width: int, *, two: bool = True) -> Group | Text:
    """The title and the fields, in two columns if `two` and `width` allow, else one."""
    if row is None:
        return Text("No port selected.", style="dim")
    fields = _fields(row.data, row)
    columns = 2 if two and width >= TWO_COLUMNS else 1
    per_column = -(-len(fields) // columns)
    grid = Table.grid(padding=(0, 1), expand=True)
    for _ in range(columns):
        grid.add_column(style="bold", no_wrap=True)
        # Two columns are the narrow layout: a long value is cut rather than
        # wrapped, so the pane keeps its height and the table its rows.
        grid.add_column(ratio=1, no_wrap=columns > 1, overflow="ellipsis")
    # Column-major: read down the first column, then the second.
    for i in range(per_column):
        cells: list[Text | str] = []
        for c in range(columns):
            index = c * per_column + i
            cells.extend(fields[index] if index < len(fields) else ("", ""))
        grid.add_row(*cells)
    title = _title(row)
    if columns > 1:
        title.no_wrap, title.overflow = True, "ellipsis"
    return Group(title, grid)


def _title(row: PortRow) -> Text:
    title = Text()
    title.append(f"{row.topic}:{row.port}", style="bold")
    title.append(f" on {row.host} ")
    title.append(f"({row.address}) ", style="dim")
    title.append(row.state, style=STATE_STYLES[row.state])
    if row.seen_ago is None:
        title.append(" · never answered", style="dim")
    elif row.state == "down":
        title.append(f" · last seen {format_duration(row.seen_ago)} ago", style="dim")
    else:
        title.append(f" · seen {format_duration(row.seen_ago)} ago", style="dim")
    return title


def _pairs(counts: Mapping[str, Any] | None, *, empty: str = "none", by_count: bool = True) -> Text:
    """`"a 1 b 2"`, largest first unless `by_count` is false; `empty` when there is nothing."""
    if not counts:
        return Text(empty, style="dim")
    items = list(counts.items())
    if by_count:
        items.sort(key=lambda kv: (-kv[1], kv[0]))
    text = Text()
    for i, (name, count) in enumerate(items):
        if i:
            text.append(" ")
        text.append(f"{name} ")
        text.append(format_count(count), style="bold")
    return text


def _fields(data: Mapping[str, Any] | None, row: PortRow) -> list[tuple[str, Text | str]]:
    """Label and value of every field of the snapshot, in the documented order."""
    if data is None:
        return [("stats", Text("none yet: the port has not answered", style="dim"))]
    latency = data.get("latency_ms") or {}
    received = data.get("received") or {}
    sent = data.get("sent") or {}
    rate = (
        f"in {format_rate(row.rate_in)}/s  out {format_rate(row.rate_out)}/s"
        if row.live
        else Text("-", style="dim")
    )
    started = format_clock(data.get("started"))
    pid = data.get("pid")
    process = " · ".join(
        part for part in (None if pid is None else f"pid {pid}", data.get("endpoint")) if part
    )
    return [
        ("started", f"{started}, up {format_duration(data.get('uptime'))}"),
        ("process", process or Text("-", style="dim")),
        ("rate", rate),
        ("received", _pairs(received, empty="0", by_count=False)),
        ("sent", _pairs(sent, empty="0", by_count=False)),
        (
            "bytes",
            f"in {format_bytes(data.get('bytes_in'))}  out {format_bytes(data.get('bytes_out'))}",
        ),
        ("in flight", format_count(data.get("in_flight"))),
        ("peers", format_count(data.get("peers"))),
        ("timeouts", format_count(data.get("timeouts"))),
        ("cancelled", format_count(data.get("cancelled"))),
        (
            "latency ms",
            f"p50 {format_ms(latency.get('p50'))} p90 {format_ms(latency.get('p90'))} "
            f"p99 {format_ms(latency.get('p99'))}",
        ),
        (
            "max ms",
            f"{format_ms(latency.get('max'))} "
            f"({format_count(latency.get('count'))} handled in {LATENCY_WINDOW:g} s)",
        ),
        ("errors", _pairs(data.get("errors"))),
        ("rejected", _pairs(data.get("rejected"))),
    ]
