"""`NodeTotals`: one line per host with its ports up, its message rates and errors."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .model import NodeTotal, format_count, format_rate

__all__ = ["NodeTotals"]


class NodeTotals(Widget):
    """The ring's hosts added up: ports up out of total, messages per second, errors.

    Set `totals` to redraw.
    """

    DEFAULT_CSS = """
    NodeTotals {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    """

    totals: reactive[tuple[NodeTotal, ...]] = reactive((), layout=True)
    """The hosts to show, one line each."""

    def render(self) -> Table:
        """A grid: host, ports up, rates in and out, errors."""
        grid = Table.grid(padding=(0, 2))
        for justify in ("left", "right", "left", "right", "right", "right"):
            grid.add_column(justify=justify, no_wrap=True)
        for node in self.totals:
            grid.add_row(*_line(node))
        return grid

    def watch_totals(self, totals: Sequence[NodeTotal]) -> None:
        """Measure again and update the tooltip (each host's full counts).

        Textual caches a widget's content height by width only.
        """
        self.clear_cached_dimensions()
        self.tooltip = "\n".join(
            f"{n.host}: {n.up} up, {n.stale} stale, {n.down} down of {n.total}" for n in totals
        )


def _line(node: NodeTotal) -> tuple[Text, ...]:
    if node.up == node.total:
        health = "green"
    elif node.up + node.stale == node.total:
        health = "yellow"
    else:
        health = "red"
    notes = []
    if node.stale:
        notes.append(f"{node.stale} stale")
    if node.down:
        notes.append(f"{node.down} down")
    return (
        Text(node.host, style="bold"),
        Text(f"{node.up}/{node.total} up", style=f"bold {health}"),
        Text(", ".join(notes), style=health),
        Text(f"in {format_rate(node.rate_in)}/s"),
        Text(f"out {format_rate(node.rate_out)}/s"),
        Text(f"err {format_count(node.errors)}", style="bold red" if node.errors else ""),
    )
