"""`trizmq demo`: the seed ring on one machine, its traffic, and no orphan process.

The demo runs as a user runs it, a real process (in its own session) with
services of its own; `trizmq stats` tells when traffic flows. Every demo gets
loopback addresses no other test uses, so the processes it started are found
by scanning /proc for them; whatever a test leaves behind is killed that way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SEED_RING, subprocess_env, trizmq_command, unique_resolve

from trizmq._dispatch import expose
from trizmq._ring import Ring
from trizmq.demo.app import SERVICES
from trizmq.demo.runner import DEFAULT_RESOLVE, demo_addresses, plan_demo
from trizmq.demo.traffic import FLOWS, _Cloud

#: One process per (host, topic) of the seed ring, zmq_replies aside.
SEED_SERVICES = 10
#: Seconds the demo has to get its services up and traffic flowing.
TRAFFIC_DEADLINE = 45.0
#: Seconds a demo has to exit after SIGINT (its services drain for 1 s).
EXIT_DEADLINE = 10.0
#: The handlers' own errors, the only ones the demo's traffic may cause.
DEMO_ERRORS = {"trizmq.demo.app.NoValidHost", "trizmq.demo.app.VolumeQuotaExceeded"}


# -- the demo as a process ----------------------------------------------------


class Demo:
    """One `trizmq demo` process, its output in a file."""

    def __init__(self, tmp_path: Path, resolve: dict[str, str], *args: str) -> None:
        self.resolve = resolve
        self.resolve_args = [a for h, ip in resolve.items() for a in ("--resolve", f"{h}={ip}")]
        self.log = tmp_path / "demo.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                trizmq_command("demo", *args, *self.resolve_args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=subprocess_env(),
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def service_pids(self) -> set[int]:
        """The pids the demo printed, one line per service it started."""
        return {int(pid) for pid in re.findall(r"^  \S+\s+pid (\d+)\s", self.output(), re.M)}

    def started(self) -> set[int]:
        """Every live process whose command line has one of this demo's addresses."""
        return processes_using(self.resolve) - {self.proc.pid}

    def wait_services(self) -> set[int]:
        """Wait until the demo printed that its services are up; their pids."""
        deadline = time.monotonic() + TRAFFIC_DEADLINE
        while "services up" not in self.output():
            assert self.proc.poll() is None, f"the demo exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"services not up:\n{self.output()}"
            time.sleep(0.1)
        pids = self.service_pids()
        assert len(pids) == SEED_SERVICES, self.output()
        return pids

    def stats(self) -> dict[tuple[str, str], dict[str, Any]]:
        """One `trizmq stats --json` snapshot, by (host, topic)."""
        done = subprocess.run(
            trizmq_command("stats", str(SEED_RING), "--json", *self.resolve_args),
            capture_output=True,
            env=subprocess_env(),
            timeout=30,
            check=True,
        )
        return {(row["host"], row["topic"]): row for row in json.loads(done.stdout)}


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def processes_using(resolve: dict[str, str]) -> set[int]:
    """Live (not zombie) processes with a `NAME=ADDR` argument for one of these addresses."""
    wanted = {f"={addr}".encode() for addr in resolve.values()}
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if any(arg.endswith(w) for arg in args for w in wanted) and running(int(entry.name)):
            found.add(int(entry.name))
    return found


