"""trizmq-monitor against live clusters of `trizmq serve` processes, and `trizmq stats --json`.

pytest-trio claims every `async def` test, so the Textual tests are plain
functions that `asyncio.run` their scenario; the app runs the feed as a Trio
guest inside that asyncio loop. Traffic comes from a Trio client in a thread of
its own. The clusters (`cluster`, `fresh_cluster`) come from conftest.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import SEED_RING, Cluster, eventually, subprocess_env, trizmq_command
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from trizmq_monitor.app import MonitorApp, main
from trizmq_monitor.filter_bar import FilterBar
from trizmq_monitor.help_screen import HelpScreen
from trizmq_monitor.model import (
    SORTS,
    PortRow,
    filter_rows,
    format_bytes,
    format_duration,
    format_ms,
    format_rate,
    sort_rows,
)
from trizmq_monitor.node_totals import NodeTotals
from trizmq_monitor.port_detail import PortDetail
from trizmq_monitor.port_screen import MethodTable, PortScreen, errors_text, port_heading
from trizmq_monitor.port_table import PortTable
from trizmq_monitor.rate_graph import RateGraph

import trizmq
from trizmq._curve import generate_keys
from trizmq.stats import StatsBoard, watch_ring

SIZE = (120, 40)
#: Seconds a scenario may run before it is failed.
SCENARIO_TIMEOUT = 30.0

Scenario = Callable[[MonitorApp, Pilot[None]], Awaitable[None]]


def run_app(app: MonitorApp, scenario: Scenario, size: tuple[int, int] = SIZE) -> None:
    """Run `scenario` against `app` in a fresh asyncio loop, headless."""

    async def main() -> None:
        async with asyncio.timeout(SCENARIO_TIMEOUT), app.run_test(size=size) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())
    # The app has exited: its Trio guest run must be over, or trio.run would fail.
    assert app.feed.finished


async def until(
    pilot: Pilot[None], check: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> float:
    """Wait until `check()` is true; return the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        await pilot.pause(0.05)
    return time.monotonic() - start


def monitor(cluster: Cluster, **kwargs: Any) -> MonitorApp:
    return MonitorApp(cluster.ring(), cluster.resolve, **kwargs)


def states(app: MonitorApp) -> dict[tuple[str, str], str]:
    return {row.key: row.state for row in app.rows}


def all_up(app: MonitorApp) -> bool:
    return bool(app.rows) and all(row.state == "up" for row in app.rows)


def table(app: MonitorApp) -> PortTable:
    return app.query_one(PortTable)


def cell(app: MonitorApp, key: tuple[str, str], column: str) -> str:
    value: Text = table(app).get_cell(f"{key[0]}\t{key[1]}", column)
    return value.plain.strip()


def render_text(renderable: Any, width: int = 100) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


@contextmanager
def traffic(cluster: Cluster, target: str, method: str = "ping", **args: Any) -> Iterator[None]:
    """Call `target` in a loop, from a Trio client in a thread, while the block runs."""
    stop = threading.Event()
    failures: list[BaseException] = []

    async def send() -> None:
        async with cluster.client(timeout=5) as client:
            while not stop.is_set():
                await client.call(target, method, **args)
                # About 100 calls a second: enough to see, light on the GIL the app shares.
                await trio.sleep(0.01)

    def run() -> None:
        try:
            trio.run(send)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        # Raised here, so a failure of the traffic shows even when the test failed too.
        assert not thread.is_alive(), "the traffic thread did not stop"
        if failures:
            raise failures[0]


# -- the dashboard --------------------------------------------------------------------


def test_a_row_for_every_port_of_the_ring(cluster: Cluster) -> None:
    ring = cluster.ring()
    expected = [(s.host, s.topic) for s in ring.services()]
    assert len(expected) == 10  # 17 (host, topic) pairs minus zmq_replies on both hosts

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await pilot.pause(0.3)  # one redraw after the last state change
        assert table(app).keys == expected
        assert all(cell(app, key, "state") == "up" for key in expected)
        assert cell(app, ("controller", "cinder-volume"), "port") == "cinder-volume:9509"
        assert "10/10 up" in app.sub_title
        hosts = {node.host: node for node in app.query_one(NodeTotals).totals}
        assert (hosts["controller"].up, hosts["controller"].total) == (8, 8)
        assert (hosts["computenodex"].up, hosts["computenodex"].total) == (2, 2)

    run_app(monitor(cluster), scenario)


