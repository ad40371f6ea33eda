"""A service out of descriptors says so, and serves again once connections close."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import zmq
from conftest import Cluster, eventually

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
