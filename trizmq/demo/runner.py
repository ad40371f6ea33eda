"""`trizmq demo`: the seed ring's services on one machine, with live traffic.

Every (host, topic) of the ring runs as its own process, ``trizmq serve RING
--host H --app trizmq.demo.app:SERVICES --topic T``, bound on the host's own
loopback address (controller on 127.0.0.2, computenodex on 127.0.0.3, so the
two compute services share port 9501 as on two machines). Once each has
logged ``serving on``, the demo plays a cloud against them from its own
process (`trizmq.demo.traffic`) and either prints a one-line summary every
few seconds or, with ``--monitor``, runs ``trizmq-monitor`` in the foreground
and stops when it exits.

No process outlives the demo. Each service runs in its own process group, so
a Ctrl-C at the terminal reaches the demo alone, which then stops the services
in order: SIGTERM to each group (the service drains in-flight work for
`SERVICE_GRACE` seconds), SIGKILL to the groups still alive after
`STOP_TIMEOUT`. The monitor gets SIGINT instead, on which Textual restores
the terminal (on SIGTERM it would leave it in raw mode). That happens in a
``finally`` for any way out of the demo: end of ``--duration``, the monitor
quitting, SIGINT, SIGTERM, SIGHUP or an error. A demo killed outright
(SIGKILL) runs no ``finally``: for that, every child asks the kernel for the
same signal when its parent dies (`_die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.resources
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs
import trio

from .._client import open_client
from .._curve import Curve, generate_keys
from .._errors import RingError
from .._ring import Ring, Service
from .app import KEYS_ENV, RESOLVE_ENV, RING_ENV, SERVICES
from .traffic import CALL_TIMEOUT, Tally, nominal_rate, run_traffic

__all__ = ["DEFAULT_RESOLVE", "DemoPlan", "demo_addresses", "plan_demo", "run_demo"]

#: The `--app` every service of the demo runs.
APP = "trizmq.demo.app:SERVICES"
#: Where the seed ring's hosts live on one machine; `--resolve` overrides them.
DEFAULT_RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}
#: Seconds every service has to log ``serving on``.
START_TIMEOUT = 30.0
#: Seconds in-flight handlers may finish in when a service is stopped (its ``--grace``).
SERVICE_GRACE = 1.0
#: Seconds between SIGTERM and SIGKILL when stopping, then after SIGKILL.
STOP_TIMEOUT = 5.0
KILL_TIMEOUT = 2.0
#: Seconds between two traffic summaries.
SUMMARY_INTERVAL = 2.0

EXIT_OK = 0
EXIT_FAILED = 1

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SERVING = re.compile(r"\bserving on (\S+)")
# The last such line of a failed service's output says why (a traceback ends with it).
_REASON = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b|trizmq:).*")
_TAIL = 40
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Leave the alternate screen, show the cursor, stop mouse and focus reports, bracketed paste.
_TERMINAL_RESET = (
    "\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?1004l\x1b[?2004l"
)


# -- what to start ------------------------------------------------------------


@attrs.frozen
class DemoPlan:
    """The processes a demo starts, worked out before starting any.

    Attributes:
        ring: The ring the services come from.
        ring_path: The ring's file, given to every child.
        resolve: The address of every host, ``{NAME: ADDR}``.
        services: The (host, topic) services to run, one process each.
        unserved: Topics of the ring the demo app has no endpoint for.
    """

    ring: Ring
    ring_path: str
    resolve: dict[str, str]
    services: tuple[Service, ...]
    unserved: tuple[str, ...]
    keys: Path | None = None

    def curve_service_args(self) -> list[str]:
        """CURVE options of every service, with --curve."""
        if self.keys is None:
            return []
        return [
            "--curve-secret",
            str(self.keys / "server.key_secret"),
            "--curve-allow",
            str(self.keys / "clients"),
        ]

    def curve_client_args(self) -> list[str]:
        """CURVE options of every client (monitor, stats), with --curve."""
        if self.keys is None:
            return []
        return [
            "--curve-secret",
            str(self.keys / "clients" / "demo.key_secret"),
            "--curve-server",
            str(self.keys / "server.key"),
        ]

    def client_curve(self) -> Curve | None:
        """The keys the demo's own clients use, with --curve."""
        if self.keys is None:
            return None
        return Curve.client(self.keys / "clients" / "demo.key_secret", self.keys / "server.key")

    def resolve_args(self) -> list[str]:
        """``--resolve NAME=ADDR`` for every host, as command-line arguments."""
        return [
            arg for name, addr in self.resolve.items() for arg in ("--resolve", f"{name}={addr}")
        ]

    def service_command(self, service: Service) -> list[str]:
        """The command line of one service's process."""
        return [
            sys.executable,
            "-m",
            "trizmq.cli",
            "serve",
            self.ring_path,
            "--host",
            service.host,
            "--app",
            APP,
            "--topic",
            service.topic,
            "--grace",
            str(SERVICE_GRACE),
            *self.resolve_args(),
            *self.curve_service_args(),
        ]

    def monitor_command(self) -> list[str]:
        """The command line of ``trizmq-monitor`` on this ring."""
        return [
            sys.executable,
            "-m",
            "trizmq_monitor.app",
            self.ring_path,
            *self.resolve_args(),
            *self.curve_client_args(),
        ]

    def child_env(self) -> dict[str, str]:
        """The environment of every child: the demo's, plus what onward messages need."""
        env = dict(os.environ)
        env[RING_ENV] = self.ring_path
        env[RESOLVE_ENV] = ",".join(f"{name}={addr}" for name, addr in self.resolve.items())
        env["PYTHONUNBUFFERED"] = "1"
        if self.keys is not None:
            env[KEYS_ENV] = str(self.keys)
        return env

    def stats_hint(self) -> str:
        """The ``trizmq stats`` command that watches this demo."""
        return " ".join(
            [
                "trizmq stats",
                self.ring_path,
                "--watch",
                *self.resolve_args(),
                *self.curve_client_args(),
            ]
        )


