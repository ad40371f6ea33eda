"""`trizmq bench --quick`: every benchmark runs and reports; no timing is asserted."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from trizmq.bench.runner import BENCHMARKS, METRICS, Settings, format_table, summarize
from trizmq.cli import build_parser
from trizmq.cli.bench import BENCHMARK_NAMES


def test_quick_bench_prints_every_row_and_writes_positive_numbers(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "trizmq.cli", "bench", "--quick", "--rounds", "1", "--json", out],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    settings = Settings(**{**document["settings"], "only": ()})
    rows = done.stdout.splitlines()
    for metric in METRICS:
        assert any(row.startswith(metric.describe(settings)) for row in rows), metric.key
    assert "targets met:" in done.stdout
    assert {"date", "command", "environment", "settings", "results"} <= document.keys()
    assert {"python", "pyzmq", "libzmq", "cores"} <= document["environment"].keys()
    results = document["results"]
    assert set(results) == {metric.key for metric in METRICS}
    for key, entry in results.items():
        for side in ("trizmq", "raw"):
            assert entry[side] > 0, (key, side, entry)
            assert len(entry["rounds"][side]) == 1
        assert entry["ratio"] > 0 and math.isfinite(entry["ratio"])
    assert _workers_of(document["settings"]["prefix"]) == []


def _workers_of(prefix: str) -> list[str]:
    """Command lines of bench workers still running on the run's address block."""
    address = re.compile(rf"(?<![0-9.]){re.escape(prefix)}(?![0-9])")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "trizmq.bench.worker" in words and any(address.search(w) for w in words):
            found.append(" ".join(words))
    return found


def test_the_table_judges_each_target_by_its_direction() -> None:
    values = {
        "latency_median": {"raw": [100.0, 110.0, 90.0], "trizmq": [140.0, 150.0, 160.0]},
        "pipelined": {"raw": [10_000.0], "trizmq": [7_000.0]},
        "fanout": {"raw": [1_000.0], "trizmq": [500.0]},
    }
    summary = summarize(Settings(), values)
    assert summary["latency_median"]["raw"] == 100.0
    assert summary["latency_median"]["ratio"] == 1.5
    assert summary["latency_median"]["met"] is True
    assert summary["pipelined"]["met"] is False
    assert summary["fanout"]["met"] is None
    table = format_table(summary)
    times = "\N{MULTIPLICATION SIGN}"
    assert f"≤ 1.5{times} raw" in table and f"≥ 0.75{times} raw" in table
    assert "targets met: 1 of 2" in table


def test_every_benchmark_can_be_chosen_alone() -> None:
    # The command line names them without importing the bench: the two lists must agree.
    names = [bench.name for bench in BENCHMARKS]
    assert names == list(BENCHMARK_NAMES)
    assert len(names) == len(set(names)) == 7
    args = build_parser().parse_args(["bench", *(f"--only={name}" for name in names)])
    assert args.only == names
