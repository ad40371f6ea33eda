"""`FilterBar`: the `/` filter, an input that narrows the rows to a host or topic."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label

__all__ = ["FilterBar"]


class FilterBar(Widget):
    """A one-line filter input above the footer, hidden while no filter is set.

    Typing narrows the rows at once (`Changed`); Enter keeps the filter and
    returns to the table, Escape clears it (`Done` either way).

    | Key | Action |
    | :- | :- |
    | enter | Keep the filter, back to the table. |
    | escape | Clear the filter, back to the table. |
    """

    DEFAULT_CSS = """
    FilterBar {
        height: 1;
        layout: horizontal;
        display: none;
        background: $boost;
    }
    FilterBar.-active {
        display: block;
    }
    FilterBar > Label {
        width: auto;
        padding: 0 1;
        color: $text-accent;
        text-style: bold;
    }
    FilterBar > Input {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0;
        background: $boost;
    }
    FilterBar > Input:focus {
        border: none;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear filter", show=False),
    ]

    class Changed(Message):
        """The filter text changed.

        Attributes:
            text: The new filter; "" shows every row.
        """

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Done(Message):
        """The user left the filter input (Enter or Escape)."""

    def compose(self) -> ComposeResult:
        """A caption and the input."""
        yield Label("filter")
        yield Input(placeholder="host or topic; Enter keeps it, Escape clears it")

    @property
    def value(self) -> str:
        """The filter text."""
        return self.query_one(Input).value

    def open(self) -> None:
        """Show the bar and put the cursor in the input."""
        self.add_class("-active")
        self.query_one(Input).focus()

    def action_clear(self) -> None:
        """Clear the filter and hide the bar."""
        self.query_one(Input).value = ""
        self.remove_class("-active")
        self.post_message(self.Done())

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(event.value))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            self.remove_class("-active")
        self.post_message(self.Done())