def test_rates_rise_under_traffic(cluster: Cluster) -> None:
    key = ("controller", "compute")

    def row(app: MonitorApp, key: tuple[str, str]) -> PortRow:
        return next(r for r in app.rows if r.key == key)

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        with traffic(cluster, "compute.controller", x=1):
            await until(pilot, lambda: row(app, key).rate_in > 20, what="compute in/s > 20")
            await until(pilot, lambda: float(cell(app, key, "in")) > 20, what="the in/s cell")
            # Select the row: the graph and the detail follow the cursor.
            await pilot.press("down", "down")
            await until(pilot, lambda: table(app).selected == key, what="row selected")
            await pilot.pause(0.3)
        assert row(app, ("controller", "consoleauth")).rate_in == 0
        graph = app.query_one(RateGraph)
        assert graph.row is not None and graph.row.key == key
        assert max(graph.row.history) > 20
        detail = app.query_one(PortDetail)
        assert detail.row is not None and detail.row.key == key
        text = render_text(detail.render())
        assert "compute:9501 on controller" in text
        assert "received" in text and "latency ms" in text

    run_app(monitor(cluster), scenario)


def test_detail_shows_errors_by_type(cluster: Cluster) -> None:
    async def fail_twice() -> None:
        async with cluster.client(timeout=5) as client:
            for message in ("one", "two"):
                with pytest.raises(trizmq.RemoteError):
                    await client.call("cert.controller", "fail", message=message)

    trio.run(fail_twice)
    key = ("controller", "cert")

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await pilot.press("slash", *"cert", "enter")
        await until(pilot, lambda: table(app).keys == [key], what="only cert shown")
        await until(pilot, lambda: cell(app, key, "err") == "2", what="err 2")
        text = render_text(app.query_one(PortDetail).render(), width=120)
        assert "QuotaExceeded 2" in text
        assert "error 2" in text

    run_app(monitor(cluster), scenario)


def test_killed_node_goes_down_within_3_s_and_comes_back(fresh_cluster: Cluster) -> None:
    dead = {("computenodex", "compute"), ("computenodex", "network")}

    async def fail_once() -> None:
        async with fresh_cluster.client(timeout=5) as client:
            with pytest.raises(trizmq.RemoteError):
                await client.call("network.computenodex", "fail", message="gone")

    trio.run(fail_once)

    def node_errors(app: MonitorApp) -> int:
        hosts = {node.host: node for node in app.query_one(NodeTotals).totals}
        return hosts["computenodex"].errors

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await until(pilot, lambda: node_errors(app) == 1, what="computenodex err 1")
        others_seen: set[str] = set()

        def dead_down() -> bool:
            now = states(app)
            others_seen.update(s for k, s in now.items() if k not in dead)
            return all(now[k] == "down" for k in dead)

        fresh_cluster.kill("computenodex")
        took = await until(pilot, dead_down, timeout=3.0, what="computenodex ports down")
        assert took <= 3.0
        assert others_seen == {"up"}, "the controller's ports must stay up"
        await pilot.pause(0.3)
        assert all(cell(app, k, "state") == "down" for k in dead)
        assert "8/10 up" in app.sub_title
        # Counts do not go backwards when a port dies: its last one is kept.
        assert node_errors(app) == 1
        assert cell(app, ("computenodex", "network"), "err") == "1"
        assert cell(app, ("computenodex", "network"), "in") == "-"

        fresh_cluster.restart("computenodex")
        await until(pilot, lambda: all_up(app), timeout=5.0, what="computenodex back up")

    run_app(monitor(fresh_cluster), scenario)


