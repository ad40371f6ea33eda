"""`PortTable`: one row per (host, topic:port) of the ring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from .model import PortRow, Sort, format_count, format_ms, format_rate

__all__ = ["COLUMNS", "PortTable"]

#: How each state is drawn.
STATE_STYLES = {"up": "bold green", "stale": "bold yellow", "down": "bold red"}


@dataclass(frozen=True)
class Column:
    """One column of the table.

    Attributes:
        key: The column key, also the `Sort.column` that sorts by it.
        label: The header text.
        width: Characters of content; 0 means as wide as the ring's longest name.
        right: Right-aligned (numbers) rather than left-aligned.
    """

    key: str
    label: str
    width: int = 0
    right: bool = True


#: The columns, narrow enough for 80 columns with the seed ring's names.
COLUMNS = (
    Column("host", "host", right=False),
    Column("port", "topic:port", right=False),
    Column("state", "state", 5, right=False),
    Column("in", "in/s", 5),
    Column("out", "out/s", 5),
    Column("p50", "p50", 4),
    Column("p99", "p99", 4),
    Column("err", "err", 4),
    Column("busy", "busy", 4),
    Column("peers", "peers", 5),
)


def _cells(row: PortRow) -> tuple[str, ...]:
    """The text of each column for one row, in `COLUMNS` order.

    A port that is down shows `-` for every number but its error count, the
    last one known.
    """
    return (
        row.host,
        row.name,
        row.state,
        format_rate(row.rate_in if row.live else None),
        format_rate(row.rate_out if row.live else None),
        format_ms(row.latency("p50")),
        format_ms(row.latency("p99")),
        format_count(row.errors),
        format_count(row.number("in_flight")),
        format_count(row.number("peers")),
    )


class PortTable(DataTable[Text]):
    """The ports of the ring with their state, rates, latency and load.

    Cell padding is 0 and every cell starts with a space instead, which keeps
    the ten columns of the seed ring within 80 characters. Enter on a row
    posts `DataTable.RowSelected` (the app opens the port view); a click on a
    header posts `DataTable.HeaderSelected` (the app sorts by that column).

    | Key | Action |
    | :- | :- |
    | up, down | Select the previous or next port. |
    | pageup, pagedown, home, end | Move by a page, to the first or the last port. |
    | enter | Open the port. |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", key_display="⏎", tooltip="open the port"),
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    DEFAULT_CSS = """
    PortTable {
        height: 1fr;
        min-height: 4;
        scrollbar-size-vertical: 1;
    }
    PortTable > .datatable--header {
        text-style: bold;
    }
    """

    def __init__(
        self, rows: Sequence[PortRow], *, host_column: bool = True, id: str | None = None
    ) -> None:
        """Make the columns fit the ring's names.

        Args:
            rows: Every row of the ring, for the widths of the name columns.
            host_column: Whether to show the host (the node view does not).
            id: The widget id.
        """
        super().__init__(cursor_type="row", cell_padding=0, zebra_stripes=True, id=id)
        widths = {
            "host": max([len("host"), *(len(r.host) for r in rows)]),
            "port": max([len("topic:port"), *(len(r.name) for r in rows)]),
        }
        self._columns = [
            Column(c.key, c.label, c.width or widths[c.key], c.right)
            for c in COLUMNS
            if host_column or c.key != "host"
        ]
        self._keys: list[tuple[str, str]] = []
        self._shown: dict[tuple[str, str], tuple[str, ...]] = {}
        self._sorted_by: str | None = None

    @property
    def natural_width(self) -> int:
        """Columns the table takes with every column and the scrollbar."""
        return sum(column.width + 1 for column in self._columns) + 1

    @property
    def keys(self) -> list[tuple[str, str]]:
        """The `(host, topic)` of each row shown, top to bottom."""
        return list(self._keys)

    @property
    def selected(self) -> tuple[str, str] | None:
        """The `(host, topic)` of the row under the cursor, or None when empty."""
        if not self._keys:
            return None
        return self._keys[min(max(self.cursor_row, 0), len(self._keys) - 1)]

    def show(self, rows: Sequence[PortRow], sort: Sort) -> None:
        """Show these rows in this order, keeping the cursor on the same port.

        Cells are updated in place while the order stays the same; the rows
        are rebuilt when it changes (a new sort, a filter, moving rates).

        Args:
            rows: The rows to show, already filtered and sorted.
            sort: The sort they are in, marked in its column's header.
        """
        keys = [row.key for row in rows]
        if keys != self._keys or sort.column != self._sorted_by:
            selected = self.selected
            if sort.column != self._sorted_by:
                # Relabel the headers: the sorted column's label is highlighted.
                self.clear(columns=True)
                self._sorted_by = sort.column
                for column in self._columns:
                    label = self._label(column, sorted_by=column.key == sort.column)
                    # One more character than the content: the leading space.
                    self.add_column(label, key=column.key, width=column.width + 1)
            else:
                self.clear()
            self._keys = keys
            self._shown = {}
            for row in rows:
                cells = self._cells(row)
                self._shown[row.key] = cells
                self.add_row(*self._styled(row, cells), key=_row_key(row.key))
            if selected in keys:
                self.move_cursor(row=keys.index(selected), animate=False)
            return
        for row in rows:
            cells = self._cells(row)
            if self._shown.get(row.key) == cells:
                continue
            self._shown[row.key] = cells
            for column, cell in zip(self._columns, self._styled(row, cells), strict=True):
                self.update_cell(_row_key(row.key), column.key, cell)

    def _cells(self, row: PortRow) -> tuple[str, ...]:
        cells = dict(zip((c.key for c in COLUMNS), _cells(row), strict=True))
        return tuple(cells[column.key] for column in self._columns)

    def _styled(self, row: PortRow, cells: tuple[str, ...]) -> list[Text]:
        dim = "" if row.live else "dim"
        styled = []
        for column, text in zip(self._columns, cells, strict=True):
            style = STATE_STYLES[row.state] if column.key == "state" else dim
            if column.key == "err" and row.errors:
                style = "bold red" if row.live else "red"
            styled.append(
                Text(" " + text, style=style, justify="right" if column.right else "left")
            )
        return styled

    @staticmethod
    def _label(column: Column, *, sorted_by: bool) -> Text:
        style = "bold underline reverse" if sorted_by else "bold"
        text = Text(" ")
        text.append(column.label, style=style)
        text.justify = "right" if column.right else "left"
        return text


def _row_key(key: tuple[str, str]) -> str:
    return f"{key[0]}\t{key[1]}"
