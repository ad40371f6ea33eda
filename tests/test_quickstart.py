"""docs/examples/quickstart.py runs as the documentation says and prints what it shows."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import trio
from conftest import REPO_ROOT, run_process, subprocess_env, unique_resolve

QUICKSTART = REPO_ROOT / "docs" / "examples" / "quickstart.py"

# What the caller prints, in this order.
CALLER_LINES = [
    "compute -> 2",
    "compute -> 3",
    "compute.computenodex -> 6",
    "compute.controller -> 7",
]
# What the services print; one-way messages may be handled in any order.
SERVICE_LINES = [
    "controller: call ping(x=1)",
    "computenodex: call ping(x=2)",
    "controller: cast ping(x=3)",
    "controller: fanout ping(x=4)",
    "computenodex: fanout ping(x=4)",
    "computenodex: call ping(x=5)",
    "controller: call ping(x=6)",
]


async def test_quickstart_runs_every_call_and_exits_0(ring_copy: Path) -> None:
    # The example binds 127.0.0.2 and .3 as documented; here it gets addresses of its own.
    env = subprocess_env(TRIZMQ_EXAMPLE_RESOLVE=json.dumps(unique_resolve()))
    with trio.fail_after(30):
        done = await run_process(
            [sys.executable, str(QUICKSTART), str(ring_copy)], env=env, cwd=ring_copy.parent
        )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, stderr
    assert stderr == ""
    lines = done.stdout.decode().splitlines()
    assert sorted(lines) == sorted(CALLER_LINES + SERVICE_LINES)
    assert [line for line in lines if "->" in line] == CALLER_LINES
    assert lines[-1] == "compute.controller -> 7"


def test_quickstart_docstring_shows_the_output_it_prints() -> None:
    shown = (ast.get_docstring(ast.parse(QUICKSTART.read_text())) or "") + "\n"
    for line in CALLER_LINES + SERVICE_LINES:
        assert f"    {line}\n" in shown, line