def demo_addresses(hosts: Iterable[str], overrides: Mapping[str, str]) -> dict[str, str]:
    """Give every host of a ring its own loopback address.

    Args:
        hosts: The ring's hosts.
        overrides: ``--resolve`` addresses; they win.

    Returns:
        ``{NAME: ADDR}`` for every host and every override: an override, else
        the host's `DEFAULT_RESOLVE` address if no override took it, else the
        next free address from 127.0.0.2 up.
    """
    result = dict(overrides)
    used = set(result.values())
    candidates = (f"127.0.0.{n}" for n in range(2, 255))
    for host in hosts:
        if host in result:
            continue
        address = DEFAULT_RESOLVE.get(host)
        if address is None or address in used:
            address = next(a for a in candidates if a not in used)
        result[host] = address
        used.add(address)
    return result


def plan_demo(ring_path: str, overrides: Mapping[str, str]) -> DemoPlan:
    """Load the ring and work out the demo's processes.

    Args:
        ring_path: The ring file.
        overrides: ``--resolve`` addresses.

    Returns:
        The plan: one service per (host, topic) the demo app provides.

    Raises:
        RingError: The ring is invalid, or the demo app serves none of its topics.
    """
    ring = Ring.load(ring_path)
    services = tuple(s for s in ring.services() if s.topic in SERVICES)
    if not services:
        raise RingError(
            f"{ring_path}: the demo has endpoints for none of its topics "
            f"(it has {', '.join(sorted(SERVICES))})"
        )
    served = {s.topic for s in services}
    unserved = tuple(t for t in ring.topics if t not in served and not ring.is_reserved(t))
    return DemoPlan(ring, ring_path, demo_addresses(ring.hosts, overrides), services, unserved)


# -- the children -------------------------------------------------------------


