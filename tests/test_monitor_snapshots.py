"""Screenshots of every screen of trizmq-monitor, compared with the ones in tests/__snapshots__/.

Against a live cluster the numbers change on every run, so these run the app
on a `ReplayFeed`: 50 seconds of stats snapshots of the seed ring, made up
here, shaped exactly as the services send them (`test_the_recorded_shape_is_the_live_one`
in test_monitor.py checks the fields against a live cluster) and the same on
every run. The traffic looks like `trizmq demo`'s: its methods, its errors.
`computenodex`'s network port stops sending 10 s before the end (down) and its
compute port 1.5 s before (stale).

After a change that is meant to change the screens, look at the report
pytest writes (snapshot_report.html) and accept the new screens with
``pytest tests/test_monitor_snapshots.py --snapshot-update``; then copy the
120x40 ones to the docs with ``TRIZMQ_UPDATE_DOCS_IMG=1 pytest
tests/test_monitor_snapshots.py -k docs``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, SEED_RING
from textual.pilot import Pilot
from trizmq_monitor.app import MonitorApp
from trizmq_monitor.feed import Frame, ReplayFeed

import trizmq

#: The hosts' addresses in the recording (no name is looked up).
RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}
#: Wall-clock time at the last frame: 2025-06-02 09:30:00 UTC (never today, so
#: times show with their date and do not depend on the day the tests run).
EPOCH = 1748856600.0
STEP = 0.5
FRAMES = 100
#: The feed's clock at the first frame.
T0 = 1000.0
#: Frames a port stops sending before the end: down, and stale.
STOPPED = {("computenodex", "network"): 20, ("computenodex", "compute"): 3}

# Per port: its methods as (name, kind, requests a second, p50 ms, p99 ms,
# failure, failures per thousand, timeouts per thousand). A failure is
# (type, message, the raising line of the traceback).
NO_VALID_HOST = (
    "trizmq.demo.app.NoValidHost",
    "no host with {n} vCPUs and {m} MiB free",
    '    raise NoValidHost(f"no host with {spec.vcpus} vCPUs and {spec.memory_mb} MiB free")',
    ("scheduler", 337, "select_destinations"),
)
QUOTA = (
    "trizmq.demo.app.VolumeQuotaExceeded",
    "project p-{n} is over its volume quota ({m} GiB)",
    '    raise VolumeQuotaExceeded(f"project {project} is over its volume quota ({quota} GiB)")',
    ("cinder", 431, "create_volume"),
)
SNAPSHOT_QUOTA = (
    "trizmq.demo.app.VolumeQuotaExceeded",
    "snapshot of instance {n:x} needs {m} GiB over quota",
    '    raise VolumeQuotaExceeded(f"snapshot of instance {uuid} needs {size} GiB over quota")',
    ("compute", 296, "snapshot_instance"),
)
Method = tuple[str, str, float, float, float, Any, int, int]
COMPUTE: list[Method] = [
    ("build_and_run_instance", "cast", 3.0, 118.0, 410.0, None, 0, 0),
    ("terminate_instance", "cast", 1.5, 24.0, 61.0, None, 0, 0),
    ("get_console_output", "call", 1.2, 31.0, 502.0, None, 0, 60),
    ("reboot_instance", "call", 0.8, 61.0, 180.0, None, 0, 0),
    ("snapshot_instance", "call", 0.4, 390.0, 1900.0, SNAPSHOT_QUOTA, 120, 0),
]
NETWORK: list[Method] = [
    ("allocate_for_instance", "call", 3.0, 14.0, 52.0, None, 0, 0),
    ("update_port_cache", "cast", 3.0, 1.1, 4.2, None, 0, 0),
    ("refresh_rules", "fanout", 0.5, 5.2, 11.0, None, 0, 0),
]
PORTS: dict[tuple[str, str], list[Method]] = {
    ("controller", "compute"): COMPUTE,
    ("controller", "conductor"): [
        ("instance_update", "call", 8.0, 1.9, 7.5, None, 0, 0),
        ("object_action", "call", 5.0, 2.8, 9.1, None, 0, 0),
    ],
    ("controller", "consoleauth"): [
        ("authorize_console", "call", 1.5, 0.45, 1.2, None, 0, 0),
        ("check_token", "call", 3.0, 0.21, 0.9, None, 0, 0),
    ],
    ("controller", "network"): NETWORK,
    ("controller", "scheduler"): [
        ("select_destinations", "call", 4.0, 6.1, 21.0, NO_VALID_HOST, 30, 0),
    ],
    ("controller", "cert"): [
        ("fetch_ca", "call", 1.0, 0.31, 0.8, None, 0, 0),
        ("generate_x509_cert", "call", 0.6, 4.2, 9.8, None, 0, 0),
    ],
    ("controller", "cinder-scheduler"): [
        ("create_volume", "cast", 2.4, 1.2, 3.9, QUOTA, 40, 0),
    ],
    ("controller", "cinder-volume"): [
        ("create_volume", "cast", 2.3, 35.0, 88.0, None, 0, 0),
        ("initialize_connection", "call", 1.2, 8.1, 19.0, None, 0, 0),
    ],
    ("computenodex", "compute"): [(m[0], m[1], m[2] * 0.8, *m[3:]) for m in COMPUTE],
    ("computenodex", "network"): NETWORK,
}


def _noise(*seed: int) -> float:
    """A number in [0, 1) from integers, the same on every platform and Python."""
    value = 0
    for part in seed:
        value = (value * 1_000_003 + part + 7919) % 2_147_483_647
    return (value * 2_654_435_761 % 4_294_967_296) / 4_294_967_296


class _Port:
    """The counters of one recorded service port, advanced one stats interval at a time."""

    def __init__(self, index: int, host: str, topic: str, port: int) -> None:
        self.index, self.host, self.topic, self.port = index, host, topic, port
        self.methods = PORTS[(host, topic)]
        self.uptime0 = 3600.0 + 157.0 * index  # how long it ran before the first frame
        self.started = EPOCH - (FRAMES - 1) * STEP - self.uptime0
        self.counts = {m[0]: {"call": 0, "cast": 0, "fanout": 0} for m in self.methods}
        self.errors = {m[0]: 0 for m in self.methods}
        self.timeouts = {m[0]: 0 for m in self.methods}
        self.recent: list[dict[str, int]] = []  # requests per method, last 20 intervals
        self.last_errors: list[dict[str, Any]] = []
        self.carry = dict.fromkeys(self.counts, 0.0)
        # What it handled before the first frame.
        for j, (name, kind, rate, *_rest, fail_rate, timeout_rate) in enumerate(self.methods):
            total = int(rate * self.uptime0 * (0.9 + 0.2 * _noise(index, j)))
            self.counts[name][kind] = total
            self.errors[name] = total * fail_rate // 1000
            self.timeouts[name] = total * timeout_rate // 1000
            for k in range(min(self.errors[name], 10 // len(self.methods) + 2)):
                self._fail(name, self.started + self.uptime0 - 9.0 * (k + 1) - j, k)
        self.last_errors.sort(key=lambda e: e["time"])
        self.last_errors = self.last_errors[-10:]

    def _fail(self, name: str, when: float, n: int) -> None:
        failure = next(m[5] for m in self.methods if m[0] == name)
        type_name, message, line, (module, lineno, function) = failure
        text = message.format(n=4 + 1021 * n % 60, m=2048 * (1 + n % 4))
        self.last_errors.append(
            {
                "time": when,
                "method": name,
                "type": type_name,
                "message": text,
                "traceback": [
                    "    return await handler(ctx, **arguments)",
                    f'  File "/opt/trizmq/trizmq/demo/{module}.py", line {lineno}, in {function}',
                    line,
                    f"{type_name}: {text}",
                ],
            }
        )

    def advance(self, frame: int) -> dict[str, Any]:
        """Count one more interval and return the snapshot sent at its end."""
        done: dict[str, int] = {}
        for j, (name, kind, rate, *_rest, failure, fail_rate, timeout_rate) in enumerate(
            self.methods
        ):
            self.carry[name] += rate * STEP * (0.4 + 1.2 * _noise(self.index, j, frame))
            n = int(self.carry[name])
            self.carry[name] -= n
            done[name] = n
            before = sum(self.counts[name].values())
            self.counts[name][kind] += n
            after = before + n
            for count in range(before, after):
                if (
                    failure is not None
                    and count * fail_rate // 1000 != (count + 1) * fail_rate // 1000
                ):
                    self.errors[name] += 1
                    self._fail(name, self.wall(frame), count)
                if count * timeout_rate // 1000 != (count + 1) * timeout_rate // 1000:
                    self.timeouts[name] += 1
        self.last_errors = self.last_errors[-10:]
        self.recent = [*self.recent, done][-20:]
        return self.snapshot(frame)

    def wall(self, frame: int) -> float:
        return EPOCH - (FRAMES - 1 - frame) * STEP

    def snapshot(self, frame: int) -> dict[str, Any]:
        uptime = self.uptime0 + frame * STEP + 0.004 * _noise(self.index, frame, 3)
        methods: dict[str, Any] = {}
        received = {"call": 0, "cast": 0, "fanout": 0}
        call_errors = calls = 0
        errors: dict[str, int] = {}
        in_flight_total = 0
        window = 0
        for j, (name, kind, rate, p50, p99, failure, *_rest) in enumerate(self.methods):
            wiggle = 0.85 + 0.3 * _noise(self.index, j, frame, 1)
            count = sum(r.get(name, 0) for r in self.recent)
            window += count
            in_flight = int(rate * p50 / 1000 * 2.5 * _noise(self.index, j, frame, 2) + 0.3)
            in_flight_total += in_flight
            method_errors = {failure[0]: self.errors[name]} if self.errors[name] else {}
            methods[name] = {
                "received": dict(self.counts[name]),
                "errors": method_errors,
                "in_flight": in_flight,
                "timeouts": self.timeouts[name],
                "items": 0,
                "latency_ms": {
                    "p50": round(p50 * wiggle, 4),
                    "p90": round((p50 + p99) / 2 * wiggle, 4),
                    "p99": round(p99 * wiggle, 4),
                    "max": round(p99 * 1.3 * wiggle, 4),
                    "count": count,
                },
            }
            for k, v in self.counts[name].items():
                received[k] += v
            for type_name, v in method_errors.items():
                errors[type_name] = errors.get(type_name, 0) + v
            if kind == "call":
                calls += self.counts[name]["call"]
                call_errors += self.errors[name]
        busiest = max(self.methods, key=lambda m: m[2])
        wiggle = 0.85 + 0.3 * _noise(self.index, frame, 4)
        total = sum(received.values())
        rejected = {"deadline": 3} if self.topic == "compute" else {}
        return {
            "host": self.host,
            "topic": self.topic,
            "port": self.port,
            "pid": 41000 + 17 * self.index,
            "endpoint": f"tcp://{RESOLVE[self.host]}:{self.port}",
            "started": self.started,
            "uptime": uptime,
            "received": received,
            "sent": {"reply": calls - call_errors, "error": call_errors},
            "bytes_in": total * 212 + 97 * self.index,
            "bytes_out": calls * 64,
            "in_flight": in_flight_total,
            "errors": errors,
            "rejected": rejected,
            "timeouts": sum(self.timeouts.values()),
            "cancelled": 0,
            "peers": 2 + self.index % 3,
            "latency_ms": {
                "p50": round(busiest[3] * wiggle, 4),
                "p90": round(max(m[4] for m in self.methods) * 0.6 * wiggle, 4),
                "p99": round(max(m[4] for m in self.methods) * wiggle, 4),
                "max": round(max(m[4] for m in self.methods) * 1.3 * wiggle, 4),
                "count": window,
            },
            "methods": methods,
            "last_errors": [dict(e) for e in self.last_errors],
        }


def recorded_frames(ring: trizmq.Ring) -> list[Frame]:
    """`FRAMES` frames of the seed ring's ports, one every `STEP` seconds."""
    ports = [_Port(i, s.host, s.topic, s.port) for i, s in enumerate(ring.services())]
    frames: list[Frame] = []
    for frame in range(FRAMES):
        snapshots = {}
        for port in ports:
            data = port.advance(frame)
            if frame < FRAMES - STOPPED.get((port.host, port.topic), 0):
                snapshots[(port.host, port.topic)] = data
        frames.append((T0 + frame * STEP, snapshots))
    return frames


