"""The command line reference cannot drift from the commands.

docs/cli.md is rendered at build time by docs/hooks.py from the argument
parsers of `trizmq` and `trizmq-monitor`. These tests walk the parsers on their
own and check that the rendered page documents every command and every
option, and that every `trizmq ...` command line written anywhere in the docs
names commands and options that exist.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import REPO_ROOT
from trizmq_monitor.app import build_parser as build_monitor_parser

from trizmq.cli import build_parser

DOCS = REPO_ROOT / "docs"
CLI_PAGE = DOCS / "cli.md"
PROGRAMS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "trizmq": build_parser,
    "trizmq-monitor": build_monitor_parser,
}


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> str:
    """docs/cli.md as the site shows it."""
    return str(load_hooks().render_page(CLI_PAGE.read_text(encoding="utf-8")))


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def all_commands() -> list[tuple[str, tuple[str, ...], argparse.ArgumentParser]]:
    return [
        (prog, path, parser) for prog, build in PROGRAMS.items() for path, parser in walk(build())
    ]


def section(rendered: str, prog: str, path: tuple[str, ...]) -> str:
    """The part of the page about one command: up to the next command's heading."""
    title = (
        rf"^## `{re.escape(prog)}`$"
        if not path
        else rf"^### `{re.escape(' '.join((prog, *path)))}`$"
    )
    match = re.search(title, rendered, re.MULTILINE)
    assert match, f"docs/cli.md has no heading for {' '.join((prog, *path))}"
    end = re.compile(r"^#{2,3} ", re.MULTILINE).search(rendered, match.end())
    return rendered[match.end() : end.start() if end else len(rendered)]


# -- the generated reference ----------------------------------------------------------------


def test_the_page_has_one_marker_per_program_and_nothing_else_renders_it() -> None:
    page = CLI_PAGE.read_text(encoding="utf-8")
    for prog in PROGRAMS:
        assert page.count(f"<!-- cli-reference: {prog} -->") == 1, prog
    assert set(load_hooks().PARSERS) == set(PROGRAMS)


def test_mkdocs_renders_the_page_with_the_hook() -> None:
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert "docs/hooks.py" in config["hooks"]
    assert "hooks.py" in config["exclude_docs"]


def test_no_marker_is_left(rendered: str) -> None:
    assert "cli-reference" not in rendered


@pytest.mark.parametrize(
    ("prog", "path", "parser"),
    all_commands(),
    ids=[" ".join((prog, *path)) for prog, path, _ in all_commands()],
)
def test_every_command_argument_and_option_is_documented(
    rendered: str, prog: str, path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = section(rendered, prog, path)
    assert f"usage: {' '.join((prog, *path))}" in text
    if parser.description:
        assert " ".join(parser.description.split())[:40] in text
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                assert f"[`{' '.join((prog, *path, name))}`]" in text, name
        elif action.option_strings:
            for option in action.option_strings:
                assert re.search(rf"\| `{re.escape(option)}[ `,]", text), option
            if action.help:
                shown = text.replace("\\", "")  # the page escapes Markdown characters
                assert " ".join(action.help.split())[:20].split("%")[0] in shown, option
        else:
            assert f"| `{action.metavar or action.dest}`" in text, action.dest


def test_help_is_mentioned_once_for_every_command() -> None:
    assert "`-h`/`--help`" in CLI_PAGE.read_text(encoding="utf-8")


def test_the_walk_finds_the_nested_commands() -> None:
    paths = {(prog, path) for prog, path, _ in all_commands()}
    assert {("trizmq", ("ring", "check")), ("trizmq", ("keys", "generate"))} <= paths
    assert ("trizmq", ("serve",)) in paths and ("trizmq-monitor", ()) in paths


# -- command lines in the prose -------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*(\S*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_SHELL = {"console", "shell", "sh", "bash"}
# A command line starts with the program, maybe after VAR=value words and a directory.
_PROGRAM = re.compile(r"^(?:\w+=\S*\s+)*(?:\S*/)?(trizmq(?:-monitor)?)(?=\s|$)")
_OPERATORS = {"&", "&&", "|", "||", ";", ">", ">>", "<", "2>&1"}


def mentions() -> list[tuple[str, str]]:
    """(page, command line) for every `trizmq ...` in shell blocks and inline code."""
    found: list[tuple[str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        spans = []
        for match in _FENCE.finditer(text):
            if match[2].lower() in _SHELL:
                body = re.sub(r"\\\n\s*", " ", match[3])
                spans += [line.strip().removeprefix("$ ") for line in body.splitlines()]
        prose = _FENCE.sub("", text)
        spans += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose)
        for span in spans:
            program = _PROGRAM.match(span.strip())
            if program:
                found.append((page.name, span.strip()[program.start(1) :]))
    return found


def _words(command: str) -> list[str]:
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    kept = []
    for word in words:
        if word in _OPERATORS:
            break
        word = word.strip("[],").removesuffix("...").strip("[]")
        if word:
            kept.append(word)
    return kept


def check_command_line(command: str) -> None:
    """Fail unless `command`'s subcommands and options exist in its program's parser."""
    words = _words(command)
    parsers = [PROGRAMS[words[0]]()]
    rest = iter(words[1:])
    for word in rest:
        parser = parsers[-1]
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if word.startswith("-") and len(word) > 1:
            name = word.split("=", 1)[0]
            known = {opt for p in parsers for a in p._actions for opt in a.option_strings}
            assert name in known, f"{command!r}: {parser.prog} has no option {name}"
        elif commands:
            choices = commands[0].choices
            if word in choices:
                parsers.append(choices[word])
            else:
                # A placeholder (COMMAND, RING) is fine; a lower-case word is a typo.
                assert not word.islower(), f"{command!r}: {parser.prog} has no command {word!r}"
                return


@pytest.mark.parametrize(("page", "command"), mentions())
def test_every_command_line_in_the_docs_exists(page: str, command: str) -> None:
    check_command_line(command)


def test_command_lines_are_found_and_checked() -> None:
    pages = {page for page, _ in mentions()}
    assert {"quickstart.md", "security.md", "guide.md"} <= pages
    with pytest.raises(AssertionError, match="no option --no-such"):
        check_command_line("trizmq serve ring.json --no-such")
    with pytest.raises(AssertionError, match="no command 'serv'"):
        check_command_line("trizmq serv ring.json")
    check_command_line("trizmq call RING TARGET METHOD [--arg NAME=JSON]... [--timeout S]")


def test_the_rendered_page_is_what_the_hook_makes_of_the_source(rendered: str) -> None:
    # The hook only ever touches its markers: the hand-written part survives as written.
    source = CLI_PAGE.read_text(encoding="utf-8")
    before_first_marker = source.split("<!-- cli-reference:")[0]
    assert rendered.startswith(before_first_marker)
    assert Path(DOCS / "hooks.py").read_text(encoding="utf-8").count("def on_page_markdown") == 1