def _die_with_parent(parent: int, signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel signal the child when the demo dies.

    ``prctl(PR_SET_PDEATHSIG)`` is the one guard that also covers a demo
    killed with SIGKILL, which runs no cleanup: the kernel itself signals the
    child when the process that started it ends. Two cautions make it
    reliable. The "parent" is the *thread* that forked, so children must be
    forked from the main thread (`subprocess.Popen` called directly, not
    `trio.run_process`, which forks in a worker thread that exits when idle
    and would take the children with it). And the demo may die between the
    fork and the ``prctl``: the child then sees another parent and exits at
    once. The signal survives the ``exec`` (it is cleared only for set-uid
    programs). Not Linux: None, and only the demo's own cleanup applies.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(127)

    return preexec


def _stop_signal(service: bool) -> int:
    """SIGTERM for a service; SIGINT for the monitor, which restores the terminal on it."""
    return int(signal.SIGTERM if service else signal.SIGINT)


class _Child:
    """One process the demo started: a service, or the monitor."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], *, service: bool) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        #: A service leads a process group of its own; the monitor does not.
        self.is_service = service
        self.stop_signal = _stop_signal(service)
        self.tail: deque[str] = deque(maxlen=_TAIL)
        self.url: str | None = None
        self.stopping = False  # the demo asked it to stop
        self.output_done = trio.Event()
        self.exited = trio.Event()
        self.pidfd: int | None = None
        # Opened before anything can reap the child, so it names this process.
        # Not Linux 5.3+: no pidfd, and `wait` polls instead.
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(popen.pid)

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self.popen.returncode

    def send_signal(self, signum: int) -> None:
        """Signal the child (its whole process group for a service), unless it is gone."""
        # poll() reaps a dead child: afterwards its pid, and group id, may be reused.
        if self.popen.poll() is not None:
            return
        try:
            if self.is_service:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    async def wait(self) -> int:
        """Wait until the process exits and return its status."""
        if self.pidfd is not None:
            await trio.lowlevel.wait_readable(self.pidfd)
            return self.popen.wait()  # it has exited: no blocking
        while (code := self.popen.poll()) is None:  # noqa: ASYNC110 (no event to wait on)
            await trio.sleep(0.05)
        return code

    def reason(self) -> str:
        """Why the process ended, from the last lines it wrote."""
        for raw in reversed(self.tail):
            line = raw.strip(" |\t")
            if _REASON.match(line):
                return line
        last = [line.strip() for line in self.tail if line.strip()]
        return last[-1] if last else "no output"

    def describe_exit(self) -> str:
        """``exited with code N`` or ``killed by SIGNAME``."""
        code = self.returncode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def close(self) -> None:
        """Release the pidfd (after the tasks waiting on it are gone)."""
        if self.pidfd is not None:
            trio.lowlevel.notify_closing(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None


#: What the watchers report: ("serving" or "exited", the child).
_ChildEvent = tuple[str, _Child]


class _Children:
    """Every process the demo started, and the tasks that watch them."""

    def __init__(self, nursery: trio.Nursery, events: trio.MemorySendChannel[_ChildEvent]) -> None:
        self.all: list[_Child] = []
        self._nursery = nursery
        self._events = events

    def spawn(self, name: str, argv: list[str], env: dict[str, str], *, service: bool) -> _Child:
        """Start a child: a service in its own process group, its output piped here.

        Forks from the calling (main) thread, with no other thread running,
        as `_die_with_parent` needs.
        """
        preexec = _die_with_parent(os.getpid(), _stop_signal(service))
        if service:
            read_end, write_end = os.pipe()
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=write_end,
                    stderr=write_end,
                    env=env,
                    process_group=0,
                    preexec_fn=preexec,
                )
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
        else:
            # The monitor stays in the demo's process group, the terminal's
            # foreground group: a background group would be stopped (SIGTTIN)
            # as soon as it read the keyboard.
            popen = subprocess.Popen(argv, env=env, preexec_fn=preexec)
        child = _Child(name, popen, service=service)
        self.all.append(child)
        if service:
            self._nursery.start_soon(self._follow_output, child, read_end)
        else:
            child.output_done.set()
        self._nursery.start_soon(self._follow_exit, child)
        return child

    async def _follow_output(self, child: _Child, fd: int) -> None:
        """Read a service's output: spot ``serving on``, and keep the tail that says why it ended.

        The rest is not shown: the services' warnings about the demo's own
        timeouts and errors are expected, and the summaries say them better.
        """
        pending = b""
        try:
            async with trio.lowlevel.FdStream(fd) as stream:
                while chunk := await stream.receive_some():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        self._line(child, line.decode("utf-8", "replace").rstrip())
            if pending:
                self._line(child, pending.decode("utf-8", "replace").rstrip())
        finally:
            child.output_done.set()

    def _line(self, child: _Child, text: str) -> None:
        child.tail.append(text)
        if child.url is None and (match := _SERVING.search(text)):
            child.url = match.group(1)
            self._events.send_nowait(("serving", child))

    async def _follow_exit(self, child: _Child) -> None:
        await child.wait()
        # Its last words tell why it ended: let the reader finish them first.
        with trio.move_on_after(0.5):
            await child.output_done.wait()
        child.exited.set()
        self._events.send_nowait(("exited", child))

    def alive(self) -> list[_Child]:
        """The children that have not been seen to exit."""
        return [c for c in self.all if not c.exited.is_set() and c.popen.poll() is None]

    async def stop(self, state: _State) -> None:
        """Stop every child: its stop signal, then SIGKILL after `STOP_TIMEOUT` s.

        Meant to run shielded; a stop signal while it waits (a second Ctrl-C)
        skips the wait and kills at once.
        """
        alive = self.alive()
        for child in alive:
            child.stopping = True
            child.send_signal(child.stop_signal)
        with trio.move_on_after(0 if state.hurried else STOP_TIMEOUT) as waiting:
            state.hurry = waiting
            for child in alive:
                await child.exited.wait()
        state.hurry = None
        stubborn = self.alive()
        for child in stubborn:
            child.send_signal(signal.SIGKILL)
        with trio.move_on_after(KILL_TIMEOUT):
            for child in stubborn:
                await child.exited.wait()
        if stubborn and not state.hurried:
            _warn(f"killed {', '.join(c.name for c in stubborn)}: not stopped in time")

    def kill_now(self) -> None:
        """Last resort, without Trio: SIGKILL every child still running and reap it."""
        for child in self.all:
            child.send_signal(signal.SIGKILL)
        for child in self.all:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=KILL_TIMEOUT)

    def close(self) -> None:
        """Release the pidfds once no task waits on them."""
        for child in self.all:
            child.close()


# -- the run ------------------------------------------------------------------


@attrs.define
class _State:
    """How the demo is going, shared by its tasks."""

    code: int = EXIT_OK
    #: The wait of `_Children.stop`, cut short by a second stop signal.
    hurry: trio.CancelScope | None = None
    hurried: bool = False
    #: Services that ended by themselves, reported at the end under the monitor.
    lost: list[_Child] = attrs.field(factory=list)
    monitor: _Child | None = None
    #: The traffic's totals, said once everything stopped.
    final: str | None = None
    #: The terminal's settings before the monitor started, if it is a terminal.
    terminal: list[Any] | None = None


@attrs.frozen
class _Options:
    monitor: bool
    duration: float | None
    rate: float


def _save_terminal() -> list[Any] | None:
    """The terminal settings of stdin, or None when it is not a terminal."""
    import termios  # Unix only, like the demo's process handling

    try:
        return termios.tcgetattr(sys.stdin.fileno())
    except (termios.error, OSError, ValueError, AttributeError):
        return None


def _restore_terminal(saved: list[Any] | None) -> None:
    """Undo what a killed full-screen app left: raw mode, alternate screen, mouse reports."""
    import termios

    if saved is None:
        return
    with contextlib.suppress(termios.error, OSError, ValueError, AttributeError):
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        sys.stdout.write(_TERMINAL_RESET)
        sys.stdout.flush()


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(f"trizmq demo: {text}", file=sys.stderr, flush=True)


async def _demo(plan: DemoPlan, options: _Options, state: _State, spawned: list[_Children]) -> None:
    """The whole demo: start, run, and always stop every child."""
    send, receive = trio.open_memory_channel[_ChildEvent](math.inf)
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        # The watchers of the children outlive the work, so stopping can wait on them.
        async with trio.open_nursery() as watchers:
            children = _Children(watchers, send)
            spawned.append(children)
            try:
                async with trio.open_nursery() as work:
                    work.start_soon(_stop_on_signal, signals, work.cancel_scope, state)
                    state.code = await _run(plan, options, children, receive, state)
                    work.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    async with trio.open_nursery() as stopping:
                        stopping.start_soon(_kill_on_signal, signals, state)
                        await children.stop(state)
                        stopping.cancel_scope.cancel()
                    watchers.cancel_scope.cancel()
        children.close()
    monitor = state.monitor
    if monitor is not None and (monitor.returncode or 0) < 0:
        _restore_terminal(state.terminal)  # killed, it could not restore it itself
    if monitor is not None and monitor.returncode != 0 and not monitor.stopping:
        _warn(f"trizmq-monitor {monitor.describe_exit()}")
    for child in state.lost:
        _warn(f"{child.name} (pid {child.pid}) {child.describe_exit()}: {child.reason()}")
    if state.final is not None:
        _say(state.final)
    services = [c for c in children.all if c.is_service]
    _say(f"trizmq demo: stopped {len(services)} services")


async def _stop_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope, state: _State
) -> None:
    async for signum in signals:
        if state.monitor is None or state.monitor.exited.is_set():
            _warn(f"{signal.Signals(signum).name}, stopping")
        scope.cancel()
        return


async def _kill_on_signal(signals: AsyncIterator[int], state: _State) -> None:
    async for signum in signals:
        _warn(f"{signal.Signals(signum).name} again: killing")
        state.hurried = True
        if state.hurry is not None:
            state.hurry.cancel()


async def _run(
    plan: DemoPlan,
    options: _Options,
    children: _Children,
    events: trio.MemoryReceiveChannel[_ChildEvent],
    state: _State,
) -> int:
    """Start the services, wait for them, then the traffic and maybe the monitor."""
    names = ", ".join(f"{host}={addr}" for host, addr in plan.resolve.items())
    _say(f"trizmq demo: starting {len(plan.services)} services of {plan.ring_path} ({names})")
    if plan.unserved:
        _say(f"  (no demo endpoint for {', '.join(plan.unserved)}: not started)")
    began = time.monotonic()
    env = plan.child_env()
    for service in plan.services:
        children.spawn(service.target, plan.service_command(service), env, service=True)
    if not await _wait_until_serving(children, events):
        return EXIT_FAILED
    rate = nominal_rate(plan.ring, options.rate)
    _say(
        f"trizmq demo: {len(children.all)} services up in {time.monotonic() - began:.1f} s; "
        f"traffic at about {rate:.0f} requests/s"
        + ("" if options.monitor else "; Ctrl-C stops everything")
    )
    if options.monitor:
        state.terminal = _save_terminal()
        state.monitor = children.spawn("trizmq-monitor", plan.monitor_command(), env, service=False)
    else:
        _say(f"  watch it: {plan.stats_hint()}")
    code = EXIT_OK
    async with open_client(
        plan.ring,
        resolve=plan.resolve,
        timeout=CALL_TIMEOUT,
        name="demo-traffic",
        curve=plan.client_curve(),
    ) as client:
        tally = Tally()
        try:
            with trio.move_on_after(math.inf if options.duration is None else options.duration):
                async with trio.open_nursery() as nursery:
                    if options.rate > 0:
                        nursery.start_soon(run_traffic, client, options.rate, tally)
                    if options.rate > 0 and not options.monitor:
                        nursery.start_soon(_print_summaries, tally)
                    code = await _watch_children(events, state)
                    nursery.cancel_scope.cancel()
        finally:
            # However the traffic ended (a signal too), its totals are said at the end.
            state.final = tally.final()
    return code


async def _wait_until_serving(
    children: _Children, events: trio.MemoryReceiveChannel[_ChildEvent]
) -> bool:
    """Wait until every service logged ``serving on``; say which did not, and why."""
    waiting = {c.name for c in children.all}
    with trio.move_on_after(START_TIMEOUT):
        async for kind, child in events:
            if kind == "serving":
                _say(f"  {child.name:<30} pid {child.pid:<8} {child.url}")
                waiting.discard(child.name)
                if not waiting:
                    return True
            elif child.name in waiting:
                _warn(f"{child.name} did not start ({child.describe_exit()}): {child.reason()}")
                return False
    late = ", ".join(sorted(waiting))
    _warn(f"{late}: not serving after {START_TIMEOUT:g} s")
    return False


async def _watch_children(events: trio.MemoryReceiveChannel[_ChildEvent], state: _State) -> int:
    """Report services that end by themselves; return when the monitor exits."""
    async for kind, child in events:
        if kind != "exited" or child.stopping:
            continue
        if child is state.monitor:
            # Said at the end, once the terminal is ours again.
            return EXIT_OK if child.returncode == 0 else EXIT_FAILED
        if state.monitor is not None:
            state.lost.append(child)  # said after the monitor, which owns the screen now
        else:
            _warn(
                f"{child.name} (pid {child.pid}) {child.describe_exit()}: {child.reason()}; "
                "the rest of the ring goes on"
            )
    raise AssertionError("unreachable: the event channel stays open")


async def _print_summaries(tally: Tally) -> NoReturn:
    while True:
        await trio.sleep(SUMMARY_INTERVAL)
        _say(tally.summary())


def run_demo(
    ring_path: str | None,
    overrides: Mapping[str, str],
    *,
    monitor: bool = False,
    curve: bool = False,
    duration: float | None = None,
    rate: float = 1.0,
) -> int:
    """Run the demo until it is stopped: what ``trizmq demo`` does.

    Args:
        ring_path: The ring file; None means the seed ring shipped with trizmq.
        overrides: ``--resolve`` addresses.
        monitor: Run ``trizmq-monitor`` in the foreground; stop when it exits.
        curve: Encrypt and authenticate everything with keys made for this run.
        duration: Seconds of traffic before stopping; None runs until a signal.
        rate: The traffic's scale: 1 is about 50 requests/s, 0 none.

    Returns:
        The exit code: 0, 1 if a service failed to start, 130 on an early Ctrl-C.

    Raises:
        RingError: The ring is invalid, or the demo serves none of its topics.
    """
    options = _Options(monitor, duration, rate)
    # The seed proposal's ring, shipped as a file of this package.
    packaged = importlib.resources.files("trizmq.demo") / "seed_ring.json"
    with (
        importlib.resources.as_file(packaged) as seed_ring,
        tempfile.TemporaryDirectory(prefix="trizmq-demo-keys-") as keys,
    ):
        plan = plan_demo(os.path.abspath(ring_path or seed_ring), overrides)
        if curve:
            # One key pair for the services, one allowed client pair for the rest.
            generate_keys(keys, "server")
            generate_keys(Path(keys) / "clients", "demo")
            plan = attrs.evolve(plan, keys=Path(keys))
        state = _State()
        spawned: list[_Children] = []
        try:
            trio.run(_demo, plan, options, state, spawned)
        except KeyboardInterrupt:
            # Ctrl-C in the instants before the demo listens for it, or after.
            state.code = 130
        finally:
            # Only does anything if the run broke before its own cleanup finished.
            for children in spawned:
                children.kill_now()
    return state.code