def test_enter_opens_the_port_view_with_its_methods_and_last_errors(cluster: Cluster) -> None:
    key = ("controller", "consoleauth")

    async def fail_once() -> None:
        async with cluster.client(timeout=5) as client:
            with pytest.raises(trizmq.RemoteError):
                await client.call("consoleauth.controller", "fail", message="no console")

    trio.run(fail_once)

    def method_cell(methods: MethodTable, name: str, column: str) -> str:
        value: Text = methods.get_cell(name, column)
        return value.plain.strip()

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        with traffic(cluster, "consoleauth.controller", x=1):
            await pilot.press("slash", *"consoleauth", "enter")
            await until(pilot, lambda: table(app).keys == [key], what="only consoleauth")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, PortScreen), what="port view")
            methods = app.screen.query_one(MethodTable)
            # Real per-method rows, from the service's own snapshot.
            await until(
                pilot,
                lambda: methods.row_count and float(method_cell(methods, "ping", "in")) > 10,
                what="ping in/s > 10",
            )
            assert {"ping", "fail", "whoami", "echo"} <= {str(k.value) for k in methods.rows}
            assert method_cell(methods, "fail", "err") == "1"
            assert method_cell(methods, "echo", "total") == "0"
            assert float(method_cell(methods, "ping", "p50")) >= 0
        # Busiest first: ping, then fail (one request).
        assert [str(k.value) for k in methods.rows][:2] == ["ping", "fail"]
        screen = app.screen
        assert isinstance(screen, PortScreen) and screen.row is not None
        heading = render_text(port_heading(screen.row), width=200)
        pid = cluster.process("controller").pid
        assert "consoleauth:9503 on controller · up " in heading
        assert f" · pid {pid} · tcp://{cluster.resolve['controller']}:9503" in heading
        errors = render_text(errors_text(screen.row), width=200)
        assert "errors cluster_app.QuotaExceeded 1" in errors
        assert "fail cluster_app.QuotaExceeded: no console" in errors
        assert "raise QuotaExceeded(message)" in errors  # the remote traceback
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, PortScreen), what="back")
        assert app.focused is table(app)

    run_app(monitor(cluster), scenario, size=(80, 24))


def test_recorded_snapshots_are_shaped_as_the_live_ones(cluster: Cluster) -> None:
    """The snapshot tests replay made-up snapshots: they have every field of real ones."""
    from test_monitor_snapshots import recorded_frames

    async def live() -> dict[str, Any]:
        async with cluster.client(timeout=5) as client:
            with pytest.raises(trizmq.RemoteError):
                await client.call("scheduler.controller", "fail", message="no host")
        board = StatsBoard(cluster.ring(), cluster.resolve)
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_ring, board)
            view = board.ports[("controller", "scheduler")]
            await eventually(lambda: view.data)
            nursery.cancel_scope.cancel()
        assert view.data is not None
        return view.data

    real = trio.run(live)
    made_up = recorded_frames(cluster.ring())[-1][1][("controller", "scheduler")]

    def shape(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: shape(v) for k, v in data.items() if k not in ("methods", "errors")}
        if isinstance(data, list):
            return [shape(data[0])] if data else []
        return type(data).__name__.replace("int", "float")

    assert shape(made_up) == shape(real)
    method = shape(next(iter(real["methods"].values())))
    assert all(shape(m) == method for m in made_up["methods"].values())


def test_filter_narrows_the_rows_and_escape_clears_it(cluster: Cluster) -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: len(table(app).keys) == 10, what="10 rows")
        await pilot.press("slash")
        assert app.query_one(FilterBar).has_class("-active")
        # Letters typed into the filter are not commands: "q" does not quit.
        await pilot.press(*"q")
        await until(pilot, lambda: app.filter_text == "q", what="q typed")
        await pilot.press("backspace", *"nodex")
        await until(pilot, lambda: len(table(app).keys) == 2, what="2 rows")
        assert {host for host, _ in table(app).keys} == {"computenodex"}
        assert app.return_code is None
        await pilot.press("escape")
        await until(pilot, lambda: len(table(app).keys) == 10, what="10 rows again")
        assert not app.query_one(FilterBar).has_class("-active")
        assert app.filter_text == ""
        # A topic, kept with Enter: the table has the focus again.
        await pilot.press("slash", *"netw", "enter")
        await until(pilot, lambda: len(table(app).keys) == 2, what="network rows")
        assert {topic for _, topic in table(app).keys} == {"network"}
        assert app.focused is table(app)
        await pilot.press("escape")  # from the table, escape clears the filter too
        await until(pilot, lambda: len(table(app).keys) == 10, what="10 rows again")

    run_app(monitor(cluster), scenario)