def replay_app(**kwargs: Any) -> MonitorApp:
    """The monitor on the recording, 0.2 s after its last frame."""
    ring = trizmq.Ring.load(SEED_RING)
    now = T0 + (FRAMES - 1) * STEP + 0.2
    feed = ReplayFeed(ring, recorded_frames(ring), RESOLVE, now=now)
    return MonitorApp(ring, feed=feed, **kwargs)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times shown in UTC, whatever the machine's time zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def _port(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MonitorApp)
    await app.open_port(("controller", "compute"))


async def _node(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, MonitorApp)
    await app.open_node("computenodex")


#: The screens: how to get there from the start (the keys are tested in test_monitor_views.py).
SCREENS: dict[str, dict[str, Any]] = {
    "main": {},
    "port": {"run_before": _port},
    "node": {"run_before": _node},
    "help": {"press": ("question_mark",)},
}
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}

SnapCompare = Callable[..., bool]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(snap_compare: SnapCompare, utc: None, screen: str, size: str) -> None:
    assert snap_compare(replay_app(), terminal_size=SIZES[size], **SCREENS[screen])


# -- the pictures of the docs ------------------------------------------------------------

DOCS_IMG = REPO_ROOT / "docs" / "img"
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / Path(__file__).stem
#: docs/img/NAME: the snapshot it is a copy of.
DOCS_PICTURES = {
    "monitor.svg": "test_screen[main-120x40].svg",
    "monitor-port.svg": "test_screen[port-120x40].svg",
    "monitor-node.svg": "test_screen[node-120x40].svg",
    "monitor-help.svg": "test_screen[help-120x40].svg",
}


def _normal(svg: str) -> str:
    # As pytest-textual-snapshot compares them: without the random ids of Rich.
    return re.sub(r"\bterminal-\d+-([\w-]+)", r"terminal-\1", svg)


@pytest.mark.parametrize("name", DOCS_PICTURES)
def test_docs_pictures_are_the_snapshots(name: str) -> None:
    snapshot = (SNAPSHOTS / DOCS_PICTURES[name]).read_text(encoding="utf-8")
    picture = DOCS_IMG / name
    if os.environ.get("TRIZMQ_UPDATE_DOCS_IMG"):
        picture.write_text(snapshot, encoding="utf-8")
    if not picture.exists() or _normal(picture.read_text(encoding="utf-8")) != _normal(snapshot):
        # Not an assert of the two: pytest would take its time to diff them.
        pytest.fail(f"docs/img/{name} is not {DOCS_PICTURES[name]} (see the module's docstring)")
    page = (REPO_ROOT / "docs" / "monitor.md").read_text(encoding="utf-8")
    assert f"(img/{name})" in page
