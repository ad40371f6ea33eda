"""`NodeScreen`: every port of one host and their totals (`n`, or Enter on a node total)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from trizmq.stats import HISTORY

from .model import (
    NodeTotal,
    PortRow,
    Sort,
    format_count,
    format_rate,
    node_history,
    node_totals,
)
from .port_table import PortTable
from .trend import Trend

__all__ = ["NodeHeading", "NodeScreen", "node_heading"]


class NodeHeading(Static):
    """Two lines: the host, its address, ports up and processes; then its totals."""

    DEFAULT_CSS = """
    NodeHeading {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    """


def node_heading(node: NodeTotal, rows: Sequence[PortRow]) -> Group:
    """The two lines of `NodeHeading`, each cut to the width with an ellipsis."""
    health = "green" if node.up == node.total else "yellow" if node.down == 0 else "red"
    first = Text(no_wrap=True, overflow="ellipsis")
    first.append(node.host, style="bold")
    addresses = sorted({row.address for row in rows})
    first.append(f" {' '.join(addresses)} ", style="dim")
    first.append(f"{node.up}/{node.total} up", style=f"bold {health}")
    if node.stale:
        first.append(f", {node.stale} stale", style="yellow")
    if node.down:
        first.append(f", {node.down} down", style="red")
    pids = sorted({row.pid for row in rows if row.live and row.pid is not None})
    if pids:
        label = "pid" if len(pids) == 1 else "pids"
        first.append(f" · {label} {' '.join(map(str, pids))}", style="dim")
    second = Text(no_wrap=True, overflow="ellipsis")
    second.append("total ", style="bold")
    counts = [
        ("in", f"{format_rate(node.rate_in)}/s"),
        ("out", f"{format_rate(node.rate_out)}/s"),
        ("err", format_count(node.errors)),
        ("busy", format_count(node.in_flight)),
        ("peers", format_count(node.peers)),
    ]
    for i, (label, value) in enumerate(counts):
        if i:
            second.append("  ")
        second.append(f"{label} ", style="dim")
        second.append(value, style="bold red" if label == "err" and node.errors else "bold")
    return Group(first, second)


class NodeScreen(Screen[None]):
    """One host: its totals, its ports (as the main table, sorted alike), its trends.

    Errors count the ports that are down with their last snapshot; rates
    count the live ports. Enter on a port opens it.

    | Key | Action |
    | :- | :- |
    | escape | Back. |

    Args:
        host: The ring host.
        rows: Every row of the ring, for the widths of the columns.
        interval: Seconds between two stats messages (one bar each in the trends).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="back to the previous view"),
    ]

    def __init__(self, host: str, rows: Sequence[PortRow], interval: float) -> None:
        super().__init__()
        self.host = host
        self.interval = interval
        self._columns_of = [row for row in rows if row.host == host]

    def compose(self) -> ComposeResult:
        """Heading; ports left, trends right (under them when narrow)."""
        yield Header(icon="◆")
        yield NodeHeading(id="node-heading")
        with Horizontal(id="node-main"):
            yield PortTable(self._columns_of, host_column=False, id="node-ports")
            with Vertical(id="node-trends") as trends:
                trends.border_title = f"last {HISTORY * self.interval:g} s"
                yield Trend(id="node-in")
                yield Trend(id="node-err", classes="-errors")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        """The ports have the focus."""
        self.query_one(PortTable).focus()

    @property
    def table(self) -> PortTable:
        """The host's ports."""
        return self.query_one(PortTable)

    def show(self, every: Sequence[PortRow], ordered: Sequence[PortRow], sort: Sort) -> None:
        """Redraw from the latest refresh.

        Args:
            every: Every row of the ring, in ring order.
            ordered: Every row, sorted as the main table is (not filtered).
            sort: That sort.
        """
        if not self.is_mounted:
            return
        mine = [row for row in every if row.host == self.host]
        totals = node_totals(mine)
        if not totals:
            return
        node = totals[0]
        self.query_one(NodeHeading).update(node_heading(node, mine))
        self.table.show([row for row in ordered if row.host == self.host], sort)
        live = [row for row in mine if row.live]
        rates = node_history(live, lambda r: r.history)
        errors = node_history(live, lambda r: r.error_history)
        self.query_one("#node-in", Trend).show(
            f"[b]in/s[/] {format_rate(node.rate_in)} · peak {format_rate(max(rates, default=0))}",
            rates,
        )
        self.query_one("#node-err", Trend).show(
            f"[b]err/s[/] {format_rate(node.error_rate)} · "
            f"peak {format_rate(max(errors, default=0))}",
            errors,
        )

    def action_back(self) -> None:
        """Back to where it was opened from."""
        self.app.pop_screen()
