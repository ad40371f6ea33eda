"""`Trend`: a caption and a sparkline of one series (in/s, latency, errors/s)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Label, Sparkline

from trizmq.stats import HISTORY

__all__ = ["Trend", "padded"]


def padded(values: Sequence[float]) -> list[float]:
    """The values as a sparkline draws them: `HISTORY` long, scaled from zero.

    Zero-padded on the left, with a leading zero that anchors the scale at 0:
    otherwise a steady series would draw as a flat line at the bottom.
    """
    values = list(values)[-HISTORY:]
    return [0.0, *(0.0,) * (HISTORY - len(values)), *values]


class Trend(Widget):
    """A caption and a sparkline, one bar per stats message, newest on the right.

    On one line in a narrow terminal (the caption left of the line), the
    caption above the line in a wide one (see `monitor.tcss`). Call `show`.
    """

    DEFAULT_CSS = """
    Trend {
        height: auto;
        layout: horizontal;
        padding: 0 1;
    }
    Trend > Label {
        width: 24;
        margin-right: 1;
    }
    Trend > Sparkline {
        width: 1fr;
        height: 1;
    }
    Trend.-errors > Sparkline > .sparkline--max-color {
        color: $error;
    }
    Trend.-errors > Sparkline > .sparkline--min-color {
        color: $warning 50%;
    }
    """

    _shown: tuple[str, tuple[float, ...]] | None = None

    def compose(self) -> ComposeResult:
        """The caption and the line."""
        yield Label()
        yield Sparkline([])

    def show(self, caption: str, values: Sequence[float]) -> None:
        """Set the caption (Textual markup) and the values, oldest first."""
        if (caption, tuple(values)) == self._shown:
            return
        self._shown = (caption, tuple(values))
        self.query_one(Label).update(caption)
        self.query_one(Sparkline).data = padded(values)
