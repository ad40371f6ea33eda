"""Tests for the ``trizmq ring check`` command and the shared CLI helpers."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trizmq import RingError
from trizmq._ring import Ring
from trizmq.cli import build_parser, main
from trizmq.cli.options import add_resolve_option, resolve_map

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_RING = REPO_ROOT / "trizmq" / "demo" / "seed_ring.json"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trizmq.cli ARGS`` in a real subprocess."""
    env = dict(os.environ)
    # Works whether or not the package is installed in the interpreter.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "trizmq.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


# -- trizmq ring check, as a subprocess ---------------------------------------


def test_ring_check_valid_ring_prints_table_and_exits_0() -> None:
    result = run_cli("ring", "check", str(SEED_RING))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TOPIC", "PORT", "HOSTS"]
    rows = {line.split()[0]: line for line in lines[1:10]}
    assert sorted(rows) == list(Ring.load(SEED_RING).topics)
    assert rows["compute"].split(None, 2) == ["compute", "9501", "controller, computenodex"]
    assert f"{SEED_RING}: ring OK, 9 topics on 2 hosts" in result.stdout


def test_ring_check_marks_reserved_topic() -> None:
    result = run_cli("ring", "check", str(SEED_RING))
    (replies,) = [line for line in result.stdout.splitlines() if line.startswith("zmq_replies")]
    assert replies.endswith("(reserved: replies travel on the caller's connection)")


def test_ring_check_shows_the_pools_of_a_topic_of_pools(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    pools = {"scheduler": ["controller"], "audit": ["computenodex", "controller2"]}
    ring.write_text(json.dumps({"notifications:9700": pools}))
    result = run_cli("ring", "check", str(ring))
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert row.split(None, 2) == [
        "notifications",
        "9700",
        "scheduler: controller; audit: computenodex, controller2",
    ]


def test_ring_check_invalid_ring_prints_error_on_stderr_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    path.write_text('{"compute:70000": ["controller"]}', encoding="utf-8")
    result = run_cli("ring", "check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"trizmq: {path}: key 'compute:70000': port 70000 is out of range 1-65535\n"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            '{"compute:9501": [' + "1" * 5_000 + "]}",
            f"a number has more than {sys.get_int_max_str_digits()} digits",
        ),
    ],
    # Short ids: pytest puts the id in the child's environment (PYTEST_CURRENT_TEST),
    # and one over 128 KiB makes starting the child fail with E2BIG.
    ids=["nested", "long-number"],
)
def test_ring_check_of_a_pathological_ring_prints_one_line_and_exits_2(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "ring.json"
    path.write_text(text, encoding="utf-8")
    result = run_cli("ring", "check", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"trizmq: {path}: invalid JSON: {problem}\n"


def test_ring_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("ring", "check", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert result.stderr.startswith("trizmq: ")
    assert "ring file not found" in result.stderr


def test_ring_check_json_output_matches_ring() -> None:
    result = run_cli("ring", "check", "--json", str(SEED_RING))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == Ring.load(str(SEED_RING)).to_json()


def test_version_prints_trizmq_and_the_installed_version() -> None:
    result = run_cli("--version")
    version = importlib.metadata.version("trizmq")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"trizmq {version}\n", "")


# -- in-process: parser structure and shared helpers --------------------------


def test_main_returns_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ring", "check", str(SEED_RING)]) == 0
    assert "compute" in capsys.readouterr().out


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["ring"])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def resolve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_resolve_option(parser)
    return parser


def test_resolve_option_is_repeatable() -> None:
    args = resolve_parser().parse_args(
        ["--resolve", "controller=127.0.0.2", "--resolve", "computenodex=127.0.0.3"]
    )
    assert resolve_map(args) == {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}


def test_resolve_option_defaults_to_no_overrides() -> None:
    assert resolve_map(resolve_parser().parse_args([])) == {}


def test_resolve_option_rejects_malformed_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        resolve_parser().parse_args(["--resolve", "controller"])
    assert info.value.code == 2
    assert "expected NAME=ADDR" in capsys.readouterr().err


def test_resolve_map_rejects_two_addresses_for_one_host() -> None:
    args = resolve_parser().parse_args(["--resolve", "a=127.0.0.2", "--resolve", "a=127.0.0.3"])
    with pytest.raises(RingError, match="already resolved"):
        resolve_map(args)
