"""`HelpScreen`: the keys of the monitor and what its columns mean, over the dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]

#: A titled list of `(name, description)` pairs.
Section = tuple[str, Sequence[tuple[str, str]]]


class HelpScreen(ModalScreen[None]):
    """Sections of names and descriptions (the keys, the columns) in a box.

    The box scrolls when the terminal is too small for it (80x24 is).

    | Key | Action |
    | :- | :- |
    | up, down, pageup, pagedown, home, end | Scroll. |
    | escape, ?, enter | Close the help. |

    Args:
        sections: `(title, [(name, description), ...])`, in the order to show them.
    """

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $accent;
        border-title-align: center;
        border-subtitle-align: center;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    HelpScreen Static {
        width: 100%;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("enter", "close", "Close", show=False),
    ]

    def __init__(self, sections: Sequence[Section]) -> None:
        super().__init__()
        self._sections = list(sections)

    def compose(self) -> ComposeResult:
        """Every section: its title, then a grid of names and descriptions, in a bordered box."""
        width = max((len(name) for _, items in self._sections for name, _ in items), default=0)
        parts: list[Text | Table] = []
        for i, (title, items) in enumerate(self._sections):
            if i:
                parts.append(Text())
            parts.append(Text(title, style="bold underline"))
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold cyan", no_wrap=True, min_width=width)
            grid.add_column()
            for name, description in items:
                grid.add_row(name, description)
            parts.append(grid)
        text = Group(*parts)
        with VerticalScroll() as box:
            box.border_title = "trizmq-monitor keys"
            box.border_subtitle = "↑ ↓ scroll · escape closes"
            # As wide as the text (padding, border and scrollbar around it), or the screen.
            console = self.app.console
            wide = console.options.update_width(1000)
            box.styles.max_width = console.measure(text, options=wide).maximum + 5
            yield Static(text)

    def on_mount(self) -> None:
        """The box has the focus, for the scrolling keys."""
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        """Back to the dashboard."""
        self.dismiss(None)
