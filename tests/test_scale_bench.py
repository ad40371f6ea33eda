"""`bench/scale.py` at a tiny size, registry included: every figure is measured and sane.

No timing is asserted beyond "it happened, within bounds no run comes near".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, subprocess_env

SCALE = REPO_ROOT / "bench" / "scale.py"
HOSTS = 20
PEERS = (5, 10, 20)


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One run of the bench at a tiny size: its JSON results and what it printed."""
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    command = [sys.executable, str(SCALE), "--hosts", str(HOSTS), "--workers", "2"]
    command += ["--peers", ",".join(map(str, PEERS)), "--fanouts", "2", "--window", "0.5"]
    command += ["--registry", "--churn", "10", "--churn-seconds", "1"]
    done = subprocess.run(
        [*command, "--json", str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout


def test_the_scale_bench_measures_every_figure_and_prints_its_tables(
    scale_run: tuple[dict[str, Any], str],
) -> None:
    results, printed = scale_run

    assert [row["peers"] for row in results["peers"]] == list(PEERS)
    for row in results["peers"]:
        # A DEALER, its monitor's two sockets and the TCP connection: about four.
        assert 2 <= row["fds_per_peer"] <= 8
        assert 0 < row["rss_kb_per_peer"] < 2048
    assert results["worker_fds_connected"] > results["worker_fds_idle"]

    assert [row["hosts"] for row in results["fanout"]] == list(PEERS)
    for row in results["fanout"]:
        for run in (row["warm"], row["cold"]):
            # The send may return after the last host ran it: no order between them.
            assert 0 <= run["send_s"] < 30
            assert 0 < run["median_s"] <= run["all_s"] < 30

    stats = results["stats"]
    assert stats["ports"] == stats["ports_up"] == HOSTS
    assert stats["subscriber_cpu_pct"] > 0
    assert stats["services_cpu_pct_watched"] > 0
    assert stats["subscriber_fds"] >= 2 * HOSTS  # a DEALER and its connection per port

    registry = results["registry"]
    assert registry["members"] == HOSTS
    assert 0 < registry["open_s"] <= registry["learn_s"] < 30
    assert 0 < registry["listed_open_s"] < 30
    assert registry["redis_fds"] < HOSTS  # a connection per worker, not per service
    assert registry["stop"]["deregistered"] == registry["stop"]["members"] > 0
    assert registry["leaves_timed_out_at_stop"] == 0
    churn = registry["churn"]
    assert churn["unseen"] == 0
    for event in ("join", "leave", "join_registering"):
        assert churn[event]["count"] == 10
        assert 0 < churn[event]["median_ms"] <= churn[event]["max_ms"] < 30_000

    headings = ("| client connected to |", "| fanout to |", f"| stats of {HOSTS} ports", "| churn:")
    for heading in headings:
        assert heading in printed
    assert "bench/scale.py --hosts 20" in results["command"]


def test_the_scale_bench_leaves_no_worker_or_redis_behind(
    scale_run: tuple[dict[str, Any], str],
) -> None:
    results, _ = scale_run
    pids = [*results["worker_pids"], results["registry"]["redis_pid"]]
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert results["worker_pids"]
    assert alive == []
