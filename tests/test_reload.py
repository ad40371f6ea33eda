"""Changing the ring under running services and clients, without a restart.

`trizmq serve` reloads its ring file on SIGHUP: topics added for its host
start, removed ones stop after their grace period, a topic whose port changed
moves, and the others serve on without a failed call. A client opened on a
ring file follows it.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
from cluster_app import Endpoint
from conftest import APP, Cluster, eventually, serving, trizmq_command, unique_resolve

import trizmq
from trizmq.stats import StatsBoard, watch_ring

GRACE = 1.0
# The controller's topics in the tests' rings; cluster_app provides every seed topic.
RING = {"compute:9501": ["controller"], "scheduler:9506": ["controller"]}


def write_ring(path: Path, ring: Mapping[str, list[str]]) -> None:
    """Replace the ring file as a deployment tool would: a new file renamed over the old."""
    new = path.with_suffix(".new")
    new.write_text(json.dumps(ring))
    new.replace(path)


class ReloadCluster(Cluster):
    """The controller's `trizmq serve`, serving every topic of the app its ring lists."""

    def command(self, host: str) -> list[str]:
        return trizmq_command(
            "serve", str(self.ring_path), "--host", host, "--app", APP,
            "--grace", str(GRACE), *self.resolve_args,
        )  # fmt: skip

    def reload(self, ring: Mapping[str, list[str]]) -> None:
        """Write `ring` to the ring file and send SIGHUP."""
        write_ring(self.ring_path, ring)
        self.send_signal("controller", signal.SIGHUP)

    async def logged(self, text: str, times: int = 1, timeout: float = 10.0) -> None:
        """Wait until the controller's log has `text`, `times` times."""
        await eventually(lambda: self.log("controller").count(text) >= times, timeout)

    def client_of(
        self, ring: Mapping[str, list[str]]
    ) -> AbstractAsyncContextManager[trizmq.Client]:
        """A client of `ring`, with the cluster's addresses."""
        return trizmq.open_client(trizmq.Ring.from_mapping(ring), resolve=self.resolve)

    def url(self, port: int) -> str:
        """The controller's endpoint on `port`."""
        return f"tcp://{self.resolve['controller']}:{port}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ReloadCluster]:
    """The controller alone, serving `RING` from a ring file of the test's own."""
    ring_path = tmp_path / "ring.json"
    write_ring(ring_path, RING)
    running = ReloadCluster(tmp_path, ring_path=ring_path, hosts=["controller"])
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def port_closed(address: str, port: int) -> bool:
    """Whether nothing accepts TCP connections on `address:port`."""
    try:
        stream = await trio.open_tcp_stream(address, port)
    except OSError:
        return True
    await stream.aclose()
    return False


# -- trizmq serve and SIGHUP ---------------------------------------------------------


async def sleep_in_flight(
    client: trizmq.Client, nursery: trio.Nursery, seconds: float
) -> list[str]:
    """Start a call of scheduler.controller's `sleep` in `nursery`; return once
    its handler runs, with the list its result will be put in."""
    results: list[str] = []

    async def sleep() -> None:
        results.append(
            await client.call("scheduler.controller", "sleep", seconds=seconds, tag="t", timeout=10)
        )

    nursery.start_soon(sleep)
    await eventually(
        lambda: client.call("scheduler.controller", "state", tag="t"),
        until=lambda state: state == "started",
    )
    return results


async def test_sighup_starts_a_topic_added_for_the_host(node: ReloadCluster) -> None:
    added = {**RING, "cert:9507": ["controller"]}
    with trio.fail_after(20):
        node.reload(added)
        await node.logged(f"trizmq: cert.controller serving on {node.url(9507)}")
        async with node.client_of(added) as client:
            assert await client.call("cert.controller", "ping", x=1, timeout=5) == 2


async def test_sighup_stops_a_removed_topic_once_its_call_in_flight_completes(
    node: ReloadCluster,
) -> None:
    address = node.resolve["controller"]
    with trio.fail_after(20):
        async with node.client() as client:
            async with trio.open_nursery() as nursery:
                results = await sleep_in_flight(client, nursery, 0.5)
                node.reload({"compute:9501": ["controller"]})
            assert results == ["t"]
            await node.logged(f"trizmq: scheduler.controller stopped on tcp://{address}:9506")
            await eventually(lambda: port_closed(address, 9506))
            # A client of the old ring: as for any service that stopped.
            with pytest.raises(trizmq.TrizmqError):
                await client.call("scheduler.controller", "ping", x=1, timeout=1)
    log = node.log("controller")
    assert "scheduler.controller: no longer in the ring for this host, stopping" in log
    assert "compute.controller stopped" not in log


