"""trizmq-monitor's views and keys, on the recorded snapshots of test_monitor_snapshots.py.

No cluster: the app runs on a `ReplayFeed`, so these are quick and their
numbers known. What only a live cluster shows (real methods, a port that dies)
is in test_monitor.py. The second half tests the smoothing, sorting and
totals of `trizmq_monitor.model` and `trizmq_monitor.trends` without a terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_monitor import cell, render_text, run_app, table, until
from test_monitor_snapshots import replay_app
from textual.pilot import Pilot
from textual.widgets import Footer
from trizmq_monitor.app import MonitorApp, build_parser
from trizmq_monitor.filter_bar import FilterBar
from trizmq_monitor.help_screen import HelpScreen
from trizmq_monitor.model import (
    SORTS,
    PortRow,
    last_errors,
    method_rows,
    node_totals,
    shown_value,
    sort_rows,
)
from trizmq_monitor.node_screen import NodeScreen
from trizmq_monitor.node_totals import NodeTotals
from trizmq_monitor.port_detail import PortDetail, _layout
from trizmq_monitor.port_screen import LastErrors, MethodTable, PortScreen
from trizmq_monitor.port_table import PortTable
from trizmq_monitor.trends import SMOOTHING, PortTrend

from trizmq.stats import HISTORY

NARROW = (80, 24)
WIDE = (120, 40)
#: The ports of the recording, in ring order (hosts A to Z, then by port).
FIRST = ("computenodex", "compute")
LAST = ("controller", "cinder-volume")


def sort_label(app: MonitorApp) -> str:
    return app.sub_title.split("sort ", 1)[1].split(" · ")[0]


# -- keys -------------------------------------------------------------------------------


def test_home_and_end_select_the_first_and_last_port() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: table(app).keys[:1] == [FIRST], what="rows")
        await pilot.press("end")
        assert table(app).selected == LAST
        assert app.query_one(PortDetail).row is not None
        assert app.query_one(PortDetail).row.key == LAST
        await pilot.press("home")
        assert table(app).selected == FIRST

    run_app(replay_app(), scenario, size=NARROW)


def test_s_r_and_shift_s_sort_and_the_title_names_the_column_as_its_header() -> None:
    headers = {column.key: column.label for column in table_columns()}

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        assert sort_label(app) == "host, A to Z"
        for sort in SORTS[1:]:
            await pilot.press("s")
            assert sort_label(app).split(",")[0] == headers[sort.column] == sort.label
        await pilot.press("S")  # back: peers -> busy
        assert sort_label(app) == "busy, largest first"
        await pilot.press("S", "S", "S", "S", "S")  # busy -> err -> p99 -> p50 -> out/s -> in/s
        assert sort_label(app) == "in/s, largest first"
        by_rate = [key for key in table(app).keys]
        rates = [float(cell(app, key, "in")) for key in by_rate if cell(app, key, "in") != "-"]
        assert rates == sorted(rates, reverse=True)
        assert by_rate[-1] == ("computenodex", "network")  # down: last
        await pilot.press("r")
        assert sort_label(app) == "in/s, smallest first"
        reverse = table(app).keys
        rates = [float(cell(app, key, "in")) for key in reverse if cell(app, key, "in") != "-"]
        assert rates == sorted(rates)
        assert reverse[-1] == ("computenodex", "network")  # down: still last

    run_app(replay_app(), scenario, size=NARROW)


def table_columns() -> Any:
    from trizmq_monitor.port_table import COLUMNS

    return COLUMNS


def test_a_click_on_a_header_sorts_by_it_and_a_second_reverses() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        ports = table(app)
        # " host         topic:port            state  in/s": in/s ends at column 46.
        await pilot.click(PortTable, offset=(44, 0))
        await pilot.pause()
        assert sort_label(app) == "in/s, largest first"
        await pilot.click(PortTable, offset=(44, 0))
        await pilot.pause()
        assert sort_label(app) == "in/s, smallest first"
        assert ports.keys[-1] == ("computenodex", "network")

    run_app(replay_app(), scenario, size=NARROW)


def test_enter_opens_the_port_view_and_escape_returns() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.press("down", "down", "enter")  # controller's compute
        await until(pilot, lambda: isinstance(app.screen, PortScreen), what="port view")
        screen = app.screen
        assert isinstance(screen, PortScreen)
        assert screen.key == ("controller", "compute")
        methods = screen.query_one(MethodTable)
        assert methods.row_count == 5
        assert app.focused is methods
        await pilot.press("tab")
        assert isinstance(app.focused, LastErrors)  # the errors scroll by keyboard
        await pilot.press("end")
        assert app.focused.scroll_y > 0
        await pilot.press("n")  # this port's node
        await until(pilot, lambda: isinstance(app.screen, NodeScreen), what="node view")
        assert app.screen.host == "controller"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, PortScreen), what="back")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main_screen, what="back to the table")
        assert table(app).selected == ("controller", "compute")

    run_app(replay_app(), scenario, size=NARROW)


def test_n_and_enter_on_a_node_total_open_the_node_view() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.press("n")  # the selected port is computenodex's compute
        await until(pilot, lambda: isinstance(app.screen, NodeScreen), what="node view")
        screen = app.screen
        assert isinstance(screen, NodeScreen) and screen.host == "computenodex"
        assert screen.table.keys == [("computenodex", "compute"), ("computenodex", "network")]
        # Enter on one of its ports opens that port.
        await pilot.press("down", "enter")
        await until(pilot, lambda: isinstance(app.screen, PortScreen), what="port view")
        assert app.screen.key == ("computenodex", "network")
        await pilot.press("escape", "escape")
        await until(pilot, lambda: app.screen is app.main_screen, what="back")
        # Tab goes to the node totals; Enter there opens a node too.
        await pilot.press("tab")
        assert isinstance(app.focused, NodeTotals)
        await pilot.press("down", "enter")
        await until(pilot, lambda: isinstance(app.screen, NodeScreen), what="node view")
        assert app.screen.host == "controller"
        assert len(app.screen.table.keys) == 8

    run_app(replay_app(), scenario, size=NARROW)


def test_the_filter_input_shows_above_the_footer_while_filtering() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        bar = app.query_one(FilterBar)
        assert bar.region.height == 0
        await pilot.press("slash", *"sched")
        await pilot.pause()
        footer = app.query_one(Footer)
        assert bar.region.height == 1
        assert bar.region.bottom <= footer.region.y
        assert table(app).keys == [("controller", "scheduler"), ("controller", "cinder-scheduler")]
        await pilot.press("enter")
        assert bar.region.height == 1  # kept, and shown
        await pilot.press("escape")
        await pilot.pause()
        assert bar.region.height == 0

    run_app(replay_app(), scenario, size=NARROW)


def test_question_mark_lists_every_key_of_every_view() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        sections = dict(app.help_sections())
        listed = " ".join(name for items in sections.values() for name, _ in items)
        for owner in (app, PortTable, NodeTotals, PortScreen, NodeScreen, FilterBar):
            for binding in owner.BINDINGS:
                assert not isinstance(binding, tuple)
                if isinstance(binding, str):
                    continue
                shown = {
                    "slash": "/",
                    "question_mark": "?",
                    "escape": "Escape",
                    "enter": "Enter",
                    "home": "Home",
                    "end": "End",
                }
                assert shown.get(binding.key, binding.key) in listed, binding
        assert "3 s" in dict(sections["columns"])["in/s out/s"]
        # It scrolls at 80x24, and ? closes it.
        await pilot.press("end")
        await pilot.press("question_mark")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="closed")

    run_app(replay_app(), scenario, size=NARROW)


def test_the_error_name_is_whole_at_120x40() -> None:
    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        detail = app.query_one(PortDetail)
        assert detail.row is not None and detail.row.key == FIRST
        text = render_text(_layout(detail.row, detail.size.width, two=False), width=120)
        assert "errors     trizmq.demo.app.VolumeQuotaExceeded 151" in text
        assert detail.region.bottom <= app.query_one(Footer).region.y

    run_app(replay_app(), scenario, size=WIDE)


def test_a_screenshot_needs_no_downloads_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"  # no Downloads in it: Textual's default would fail
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(home / "Downloads"))
    monkeypatch.chdir(tmp_path)

    async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: list(tmp_path.glob("*.svg")), what="a screenshot")
        # The command palette's Screenshot goes to the same place.
        assert app.deliver_screenshot(filename="palette.svg") == str(tmp_path / "palette.svg")
        # A directory that cannot be made: a notification, not a crash.
        (tmp_path / "a-file").write_text("")
        assert app.deliver_screenshot(path=str(tmp_path / "a-file")) is None

    run_app(replay_app(), scenario, size=NARROW)
    assert not (home / "Downloads").exists()
    svg = next(tmp_path.glob("seed_ring*.svg")).read_text(encoding="utf-8")
    assert svg.startswith("<svg")

    shots = tmp_path / "shots"
    run_app(replay_app(screenshot_dir=shots), scenario_shot, size=NARROW)
    assert len(list(shots.glob("*.svg"))) == 1
    assert build_parser().parse_args(["r.json"]).screenshot_dir == "."


async def scenario_shot(app: MonitorApp, pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.press("ctrl+s")
    await until(pilot, lambda: list(app.screenshot_dir.glob("*.svg")), what="a screenshot")


# -- the model, without a terminal ------------------------------------------------------


def snapshot(uptime: float, received: int, errors: int = 0, pid: int = 1) -> dict[str, Any]:
    return {
        "pid": pid,
        "uptime": uptime,
        "received": {"call": received, "cast": 0, "fanout": 0},
        "sent": {"reply": received, "error": 0},
        "errors": {"E": errors} if errors else {},
        "latency_ms": {"p50": 1.0, "p99": 2.0},
        "methods": {"ping": {"received": {"call": received, "cast": 0, "fanout": 0}}},
    }


def test_rates_are_smoothed_over_the_window() -> None:
    trend = PortTrend()
    rates = []
    received = 0
    for i in range(40):
        # One message a second, arriving in every other 0.5 s interval.
        received += i % 2
        assert trend.observe(snapshot(100 + i * 0.5, received))
        rates.append(trend.rate_in)
    # Between consecutive snapshots the rate would jump between 0 and 2.
    steady = rates[int(SMOOTHING / 0.5) + 1 :]
    assert all(0.8 <= rate <= 1.2 for rate in steady), steady
    assert trend.method_rates["ping"] == trend.rate_in
    assert list(trend.history) == rates
    assert not trend.observe(trend._last)  # the same snapshot again: nothing new


def test_a_restart_starts_the_rates_again() -> None:
    trend = PortTrend()
    for i in range(10):
        trend.observe(snapshot(100 + i * 0.5, 10 * i, errors=i))
    assert trend.rate_in == pytest.approx(20.0)
    assert trend.error_rate == pytest.approx(2.0)
    trend.observe(snapshot(0.4, 3, pid=2))  # a new process: counters from zero
    assert trend.rate_in == 0.0 and trend.error_rate == 0.0
    trend.observe(snapshot(0.9, 8, pid=2))
    assert trend.rate_in == pytest.approx(10.0)
    assert len(trend.history) == 12


def _row(host: str, topic: str, port: int, **kw: Any) -> PortRow:
    return PortRow(host, topic, port, "127.0.0.1", **kw)


def test_sorts_compare_shown_numbers_keep_ties_in_place_and_down_ports_last() -> None:
    data = {"latency_ms": {"p50": 1.0, "p99": 2.0}, "errors": {"E": 1}, "in_flight": 0}
    rows = [
        _row("a", "x", 1, state="up", rate_in=5.01, data=data),
        _row("a", "y", 2, state="down", rate_in=99.0, data=data),
        _row("b", "x", 1, state="up", rate_in=5.04, data=data),  # shown as 5.0 too: a tie
        _row("b", "y", 2, state="stale", rate_in=7.0, data=data),
        _row("c", "z", 3, state="down"),
    ]
    by = {sort.column: sort for sort in SORTS}
    keys = [r.key for r in sort_rows(rows, by["in"])]
    assert keys == [("b", "y"), ("a", "x"), ("b", "x"), ("a", "y"), ("c", "z")]
    # The order given decides ties: rows that show the same number do not swap.
    swapped = [rows[2], rows[0], rows[1], rows[3], rows[4]]
    assert [r.key for r in sort_rows(swapped, by["in"])][1:3] == [("b", "x"), ("a", "x")]
    reverse = [r.key for r in sort_rows(rows, by["in"], reverse=True)]
    assert reverse == [("a", "x"), ("b", "x"), ("b", "y"), ("a", "y"), ("c", "z")]
    # A down port keeps its last error count (it sorts with it); one never seen has none.
    assert [r.key for r in sort_rows(rows, by["err"])][-1] == ("c", "z")
    names = [r.key for r in sort_rows(rows, by["host"], reverse=True)]
    assert names == [("c", "z"), ("b", "y"), ("b", "x"), ("a", "y"), ("a", "x")]
    assert shown_value("12.3k") == 12300 and shown_value("12s") == 12000
    assert shown_value("-") == -1


def test_node_totals_keep_the_last_counts_of_down_ports() -> None:
    data = {"errors": {"E": 3}, "in_flight": 2, "peers": 1}
    rows = [
        _row("a", "x", 1, state="up", rate_in=4.0, data=data),
        _row("a", "y", 2, state="down", rate_in=9.0, data={**data, "errors": {"E": 5}}),
        _row("a", "z", 3, state="down"),
    ]
    (node,) = node_totals(rows)
    assert (node.up, node.stale, node.down) == (1, 0, 2)
    assert node.errors == 8  # the down port's 5 too
    assert node.rate_in == 4.0 and node.in_flight == 2 and node.peers == 1


def test_methods_busiest_first_and_last_errors_newest_first() -> None:
    method = {"received": {"call": 3}, "errors": {"E": 1}, "in_flight": 1, "timeouts": 2}
    data = {
        "methods": {"b": method, "a": method, "c": {**method, "received": {"call": 9}}},
        "last_errors": [
            {"time": 1.0, "method": "a", "type": "m.E", "message": "one", "traceback": []},
            {
                "time": 2.0,
                "method": "b",
                "type": "m.E",
                "message": "two",
                "traceback": ["    x()", "    ^^^", '  File "f.py", line 1, in b', "m.E: two"],
            },
        ],
    }
    row = _row("h", "t", 1, state="up", data=data, method_rates={"c": 2.5})
    methods = method_rows(row)
    assert [m.name for m in methods] == ["c", "a", "b"]
    assert methods[0].rate_in == 2.5 and methods[1].rate_in == 0.0
    down = method_rows(_row("h", "t", 1, state="down", data=data))
    assert down[0].rate_in is None and down[0].in_flight is None and down[0].errors == 1
    errors = last_errors(row)
    assert [e.message for e in errors] == ["two", "one"]
    assert errors[0].traceback == ("    x()", '  File "f.py", line 1, in b')


def test_history_lengths_are_bounded() -> None:
    trend = PortTrend()
    for i in range(HISTORY + 30):
        trend.observe(snapshot(i * 0.5, i))
    assert len(trend.history) == len(trend.p99_history) == HISTORY
