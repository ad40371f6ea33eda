"""A service out of descriptors says so, and serves again once connections close; a client
is limited by descriptors, not by libzmq's default count of sockets."""

from __future__ import annotations

import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import zmq
from conftest import Cluster, eventually, unique_resolve

import trizmq

#: Descriptors the service process may hold: enough for its sockets, not for
#: the connections below.
LIMIT = 96
CONNECTIONS = 150


class LimitedCluster(Cluster):
    """The controller alone, its `trizmq serve` run under a hard descriptor limit."""

    def command(self, host: str) -> list[str]:
        return ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--", *super().command(host)]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Cluster]:
    if shutil.which("prlimit") is None:
        pytest.fail("prlimit (util-linux) is needed to lower a service's descriptor limit")
    running = LimitedCluster(tmp_path, hosts=("controller",))
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def test_a_service_out_of_descriptors_logs_it_and_serves_once_they_are_freed(
    limited: Cluster,
) -> None:
    context = zmq.Context()
    flood = []
    try:
        for _ in range(CONNECTIONS):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(limited.addresses["compute.controller"])
            flood.append(sock)
        log = await eventually(
            lambda: limited.log("controller"), 10, until=lambda text: "cannot accept" in text
        )
        assert "Too many open files" in log
    finally:
        for sock in flood:
            sock.close()
        context.term()
    with trio.fail_after(30):
        async with limited.client(timeout=2) as client:
            answer = await eventually(lambda: _ping(client), 20, until=lambda a: a == "pong")
    assert answer == "pong"
    assert limited.process("controller").poll() is None


async def _ping(client: trizmq.Client) -> object:
    try:
        return await client.call("compute.controller", "echo", value="pong")
    except (trizmq.CallTimeout, trizmq.PeerLost) as exc:
        return exc


async def test_a_client_reaches_more_ports_than_libzmqs_default_socket_count_allows() -> None:
    # libzmq allows 1023 sockets a context unless told otherwise, and a peer
    # takes three (its DEALER and the monitor's pair): about 340 peers.
    hosts = [f"h{i}" for i in range(400)]
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * len(hosts) + 200:
        pytest.skip("the descriptor limit (ulimit -n) is too low for 400 peers")
    address = unique_resolve(["controller"])["controller"]  # nothing listens there
    ring = trizmq.Ring.from_mapping({"compute:9501": hosts})
    async with trizmq.open_client(ring, resolve=dict.fromkeys(hosts, address)) as client:
        for host in hosts:
            assert not client.connected(f"compute.{host}")  # a peer, connecting
        assert len(client.stats()) == len(hosts)