def test_s_cycles_the_sort_column(cluster: Cluster) -> None:
    ring = cluster.ring()
    by_ring = [(s.host, s.topic) for s in ring.services()]

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await until(pilot, lambda: table(app).keys == by_ring, what="ring order")
        assert "sort host" in app.sub_title
        await pilot.press("s")
        by_topic = sorted(by_ring, key=lambda k: (k[1], k[0]))
        await until(pilot, lambda: table(app).keys == by_topic, what="sorted by topic")
        assert "sort topic" in app.sub_title

        def sorted_by(label: str) -> Callable[[], bool]:
            return lambda: f"sort {label}," in app.sub_title

        for sort in SORTS[2:]:
            await pilot.press("s")
            await until(pilot, sorted_by(sort.label), what=sort.label)
        await pilot.press("s")  # and round again
        await until(pilot, lambda: table(app).keys == by_ring, what="ring order again")

    run_app(monitor(cluster), scenario)


def test_p_pauses_the_display_while_the_feed_runs(cluster: Cluster) -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await pilot.press("p")
        assert app.paused and "PAUSED" in app.sub_title
        frozen = app.rows
        board = app.feed.board
        assert board is not None
        seen = {key: view.last_seen for key, view in board.ports.items()}
        await pilot.pause(0.8)  # more than one stats interval and three redraws
        assert app.rows is frozen
        assert all(view.last_seen != seen[key] for key, view in board.ports.items())
        await pilot.press("p")
        assert not app.paused and "PAUSED" not in app.sub_title
        assert app.rows is not frozen

    run_app(monitor(cluster), scenario)


def test_question_mark_shows_help_and_escape_closes_it(cluster: Cluster) -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help shown")
        keys = dict(app.help_sections())["keys"]
        assert [k for k, _ in keys][3:] == [
            *("/", "s", "S", "r", "n", "p", "ctrl+s", "?", "q", "Escape", "ctrl+p")
        ]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        assert app.return_code is None  # escape closed the help, it did not quit

    run_app(monitor(cluster), scenario)


def test_q_quits_with_0_and_trio_runs_afterwards(cluster: Cluster) -> None:
    app = monitor(cluster)
    leftover: list[asyncio.Task[Any]] = []

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, what="exit")

    async def main() -> None:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            async with app.run_test(size=SIZE) as pilot:
                await scenario(app, pilot)
            leftover.extend(t for t in asyncio.all_tasks() if t is not asyncio.current_task())

    asyncio.run(main())
    assert app.return_code == 0
    assert app.error_message is None
    assert app.feed.finished
    assert leftover == []
    trio.run(trio.sleep, 0)  # a guest run left behind would make this raise


def test_shutting_down_while_redrawing_fast_is_clean(cluster: Cluster) -> None:
    # A redraw that runs while Textual removes the widgets must not fail the exit.
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause(0.2)

    for _ in range(3):
        app = monitor(cluster, refresh=0.002)
        run_app(app, scenario, size=(80, 24))
        assert app.return_code in (None, 0)


def test_narrow_terminal_fits_every_column(cluster: Cluster) -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: all_up(app), what="every port up")
        await pilot.pause(0.3)
        assert app.screen.has_class("-narrow")
        ports = table(app)
        assert ports.virtual_size.width <= 80
        assert ports.region.height >= 11  # the header and the ten rows
        detail = app.query_one(PortDetail)
        assert detail.region.height == 8  # a title and 7 rows of two fields
        assert detail.region.bottom <= 23  # above the footer

    run_app(monitor(cluster), scenario, size=(80, 24))


def test_feed_failure_exits_1_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "nowhere":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    app = MonitorApp(trizmq.Ring.from_mapping({"compute:9501": ["nowhere"]}))

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.return_code is not None, what="exit")

    run_app(app, scenario)
    assert app.return_code == 1
    assert app.error_message is not None
    assert app.error_message.startswith("trizmq-monitor: cannot resolve host 'nowhere'")
    assert "cannot resolve host 'nowhere'" in capsys.readouterr().err
    trio.run(trio.sleep, 0)


