"""`trizmq-monitor`: a live dashboard of every service port of a ring.

Run it as ``trizmq-monitor RING [--resolve NAME=ADDR]...``. The stats feed
(`trizmq.stats.watch_ring`) runs in a Trio guest run inside Textual's asyncio
loop (see `trizmq_monitor.feed`); the app reads the board it fills on a timer.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import outcome
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, Header

from trizmq import Curve, Ring, TrizmqError
from trizmq.cli.options import (
    UsageError,
    add_client_curve_options,
    add_resolve_option,
    client_curve,
    resolve_map,
)
from trizmq.stats import DEFAULT_INTERVAL, DOWN_AFTER, LATENCY_WINDOW, STALE_AFTER

from .feed import GuestFeed, describe_error
from .filter_bar import FilterBar
from .help_screen import HelpScreen
from .model import SORTS, PortRow, filter_rows, node_totals, sort_rows, take_rows
from .node_totals import NodeTotals
from .port_detail import PortDetail
from .port_table import PortTable
from .rate_graph import RateGraph

__all__ = ["EXIT_FEED_FAILED", "EXIT_USAGE", "MonitorApp", "main"]

#: Exit codes of `main`: 0 quit, 1 the feed failed, 2 a bad ring or option.
EXIT_FEED_FAILED = 1
EXIT_USAGE = 2
#: Seconds between two redraws from the board.
DEFAULT_REFRESH = 0.25


class MonitorApp(App[None]):
    """The dashboard: ports, node totals, the selected port's rate and full stats.

    | Key | Action |
    | :- | :- |
    | up, down, pageup, pagedown, home, end | Select a port. |
    | / | Filter the rows by host or topic; escape clears the filter. |
    | s | Sort by the next column. |
    | p | Pause or resume the display; the feed keeps running. |
    | ? | Show the keys. |
    | q | Quit. |

    Args:
        ring: The ring whose ports to watch.
        resolve: Host name to address overrides (`--resolve`).
        interval: Seconds between two stats messages of a port.
        curve: The client's CURVE keys (`Curve.client`), for services that require them.
        refresh: Seconds between two redraws.
        stop_signals: Quit cleanly on SIGTERM and SIGHUP, as on `q` (`main` sets it;
            Textual restores the terminal on SIGINT, but not on these).
    """

    TITLE = "trizmq-monitor"
    CSS_PATH = "monitor.tcss"
    #: Screen classes by terminal width: side panes from 120 columns on. (Typed as
    #: Textual types it, which mypy reads as an instance variable.)
    HORIZONTAL_BREAKPOINTS: list[tuple[int, str]] | None = [  # noqa: RUF012
        (0, "-narrow"),
        (120, "-wide"),
    ]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", key_display="/", tooltip="filter by host or topic"),
        Binding("s", "sort", "Sort", tooltip="sort by the next column"),
        Binding("p", "pause", "Pause", tooltip="pause the display; the feed keeps running"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="show the keys"),
        Binding("q", "quit", "Quit", tooltip="quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="clear the filter"),
    ]

    sort_index: reactive[int] = reactive(0, init=False)
    """Index in `SORTS` of the sort in use."""
    filter_text: reactive[str] = reactive("", init=False)
    """The `/` filter; "" shows every row."""
    paused: reactive[bool] = reactive(False, init=False)
    """Whether the display is frozen."""

    def __init__(
        self,
        ring: Ring,
        resolve: Mapping[str, str] | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        curve: Curve | None = None,
        refresh: float = DEFAULT_REFRESH,
        stop_signals: bool = False,
    ) -> None:
        super().__init__()
        self.ring = ring
        self.feed = GuestFeed(ring, resolve, interval=interval, curve=curve)
        self.refresh_interval = refresh
        #: Every port as of the last refresh (frozen while paused), in ring order.
        self.rows: list[PortRow] = take_rows(ring, None, 0.0)
        #: Why the app exited with code 1, if it did.
        self.error_message: str | None = None
        self._stopping = False
        self._stop_signals = (signal.SIGTERM, signal.SIGHUP) if stop_signals else ()

    # -- layout and lifecycle -----------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Header, ports and node totals, rate graph and detail, filter bar, footer."""
        yield Header(icon="◆")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield PortTable(self.rows, id="ports")
                yield NodeTotals(id="nodes")
            with Vertical(id="right"):
                yield RateGraph(self.feed.interval, id="graph")
                yield PortDetail(id="detail")
        yield FilterBar(id="filter")
        yield Footer()

    def on_mount(self) -> None:
        """Start the feed and the redraw timer."""
        self.title = Path(self.ring.source).name
        loop = asyncio.get_running_loop()
        for signum in self._stop_signals:
            # Through the loop's wakeup fd (hence host_uses_signal_set_wakeup_fd in the feed).
            loop.add_signal_handler(signum, self.exit)
        self.feed.start(self._feed_done)
        self.set_interval(self.refresh_interval, self._tick, name="redraw")
        self._tick()

    async def on_unmount(self) -> None:
        """Stop the feed and wait until its Trio run has finished."""
        self._stopping = True
        await self.feed.stop()
        loop = asyncio.get_running_loop()
        for signum in self._stop_signals:
            loop.remove_signal_handler(signum)

    def _feed_done(self, result: outcome.Outcome[None]) -> None:
        """The guest run ended: expected when quitting, a fatal error otherwise."""
        if self._stopping:
            return
        if isinstance(result, outcome.Error):
            reason = describe_error(result.error)
        else:
            reason = "the stats feed stopped unexpectedly"
        self.error_message = f"trizmq-monitor: {reason}"
        self._stopping = True
        # Text, not a str: the message is printed as is, never read as markup.
        self.exit(return_code=EXIT_FEED_FAILED, message=Text(self.error_message))

    # -- drawing --------------------------------------------------------------------------

    def _tick(self) -> None:
        """Copy the board and redraw, unless paused."""
        if self.paused:
            return
        self.rows = take_rows(self.ring, self.feed.board, self.feed.clock.current_time())
        self._redraw()

    def _redraw(self) -> None:
        if not self.is_running:
            return  # shutting down: the widgets may be gone already
        sort = SORTS[self.sort_index]
        shown = sort_rows(filter_rows(self.rows, self.filter_text), sort)
        self.query_one(PortTable).show(shown, sort)
        self.query_one(NodeTotals).totals = tuple(node_totals(self.rows))
        self._show_selected()
        up = sum(row.state == "up" for row in self.rows)
        status = [f"{up}/{len(self.rows)} up", f"sort {sort.label}"]
        if self.filter_text.strip():
            status.append(f"filter {self.filter_text.strip()!r} ({len(shown)})")
        if self.paused:
            status.append("PAUSED")
        self.sub_title = " · ".join(status)

    def _show_selected(self) -> None:
        if not self.is_running:
            return
        key = self.query_one(PortTable).selected
        row = next((r for r in self.rows if r.key == key), None)
        self.query_one(RateGraph).row = row
        self.query_one(PortDetail).row = row

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self) -> None:
        self._show_selected()

    def watch_sort_index(self) -> None:
        """Redraw in the new order."""
        self._redraw()

    def watch_filter_text(self) -> None:
        """Redraw the matching rows."""
        self._redraw()

    def watch_paused(self) -> None:
        """Show the pause in the title bar (and catch up on resume)."""
        self.screen.set_class(self.paused, "-paused")
        if self.paused:
            self._redraw()
        else:
            self._tick()

    # -- actions --------------------------------------------------------------------------

    def action_filter(self) -> None:
        """Open the filter input."""
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        """Clear the filter, if one is set."""
        if self.filter_text:
            self.query_one(FilterBar).action_clear()

    def action_sort(self) -> None:
        """Sort by the next column."""
        self.sort_index = (self.sort_index + 1) % len(SORTS)

    def action_pause(self) -> None:
        """Freeze or unfreeze the display."""
        self.paused = not self.paused

    def action_help(self) -> None:
        """Show the help screen, unless it is showing."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """What the help screen lists: the keys, then the columns."""
        keys = [("↑ ↓ PgUp PgDn", "select a port")]
        for binding in self.BINDINGS:
            if isinstance(binding, Binding):
                keys.append((self.get_key_display(binding), binding.tooltip))
        columns = [
            ("state", f"stale after {STALE_AFTER:g} s without stats, down after {DOWN_AFTER:g} s"),
            ("in/s out/s", "messages received and sent a second"),
            ("p50 p99", f"handler latency in ms, last {LATENCY_WINDOW:g} s"),
            ("err", "handler exceptions since the service started"),
            ("busy", "requests in flight (handlers running)"),
            ("peers", "connections to the port"),
        ]
        return [("keys", keys), ("columns", columns)]

    @on(FilterBar.Changed)
    def _filter_changed(self, event: FilterBar.Changed) -> None:
        self.filter_text = event.text

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        self.query_one(PortTable).focus()


def build_parser() -> argparse.ArgumentParser:
    """The `trizmq-monitor` argument parser."""
    parser = argparse.ArgumentParser(
        prog="trizmq-monitor",
        description=(
            "A live terminal dashboard of every service port of a ring: state, message "
            "rates, latency, errors and load, from the stats each service publishes."
        ),
    )
    parser.add_argument("ring", metavar="RING", help="the JSON ring file")
    add_resolve_option(parser)
    add_client_curve_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run `trizmq-monitor`; exits 0 on quit, 1 if the feed fails, 2 for a bad ring or option.

    Args:
        argv: The arguments, without the program name; None means `sys.argv[1:]`.
    """
    args = build_parser().parse_args(argv)
    try:
        ring = Ring.load(args.ring)
        resolve = resolve_map(args)
        curve = client_curve(args)
    except (UsageError, TrizmqError) as exc:  # a bad ring, --resolve, CURVE option or key
        print(f"trizmq-monitor: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    app = MonitorApp(ring, resolve, curve=curve, stop_signals=True)
    app.run()
    # `run` returns the app's result; the exit code is kept apart.
    sys.exit(app.return_code or 0)


if __name__ == "__main__":
    main()
