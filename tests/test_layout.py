"""The layout holds: the library stands alone, the tools on top use it as they may.

- No library module (everything in `trizmq/` but the `cli`, `demo` and `bench`
  packages) imports those packages, the monitor or Textual, even lazily.
- The monitor imports only public names of trizmq, never a `trizmq._*` module.
- A command imports only what it runs: `trizmq call` starts without the demo,
  the bench or Textual.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, subprocess_env

PACKAGE = REPO_ROOT / "trizmq"
MONITOR = REPO_ROOT / "monitor"
#: The packages built on the library, which it must not import.
TOOLS = ("trizmq.cli", "trizmq.demo", "trizmq.bench")
#: What no library module imports, and what `trizmq call` must not load.
NOT_IN_LIBRARY = (*TOOLS, "trizmq_monitor", "textual")
NOT_FOR_CALL = ("trizmq.demo", "trizmq.bench", "textual")


def module_name(path: Path, root: Path, package: str) -> str:
    """The dotted name of a module file under `root`, the directory of `package`."""
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, anywhere in it.

    ``from A import B`` yields ``A`` and ``A.B`` (B may be a submodule);
    relative imports are resolved against `module`.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def library_modules() -> list[Path]:
    tools = tuple(PACKAGE / name.split(".")[1] for name in TOOLS)
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not any(path.is_relative_to(tool) for tool in tools)
    ]


def test_the_library_imports_no_tool() -> None:
    modules = library_modules()
    assert PACKAGE / "_ring.py" in modules and PACKAGE / "stats.py" in modules
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {name}"
        for path in modules
        for line, name in imports(path, module_name(path, PACKAGE, "trizmq"))
        if within(name, NOT_IN_LIBRARY)
    ]
    assert found == []


def test_the_monitor_imports_public_names_only() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {name}"
        for path in sorted(MONITOR.rglob("*.py"))
        for line, name in imports(path, module_name(path, MONITOR, "trizmq_monitor"))
        if within(name, ("trizmq",)) and any(part.startswith("_") for part in name.split("."))
    ]
    assert found == []


def test_the_import_check_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    package = tmp_path / "trizmq"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import cli\n")
    (package / "cli" / "rpc.py").write_text("def f():\n    from ..demo import runner\n")
    top = [name for _, name in imports(package / "__init__.py", "trizmq")]
    lazy = [name for _, name in imports(package / "cli" / "rpc.py", "trizmq.cli.rpc")]
    assert "trizmq.cli" in top
    assert "trizmq.demo.runner" in lazy


#: Commands that fail at once on a missing ring, after importing all they need.
EARLY_FAILURES = {
    "call": ["call", "missing.json", "compute", "ping"],
    "cast": ["cast", "missing.json", "compute", "ping"],
    "serve": ["serve", "missing.json", "--host", "controller", "--app", "cluster_app:SERVICES"],
    "stats": ["stats", "missing.json"],
    "ring check": ["ring", "check", "missing.json"],
}
_LOADED = """
import json, sys
from trizmq.cli import main
code = main(json.loads(sys.argv[1]))
print(json.dumps([code, sorted(sys.modules)]))
"""


def loaded_by(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    """The exit code of ``trizmq ARGV`` and every module it had loaded by then."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, json.dumps(argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    code, modules = json.loads(done.stdout)
    return code, modules


@pytest.mark.parametrize("command", EARLY_FAILURES)
def test_a_command_starts_without_the_demo_the_bench_or_textual(
    command: str, tmp_path: Path
) -> None:
    code, modules = loaded_by(EARLY_FAILURES[command], tmp_path)
    assert code == 2
    assert "trizmq.cli" in modules
    assert [m for m in modules if within(m, NOT_FOR_CALL)] == []


def test_the_demo_command_imports_the_demo_when_it_runs(tmp_path: Path) -> None:
    code, modules = loaded_by(["demo", "--ring", "missing.json"], tmp_path)
    assert code == 2
    assert "trizmq.demo.runner" in modules