def test_bad_ring_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "ring.json"
    bad.write_text('{"compute:9501": ["controller"],', encoding="utf-8")
    with pytest.raises(SystemExit) as exit:
        main([str(bad)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trizmq-monitor: {bad}: invalid JSON at line 1")
    with pytest.raises(SystemExit) as exit:
        main([str(tmp_path / "missing.json")])
    assert exit.value.code == 2
    assert "ring file not found" in capsys.readouterr().err


def test_bad_resolve_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main([str(SEED_RING), "--resolve", "controller"])
    assert exit.value.code == 2
    # Checked at parse time, as by `trizmq`: a usage error naming the option.
    err = capsys.readouterr().err
    assert "trizmq-monitor: error: argument --resolve: " in err
    assert "expected NAME=ADDR" in err
    with pytest.raises(SystemExit) as exit:
        main([str(SEED_RING), "--resolve", "a=127.0.0.2", "--resolve", "a=127.0.0.3"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.startswith("trizmq-monitor: ")


def spawn_in_terminal(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start `trizmq-monitor ARGS` on an 80x24 pseudo-terminal; returns it and the master fd."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    command = [sys.executable, "-m", "trizmq_monitor.app", *args]
    env = subprocess_env(TERM="xterm-256color", COLUMNS="80", LINES="24")
    proc = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    return proc, master


def read_until(master: int, proc: subprocess.Popen[bytes], text: bytes, timeout: float) -> bytes:
    """Read the terminal until `text` shows up (or the process ends); return all read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
        elif proc.poll() is not None:
            break
    return seen


@pytest.mark.parametrize("how", ["q", "SIGTERM"])
def test_the_command_in_a_terminal_exits_0(cluster: Cluster, how: str) -> None:
    proc, master = spawn_in_terminal(str(cluster.ring_path), *cluster.resolve_args)
    try:
        screen = read_until(master, proc, b"10/10 up", timeout=15)
        assert b"10/10 up" in screen, screen[-2000:]
        if how == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        rest = read_until(master, proc, b"\0", timeout=1)
        assert b"Traceback" not in screen + rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


def test_curve_services_are_watched_with_client_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for directory, name in (("server", "server"), ("clients", "monitor")):
        generate_keys(keys / directory, name)
    cluster = Cluster(
        tmp_path / "cluster",
        serve_args=(
            "--curve-secret",
            str(keys / "server" / "server.key_secret"),
            "--curve-allow",
            str(keys / "clients"),
        ),
    )
    cluster.workdir.mkdir()
    cluster.start()
    try:
        curve = trizmq.Curve.client(
            keys / "clients" / "monitor.key_secret", keys / "server" / "server.key"
        )

        async def all_come_up(app: MonitorApp, pilot: Pilot[None]) -> None:
            await until(pilot, lambda: all_up(app), what="every port up with the keys")

        run_app(monitor(cluster, curve=curve), all_come_up)

        async def none_answer(app: MonitorApp, pilot: Pilot[None]) -> None:
            await pilot.pause(1.0)
            assert {row.state for row in app.rows} == {"down"}
            assert all(row.data is None for row in app.rows)

        run_app(monitor(cluster), none_answer)  # no keys: the handshakes fail
    finally:
        cluster.stop()


def test_curve_options_must_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    ring = SEED_RING
    with pytest.raises(SystemExit) as exit:
        main([str(ring), "--curve-secret", "x.key_secret"])
    assert exit.value.code == 2
    assert "--curve-secret and --curve-server go together" in capsys.readouterr().err


# -- trizmq stats --json ----------------------------------------------------------------


def stats_json(cluster: Cluster) -> dict[tuple[str, str], dict[str, Any]]:
    result = subprocess.run(
        trizmq_command("stats", str(cluster.ring_path), "--json", *cluster.resolve_args),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {(row["host"], row["topic"]): row for row in json.loads(result.stdout)}


def test_stats_json_counts_exactly_what_was_sent(fresh_cluster: Cluster) -> None:
    calls, casts, fanouts = 7, 5, 3

    async def send() -> None:
        async with fresh_cluster.client(timeout=5) as client:
            for i in range(casts):
                await client.cast("compute.controller", "record", key=f"cast{i}")
            # On the same connection after the casts: when they return, the casts are in.
            for i in range(calls):
                await client.call("compute.controller", "ping", x=i)
            for i in range(fanouts):
                await client.fanout("network", "record", key=f"fanout{i}")
            # The same barrier for the fanouts: one call on each network port.
            for host in ("controller", "computenodex"):
                await client.call(f"network.{host}", "ping", x=0)
            with pytest.raises(trizmq.RemoteError):
                await client.call("conductor.controller", "fail", message="no")

    trio.run(send)
    rows = stats_json(fresh_cluster)
    assert len(rows) == 10
    assert all(row["state"] == "up" and row["fresh"] for row in rows.values())
    compute = rows[("controller", "compute")]
    assert compute["received"] == {"call": calls, "cast": casts, "fanout": 0}
    assert compute["sent"] == {"reply": calls, "error": 0}
    assert compute["errors"] == {} and compute["rejected"] == {}
    assert compute["latency_ms"]["count"] == calls + casts
    for host in ("controller", "computenodex"):
        assert rows[(host, "network")]["received"] == {"call": 1, "cast": 0, "fanout": fanouts}
    conductor = rows[("controller", "conductor")]
    assert conductor["received"] == {"call": 1, "cast": 0, "fanout": 0}
    assert conductor["sent"] == {"reply": 0, "error": 1}
    assert conductor["errors"] == {"cluster_app.QuotaExceeded": 1}
    busy = {("controller", "compute"), ("controller", "network"), ("computenodex", "network")}
    busy.add(("controller", "conductor"))
    for key, row in rows.items():
        if key not in busy:
            assert row["received"] == {"call": 0, "cast": 0, "fanout": 0}, key
            assert row["sent"] == {"reply": 0, "error": 0}, key

    fresh_cluster.kill("computenodex")
    rows = stats_json(fresh_cluster)
    for key, row in rows.items():
        if key[0] == "computenodex":
            assert row["state"] == "down" and not row["fresh"], key
            assert row["received"] is None and row["latency_ms"] is None, key
        else:
            assert row["state"] == "up", key
    # The live node's counts are untouched by the other's death.
    assert rows[("controller", "compute")]["received"]["call"] == calls


# -- the model, without a terminal ------------------------------------------------------


def _row(host: str, topic: str, port: int, **kw: Any) -> PortRow:
    return PortRow(host, topic, port, "127.0.0.1", **kw)


def test_filter_matches_host_topic_port_and_target() -> None:
    rows = [
        _row("controller", "compute", 9501),
        _row("computenodex", "compute", 9501),
        _row("controller", "network", 9504),
    ]
    assert filter_rows(rows, "") == rows
    assert filter_rows(rows, "NETWORK") == [rows[2]]
    assert filter_rows(rows, ":9501") == rows[:2]
    assert filter_rows(rows, "compute.controller") == [rows[0]]
    assert filter_rows(rows, "controller compute") == [rows[0]]
    assert filter_rows(rows, "nothing") == []


def test_sorts_put_live_numbers_first_and_keep_ring_order_on_ties() -> None:
    data = {"latency_ms": {"p50": 1.0, "p99": 2.0}, "errors": {}, "in_flight": 0, "peers": 1}
    rows = [
        _row("a", "x", 1, state="up", rate_in=5.0, data=data),
        _row("a", "y", 2, state="down", rate_in=99.0, data=data),
        _row("b", "x", 1, state="up", rate_in=5.0, data=data),
        _row("b", "y", 2, state="stale", rate_in=7.0, data=data),
    ]
    by = {sort.column: sort for sort in SORTS}
    in_rate = [r.key for r in sort_rows(rows, by["in"])]
    assert in_rate == [("b", "y"), ("a", "x"), ("b", "x"), ("a", "y")]
    assert [r.state for r in sort_rows(rows, by["state"])] == ["down", "stale", "up", "up"]
    assert [r.key for r in sort_rows(rows, by["port"])][:2] == [("a", "x"), ("b", "x")]


def test_formats_fit_their_columns() -> None:
    for value in (0, 0.04, 9.99, 99.96, 9999.6, 99_999, 123_456, 999_999, 12_345_678):
        assert len(format_rate(value)) <= 5, value
    for value in (0.0, 0.051, 9.996, 99.96, 9999.6, 12_345.0, 99_999.0, 3_600_000.0):
        assert len(format_ms(value)) <= 4, value
    assert format_rate(None) == format_ms(None) == "-"
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"
    assert format_duration(3.25) == "3.2s" and format_duration(3725) == "1h02m"


def test_console_script_is_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("trizmq-monitor") == "trizmq_monitor.app:main"
