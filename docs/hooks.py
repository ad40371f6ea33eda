"""MkDocs hooks: the command line reference, rendered from the parsers themselves.

`docs/cli.md` holds a marker per program, such as ``<!-- cli-reference: trizmq -->``.
At build time `on_page_markdown` replaces each marker with the reference of that
program, walked from its `argparse` parser: every command and subcommand, its
usage, and every argument and option with its help. The page cannot drift from
the code: there is nothing to keep in sync by hand. `tests/test_cli_reference.py`
checks the result.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from typing import Any

from trizmq_monitor.app import build_parser as build_monitor_parser

from trizmq.cli import build_parser as build_trizmq_parser

#: The programs the reference covers, by name.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "trizmq": build_trizmq_parser,
    "trizmq-monitor": build_monitor_parser,
}
#: The page the markers are in, and the markers.
PAGE = "cli.md"
MARKER = re.compile(r"^<!-- cli-reference: (?P<prog>[\w-]+) -->$", re.MULTILINE)
#: Usage lines are wrapped at this width, whatever the terminal building the docs.
USAGE_WIDTH = 88


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """MkDocs event: render the markers of the command line page."""
    if page.file.src_uri != PAGE:
        return markdown
    return render_page(markdown)


def render_page(markdown: str) -> str:
    """Replace every ``<!-- cli-reference: PROG -->`` marker with PROG's reference.

    Raises:
        KeyError: A marker names a program that is not in `PARSERS`.
    """
    return MARKER.sub(lambda match: render(match["prog"]), markdown)


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command of a parser, depth first: ``(("ring", "check"), parser)``, ...

    The first is the program itself, with the empty path.
    """
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from commands(subparser, (*path, name))


def heading(prog: str, path: tuple[str, ...]) -> str:
    """The title of a command's section: the command line that runs it."""
    return " ".join((prog, *path))


def render(prog: str) -> str:
    """The Markdown reference of one program: a section per command."""
    parser = PARSERS[prog]()
    sections = []
    for path, command in commands(parser):
        command.formatter_class = _formatter
        body = _render_command(prog, command)
        if path:
            sections.append(f"### `{heading(prog, path)}`\n\n{body}")
        else:
            sections.append(body)
    return "\n\n".join(sections) + "\n"


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=USAGE_WIDTH)


def _render_command(prog: str, parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    parts = []
    if parser.description:
        parts.append(_escape(parser.description))
    parts.append(f"```text\n{parser.format_usage().strip()}\n```")
    for group in parser._action_groups:
        rows = []
        for action in group._group_actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                parts.append(_render_subcommands(prog, parser, action))
                continue
            invocation = formatter._format_action_invocation(action)
            rows.append(f"| `{invocation}` | {_describe(formatter, action)} |")
        if rows:
            title = group.title[:1].upper() + group.title[1:] if group.title else "Options"
            table = "\n".join(["| Argument | Description |", "| --- | --- |", *rows])
            parts.append(f"**{_escape(title)}**\n\n{table}")
    return "\n\n".join(parts)


def _render_subcommands(
    prog: str, parser: argparse.ArgumentParser, action: argparse._SubParsersAction[Any]
) -> str:
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    path = parser.prog.split()[1:]
    rows = []
    for name in action.choices:
        title = heading(prog, (*path, name))
        anchor = title.replace(" ", "-")
        rows.append(f"| [`{title}`](#{anchor}) | {_escape(helps.get(name, ''))} |")
    return "\n".join(["| Command | What it does |", "| --- | --- |", *rows])


def _describe(formatter: argparse.HelpFormatter, action: argparse.Action) -> str:
    text = _escape(formatter._expand_help(action)) if action.help else ""
    if action.required and action.option_strings:
        text += " (required)"
    default = action.default
    if "default" not in text.lower() and default not in (None, False, [], argparse.SUPPRESS):
        text += f" (default: `{default}`)"
    return text.strip()


def _escape(text: str) -> str:
    """Text for a Markdown table cell: no cell breaks, no stray emphasis or HTML."""
    text = " ".join(text.split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text
