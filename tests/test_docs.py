"""Every example in the documentation runs, so none of them can rot.

The rule for ```python blocks in docs/*.md, which this module enforces:

- **An include**: the block holds nothing but `--8<-- "docs/examples/NAME.py"`
  lines (a whole file, or a `:section` or `:lines` of it). The file is a
  standalone example and runs whole, below. What the block shows, its includes
  one after the other, is a whole program that runs as shown (every name it
  uses defined, no `await` outside a function): for an example, its `program`
  and `run` sections. A part of a program is allowed only right after a
  `<!-- fragment -->` line, and the page says so and shows the whole program
  too. No include shows the tests' plumbing (`TRIZMQ_EXAMPLE_RESOLVE`): an
  example reads it after its `program` section, in `addresses_for_tests`.
- **Or an inline block**: it runs as it stands. A page's inline blocks run in
  order in one namespace, as a REPL session would, with `trizmq`, `trio`,
  `attrs` and `math` imported and the seed ring as `seed_ring.json` in the
  working directory. An expression statement followed by a comment that is a
  Python literal states its value (`ring.port("compute")  # 9501`), and the
  value is checked. Inline blocks cannot `await`: async examples go in files.

A block that is neither (an include mixed with code, an include of anything
but an example file, code that does not run) fails. Code that is not meant to
run is not Python: use ```text, ```console or ```json. Interactive sessions
(```pycon, in docs/protocol.md) are checked by tests/test_docs_protocol.py.

Every docs/examples/*.py runs as `python FILE trizmq/demo/seed_ring.json` with
`TRIZMQ_EXAMPLE_RESOLVE` (a JSON map of host name to address) giving its hosts
loopback addresses no other test uses; it must exit 0 and, when its docstring
has a line ending in "prints:", print exactly the indented lines that follow.

A ```console block right after a `<!-- session -->` line is a shell session and
runs too, in a directory laid out as a checkout (`trizmq/demo/seed_ring.json`,
`docs/examples/`) that also holds `seed_ring.json` and the example files: each
`$ ` command runs, and the lines after it are its output (see `run_session`).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import symtable
import sys
import textwrap
import time
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import yaml
from conftest import REPO_ROOT, SEED_RING, subprocess_env, unique_resolve

import trizmq

DOCS = REPO_ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted(DOCS.glob("*.md"))
PYTHON = {"python", "py", "python3", "py3"}
INCLUDE = re.compile(r"""^-{1,}8<-{1,}[ \t]+(["'])(?P<target>.+)\1$""")
SESSION_MARK = "<!-- session -->"
FRAGMENT_MARK = "<!-- fragment -->"
#: Pages whose parts of programs are not yet marked as fragments, nor shown whole.
UNMARKED_FRAGMENTS: set[str] = set()
#: What examples read, after their `program` section, to run on the tests' addresses.
PLUMBING = ("TRIZMQ_EXAMPLE_RESOLVE", "addresses_for_tests")
#: The module that reads TRIZMQ_EXAMPLE_RESOLVE for every example.
ADDRESSES_HELPER = "example_addresses.py"
#: Host names the examples use; each gets a loopback address of its own.
EXAMPLE_HOSTS = ("controller", "computenodex", "localhost")
#: Seconds every example together may take.
EXAMPLES_DEADLINE = 60.0
#: The addresses sessions show for the seed ring's hosts, and the hosts they stand for.
SESSION_ADDRESSES = {"127.0.0.2": "controller", "127.0.0.3": "computenodex"}
#: Commands a session may run besides `trizmq`, `kill %N` and `echo $?`.
SESSION_TOOLS = {"mkdir", "cp", "ls", "cat"}


# -- reading the pages --------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    after: str  # the last non-blank line before the fence

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    def includes(self) -> list[str]:
        """The snippet targets of the block's `--8<--` lines."""
        return [m["target"] for m in map(INCLUDE.match, self.body.splitlines()) if m]


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, indented ones (in lists, tabs) included."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        info = match["info"].strip().lstrip("{").strip()
        lang = info.split()[0].lstrip(".").lower() if info else ""
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            body.append(lines[j][indent:])
            j += 1
        before = [line.strip() for line in lines[:i] if line.strip()]
        found.append(Block(page.name, i + 1, lang, "\n".join(body), before[-1] if before else ""))
        i = j + 1
    return found


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.lang in PYTHON]


def example_files() -> list[Path]:
    """The examples: every file of docs/examples but the one helper they share."""
    return sorted(p for p in EXAMPLES.glob("*.py") if p.name != ADDRESSES_HELPER)


# -- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.where)
def test_every_python_block_is_an_include_of_an_example_or_runs_inline(block: Block) -> None:
    code = [line for line in block.body.splitlines() if line.strip()]
    targets = block.includes()
    if not targets:
        assert "--8<--" not in block.body, f"{block.where}: a snippet marker this test cannot read"
        return  # an inline block: test_inline_blocks_run runs it
    assert len(targets) == len(code), (
        f"{block.where}: a block is either includes of example files or code, not both"
    )
    for target in targets:
        path = REPO_ROOT / target.split(":", 1)[0]
        assert path.parent == EXAMPLES and path.suffix == ".py", (
            f"{block.where}: {target!r}: Python on the site comes from docs/examples/*.py"
        )
        assert path.is_file(), f"{block.where}: {target!r} does not exist"


_SECTION = re.compile(r"--8<-- \[(?P<kind>start|end):(?P<name>[^\]]+)\]")


def snippet(target: str) -> str:
    """The text an include shows: a whole file, a `:section` or `:start:end` lines of it."""
    path, _, selection = target.partition(":")
    lines = (REPO_ROOT / path).read_text(encoding="utf-8").splitlines()
    if not selection:
        chosen = lines
    elif re.fullmatch(r"-?\d*:-?\d*", selection) or selection.isdigit():
        first, _, last = selection.partition(":")
        chosen = lines[int(first) - 1 if first else 0 : int(last) if last else None]
    else:
        names = [(m := _SECTION.search(line)) and m["name"] for line in lines]
        bounds = [i for i, name in enumerate(names) if name == selection]
        assert len(bounds) == 2, f"{target}: no section {selection!r}"
        chosen = lines[bounds[0] + 1 : bounds[1]]
    return textwrap.dedent("\n".join(line for line in chosen if not _SECTION.search(line)))


@pytest.mark.parametrize(
    "target", sorted({t for b in python_blocks() for t in b.includes()}), ids=str
)
def test_every_include_shows_whole_statements(target: str) -> None:
    # A line range that no longer matches its file shows a torn fragment: refuse it.
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        compile(snippet(target), target, "exec", flags=flags)
    except SyntaxError as exc:
        raise AssertionError(f"{target} shows no whole Python statements: {exc}") from None


def shown(block: Block) -> str:
    """What an include block shows: its includes, one after the other."""
    return "\n".join(snippet(target) for target in block.includes())


def undefined_names(source: str) -> set[str]:
    """The global names `source` uses but neither defines nor gets from builtins."""
    top = symtable.symtable(source, "<shown>", "exec")
    used: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table is top or symbol.is_global()):
                used.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    return used - defined - set(dir(builtins)) - {"__file__"}


