"""`RateGraph`: the selected port's incoming messages per second, as a sparkline."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Sparkline

from trizmq.stats import HISTORY

from .model import PortRow, format_rate

__all__ = ["RateGraph"]


class RateGraph(Widget):
    """A caption (current and peak rate) and a sparkline of a port's `rate_in` history.

    The line scrolls from right to left, one bar per stats message (each the
    rate over the last 3 s, see `trends`), and is scaled from zero. Set `row`
    to redraw.
    """

    DEFAULT_CSS = """
    RateGraph {
        height: auto;
        layout: horizontal;
        padding: 0 1;
    }
    RateGraph > Label {
        width: auto;
        margin-right: 1;
    }
    RateGraph > Sparkline {
        width: 1fr;
        height: 1;
    }
    """

    row: reactive[PortRow | None] = reactive(None)
    """The port whose history is drawn."""

    def __init__(self, interval: float, *, id: str | None = None) -> None:
        """Make the graph.

        Args:
            interval: Seconds between two stats messages: one bar each.
            id: The widget id.
        """
        super().__init__(id=id)
        self.interval = interval

    def compose(self) -> ComposeResult:
        """A caption and the sparkline."""
        yield Label(id="rate-caption")
        yield Sparkline([], id="rate-sparkline")

    def watch_row(self, row: PortRow | None) -> None:
        """Redraw the caption and the line."""
        caption = self.query_one("#rate-caption", Label)
        sparkline = self.query_one("#rate-sparkline", Sparkline)
        if row is None:
            caption.update("in/s")
            sparkline.data = []
            return
        peak = max(row.history, default=0.0)
        now = row.rate_in if row.live else None
        window = HISTORY * self.interval
        caption.update(f"[b]in/s[/] {format_rate(now)} · peak {format_rate(peak)} in {window:g} s")
        # Fixed length, zero-padded on the left, with a leading zero that anchors the
        # scale at 0: otherwise a steady rate would draw as a flat line at the bottom.
        padding = (0.0,) * (HISTORY - len(row.history))
        sparkline.data = [0.0, *padding, *row.history]