async def test_a_call_longer_than_the_grace_on_a_removed_topic_gets_service_shutdown(
    node: ReloadCluster,
) -> None:
    with trio.fail_after(20):
        async with node.client() as client:

            async def remove_once_started() -> None:
                await eventually(
                    lambda: client.call("scheduler.controller", "state", tag="long"),
                    until=lambda state: state == "started",
                )
                node.reload({"compute:9501": ["controller"]})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(remove_once_started)
                with pytest.raises(trizmq.ServiceShutdown):
                    await client.call(
                        "scheduler.controller", "sleep", seconds=30, tag="long", timeout=30
                    )


async def test_a_topic_added_back_while_it_stops_serves_again_once_its_calls_end(
    node: ReloadCluster,
) -> None:
    with trio.fail_after(20):
        async with node.client() as client:
            async with trio.open_nursery() as nursery:
                results = await sleep_in_flight(client, nursery, 0.8)
                node.reload({"compute:9501": ["controller"]})
                await node.logged("scheduler.controller: no longer in the ring for this host")
                node.reload(RING)
            assert results == ["t"]
            await node.logged("scheduler.controller serving on", times=2)
            # Its connection went with the old instance: a reconnect refused just
            # before the new one bound would fail a call that does not wait.
            ping = await client.call(
                "scheduler.controller", "ping", x=1, timeout=5, wait_for_ready=True
            )
            assert ping == 2
    log = node.log("controller")
    assert log.index("scheduler.controller stopped") < log.rindex("scheduler.controller serving on")


async def test_sighup_moves_a_topic_whose_port_changed(node: ReloadCluster) -> None:
    moved = {"compute:9501": ["controller"], "scheduler:9516": ["controller"]}
    address = node.resolve["controller"]
    with trio.fail_after(20):
        node.reload(moved)
        await node.logged(f"trizmq: scheduler.controller stopped on tcp://{address}:9506")
        async with node.client_of(moved) as client:
            assert await client.call("scheduler.controller", "ping", x=1, timeout=5) == 2
        await eventually(lambda: port_closed(address, 9506))
    log = node.log("controller")
    # The new port serves before the old one stops.
    started = log.index(f"trizmq: scheduler.controller serving on tcp://{address}:9516")
    assert started < log.index("scheduler.controller: moved to port 9516, stopping on")


async def test_the_other_topics_serve_through_reloads_without_a_failed_call(
    node: ReloadCluster,
) -> None:
    address = node.resolve["controller"]
    results: list[int] = []
    with trio.fail_after(30):
        async with node.client() as client:

            async def steady(target: str) -> None:
                while True:
                    results.append(await client.call(target, "ping", x=len(results), timeout=5))
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                for target in ("compute.controller", "compute", "scheduler.controller"):
                    nursery.start_soon(steady, target)
                for ring, line, times in (
                    ({**RING, "cert:9507": ["controller"]}, "cert.controller serving on", 1),
                    (RING, f"cert.controller stopped on tcp://{address}:9507", 1),
                    # Back on the port it just left: bound again once ZeroMQ let it go.
                    ({**RING, "cert:9507": ["controller"]}, "cert.controller serving on", 2),
                ):
                    node.reload(ring)
                    await node.logged(line, times)
                    await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
    # Every call returned (a failed one would have raised out of the nursery).
    assert len(results) > 50
    log = node.log("controller")
    assert log.count("compute.controller serving on") == 1
    assert log.count("scheduler.controller serving on") == 1


async def test_an_invalid_ring_on_sighup_is_refused_and_the_old_one_serves_on(
    node: ReloadCluster,
) -> None:
    with trio.fail_after(20):
        node.ring_path.write_text('{"compute:9501": ["controller"],')
        node.send_signal("controller", signal.SIGHUP)
        await node.logged("ring not reloaded, serving on as before")
        async with node.client_of(RING) as client:  # the ring loaded at start
            assert await client.call("scheduler.controller", "ping", x=1, timeout=5) == 2
    assert (
        f"trizmq: {node.ring_path}: invalid JSON at line 1 column 33: Expecting "
        "property name enclosed in double quotes; ring not reloaded, serving on as before"
    ) in node.log("controller")
    assert node.process("controller").poll() is None


async def test_a_ring_leaving_the_host_nothing_to_serve_is_refused(node: ReloadCluster) -> None:
    with trio.fail_after(20):
        node.reload({"compute:9501": ["computenodex"]})
        await node.logged(
            f"trizmq: {node.ring_path}: host 'controller' is not in the ring (hosts: "
            "computenodex); ring not reloaded, serving on as before"
        )
        async with node.client_of(RING) as client:
            assert await client.call("compute.controller", "ping", x=1, timeout=5) == 2


