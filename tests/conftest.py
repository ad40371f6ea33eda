"""Shared test helpers: a real seed cluster of `trizmq serve` processes, and polling.

Every node of the seed ring runs as its own `trizmq serve` process, on its own
loopback address. Ports come from the ring, so each cluster gets addresses no
other cluster uses, in this session or any other running at the same time:
127.X.Y.2 for controller, 127.X.Y.3 for computenodex, each 127.X.Y claimed
with a lock file (see `unique_resolve`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import inspect
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

import trizmq

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
#: The seed ring, the one copy the package ships for the demo.
SEED_RING = REPO_ROOT / "trizmq" / "demo" / "seed_ring.json"
APP = "cluster_app:SERVICES"

#: Seconds a process has to log its "serving on" lines.
SERVE_DEADLINE = 15.0
#: Seconds a process has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

# Host addresses in a cluster's 127.X.Y.0/24: the seed hosts get .2 and .3.
_HOST_OCTETS = {"controller": 2, "computenodex": 3}
# 127.X.Y.0/24 networks, X in 20..219 and Y in 1..250. A test session claims
# each one it uses with a lock file, held until the session exits, so that
# sessions running at once on this machine never share an address.
_NETWORK_COUNT = 200 * 250
_NETWORK_LOCKS = Path(tempfile.gettempdir()) / "trizmq-test-networks"
_candidates = itertools.count((os.getpid() % 200) * 250)
_claimed: list[int] = []  # the lock files' descriptors, open for the session's lifetime


def _claim_network() -> str:
    """A `127.X.Y` prefix no other running test session holds."""
    _NETWORK_LOCKS.mkdir(exist_ok=True)
    for _ in range(_NETWORK_COUNT):
        n = next(_candidates) % _NETWORK_COUNT
        prefix = f"127.{20 + n // 250}.{1 + n % 250}"
        fd = os.open(_NETWORK_LOCKS / prefix, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _claimed.append(fd)
        return prefix
    raise RuntimeError("every 127.X.Y test network is taken")


def unique_resolve(hosts: Sequence[str] = ("controller", "computenodex")) -> dict[str, str]:
    """Loopback addresses for `hosts`, in a network no other cluster of any test session uses."""
    prefix = _claim_network()
    octets = dict(_HOST_OCTETS)
    for host in hosts:
        octets.setdefault(host, len(octets) + 2)
    return {host: f"{prefix}.{octets[host]}" for host in hosts}


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of child processes: tests/ and the repository importable."""
    env = dict(os.environ)
    path = [str(TESTS), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env.update(extra)
    return env


def trizmq_command(*args: str) -> list[str]:
    """The `trizmq` command line, run with this interpreter."""
    return [sys.executable, "-m", "trizmq.cli", *args]


class AddressInUse(RuntimeError):
    """A cluster process could not bind its address: something else holds it."""


class Cluster:
    """The seed ring's nodes, each a `trizmq serve` process on its own loopback address.

    Attributes:
        ring_path: The ring file every process and client uses.
        app: The `--app` of every host, or of each host by name (change it
            and `restart` a host to run another app there).
        resolve: Host name -> loopback address, for `open_client(resolve=...)`.
        hosts: The hosts this cluster runs, in ring order.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ring_path: Path = SEED_RING,
        hosts: Sequence[str] | None = None,
        serve_args: Sequence[str] = (),
        app: str | Mapping[str, str] = APP,
    ) -> None:
        self.workdir = workdir
        self.ring_path = ring_path
        ring = trizmq.Ring.load(ring_path)
        self.hosts = tuple(hosts) if hosts is not None else ring.hosts
        self.resolve = unique_resolve(ring.hosts)
        self.serve_args = tuple(serve_args)
        self.app = app
        self._services = {host: ring.services_of(host) for host in self.hosts}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_offsets: dict[str, int] = {}

    # -- what tests connect to ------------------------------------------------

    @property
    def resolve_args(self) -> list[str]:
        """`--resolve NAME=ADDR` options for the `trizmq` command."""
        return [
            arg for host, addr in self.resolve.items() for arg in ("--resolve", f"{host}={addr}")
        ]

    @property
    def addresses(self) -> dict[str, str]:
        """`"topic.host"` -> `"tcp://ADDR:PORT"` of every service the cluster runs."""
        return {
            service.target: f"tcp://{self.resolve[host]}:{service.port}"
            for host in self.hosts
            for service in self._services[host]
        }

    def ring(self) -> trizmq.Ring:
        """A freshly loaded ring (its round-robin cursors start at the first host)."""
        return trizmq.Ring.load(self.ring_path)

    def client(self, **kwargs: Any) -> AbstractAsyncContextManager[trizmq.Client]:
        """`trizmq.open_client` on a fresh ring, with the cluster's addresses."""
        return trizmq.open_client(self.ring(), resolve=self.resolve, **kwargs)

    def env(self) -> dict[str, str]:
        """The environment of the cluster's processes (and of helper scripts)."""
        return subprocess_env(
            TRIZMQ_TEST_RING=str(self.ring_path),
            TRIZMQ_TEST_RESOLVE=json.dumps(self.resolve),
        )

    # -- processes ------------------------------------------------------------

    def command(self, host: str) -> list[str]:
        """The `trizmq serve` command line of one host's process."""
        topics = [arg for s in self._services[host] for arg in ("--topic", s.topic)]
        return trizmq_command(
            "serve",
            str(self.ring_path),
            "--host",
            host,
            "--app",
            self.app if isinstance(self.app, str) else self.app[host],
            *topics,
            *self.resolve_args,
            *self.serve_args,
        )

    def log_path(self, host: str) -> Path:
        return self.workdir / f"{host}.log"

    def log(self, host: str) -> str:
        """Everything the host's processes (this one and earlier ones) wrote."""
        path = self.log_path(host)
        return path.read_text(errors="replace") if path.exists() else ""

    def process(self, host: str) -> subprocess.Popen[bytes]:
        return self._procs[host]

    def start(self) -> None:
        """Start every host's process and wait until each serves all its topics.

        If an address is taken (another test session on this machine), the
        cluster moves to fresh addresses and tries again, up to three times.
        """
        for attempt in range(3):
            try:
                self._start_once()
                return
            except AddressInUse:
                if attempt == 2:
                    raise
                self.resolve = unique_resolve(tuple(self.resolve))

    def _start_once(self) -> None:
        _LIVE.add(self)
        try:
            for host in self.hosts:
                self._launch(host)
            deadline = time.monotonic() + SERVE_DEADLINE
            for host in self.hosts:
                self._wait_serving(host, deadline)
        except BaseException:
            self.stop()
            raise

    def restart(self, host: str) -> None:
        """Stop the host's process (if running) and start a new one, serving again."""
        self.stop(host)
        _LIVE.add(self)
        self._launch(host)
        self._wait_serving(host, time.monotonic() + SERVE_DEADLINE)

    def send_signal(self, host: str, signum: int) -> None:
        """Send a signal to the host's process group, without waiting."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._procs[host].pid, signum)

    def wait(self, host: str, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the host's process to exit and return its exit code."""
        return self._procs[host].wait(timeout)

    def stop(self, *hosts: str, signum: int = signal.SIGTERM) -> dict[str, int]:
        """Stop processes (all by default): `signum`, up to 10 s, then SIGKILL.

        Returns:
            Each stopped host's exit code (negative: killed by that signal).
        """
        procs = {h: p for h, p in self._procs.items() if not hosts or h in hosts}
        for host, proc in procs.items():
            if proc.poll() is None:
                self.send_signal(host, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        codes: dict[str, int] = {}
        for host, proc in procs.items():
            try:
                codes[host] = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.send_signal(host, signal.SIGKILL)
                codes[host] = proc.wait()
        if all(p.poll() is not None for p in self._procs.values()):
            _LIVE.discard(self)
        return codes

    def kill(self, host: str) -> int:
        """SIGKILL the host's process group, as a crash would; returns the exit code."""
        self.send_signal(host, signal.SIGKILL)
        return self._procs[host].wait()

    def _launch(self, host: str) -> None:
        path = self.log_path(host)
        self._log_offsets[host] = path.stat().st_size if path.exists() else 0
        with path.open("ab") as log:
            self._procs[host] = subprocess.Popen(
                self.command(host),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env(),
                start_new_session=True,
            )

    def _wait_serving(self, host: str, deadline: float) -> None:
        expected = {f"trizmq: {s.topic}.{host} serving on " for s in self._services[host]}
        proc = self._procs[host]
        while True:
            with self.log_path(host).open("rb") as f:
                f.seek(self._log_offsets[host])
                text = f.read().decode(errors="replace")
            if all(line in text for line in expected):
                return
            if proc.poll() is not None:
                problem = f"{host} exited with {proc.returncode} before serving:\n{text}"
                raise AddressInUse(problem) if "in use" in text else RuntimeError(problem)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host} not serving within {SERVE_DEADLINE} s:\n{text}")
            time.sleep(0.02)


# Clusters with live processes, killed at exit if a teardown never ran.
_LIVE: set[Cluster] = set()


@atexit.register
def _kill_leftovers() -> None:
    for cluster in list(_LIVE):
        for host in cluster.hosts:
            if host in cluster._procs and cluster._procs[host].poll() is None:
                cluster.kill(host)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serve_args(*args): extra `trizmq serve` options for the fresh_cluster fixture"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The seed cluster, shared by a module's tests that leave it running."""
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A seed cluster of its own, for a test that stops or kills its processes.

    Mark the test `@pytest.mark.serve_args("--grace", "1")` to pass options
    to every `trizmq serve`.
    """
    marker = request.node.get_closest_marker("serve_args")
    running = Cluster(tmp_path, serve_args=marker.args if marker else ())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def ring_copy(tmp_path: Path) -> Path:
    """A copy of the seed ring in the test's own directory."""
    path = tmp_path / "seed_ring.json"
    path.write_bytes(SEED_RING.read_bytes())
    return path


async def eventually(
    fn: Callable[[], Awaitable[T] | T],
    timeout: float = 5.0,
    *,
    until: Callable[[T], object] = bool,
    interval: float = 0.02,
) -> T:
    """Call `fn` (sync or async) until `until(result)` is true; return that result.

    Raises:
        AssertionError: it did not become true within `timeout` seconds.
    """
    last: Any = None
    with trio.move_on_after(timeout):
        while True:
            value = fn()
            last = await value if inspect.isawaitable(value) else value
            if until(last):
                return last  # type: ignore[no-any-return]
            await trio.sleep(interval)
    raise AssertionError(f"not true within {timeout} s; the last value was {last!r}")


async def run_process(
    command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion, capturing its output; killed if the test is cancelled."""
    return await trio.run_process(
        list(command),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env if env is not None else subprocess_env(),
        cwd=cwd,
    )


@contextlib.asynccontextmanager
async def serving(
    ring: trizmq.Ring, topic: str, endpoint: object, host: str, resolve: dict[str, str], **kw: Any
) -> AsyncIterator[trio.CancelScope]:
    """Run `trizmq.serve` in this process; yields the scope that stops it."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await trizmq.serve(
                    ring, topic, endpoint, host, resolve, task_status=task_status, **kw
                )

        await nursery.start(run)
        yield scope
        scope.cancel()


# -- Redis ------------------------------------------------------------------------

#: The host octet of a test's Redis in its claimed 127.X.Y.0/24 (hosts count up from .2).
_REDIS_OCTET = 250
#: Seconds a `redis-server` has to say it is ready.
REDIS_DEADLINE = 10.0


class RedisServer:
    """A real `redis-server` on a loopback address of its own, in a private directory.

    Nothing is saved to disk: a restart starts empty, like a Redis that lost
    its data. With `password`, clients must give it; with `tls`, it speaks
    only TLS, with a certificate from a throwaway CA (`ca_path`).
    """

    def __init__(self, workdir: Path, *, password: str | None = None, tls: bool = False) -> None:
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.address = f"{_claim_network()}.{_REDIS_OCTET}"
        self.port = 6379
        self.proc: subprocess.Popen[bytes] | None = None
        if tls:
            self._make_certificates()

    @property
    def ca_path(self) -> Path:
        return self.workdir / "ca.crt"

    def url(self, db: int = 0) -> str:
        """The URL clients and services use, password and CA included."""
        auth = f":{self.password}@" if self.password is not None else ""
        scheme, query = ("rediss", f"?ssl_ca_certs={self.ca_path}") if self.tls else ("redis", "")
        return f"{scheme}://{auth}{self.address}:{self.port}/{db}{query}"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        log = self.workdir / "redis.log"
        offset = log.stat().st_size if log.exists() else 0
        command = [
            "redis-server",
            "--bind", self.address,
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(log),
        ]  # fmt: skip
        if self.tls:
            command += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.workdir / "redis.crt"),
                "--tls-key-file", str(self.workdir / "redis.key"),
                "--tls-ca-cert-file", str(self.ca_path),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            command += ["--port", str(self.port)]
        if self.password is not None:
            command += ["--requirepass", self.password]
        _LIVE_REDIS.add(self)
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + REDIS_DEADLINE
        while True:
            text = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
            if "Ready to accept connections" in text:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start:\n{text}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and wait for its exit."""
        proc, self.proc = self.proc, None
        _LIVE_REDIS.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _make_certificates(self) -> None:
        """A CA, and a certificate it signs for the server's address."""
        d = self.workdir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=trizmq test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={self.address}",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
        )
        (d / "san.cnf").write_text(f"subjectAltName=IP:{self.address}\n")
        openssl(
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
            "-out",
            "redis.crt",
        )


# Redis servers running, killed at exit if a teardown never ran.
_LIVE_REDIS: set[RedisServer] = set()


@atexit.register
def _kill_leftover_redis() -> None:
    for server in list(_LIVE_REDIS):
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait()


@contextlib.contextmanager
def running_redis(workdir: Path, **kw: Any) -> Iterator[RedisServer]:
    """A `RedisServer`, started, and stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir, **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own (see `RedisServer`)."""
    with running_redis(tmp_path / "redis") as server:
        yield server
