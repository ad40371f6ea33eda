"""`trizmq-monitor`: a live dashboard of every service port of a ring.

Run it as ``trizmq-monitor RING [--resolve NAME=ADDR]...``. The stats feed
(`trizmq.stats.watch_ring`) runs in a Trio guest run inside Textual's asyncio
loop (see `trizmq_monitor.feed`); the app reads the board it fills on a timer.
Enter on a port opens its view (`port_screen`), `n` or Enter on a node total
the node's (`node_screen`).
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
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from trizmq import Curve, Registry, Ring, TrizmqError
from trizmq.cli.options import (
    UsageError,
    add_client_curve_options,
    add_registry_options,
    add_resolve_option,
    client_curve,
    registry,
    resolve_map,
)
from trizmq.stats import DEFAULT_INTERVAL, DOWN_AFTER, LATENCY_WINDOW, STALE_AFTER

from .feed import Feed, GuestFeed, describe_error
from .filter_bar import FilterBar
from .help_screen import HelpScreen
from .model import (
    SORTS,
    PortRow,
    filter_rows,
    membership_status,
    node_totals,
    sort_rows,
    take_rows,
)
from .node_screen import NodeScreen
from .node_totals import NodeTotals
from .port_detail import PortDetail
from .port_screen import PortScreen
from .port_table import PortTable
from .rate_graph import RateGraph
from .trends import SMOOTHING, Trends

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
    | up, down, pageup, pagedown, home, end | Select a port (or a host, in the node totals). |
    | enter | Open the selected port (the port view) or host (the node view). |
    | tab | Move between the ports and the node totals (the methods and the errors). |
    | n | Open the node view of the selected port's host. |
    | / | Filter the rows by host or topic; escape clears the filter. |
    | s, S | Sort by the next or the previous column (or click a header). |
    | r | Reverse the sort. |
    | p | Pause or resume the display; the feed keeps running. |
    | ctrl+s | Save an SVG screenshot in the screenshot directory. |
    | ? | Show the keys. |
    | escape | Back from a view; clear the filter. |
    | q | Quit. |

    Args:
        ring: The ring whose ports to watch.
        resolve: Host name to address overrides (`--resolve`).
        interval: Seconds between two stats messages of a port.
        curve: The client's CURVE keys (`Curve.client`), for services that require them.
        registry: A registry of live members: the status line says how many are
            registered, which ring services are not, and which registered ones
            no ring lists (their ports get rows too).
        refresh: Seconds between two redraws.
        stop_signals: Quit cleanly on SIGTERM and SIGHUP, as on `q` (`main` sets it;
            Textual restores the terminal on SIGINT, but not on these).
        feed: Where the numbers come from; by default a `GuestFeed` of the ring
            (`resolve`, `interval`, `curve` and `registry` go to it). A `ReplayFeed` shows
            recorded snapshots, the same on every run.
        screenshot_dir: Where `ctrl+s` and the command palette's Screenshot save
            their SVG files; the current directory by default.
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
        Binding("s", "sort", "Sort", tooltip="sort by the next column (or click its header)"),
        Binding("S", "sort_back", "Sort back", show=False, tooltip="sort by the previous column"),
        Binding("r", "reverse", "Reverse", tooltip="reverse the sort"),
        Binding("n", "node", "Node", tooltip="open the node view of the selected port's host"),
        Binding("p", "pause", "Pause", tooltip="pause the display; the feed keeps running"),
        Binding(
            "ctrl+s",
            "screenshot",
            "Screenshot",
            show=False,
            key_display="ctrl+s",
            tooltip="save an SVG screenshot in the screenshot directory (--screenshot-dir)",
        ),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="show the keys"),
        Binding("q", "quit", "Quit", tooltip="quit"),
        Binding(
            "escape",
            "clear_filter",
            "Clear filter",
            show=False,
            key_display="Escape",
            tooltip="clear the filter",
        ),
    ]

    sort_index: reactive[int] = reactive(0, init=False)
    """Index in `SORTS` of the sort in use."""
    sort_reverse: reactive[bool] = reactive(False, init=False)
    """Whether the sort goes the other way (smallest first, Z to A)."""
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
        registry: Registry | None = None,
        refresh: float = DEFAULT_REFRESH,
        stop_signals: bool = False,
        feed: Feed | None = None,
        screenshot_dir: str | Path = ".",
    ) -> None:
        super().__init__()
        self.ring = ring
        self.feed: Feed = (
            feed
            if feed is not None
            else GuestFeed(ring, resolve, interval=interval, curve=curve, registry=registry)
        )
        self.refresh_interval = refresh
        self.screenshot_dir = Path(screenshot_dir).expanduser().resolve()
        #: The smoothed rates and histories, fed on every refresh (also while paused).
        self.trends = Trends()
        #: Every port as of the last refresh (frozen while paused), in ring order.
        self.rows: list[PortRow] = take_rows(ring, None, 0.0)
        #: Every port in the order of the main table (before the filter).
        self.ordered: list[PortRow] = list(self.rows)
        #: Why the app exited with code 1, if it did.
        self.error_message: str | None = None
        self._stopping = False
        self._stop_signals = (signal.SIGTERM, signal.SIGHUP) if stop_signals else ()
        self._main: Screen[object] | None = None

    # -- layout and lifecycle -----------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Header; ports, node totals and detail; rate graph; filter bar; footer."""
        yield Header(icon="◆")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield PortTable(self.rows, id="ports")
                yield NodeTotals(id="nodes")
                yield PortDetail(id="detail")
            with Vertical(id="right"):
                yield RateGraph(self.feed.interval, id="graph")
        yield FilterBar(id="filter")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        """Start the feed and the redraw timer."""
        self._main = self.screen
        self.title = Path(self.ring.source).name
        # Under the table when the terminal is wide: as wide as the table.
        self.query_one(PortDetail).fit_width = self.query_one(PortTable).natural_width
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

    @property
    def main_screen(self) -> Screen[object]:
        """The dashboard's own screen, under the views and the help."""
        return self._main if self._main is not None else self.screen

    # -- drawing --------------------------------------------------------------------------

    def _tick(self) -> None:
        """Take the new snapshots and redraw, unless paused."""
        now = 0.0
        for step in self.feed.steps():
            now = step
            if self.feed.board is not None:
                self.trends.observe(self.feed.board)
        if self.paused:
            return
        self.rows = take_rows(self.ring, self.feed.board, now, self.trends)
        self._redraw()

    def _redraw(self) -> None:
        if not self.is_running or self._main is None:
            return  # shutting down (the widgets may be gone already), or not mounted yet
        sort = SORTS[self.sort_index]
        # Sorted from the order on screen: ties keep their place, rows move only
        # when a number they show changes.
        place = {row.key: i for i, row in enumerate(self.ordered)}
        current = sorted(self.rows, key=lambda row: place.get(row.key, len(place)))
        self.ordered = sort_rows(current, sort, reverse=self.sort_reverse)
        shown = filter_rows(self.ordered, self.filter_text)
        main = self._main
        main.query_one(PortTable).show(shown, sort)
        main.query_one(NodeTotals).show(node_totals(self.rows))
        self._show_selected()
        for screen in self.screen_stack:
            if isinstance(screen, PortScreen):
                screen.show(self.rows)
            elif isinstance(screen, NodeScreen):
                screen.show(self.rows, self.ordered, sort)
        up = sum(row.state == "up" for row in self.rows)
        status = [f"{up}/{len(self.rows)} up", f"sort {sort.label}, {self._direction()}"]
        if (board := self.feed.board) is not None and board.registry is not None:
            status.append(membership_status(board))
        if self.filter_text.strip():
            status.append(f"filter {self.filter_text.strip()!r} ({len(shown)})")
        if self.paused:
            status.append("PAUSED")
        self.sub_title = " · ".join(status)

    def _direction(self) -> str:
        sort = SORTS[self.sort_index]
        if sort.column == "state":
            names = ("down first", "up first")
        elif sort.descending:
            names = ("largest first", "smallest first")
        else:
            names = ("A to Z", "Z to A")
        return names[self.sort_reverse]

    def _show_selected(self) -> None:
        if not self.is_running or self._main is None:
            return
        key = self._main.query_one(PortTable).selected
        row = next((r for r in self.rows if r.key == key), None)
        self._main.query_one(RateGraph).row = row
        self._main.query_one(PortDetail).row = row

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "ports":
            self._show_selected()

    @on(DataTable.RowSelected)
    async def _row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a port opens it, on a node total opens the node."""
        key = event.row_key.value
        if key is None:
            return
        if isinstance(event.data_table, PortTable):
            host, _, topic = key.partition("\t")
            await self.open_port((host, topic))
        elif isinstance(event.data_table, NodeTotals):
            await self.open_node(key)

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a port table's header sorts by it, a second click reverses."""
        if isinstance(event.data_table, PortTable):
            self.sort_by(str(event.column_key.value))

    def watch_sort_index(self) -> None:
        """Redraw in the new order."""
        self._redraw()

    def watch_sort_reverse(self) -> None:
        """Redraw in the new order."""
        self._redraw()

    def watch_filter_text(self) -> None:
        """Redraw the matching rows."""
        self._redraw()

    def watch_paused(self) -> None:
        """Show the pause in the title bar (and catch up on resume)."""
        self.main_screen.set_class(self.paused, "-paused")
        if self.paused:
            self._redraw()
        else:
            self._tick()

    # -- views ----------------------------------------------------------------------------

    async def open_port(self, key: tuple[str, str]) -> None:
        """Show the port view of `key`, a `(host, topic)` of the ring."""
        if all(row.key != key for row in self.rows):
            return
        await self.push_screen(PortScreen(key, self.feed.interval))
        self._redraw()

    async def open_node(self, host: str) -> None:
        """Show the node view of `host`."""
        if all(row.host != host for row in self.rows):
            return
        await self.push_screen(NodeScreen(host, self.rows, self.feed.interval))
        self._redraw()

    # -- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that act on the main table only work there, and the footer says so."""
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return action in ("quit", "help", "pause", "screenshot", "command_palette")
        if action in ("filter", "clear_filter"):
            return screen is self.main_screen
        if action in ("sort", "sort_back", "reverse"):
            return not isinstance(screen, PortScreen)
        if action == "node":
            return not isinstance(screen, NodeScreen)
        return True

    def action_filter(self) -> None:
        """Open the filter input."""
        self.main_screen.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        """Clear the filter, if one is set."""
        if self.filter_text:
            self.main_screen.query_one(FilterBar).action_clear()

    def action_sort(self) -> None:
        """Sort by the next column, in its usual direction."""
        self.sort_reverse = False
        self.sort_index = (self.sort_index + 1) % len(SORTS)

    def action_sort_back(self) -> None:
        """Sort by the previous column, in its usual direction."""
        self.sort_reverse = False
        self.sort_index = (self.sort_index - 1) % len(SORTS)

    def action_reverse(self) -> None:
        """Sort the other way round."""
        self.sort_reverse = not self.sort_reverse

    def sort_by(self, column: str) -> None:
        """Sort by `column` (a `Sort.column`); the other way round if it is the sort already."""
        index = next((i for i, sort in enumerate(SORTS) if sort.column == column), None)
        if index is None:
            return
        if index == self.sort_index:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_reverse = False
            self.sort_index = index

    async def action_node(self) -> None:
        """Open the node view of the port in view, or of the selected port or host."""
        screen = self.screen
        if isinstance(screen, PortScreen):
            host: str | None = screen.key[0]
        elif isinstance(self.focused, NodeTotals):
            host = self.focused.selected
        else:
            key = self.main_screen.query_one(PortTable).selected
            host = None if key is None else key[0]
        if host is not None:
            await self.open_node(host)

    def action_pause(self) -> None:
        """Freeze or unfreeze the display."""
        self.paused = not self.paused

    def action_help(self) -> None:
        """Show the help screen, or close it."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(HelpScreen(self.help_sections()))

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Save a screenshot, by default in `screenshot_dir` (Textual's is ~/Downloads).

        The directory is created if need be, so a screenshot does not fail for
        want of a Downloads directory. The file is written here and now, not
        by a thread of Textual's that would keep the process from exiting if
        the app quit before it was done.

        Returns:
            The path of the file, or None if it could not be written.
        """
        directory = Path(path).expanduser() if path is not None else self.screenshot_dir
        try:
            directory.mkdir(parents=True, exist_ok=True)
            saved = self.save_screenshot(filename, str(directory), time_format)
        except OSError as exc:
            message = f"Failed to save a screenshot: {exc}"
            self.notify(message, title="Screenshot", severity="error", markup=False)
            return None
        self.notify(f"Saved to {saved}", title="Screenshot", markup=False)
        return saved

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """What the help screen lists: the keys of each view, then the columns."""
        arrows = "↑ ↓ PgUp PgDn Home End"
        keys = [
            (arrows, "select a port, or a host in the node totals"),
            ("Enter", "open the selected port (port view) or host (node view)"),
            ("Tab", "move between the ports and the node totals"),
        ]
        for binding in self.BINDINGS:
            if isinstance(binding, Binding):
                keys.append((self.get_key_display(binding), binding.tooltip))
        keys.append(("ctrl+p", "the command palette (themes, screenshot, keys)"))
        filtering = [
            ("Enter", "keep the filter and go back to the table"),
            ("Escape", "clear the filter"),
        ]
        port_view = [
            ("Escape", "back"),
            (arrows, "move through the methods, or scroll the errors"),
            ("Tab", "move between the methods and the errors"),
            ("n", "the node view of the port's host"),
            ("p ? q ctrl+s", "as in the main table"),
        ]
        node_view = [
            ("Escape", "back"),
            (arrows, "select a port"),
            ("Enter", "open the selected port"),
            ("s S r", "sort, as in the main table (or click a header)"),
            ("p ? q ctrl+s", "as in the main table"),
        ]
        help_keys = [
            (arrows, "scroll this help"),
            ("Escape ? Enter", "close it"),
        ]
        window = f"{SMOOTHING:g} s"
        columns = [
            ("state", f"stale after {STALE_AFTER:g} s without stats, down after {DOWN_AFTER:g} s"),
            ("in/s out/s", f"messages received and sent a second, over the last {window}"),
            ("p50 p99", f"handler latency in ms, last {LATENCY_WINDOW:g} s"),
            ("err", "handler exceptions since the service started (the last count when down)"),
            ("busy", "requests in flight (handlers running)"),
            ("peers", "connections to the port"),
            ("total", "port view: requests a method received since the service started"),
            ("timeouts", "port view: handlers cancelled at their deadline"),
        ]
        return [
            ("keys", keys),
            ("filter input (/)", filtering),
            ("port view (Enter on a port)", port_view),
            ("node view (n, or Enter on a host)", node_view),
            ("this help (?)", help_keys),
            ("columns", columns),
        ]

    @on(FilterBar.Changed)
    def _filter_changed(self, event: FilterBar.Changed) -> None:
        self.filter_text = event.text

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        self.main_screen.query_one(PortTable).focus()


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
    add_registry_options(parser)
    parser.add_argument(
        "--screenshot-dir",
        metavar="DIR",
        default=".",
        help=(
            "where ctrl+s (and the command palette's Screenshot) saves SVG screenshots; "
            "created if missing (default: the current directory)"
        ),
    )
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
        live = registry(args)
    except (UsageError, TrizmqError) as exc:  # a bad ring, --resolve, CURVE or registry option
        print(f"trizmq-monitor: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    app = MonitorApp(
        ring,
        resolve,
        curve=curve,
        registry=live,
        stop_signals=True,
        screenshot_dir=args.screenshot_dir,
    )
    app.run()
    # `run` returns the app's result; the exit code is kept apart.
    sys.exit(app.return_code or 0)


if __name__ == "__main__":
    main()
