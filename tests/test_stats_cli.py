"""`trizmq stats` as a user runs it against real processes, and the public `PortView`.

Two clusters: the whole seed ring (every port up), and its `computenodex` node
alone, so that the ring's `controller` ports are down.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import SEED_RING, Cluster, run_process, subprocess_env, trizmq_command, unique_resolve

import trizmq
from trizmq.cli import build_parser
from trizmq.stats import PortView


async def stats(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `trizmq stats RING ARGS --resolve ...` against the cluster."""
    command = trizmq_command("stats", str(cluster.ring_path), *args, *cluster.resolve_args)
    with trio.fail_after(30):
        return await run_process(command)


def by_port(done: subprocess.CompletedProcess[bytes]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["host"], row["topic"]): row for row in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def half_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The seed ring with only `computenodex` running: every `controller` port is down."""
    running = Cluster(tmp_path_factory.mktemp("half"), hosts=["computenodex"])
    running.start()
    try:
        yield running
    finally:
        running.stop()


# -- --json: the snapshot's fields -------------------------------------------------------


async def test_stats_json_passes_through_pid_endpoint_methods_and_last_errors(
    cluster: Cluster,
) -> None:
    message = f"over quota {secrets.token_hex(4)}"
    async with cluster.client(timeout=10) as client:
        await client.call("conductor.controller", "ping", x=1)
        with pytest.raises(trizmq.RemoteError):
            await client.call("conductor.controller", "fail", message=message)
    done = await stats(cluster, "--json")
    assert done.returncode == 0, done.stderr
    conductor = by_port(done)[("controller", "conductor")]
    assert conductor["pid"] == cluster.process("controller").pid
    assert conductor["endpoint"] == cluster.addresses["conductor.controller"]
    ping, fail = conductor["methods"]["ping"], conductor["methods"]["fail"]
    assert ping["received"]["call"] >= 1 and ping["errors"] == {}
    assert fail["errors"]["cluster_app.QuotaExceeded"] >= 1
    assert set(ping) == {"received", "errors", "in_flight", "timeouts", "items", "latency_ms"}
    (error,) = [e for e in conductor["last_errors"] if e["message"] == message]
    assert (error["method"], error["type"]) == ("fail", "cluster_app.QuotaExceeded")
    assert "raise QuotaExceeded(message)" in "\n".join(error["traceback"])


async def test_stats_json_of_a_down_port_is_null_for_every_number(half_cluster: Cluster) -> None:
    done = await stats(half_cluster, "--json")
    assert done.returncode == 0, done.stderr
    rows = by_port(done)
    down, up = rows[("controller", "compute")], rows[("computenodex", "compute")]
    assert (down["state"], down["fresh"]) == ("down", False)
    for field in ("rate_in", "rate_out", "pid", "endpoint", "methods", "last_errors", "received"):
        assert down[field] is None, field
    assert (up["state"], up["rate_in"], up["last_errors"]) == ("up", 0.0, [])
    assert up["pid"] == half_cluster.process("computenodex").pid


# -- the table ---------------------------------------------------------------------------


async def test_stats_table_shows_dashes_for_every_number_of_a_down_port(
    half_cluster: Cluster,
) -> None:
    done = await stats(half_cluster)
    assert done.returncode == 0, done.stderr
    lines = {tuple(line.split()[:2]): line.split() for line in done.stdout.decode().splitlines()}
    assert lines[("controller", "compute:9501")][2:] == ["down"] + ["-"] * 10
    up = lines[("computenodex", "compute:9501")]
    assert up[2] == "up" and up[6:8] == ["0.0", "0.0"]


# -- --check: a health check -------------------------------------------------------------


async def test_stats_check_exits_0_when_every_port_is_up(cluster: Cluster) -> None:
    done = await stats(cluster, "--check", "--json")
    assert (done.returncode, done.stderr) == (0, b"")
    assert {row["state"] for row in json.loads(done.stdout)} == {"up"}


async def test_stats_check_exits_4_naming_the_ports_that_are_down(half_cluster: Cluster) -> None:
    done = await stats(half_cluster, "--check")
    assert done.returncode == 4
    address = half_cluster.resolve["controller"]
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("trizmq: 8 of 10 ports down: compute.controller at ")
    assert f"cinder-volume.controller at {address}:9509" in line
    assert "computenodex" not in line
    table = [line.split()[:3] for line in done.stdout.decode().splitlines()]
    assert ["controller", "compute:9501", "down"] in table  # printed all the same


def test_stats_check_and_watch_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["stats", str(SEED_RING), "--check", "--watch"])
    assert exit.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# -- --watch into a pipe that closes -----------------------------------------------------


def test_stats_watch_into_a_closed_pipe_exits_141_without_a_traceback(tmp_path: Path) -> None:
    # `trizmq stats --watch | head -1`, the ring's ports all down (nothing serves there).
    resolve = unique_resolve()
    command = trizmq_command(
        "stats",
        str(SEED_RING),
        "--watch",
        "--interval",
        "0.05",
        *(arg for host, addr in resolve.items() for arg in ("--resolve", f"{host}={addr}")),
    )
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env()
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"HOST")
        proc.stdout.close()
        code = proc.wait(timeout=30)
        errors = proc.stderr.read()
    assert (code, errors) == (141, b"")


# -- the public API ----------------------------------------------------------------------


def test_port_view_exposes_pid_endpoint_methods_and_last_errors() -> None:
    service = trizmq.Ring.load(SEED_RING).services()[0]
    view = PortView(service, "127.0.0.3")
    assert (view.pid, view.endpoint, dict(view.methods), list(view.last_errors)) == (
        None,
        None,
        {},
        [],
    )
    ping = {"received": {"call": 2, "cast": 0, "fanout": 0}, "errors": {}, "in_flight": 0}
    error = {"time": 1.0, "method": "fail", "type": "E", "message": "m", "traceback": []}
    data = {"pid": 42, "endpoint": "tcp://127.0.0.3:9501", "methods": {"ping": ping}}
    view.update({**data, "last_errors": [error], "uptime": 1.0}, now=1.0)
    assert (view.pid, view.endpoint) == (42, "tcp://127.0.0.3:9501")
    assert view.methods["ping"]["received"]["call"] == 2
    assert list(view.last_errors) == [error]
    # Kept when the port goes down, as `data` is; `as_json` says nothing of a down port.
    assert view.state(now=10.0) == "down" and view.pid == 42
    assert view.as_json(now=10.0)["methods"] is None