async def test_a_topic_added_that_the_app_does_not_provide_is_logged(node: ReloadCluster) -> None:
    with trio.fail_after(20):
        node.reload({**RING, "billing:9520": ["controller"]})
        await node.logged(
            f"trizmq: billing.controller: listed by the ring, not served: {APP} does not provide it"
        )
    assert "billing.controller serving on" not in node.log("controller")


async def test_serve_logs_an_app_topic_the_ring_does_not_list_for_the_host(
    node: ReloadCluster,
) -> None:
    # cluster_app provides every seed topic; the ring lists two for the controller.
    log = node.log("controller")
    assert "trizmq: cert.controller: not listed by the ring for this host, not served\n" in log
    assert "cert.controller serving on" not in log


# -- a client following a ring file ---------------------------------------------------


@pytest.fixture
def two_hosts() -> dict[str, str]:
    return unique_resolve(["a", "b"])


async def hosts_reached(client: trizmq.Client, calls: int = 6) -> set[str]:
    """The hosts that `calls` calls to "compute" reached."""
    return {(await client.call("compute", "whoami", timeout=5))["host"] for _ in range(calls)}


async def test_a_client_following_a_ring_file_routes_to_a_host_added_to_it(
    tmp_path: Path, two_hosts: dict[str, str]
) -> None:
    path = tmp_path / "ring.json"
    write_ring(path, {"compute:9501": ["a"]})
    both = trizmq.Ring.from_mapping({"compute:9501": ["a", "b"]})
    with trio.fail_after(20):
        async with (
            serving(both, "compute", Endpoint(), "a", two_hosts),
            serving(both, "compute", Endpoint(), "b", two_hosts),
            trizmq.open_client(path, resolve=two_hosts) as client,
        ):
            assert await hosts_reached(client) == {"a"}
            write_ring(path, {"compute:9501": ["a", "b"]})
            await eventually(lambda: hosts_reached(client), until=lambda hosts: hosts == {"a", "b"})
            assert client.ring.hosts_of("compute") == ("a", "b")


async def test_a_client_following_a_ring_file_stops_routing_to_a_removed_host(
    tmp_path: Path, two_hosts: dict[str, str]
) -> None:
    path = tmp_path / "ring.json"
    write_ring(path, {"compute:9501": ["a", "b"]})
    both = trizmq.Ring.from_mapping({"compute:9501": ["a", "b"]})
    board = StatsBoard(trizmq.Ring.from_mapping({"compute:9501": ["a"]}), two_hosts)
    view = board.ports[("a", "compute")]
    with trio.fail_after(20):
        async with (
            serving(both, "compute", Endpoint(), "a", two_hosts),
            serving(both, "compute", Endpoint(), "b", two_hosts),
            trio.open_nursery() as nursery,
        ):
            await nursery.start(watch_ring, board)
            async with trizmq.open_client(path, resolve=two_hosts) as client:
                assert await hosts_reached(client) == {"a", "b"}
                # The stats subscription and the client.
                await eventually(lambda: view.data and view.data["peers"] == 2)
                async with trio.open_nursery() as calls:
                    results: list[str] = []

                    async def sleep_on_a() -> None:
                        result = await client.call("compute.a", "sleep", seconds=1.5, tag="t")
                        results.append(result)

                    calls.start_soon(sleep_on_a)
                    await trio.sleep(0.1)
                    write_ring(path, {"compute:9501": ["b"]})
                    await eventually(lambda: hosts_reached(client), until=lambda h: h == {"b"})
                    # In flight when the host left the ring: it still runs, then returns.
                    assert results == []
                    assert view.data["peers"] == 2
                assert results == ["t"]
                # Its calls done, the client's connection to the removed host closes.
                await eventually(lambda: view.data["peers"] == 1)
            nursery.cancel_scope.cancel()


async def test_a_client_following_a_ring_file_keeps_its_ring_when_the_file_turns_invalid(
    tmp_path: Path, two_hosts: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ring.json"
    write_ring(path, {"compute:9501": ["a"]})
    ring = trizmq.Ring.load(path)
    with trio.fail_after(20):
        async with (
            serving(ring, "compute", Endpoint(), "a", two_hosts),
            trizmq.open_client(path, resolve=two_hosts) as client,
        ):
            with caplog.at_level(logging.WARNING, logger="trizmq.client"):
                path.write_text('{"compute:9501": "a"}')
                await eventually(lambda: caplog.records)
                await trio.sleep(2.5)  # more than two looks at the unchanged file
            assert client.ring == ring
            assert await hosts_reached(client) == {"a"}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: key 'compute:9501': hosts must be a list of host names"
        " or an object of pools, not a string; "
        "still routing by the ring loaded before"
    ]


async def test_a_client_of_a_ring_file_that_does_not_load_raises_ring_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(trizmq.RingError, match="ring file not found"):
        async with trizmq.open_client(tmp_path / "missing.json"):
            pass
