"""`HelpScreen`: the keys of the monitor and what its columns mean, over the dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]

#: A titled list of `(name, description)` pairs.
Section = tuple[str, Sequence[tuple[str, str]]]


class HelpScreen(ModalScreen[None]):
    """Sections of names and descriptions (the keys, the columns) in a box.

    | Key | Action |
    | :- | :- |
    | escape, ?, enter | Close the help. |

    Args:
        sections: `(title, [(name, description), ...])`, in the order to show them.
    """

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: auto;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $accent;
        border-title-align: center;
        border-subtitle-align: center;
        background: $surface;
    }
    HelpScreen Static {
        width: auto;
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
        """Every section as aligned lines of text, in a bordered box."""
        width = max((len(name) for _, items in self._sections for name, _ in items), default=0)
        text = Text()
        for i, (title, items) in enumerate(self._sections):
            if i:
                text.append("\n\n")
            text.append(title, style="bold underline")
            for name, description in items:
                text.append("\n")
                text.append(name.ljust(width + 2), style="bold cyan")
                text.append(description)
        with Vertical() as box:
            box.border_title = "trizmq-monitor"
            box.border_subtitle = "escape closes"
            yield Static(text)

    def action_close(self) -> None:
        """Back to the dashboard."""
        self.dismiss(None)