def include_blocks() -> list[Block]:
    return [b for b in python_blocks() if b.includes() and b.page not in UNMARKED_FRAGMENTS]


@pytest.mark.parametrize("block", include_blocks(), ids=lambda b: b.where)
def test_an_include_shows_a_whole_program_unless_marked_as_a_fragment(block: Block) -> None:
    if block.after == FRAGMENT_MARK:
        return
    source = shown(block)
    try:
        compile(source, block.where, "exec")
    except SyntaxError as exc:
        raise AssertionError(
            f"{block.where}: not a whole program ({exc}); show the example's "
            f"program and run sections, or put {FRAGMENT_MARK} before the block"
        ) from None
    missing = undefined_names(source)
    assert not missing, (
        f"{block.where}: uses {sorted(missing)} without defining them; show the "
        f"whole program, or put {FRAGMENT_MARK} before the block"
    )


def test_a_page_with_fragments_shows_their_whole_programs() -> None:
    parts: dict[str, set[str]] = {}
    whole: dict[str, set[str]] = {}
    for block in include_blocks():
        kind = parts if block.after == FRAGMENT_MARK else whole
        kind.setdefault(block.page, set()).update(t.split(":")[0] for t in block.includes())
    for page, files in parts.items():
        missing = files - whole.get(page, set())
        assert not missing, f"docs/{page} shows parts of {sorted(missing)}, not the whole"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_an_example_s_program_and_run_sections_are_the_whole_program(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(_SECTION.search(line) for line in lines):
        return  # shown whole
    name = f"docs/examples/{path.name}"
    source = f"{snippet(name + ':program')}\n{snippet(name + ':run')}"
    compile(source, name, "exec")
    assert not undefined_names(source), f"{name}: uses {sorted(undefined_names(source))}"


@pytest.mark.parametrize(
    "target", sorted({t for b in python_blocks() for t in b.includes()}), ids=str
)
def test_no_include_shows_the_tests_plumbing(target: str) -> None:
    text = snippet(target)
    assert not [word for word in PLUMBING if word in text], (
        f"{target} shows the tests' plumbing: keep it out of the sections pages include"
    )


def test_the_docs_have_python_examples_of_both_kinds() -> None:
    # A guard against a parser that silently finds nothing.
    kinds = {bool(b.includes()) for b in python_blocks()}
    assert kinds == {True, False}


# -- inline blocks ------------------------------------------------------------------------

_MISSING = object()


def _stated_value(comment: str | None) -> Any:
    """The value a `# literal` comment states, or `_MISSING` if it is prose."""
    if comment is None:
        return _MISSING
    try:
        return ast.literal_eval(comment.lstrip("#").strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING


def _comments(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


def run_inline(block: Block, namespace: dict[str, Any]) -> None:
    """Run one inline block in `namespace`, checking the values its comments state."""
    filename = block.where
    try:
        tree = ast.parse(block.body, filename=filename)
    except SyntaxError as exc:
        raise AssertionError(
            f"{filename}: not valid Python ({exc}); inline blocks cannot await, "
            "put async examples in docs/examples/"
        ) from None
    comments = _comments(block.body)
    for stmt in tree.body:
        expected = _stated_value(comments.get(stmt.end_lineno or 0))
        if isinstance(stmt, ast.Expr) and expected is not _MISSING:
            value = eval(compile(ast.Expression(stmt.value), filename, "eval"), namespace)
            source = ast.get_source_segment(block.body, stmt)
            assert value == expected, (
                f"{filename}: {source} is {value!r}, the page says {expected!r}"
            )
        else:
            exec(compile(ast.Module([stmt], type_ignores=[]), filename, "exec"), namespace)


def _pages_with_inline_blocks() -> list[str]:
    return sorted({b.page for b in python_blocks() if not b.includes()})


@pytest.mark.parametrize("page", _pages_with_inline_blocks())
def test_inline_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SEED_RING, tmp_path / "seed_ring.json")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {
        "__name__": "__docs__",
        "trizmq": trizmq,
        "trio": trio,
        "attrs": attrs,
        "math": math,
    }
    for block in python_blocks():
        if block.page == page and not block.includes():
            run_inline(block, namespace)


def test_stated_values_are_checked() -> None:
    block = Block("x.md", 1, "python", "1 + 1  # 3", "")
    with pytest.raises(AssertionError, match="the page says 3"):
        run_inline(block, {})
    run_inline(Block("x.md", 1, "python", "1 + 1  # two, as a comment", ""), {})


# -- example files ------------------------------------------------------------------------


def expected_output(path: Path) -> list[str] | None:
    """The lines an example's docstring says it prints, or None if it says nothing."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("prints:"):
            shown = []
            for text in lines[i + 1 :]:
                if text.strip() and not text.startswith("    "):
                    break
                shown.append(text[4:])
            while shown and not shown[-1]:
                shown.pop()
            return [text for text in shown if text] if shown else []
    return None


def _tool_env(**extra: str) -> dict[str, str]:
    """The examples' environment: tests/ importable, this venv's commands on PATH."""
    env = subprocess_env(**extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every example, run at once (each on its own addresses): name -> its run."""
    workdir = tmp_path_factory.mktemp("examples")
    ring = workdir / "seed_ring.json"
    shutil.copy(SEED_RING, ring)
    procs = {}
    for path in example_files():
        env = _tool_env(TRIZMQ_EXAMPLE_RESOLVE=json.dumps(unique_resolve(EXAMPLE_HOSTS)))
        procs[path.name] = subprocess.Popen(
            [sys.executable, str(path), str(ring)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    deadline = time.monotonic() + EXAMPLES_DEADLINE
    runs = {}
    try:
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                err += f"\n(killed: not done within {EXAMPLES_DEADLINE} s)".encode()
            runs[name] = Run(proc.returncode, out.decode(errors="replace"), err.decode())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return runs


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_runs_and_prints_what_its_docstring_shows(
    path: Path, example_runs: dict[str, Run]
) -> None:
    run = example_runs[path.name]
    assert run.returncode == 0, f"{path.name} exited {run.returncode}:\n{run.stderr}"
    expected = expected_output(path)
    if expected is not None:
        assert run.stdout.splitlines() == expected, run.stderr


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_an_example_that_serves_takes_its_addresses_from_the_environment(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    if "trizmq.serve" in source or '"serve"' in source:
        assert "addresses_for_tests()" in source, (
            f"{path.name} binds ports: take addresses_for_tests() so tests can move it"
        )


def test_every_example_is_shown_on_a_page() -> None:
    shown = {
        target.split(":", 1)[0]
        for page in PAGES
        for block in blocks(page)
        for target in block.includes()
    }
    files = {f"docs/examples/{path.name}" for path in example_files()}
    assert files - shown == set()


# -- shell sessions -----------------------------------------------------------------------


def session_blocks() -> list[Block]:
    return [
        b for page in PAGES for b in blocks(page) if b.lang == "console" and b.after == SESSION_MARK
    ]


@dataclass
class Step:
    command: str
    output: list[str]


def session_steps(block: Block) -> list[Step]:
    """The commands of a session (`\\` continuations joined) and the output shown after each."""
    steps: list[Step] = []
    lines = iter(block.body.splitlines())
    for line in lines:
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1].rstrip() + " " + next(lines).strip()
            steps.append(Step(command, []))
        else:
            assert steps, f"{block.where}: output before the first command"
            steps[-1].output.append(line)
    return steps


def _wait_for_lines(log: Path, lines: list[str], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while True:
        exited = proc.poll() is not None
        text = log.read_text(errors="replace")
        if all(line in text for line in lines):
            return
        assert not exited, f"exited {proc.returncode} before writing {lines!r}:\n{text}"
        assert time.monotonic() < deadline, f"did not write {lines!r} in 15 s; wrote:\n{text}"
        time.sleep(0.02)


def run_session(block: Block, workdir: Path) -> None:
    """Run a shell session as a shell would, and check every output it shows.

    - `trizmq ...`: this venv's `trizmq`. The output is stdout and stderr together.
    - `trizmq ... &`: a background job; the lines shown must appear in its output.
    - `kill %1 %2`: SIGTERM to those jobs, which must exit 0.
    - `echo $?`: the exit code of the last command.
    - `cd DIR`: the commands after it run in DIR.
    - `mkdir`, `cp`, `ls`, `cat`: as they are.

    The addresses 127.0.0.2 and 127.0.0.3 (controller and computenodex) are
    replaced by addresses no other test uses, in commands and output alike.
    """
    resolve = unique_resolve(tuple(SESSION_ADDRESSES.values()))
    local = {shown: resolve[host] for shown, host in SESSION_ADDRESSES.items()}

    def here(text: str) -> str:
        return re.sub(r"127\.0\.0\.[23]\b", lambda m: local[m[0]], text)

    env = _tool_env()
    trizmq_command = str(Path(sys.executable).parent / "trizmq")
    jobs: list[tuple[subprocess.Popen[bytes], Path]] = []
    logs = workdir
    last = 0
    try:
        for step in session_steps(block):
            words = shlex.split(here(step.command))
            output = [here(line) for line in step.output]
            where = f"{block.where}: $ {step.command}"
            if words[0] == "trizmq" and words[-1] == "&":
                log = logs / f"job{len(jobs) + 1}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [trizmq_command, *words[1:-1]],
                        cwd=workdir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                jobs.append((proc, log))
                _wait_for_lines(log, output, proc)
            elif words[0] == "kill":
                numbers = [int(word.removeprefix("%")) for word in words[1:]]
                for n in numbers:
                    jobs[n - 1][0].send_signal(signal.SIGTERM)
                for n in numbers:
                    proc, log = jobs[n - 1]
                    code = proc.wait(timeout=15)
                    assert code == 0, f"{where}: job {n} exited {code}:\n{log.read_text()}"
                    assert all(line in log.read_text() for line in output), where
            elif words[0] == "cd":
                assert len(words) == 2, f"{where}: cd takes one directory"
                workdir = workdir / words[1]
                assert workdir.is_dir(), f"{where}: no such directory"
            elif words == ["echo", "$?"]:
                assert output == [str(last)], f"{where}: the last command exited {last}"
            elif words[0] == "trizmq" or words[0] in SESSION_TOOLS:
                command = [trizmq_command, *words[1:]] if words[0] == "trizmq" else words
                done = subprocess.run(
                    command,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=30,
                    check=False,
                )
                last = done.returncode
                shown = done.stdout.decode(errors="replace").splitlines()
                assert shown == output, f"{where}: printed {shown!r}"
            else:
                raise AssertionError(f"{where}: a session cannot run {words[0]!r} here")
    finally:
        for proc, _ in jobs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.parametrize("block", session_blocks(), ids=lambda b: b.where)
def test_session_runs_as_shown(block: Block, tmp_path: Path) -> None:
    # A checkout's files where a checkout has them, and copies where sessions use them.
    (tmp_path / "trizmq" / "demo").mkdir(parents=True)
    shutil.copy(SEED_RING, tmp_path / "trizmq" / "demo" / "seed_ring.json")
    shutil.copytree(
        EXAMPLES, tmp_path / "docs" / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(SEED_RING, tmp_path / "seed_ring.json")
    for path in example_files():
        shutil.copy(path, tmp_path / path.name)
    run_session(block, tmp_path)


def test_the_docs_have_sessions() -> None:
    assert {b.page for b in session_blocks()} >= {"quickstart.md", "security.md"}


# -- the site -----------------------------------------------------------------------------


def public_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(trizmq).items()
        if not name.startswith("_") and not isinstance(value, type(trizmq))
    )


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_is_in_the_api_reference(name: str) -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    assert re.search(rf"^::: trizmq\.{name}$", page, re.MULTILINE), f"docs/api.md lacks {name}"


def test_the_api_reference_documents_the_public_modules_and_nothing_private() -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    objects = re.findall(r"^::: (\S+)$", page, re.MULTILINE)
    assert {"trizmq.stats", "trizmq.cli.options"} <= set(objects)
    assert [name for name in objects if "._" in name or name.startswith("_")] == []


def _tree(text: str) -> list[str]:
    """The lines of the first fenced block of `text` that draws a tree (`├──`)."""
    for match in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if "├──" in match[1]:
            return match[1].rstrip().splitlines()
    raise AssertionError("no tree")


def test_the_api_reference_draws_the_error_tree_of_the_code() -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    assert _tree(page) == _tree(inspect.getdoc(trizmq._errors) or "")


def _nav_pages(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _nav_pages(item)


def mkdocs_config() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may use `!!python/name:` tags; they are not needed here.
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    with contextlib.suppress(FileNotFoundError):
        config: dict[str, Any] = yaml.load(
            (REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader
        )
        return config
    raise AssertionError("no mkdocs.yml")


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:
    nav = list(_nav_pages(mkdocs_config()["nav"]))
    assert sorted(nav) == sorted(page.name for page in PAGES)
    assert len(nav) == len(set(nav))


def test_the_navigation_reads_in_the_documented_order() -> None:
    titles = [next(iter(entry)) for entry in mkdocs_config()["nav"]]
    assert titles == [
        "Home",
        "Quickstart",
        "User guide",
        "Concepts",
        "Notifications",
        "Streaming",
        "Operating",
        "Reference",
        "Coming from oslo.messaging",
        "Benchmarks",
        "Design",
    ]
