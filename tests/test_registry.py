"""Live membership in Redis: a real `redis-server`, real `trizmq serve` processes.

Services register each (topic, host, address, port) under a lease; clients
route over the live members. The figures these tests measure (join, clean
leave, `kill -9` leave, Redis restart) are printed as ``MEASURED ...`` lines
(`pytest -s` shows them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import coredis
import pytest
import trio
from cluster_app import MANY, Endpoint
from conftest import (
    SEED_RING,
    SERVE_DEADLINE,
    STOP_TIMEOUT,
    Cluster,
    RedisServer,
    eventually,
    run_process,
    running_redis,
    serving,
    subprocess_env,
    trizmq_command,
)
from test_monitor import run_app, table, until
from textual.pilot import Pilot
from trizmq_monitor.app import MonitorApp

import trizmq
from trizmq._membership import LiveMembers

# The bounds: a join within 2 s, a killed host gone within 5 s.
JOIN_WITHIN = 2.0
KILLED_GONE_WITHIN = 5.0


def measured(what: str, seconds: float) -> None:
    print(f"MEASURED {what}: {seconds:.3f} s")


@pytest.fixture
def cluster_live(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    """The seed cluster, every service registered in the test's Redis."""
    cluster = Cluster(tmp_path, serve_args=("--registry", redis_server.url(), "--grace", "1"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Extra:
    """A `trizmq serve` process of a host in no ring file, serving `compute`."""

    def __init__(self, workdir: Path, host: str, address: str, *registry_args: str) -> None:
        self.host = host
        self.address = address
        self.log = workdir / f"{host}.log"
        self.command = trizmq_command(
            "serve", str(SEED_RING), "--host", host, "--app", "cluster_app:SERVICES",
            "--topic", "compute", "--resolve", f"{host}={address}", "--grace", "1",
            *registry_args,
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; returns the time (`time.monotonic`) it logged "serving on"."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=subprocess_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + SERVE_DEADLINE
        while f"compute.{self.host} serving on" not in self.text(offset):
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.01)
        return time.monotonic()

    def text(self, offset: int = 0) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace") if self.log.exists() else ""

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def extra_host(workdir: Path, host: str, address: str, *registry_args: str) -> Iterator[Extra]:
    extra = Extra(workdir, host, address, *registry_args)
    try:
        yield extra
    finally:
        extra.stop(signal.SIGKILL)


def spare_address(cluster: Cluster, octet: int = 9) -> str:
    """An address in the cluster's own loopback network that no ring host uses."""
    return cluster.resolve["controller"].rsplit(".", 1)[0] + f".{octet}"


def live_hosts(client: trizmq.Client, topic: str = "compute") -> tuple[str, ...]:
    members = client._members
    assert isinstance(members, LiveMembers)
    try:
        return members.hosts_of(topic)
    except trizmq.RingError:
        return ()


async def test_a_host_in_no_ring_joins_round_robin_and_fanout_within_2_s(
    cluster_live: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with cluster_live.client(registry=redis_server.url()) as client:
        assert live_hosts(client) == ("controller", "computenodex")
        address = spare_address(cluster_live)
        with extra_host(tmp_path, "extra", address, "--registry", redis_server.url()) as extra:
            launched_at = time.monotonic()
            await trio.to_thread.run_sync(extra.start)
            await eventually(lambda: live_hosts(client), JOIN_WITHIN, until=lambda h: "extra" in h)
            # It registers before it says it serves: routed by then, mostly.
            measured("join (process launched to routed)", time.monotonic() - launched_at)
            assert live_hosts(client) == ("controller", "computenodex", "extra")
            answered = [(await client.call("compute", "whoami"))["host"] for _ in range(30)]
            assert {h: answered.count(h) for h in set(answered)} == {
                "controller": 10,
                "computenodex": 10,
                "extra": 10,
            }
            assert client.url("compute.extra") == f"tcp://{address}:9501"
            sent = await client.cast_many("compute", "record", [{"key": "joined"}] * 30)
            assert sent == 30
            await client.fanout("compute", "record", key="fanned")
            for host in ("controller", "computenodex", "extra"):
                count = await eventually(
                    lambda h=host: client.call(f"compute.{h}", "count", key="joined"),
                    until=lambda n: n == 10,
                )
                assert count == 10
                assert await client.call(f"compute.{host}", "count", key="fanned") == 1


async def test_a_clean_shutdown_gets_no_request_once_it_begins(
    cluster_live: Cluster, redis_server: RedisServer
) -> None:
    failures: list[BaseException] = []
    answered: list[tuple[float, str]] = []  # (sent at, answered by)

    async def keep_calling(client: trizmq.Client) -> None:
        while True:
            sent_at = time.monotonic()
            try:
                reply = await client.call("compute", "whoami", timeout=5)
            except trizmq.TrizmqError as exc:
                failures.append(exc)
            else:
                answered.append((sent_at, reply["host"]))
            await trio.sleep(0.002)

    async with (
        cluster_live.client(registry=redis_server.url()) as client,
        trio.open_nursery() as nursery,
    ):
        for _ in range(4):
            nursery.start_soon(keep_calling, client)
        await trio.sleep(0.3)
        stopping_at = time.monotonic()
        cluster_live.send_signal("computenodex", signal.SIGTERM)
        await eventually(lambda: live_hosts(client), until=lambda h: h == ("controller",))
        gone_at = time.monotonic()
        measured("clean leave (SIGTERM to dropped from routing)", gone_at - stopping_at)
        assert await trio.to_thread.run_sync(cluster_live.wait, "computenodex") == 0
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert failures == []  # nothing reached it once it refuses: nothing was refused
    assert {host for t, host in answered if t < stopping_at} == {"controller", "computenodex"}
    assert {host for t, host in answered if t > gone_at} == {"controller"}
    assert "compute.computenodex left" in cluster_live.log("computenodex")


async def test_a_killed_host_leaves_within_its_lease_and_its_callers_get_peer_lost(
    cluster_live: Cluster, redis_server: RedisServer
) -> None:
    async with cluster_live.client(registry=redis_server.url()) as client:
        await client.call("compute.computenodex", "ping", x=1)
        with trio.fail_after(KILLED_GONE_WITHIN):
            async with trio.open_nursery() as nursery:

                async def in_flight() -> None:
                    with pytest.raises(trizmq.PeerLost):
                        await client.call("compute.computenodex", "sleep", seconds=30, tag="t")

                nursery.start_soon(in_flight)
                await trio.sleep(0.2)
                killed_at = time.monotonic()
                cluster_live.kill("computenodex")
                await eventually(
                    lambda: live_hosts(client),
                    KILLED_GONE_WITHIN,
                    until=lambda h: h == ("controller",),
                )
                measured(
                    "kill -9 leave (killed to dropped from routing)", time.monotonic() - killed_at
                )
        hosts = {(await client.call("compute", "whoami"))["host"] for _ in range(4)}
        assert hosts == {"controller"}


async def redis_connections(redis_server: RedisServer) -> int:
    """How many connections the Redis has, besides the one asking."""
    async with coredis.Redis.from_url(redis_server.url(), decode_responses=True) as redis:
        return len(await redis.client_list()) - 1


async def test_a_process_of_100_services_deregisters_them_all_at_once_at_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # One `trizmq serve` of 100 topics, under a lease far longer than the test:
    # a member that did not deregister would stay.
    ring_path = tmp_path / "many.json"
    ring_path.write_text(json.dumps({f"{t}:{9600 + i}": ["seed"] for i, t in enumerate(MANY)}))
    ring = trizmq.Ring.load(ring_path)
    registry = trizmq.Registry(redis_server.url(), lease=60)
    address = redis_server.address.rsplit(".", 1)[0] + ".9"
    log = tmp_path / "many.log"
    command = trizmq_command(
        "serve", str(ring_path), "--host", "many", "--app", "cluster_app:MANY",
        "--resolve", f"many={address}", "--grace", "1",
        "--registry", redis_server.url(), "--registry-lease", "60",
    )  # fmt: skip
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
            start_new_session=True,
        )
    try:
        await eventually(
            lambda: log.read_text().count("serving on"), SERVE_DEADLINE, until=lambda n: n == 100
        )
        assert await redis_connections(redis_server) == 1  # one for the 100 services
        async with trizmq.open_client(ring, registry=registry) as client:
            assert all(live_hosts(client, topic) == ("many",) for topic in MANY)
            stopping_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await eventually(
                lambda: [t for t in MANY if live_hosts(client, t)], until=lambda left: not left
            )
            gone_at = time.monotonic()
            measured("100 services' clean leave (SIGTERM to all dropped)", gone_at - stopping_at)
            with trio.fail_after(STOP_TIMEOUT):
                assert await proc.wait() == 0
        assert await registry.members() == []
    finally:
        with trio.CancelScope(shield=True):
            if proc.poll() is None:
                proc.kill()
            await proc.wait()
    text = log.read_text()
    assert "cannot deregister" not in text
    assert sum(f"{topic}.many left" in text for topic in MANY) == 100
    assert gone_at - stopping_at < 2.0


async def test_redis_stopped_changes_nothing_and_its_return_restores_every_member(
    cluster_live: Cluster,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trizmq.registry")
    registry = trizmq.Registry(redis_server.url())
    async with cluster_live.client(registry=registry) as client:
        assert live_hosts(client) == ("controller", "computenodex")
        for _ in range(2):  # connected to both: a host that goes is known gone
            await client.call("compute", "ping", x=1)
        redis_server.stop()
        address = spare_address(cluster_live)
        with extra_host(tmp_path, "extra", address, "--registry", redis_server.url()) as extra:
            # Meanwhile: a host leaves, another one starts (neither can tell Redis).
            cluster_live.stop("computenodex")
            await trio.to_thread.run_sync(extra.start)
            for _ in range(20):  # 2 s: the client routes on what it saw
                assert (await client.call("compute", "whoami"))["host"] == "controller"
                await trio.sleep(0.1)
            assert live_hosts(client) == ("controller", "computenodex")
            await client.call("scheduler", "ping", x=1)
            warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(warnings) == 1, warnings  # once, not once a retry
            assert "routing on the last members seen" in warnings[0].getMessage()

            await trio.to_thread.run_sync(redis_server.start)
            back_at = time.monotonic()
            await eventually(
                lambda: live_hosts(client),
                registry.lease + 1,
                until=lambda h: h == ("controller", "extra"),
            )
            measured("Redis restart (back to membership seen)", time.monotonic() - back_at)
            members = await registry.members()
            assert time.monotonic() - back_at < registry.lease
            expected = {s.target for s in cluster_live.ring().services_of("controller")}
            assert {m.target for m in members} == {*expected, "compute.extra"}
            assert any("reachable again" in r.getMessage() for r in caplog.records)
            # Once for its eight services, and once back.
            assert cluster_live.log("controller").count("unreachable") == 1
            assert cluster_live.log("controller").count("reachable again") == 1
            assert (await client.call("compute.extra", "whoami"))["host"] == "extra"


async def test_two_prefixes_on_one_redis_never_see_each_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url()
    base = redis_server.address.rsplit(".", 1)[0]
    with (
        extra_host(tmp_path, "east1", f"{base}.11", "--registry", url, "--registry-prefix", "east")
        as east,
        extra_host(tmp_path, "west1", f"{base}.12", "--registry", url, "--registry-prefix", "west")
        as west,
    ):  # fmt: skip
        await trio.to_thread.run_sync(east.start)
        await trio.to_thread.run_sync(west.start)
        east_registry = trizmq.Registry(url, prefix="east")
        west_registry = trizmq.Registry(url, prefix="west")
        assert [m.target for m in await east_registry.members()] == ["compute.east1"]
        assert [m.target for m in await west_registry.members()] == ["compute.west1"]
        ring = trizmq.Ring.load(SEED_RING)
        async with trizmq.open_client(ring, registry=east_registry) as client:
            assert live_hosts(client) == ("east1",)
            with pytest.raises(trizmq.RingError, match="west1"):
                await client.call("compute.west1", "ping", x=1)
            assert (await client.call("compute", "whoami"))["host"] == "east1"


@pytest.mark.parametrize("secure", ["password", "tls", "password and tls"])
async def test_a_redis_with_a_password_or_tls_works(secure: str, tmp_path: Path) -> None:
    password = "s3cret" if "password" in secure else None
    with running_redis(tmp_path / "redis", password=password, tls="tls" in secure) as redis:
        url = redis.url()
        address = redis.address.rsplit(".", 1)[0] + ".9"
        with extra_host(tmp_path, "extra", address, "--registry", url) as extra:
            await trio.to_thread.run_sync(extra.start)
            ring = trizmq.Ring.load(SEED_RING)
            async with trizmq.open_client(ring, registry=url) as client:
                assert live_hosts(client) == ("extra",)
                assert (await client.call("compute", "whoami"))["host"] == "extra"
            assert "registered in" in extra.text()
            assert "s3cret" not in extra.text()  # the password stays out of the log
        if password is not None:
            with pytest.raises(Exception, match=r"(?i)auth"):
                await trizmq.Registry(url.replace(":s3cret@", "")).members()


# -- configured against live: trizmq stats and the monitor ----------------------------


@contextlib.contextmanager
def ring_against_registry(cluster: Cluster, url: str, workdir: Path) -> Iterator[Extra]:
    """The cluster with computenodex gone and a host of no ring registered."""
    with extra_host(workdir, "extra", spare_address(cluster), "--registry", url) as extra:
        extra.start()
        cluster.stop("computenodex")
        yield extra


async def test_stats_shows_who_is_registered_missing_and_in_no_ring(
    cluster_live: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url()
    stats = trizmq_command("stats", str(SEED_RING), *cluster_live.resolve_args, "--registry", url)
    with ring_against_registry(cluster_live, url, tmp_path):
        done = await run_process(stats)
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        assert f"registry {url} (prefix trizmq): 9 registered" in text
        assert "in the ring, not registered: compute.computenodex, network.computenodex" in text
        assert (
            f"registered, in no ring: compute.extra at {spare_address(cluster_live)}:9501" in text
        )
        extra_row = next(line for line in text.splitlines() if line.startswith("extra "))
        assert extra_row.split()[1:3] == ["compute:9501", "up"]

        done = await run_process([*stats, "--json"])
        rows = {(r["host"], r["topic"]): r for r in json.loads(done.stdout)}
        assert rows["controller", "compute"]["registered"] is True
        assert rows["computenodex", "compute"]["registered"] is False
        assert rows["extra", "compute"]["registered"] is True
        assert rows["extra", "compute"]["state"] == "up"


def test_the_monitor_shows_who_is_registered_missing_and_in_no_ring(
    cluster_live: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url()
    with ring_against_registry(cluster_live, url, tmp_path):
        app = MonitorApp(cluster_live.ring(), cluster_live.resolve, registry=trizmq.Registry(url))

        async def scenario(app: MonitorApp, pilot: Pilot[None]) -> None:
            await until(pilot, lambda: "registered" in app.sub_title, what="the registry read")
            assert (
                "9 registered, missing compute.computenodex, network.computenodex, "
                "not in the ring compute.extra"
            ) in app.sub_title
            await until(pilot, lambda: ("extra", "compute") in table(app).keys, what="extra's row")
            await until(
                pilot,
                lambda: next(r for r in app.rows if r.host == "extra").state == "up",
                what="extra's port up",
            )

        run_app(app, scenario)


# -- the library API ------------------------------------------------------------------


async def test_serve_registers_and_a_client_started_while_redis_is_down_routes_on_the_ring(
    redis_server: RedisServer,
) -> None:
    ring = trizmq.Ring.load(SEED_RING)
    base = redis_server.address.rsplit(".", 1)[0]
    resolve = {"controller": f"{base}.2", "computenodex": f"{base}.3", "extra": f"{base}.9"}
    registry = trizmq.Registry(redis_server.url())
    redis_server.stop()
    async with trizmq.open_client(ring, resolve=resolve, registry=registry) as client:
        assert live_hosts(client) == ("controller", "computenodex")  # the ring's, for now
        redis_server.start()
        async with serving(ring, "compute", Endpoint(), "extra", resolve, registry=registry):
            assert [m.target for m in await registry.members()] == ["compute.extra"]
            await eventually(lambda: live_hosts(client), until=lambda h: h == ("extra",))
            assert (await client.call("compute", "whoami"))["host"] == "extra"
        assert await registry.members() == []
        assert live_hosts(client) == ()
        with pytest.raises(trizmq.RingError, match="no live member of topic 'compute'"):
            await client.call("compute", "ping", x=1)


async def test_services_of_one_process_stay_registered_as_others_come_and_go(
    redis_server: RedisServer,
) -> None:
    ring = trizmq.Ring.load(SEED_RING)
    base = redis_server.address.rsplit(".", 1)[0]
    resolve = {host: f"{base}.{n}" for n, host in enumerate(("a", "b", "c"), start=11)}
    registry = trizmq.Registry(redis_server.url(), lease=1.5)

    async def registered() -> list[str]:
        return [m.host for m in await registry.members()]

    async with serving(ring, "compute", Endpoint(), "a", resolve, registry=registry):
        async with serving(ring, "compute", Endpoint(), "b", resolve, registry=registry):
            assert await registered() == ["a", "b"]
        assert await registered() == ["a"]
        await trio.sleep(2 * registry.lease)  # renewed on after b left
        assert await registered() == ["a"]
    assert await registered() == []
    # The last one gone, the next to start registers and renews as the first did.
    async with serving(ring, "compute", Endpoint(), "c", resolve, registry=registry):
        await trio.sleep(2 * registry.lease)
        assert await registered() == ["c"]
    assert await registered() == []


def test_a_registry_checks_its_url_and_keeps_its_password_out_of_sight() -> None:
    with pytest.raises(ValueError, match="expected redis://"):
        trizmq.Registry("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="prefix"):
        trizmq.Registry("redis://127.0.0.1:6379/0", prefix="a*")
    registry = trizmq.Registry("redis://:s3cret@127.0.0.1:6379/0")
    assert registry.display_url == "redis://:***@127.0.0.1:6379/0"
    assert "s3cret" not in repr(registry)


async def test_serve_with_a_bad_registry_url_is_a_usage_error() -> None:
    done = await run_process(
        trizmq_command(
            "serve",
            str(SEED_RING),
            "--host",
            "controller",
            "--app",
            "cluster_app:SERVICES",
            "--registry",
            "http://127.0.0.1:6379",
        )
    )
    assert done.returncode == 2
    assert b"--registry: registry 'http://127.0.0.1:6379': expected redis://" in done.stderr


async def test_a_client_following_2000_members_its_ring_lists_opens_fast_and_never_stalls(
    redis_server: RedisServer,
) -> None:
    # 2,000 members registered as their services would (the registry's keys),
    # all listed in the client's ring: it reloads and orders them every second.
    hosts = [f"node{i:04d}" for i in range(2000)]
    registry = trizmq.Registry(redis_server.url())
    redis = coredis.Redis.from_url(redis_server.url(), decode_responses=True)
    async with redis:
        await redis.mset(
            {
                registry.key("compute", host): json.dumps(
                    {"topic": "compute", "host": host, "address": "127.0.0.9", "port": 9501}
                )
                for host in hosts
            }
        )
    ring = trizmq.Ring.from_mapping({"compute:9501": hosts})
    started = trio.current_time()
    async with trizmq.open_client(ring, registry=registry) as client:
        opened = trio.current_time() - started
        longest = 0.0
        end = trio.current_time() + 2.5 * registry.renew_interval  # two reloads at least
        while (now := trio.current_time()) < end:
            await trio.sleep(0.01)
            longest = max(longest, trio.current_time() - now - 0.01)
        assert live_hosts(client) == tuple(hosts)
    assert opened < 2.0
    assert longest < 0.5