def wait_gone(resolve: dict[str, str], timeout: float) -> set[int]:
    """Wait until no process uses these addresses; the ones left at the timeout."""
    deadline = time.monotonic() + timeout
    while (left := processes_using(resolve)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def traffic_flows(ports: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """Every port up, casts on both computes, fanouts on both networks."""
    return (
        len(ports) == SEED_SERVICES
        and all(row["state"] == "up" for row in ports.values())
        and all(ports[(host, "compute")]["received"]["cast"] > 0 for host in DEFAULT_RESOLVE)
        and all(ports[(host, "network")]["received"]["fanout"] > 0 for host in DEFAULT_RESOLVE)
    )


@pytest.fixture
def resolve() -> Iterator[dict[str, str]]:
    """Addresses of the demo's own; whatever still uses them at the end is killed."""
    addresses = unique_resolve()
    try:
        yield addresses
    finally:
        for pid in processes_using(addresses):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- the demo, for real -------------------------------------------------------


def test_sigint_stops_the_demo_and_every_service_it_started(
    tmp_path: Path, resolve: dict[str, str]
) -> None:
    # A long --duration: only a bound, the test stops the demo itself.
    demo = Demo(tmp_path, resolve, "--duration", "60")
    try:
        pids = demo.wait_services()
        assert demo.started() == pids
        deadline = time.monotonic() + TRAFFIC_DEADLINE
        summary = re.compile(r"^traffic: +\d+\.\d req/s \(call \d", re.M)
        while not (traffic_flows(ports := demo.stats()) and summary.search(demo.output())):
            assert demo.proc.poll() is None, demo.output()
            assert time.monotonic() < deadline, f"no traffic: {ports}\n{demo.output()}"
            time.sleep(0.5)
        for row in ports.values():
            # The traffic fits the handlers: no call refused, no error but the planned ones.
            assert not {"no_such_method", "bad_arguments"} & set(row["rejected"]), row
            assert set(row["errors"]) <= DEMO_ERRORS, row

        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(EXIT_DEADLINE) == 0, demo.output()
        assert not wait_gone(resolve, 0), demo.output()
        output = demo.output()
        assert "SIGINT, stopping" in output
        assert re.search(r"^traffic: \d+ requests in ", output, re.M), output
        assert f"stopped {SEED_SERVICES} services" in output
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()


def test_the_services_die_with_a_killed_demo(tmp_path: Path, resolve: dict[str, str]) -> None:
    demo = Demo(tmp_path, resolve)
    try:
        pids = demo.wait_services()
    finally:
        demo.proc.kill()
        demo.proc.wait()
    # Dead, though maybe not reaped yet: they are init's children now. A process
    # part way through its exit has no command line left for `wait_gone` to
    # see, yet is not a zombie either: wait for that too, within the same bound.
    deadline = time.monotonic() + 5.0
    assert not wait_gone(resolve, 5.0)
    while (alive := {pid for pid in pids if running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive


def test_duration_ends_the_demo(tmp_path: Path, resolve: dict[str, str]) -> None:
    demo = Demo(tmp_path, resolve, "--duration", "1", "--rate", "0.5")
    try:
        assert demo.proc.wait(TRAFFIC_DEADLINE + EXIT_DEADLINE) == 0, demo.output()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
    assert not wait_gone(resolve, 0), demo.output()
    assert f"stopped {SEED_SERVICES} services" in demo.output()


def test_a_curve_demo_carries_its_traffic_encrypted(
    tmp_path: Path, resolve: dict[str, str]
) -> None:
    demo = Demo(tmp_path, resolve, "--curve", "--duration", "2")
    try:
        assert demo.proc.wait(TRAFFIC_DEADLINE + EXIT_DEADLINE) == 0, demo.output()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
    output = demo.output()
    replies = re.search(r"(\d+) replies", output)
    assert replies is not None and int(replies.group(1)) > 0, output
    assert "--curve-secret" in output  # the stats hint carries the run's client keys
    assert "AuthenticationFailed" not in output
    assert not wait_gone(resolve, 0), output


def test_a_service_that_cannot_start_fails_the_demo_by_name(
    tmp_path: Path, resolve: dict[str, str]
) -> None:
    with socket.socket() as squatter:
        squatter.bind((resolve["controller"], 9501))
        squatter.listen()
        demo = Demo(tmp_path, resolve, "--duration", "30")
        try:
            code = demo.proc.wait(TRAFFIC_DEADLINE)
        finally:
            if demo.proc.poll() is None:
                demo.proc.kill()
                demo.proc.wait()
    output = demo.output()
    assert code == 1, output
    assert "trizmq demo: compute.controller did not start" in output
    assert "Address already in use" in output
    assert not wait_gone(resolve, 0), output


def test_a_bad_option_is_a_usage_error() -> None:
    done = subprocess.run(
        trizmq_command("demo", "--rate", "-1"),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert "--rate -1: must be 0 (no traffic) or more" in done.stderr


# -- the pieces, without processes --------------------------------------------


def test_plan_runs_every_service_of_the_seed_ring_on_its_loopback_address() -> None:
    plan = plan_demo(str(SEED_RING), {})
    assert plan.resolve == {"computenodex": "127.0.0.3", "controller": "127.0.0.2"}
    assert len(plan.services) == SEED_SERVICES
    assert plan.unserved == ()
    command = plan.service_command(plan.services[0])
    assert command[command.index("--app") + 1] == "trizmq.demo.app:SERVICES"
    assert command[command.index("--topic") + 1] == plan.services[0].topic
    assert "controller=127.0.0.2" in command


def test_addresses_keep_overrides_and_never_share_one() -> None:
    assert demo_addresses(["computenodex", "controller"], {"controller": "127.9.0.2"}) == {
        "controller": "127.9.0.2",
        "computenodex": "127.0.0.3",
    }
    # An override that takes a default address pushes that host elsewhere.
    moved = demo_addresses(["computenodex", "controller", "extra"], {"controller": "127.0.0.3"})
    assert moved == {"controller": "127.0.0.3", "computenodex": "127.0.0.2", "extra": "127.0.0.4"}


def test_every_flow_names_an_exposed_method_of_a_topic_of_the_seed_ring() -> None:
    ring = Ring.load(SEED_RING)
    for flow in FLOWS:
        assert flow.topic in ring.topics
        assert flow.method in expose(SERVICES[flow.topic]())
        assert callable(getattr(_Cloud, flow.method, None))
        assert flow.kind in ("call", "cast", "fanout")
