"""`NodeTotals`: one line per host with its ports up, its message rates and errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from .model import NodeTotal, format_count, format_rate

__all__ = ["NodeTotals", "node_line"]


class NodeTotals(DataTable[Text]):
    """The ring's hosts added up: ports up out of total, messages per second, errors.

    A table without a header, one row per host, that takes the focus (Tab):
    Enter on a host posts `DataTable.RowSelected`, and the app opens the node
    view. Call `show` to redraw.

    | Key | Action |
    | :- | :- |
    | up, down, home, end | Select a host. |
    | enter | Open the node view of the host. |
    """

    DEFAULT_CSS = """
    NodeTotals {
        height: auto;
        max-height: 8;
        background: $panel;
        scrollbar-size-vertical: 1;
    }
    NodeTotals > .datatable--cursor {
        background: $panel;
        text-style: none;
    }
    NodeTotals:focus > .datatable--cursor {
        background: $block-cursor-background;
        text-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Node view", key_display="⏎", tooltip="open the host"),
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", show_header=False, cell_padding=0, id=id)
        self.totals: tuple[NodeTotal, ...] = ()
        self._shown: list[tuple[str, ...]] = []

    def on_mount(self) -> None:
        """The columns: host, ports up, notes, rates in and out, errors."""
        for key in ("host", "up", "notes", "in", "out", "err"):
            self.add_column("", key=key)

    @property
    def selected(self) -> str | None:
        """The host under the cursor, or None when there is none."""
        if not self.totals:
            return None
        return self.totals[min(max(self.cursor_row, 0), len(self.totals) - 1)].host

    def show(self, totals: Sequence[NodeTotal]) -> None:
        """Show these totals, one row per host, keeping the cursor on its host."""
        self.totals = tuple(totals)
        lines = [node_line(node) for node in self.totals]
        plain = [tuple(cell.plain for cell in line) for line in lines]
        if plain == self._shown:
            return
        selected = self.cursor_row
        self.clear()
        for node, line in zip(self.totals, lines, strict=True):
            self.add_row(*line, key=node.host)
        self._shown = plain
        if self.row_count:
            self.move_cursor(row=min(selected, self.row_count - 1), animate=False)
        self.tooltip = "\n".join(
            f"{n.host}: {n.up} up, {n.stale} stale, {n.down} down of {n.total}" for n in self.totals
        )


def node_line(node: NodeTotal) -> tuple[Text, ...]:
    """A host's totals as cells: host, ports up, stale and down, rates, errors."""
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
        Text(f" {node.host}", style="bold"),
        Text(f"  {node.up}/{node.total} up", style=f"bold {health}", justify="right"),
        Text(f"  {', '.join(notes)}", style=health),
        Text(f"  in {format_rate(node.rate_in)}/s", justify="right"),
        Text(f"  out {format_rate(node.rate_out)}/s", justify="right"),
        Text(f"  err {format_count(node.errors)} ", style="bold red" if node.errors else ""),
    )
