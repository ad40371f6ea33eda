"""`trizmq bench --quick`: every benchmark runs and reports; no timing is asserted."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from trizmq.bench.cpu import PROCESSES, THREAD_CLASSES, cpu_between, thread_cpu
from trizmq.bench.runner import BENCHMARKS, METRICS, Settings, format_table, summarize
from trizmq.cli import build_parser
from trizmq.cli.bench import BENCHMARK_NAMES


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One ``trizmq bench --quick --rounds 1``: its table and its JSON document."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "trizmq.cli", "bench", "--quick", "--rounds", "1", "--json", out],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


def test_quick_bench_prints_every_row_and_writes_positive_numbers(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    stdout, document = quick_run
    settings = Settings(**{**document["settings"], "only": ()})
    rows = stdout.splitlines()
    for metric in METRICS:
        assert any(row.startswith(metric.describe(settings)) for row in rows), metric.key
    assert "targets met:" in stdout
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


def test_quick_bench_reports_the_cpu_per_message_of_each_thread_of_both_processes(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    stdout, document = quick_run
    settings = Settings(**{**document["settings"], "only": ()})
    rows = stdout.splitlines()
    cores = document["environment"]["cores"]
    counts = {"call": settings.calls, "cast": settings.casts, "fanout": settings.fanouts}
    counts |= {"message": settings.burst}
    for metric in METRICS:
        entry = document["results"][metric.key]
        if not metric.per:
            assert "cpu" not in entry, metric.key
            continue
        cpu = entry["cpu"]
        assert cpu["unit"] == f"µs/{metric.per}"
        for side in ("trizmq", "raw"):
            for process in PROCESSES:
                spent = cpu[side][process]
                assert set(spent) == set(THREAD_CLASSES), (metric.key, side, process)
                assert all(math.isfinite(us) and us >= 0 for us in spent.values())
                # Both processes run Python and move messages with zmq's I/O thread.
                assert spent["python"] > 0 and spent["zmq_io"] > 0, (metric.key, side, spent)
            # Two processes on `cores` cores cannot spend more CPU than the wall time
            # of a message allows; twice that, since the CPU window is a little longer
            # and the latency row's mean, not known, may exceed its median.
            wall = entry[side] if metric.key == "latency_median" else 1e6 / entry[side]
            total = sum(sum(cpu[side][p].values()) for p in PROCESSES)
            assert total <= 2 * cores * wall, (metric.key, side, total, wall)
            # The part in user space is counted in 10 ms ticks: within a few ticks of
            # the process's time (pipelined calls: the window's calls are `pipelined`).
            messages = settings.pipelined if metric.key == "pipelined" else counts[metric.per]
            for process in PROCESSES:
                user = cpu["user"][side][process]
                assert set(user) == set(THREAD_CLASSES)
                assert all(us >= 0 for us in user.values())
                slack = 0.05e6 / messages
                assert sum(user.values()) <= sum(cpu[side][process].values()) + slack
        assert all(ratio > 0 for ratio in cpu["ratio"].values())
        # The CPU lines follow their row in the table, client then server, and for
        # the latency row the part in user space too.
        at = next(i for i, row in enumerate(rows) if row.startswith(metric.describe(settings)))
        parts = ["", " in user space"] if metric.key == "latency_median" else [""]
        expected = [
            f"  CPU per {metric.per}{part} (µs), {process}: Python / ZMQ I/O / other"
            for part in parts
            for process in PROCESSES
        ]
        shown = rows[at + 1 : at + 1 + len(expected) + 1]
        assert [row[: len(line)] for row, line in zip(shown, expected, strict=False)] == expected
        assert not shown[-1].startswith("  CPU per"), shown[-1]


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


def _burn(seconds: float) -> None:
    """Run `seconds` of CPU, nearly all of it in user space."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(10_000))


def test_cpu_is_counted_for_the_class_of_the_thread_that_spent_it() -> None:
    pid = os.getpid()
    done = threading.Event()

    def burner(name: str, seconds: float, burnt: threading.Event) -> None:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name)
        _burn(seconds)
        burnt.set()
        done.wait()  # alive until read: an ended thread's time is lost

    before = thread_cpu(pid)
    burnt = {"ZMQbg/IO/7": threading.Event(), "bench-burner": threading.Event()}
    threads = [
        threading.Thread(target=burner, args=(name, seconds, burnt[name]))
        for name, seconds in (("ZMQbg/IO/7", 0.2), ("bench-burner", 0.1))
    ]
    for thread in threads:
        thread.start()
    _burn(0.1)
    for event in burnt.values():
        assert event.wait(30)
    after = thread_cpu(pid)
    done.set()
    for thread in threads:
        thread.join()
    assert "ZMQbg/IO/7" in {times.name for times in after.values()}
    spent = cpu_between(pid, before, after)
    # Each burner started after the first reading and counts from zero; 50 ms of slack
    # covers starting a thread and other threads of the test process.
    assert 0.2e9 <= spent["zmq_io"] < 0.25e9
    assert 0.1e9 <= spent["other"] < 0.15e9
    assert 0.1e9 <= spent["python"] < 0.15e9
    # User space time is sampled at the scheduler's ticks: near, not equal.
    user = cpu_between(pid, before, after, user=True)
    for cls, ns in spent.items():
        assert 0.5 * ns <= user[cls] <= ns + 0.02e9, (cls, user, spent)


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
