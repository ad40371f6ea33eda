"""Host names and addresses: fully qualified ring hosts, IPv6 addresses, and
name lookups that never block the Trio thread and follow an address change."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import trio
from cluster_app import Endpoint
from conftest import Cluster, eventually, run_process, serving, trizmq_command, unique_resolve

import trizmq
from trizmq._client import RERESOLVE_INTERVAL

FQDN_HOSTS = ("node1.example.com", "node2.example.com")


def fqdn_ring(tmp_path: Path) -> Path:
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"compute:9501": list(FQDN_HOSTS)}), encoding="utf-8")
    return path


def mapped(address: str) -> str:
    """The IPv4-mapped IPv6 form of a loopback address: IPv6 on the way, 127/8 at the end."""
    return f"::ffff:{address}"


class Resolver(trio.abc.HostnameResolver):
    """A name service the test controls: `addresses` answers, after `delay` seconds."""

    def __init__(self, addresses: dict[str, str], delay: float = 0.0) -> None:
        self.addresses = addresses
        self.delay = delay
        self.asked: list[str] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        await trio.sleep(self.delay)
        if name not in self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.addresses[name], 0))]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


# -- fully qualified host names ---------------------------------------------------


async def test_services_on_fully_qualified_hosts_serve_and_answer(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, ring_path=fqdn_ring(tmp_path))
    command = trizmq_command(
        "call", str(cluster.ring_path), "compute.node1.example.com", "ping", "--arg", "x=1",
    )  # fmt: skip
    await trio.to_thread.run_sync(cluster.start)
    try:
        with trio.fail_after(20):
            async with cluster.client() as client:
                direct = await client.call("compute.node2.example.com", "whoami")
                hosts = {(await client.call("compute", "whoami"))["host"] for _ in range(4)}
            done = await run_process([*command, *cluster.resolve_args])
    finally:
        await trio.to_thread.run_sync(cluster.stop)
    assert direct["host"] == "node2.example.com"
    assert hosts == set(FQDN_HOSTS)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"2\n", b"")


# -- IPv6 -------------------------------------------------------------------------


async def test_a_client_reaches_a_service_on_an_ipv6_address() -> None:
    # An IPv4-mapped IPv6 address: the IPv6 code path all the way (brackets in
    # the URL, ZMQ_IPV6 on both sockets), the packets to a 127/8 address.
    ring = trizmq.Ring.from_mapping({"compute:9501": ["node6"]})
    resolve = {"node6": mapped(unique_resolve(["node6"])["node6"])}
    with trio.fail_after(10):
        async with (
            serving(ring, "compute", Endpoint(), "node6", resolve),
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            assert await client.call("compute.node6", "ping", x=1) == 2
            url = client.url("compute.node6")
    assert url == f"tcp://[{resolve['node6']}]:9501"


async def test_the_url_of_an_ipv6_host_puts_the_address_in_brackets_without_connecting() -> None:
    ring = trizmq.Ring.from_mapping({"compute:9501": ["node6"]})
    async with trizmq.open_client(ring, resolve={"node6": "::1"}) as client:
        assert client.url("compute.node6") == "tcp://[::1]:9501"
        assert client.stats() == {}  # url() made no connection


# -- lookups ----------------------------------------------------------------------


async def test_a_slow_system_lookup_runs_in_a_worker_thread(monkeypatch: Any) -> None:
    ring = trizmq.Ring.from_mapping({"compute:9501": ["node1.example.com"]})
    address = unique_resolve(["node1.example.com"])["node1.example.com"]
    real = socket.getaddrinfo
    threads: list[int] = []

    def slow_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("node1.example.com", b"node1.example.com"):
            return real(host, port, *args, **kwargs)
        flags = kwargs.get("flags", args[3] if len(args) > 3 else 0)
        if flags & socket.AI_NUMERICHOST:  # Trio's own check for a numeric address
            raise socket.gaierror(socket.EAI_NONAME, "not numeric")
        threads.append(threading.get_ident())
        time.sleep(0.5)  # a resolver that blocks, as the system's may
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    with trio.fail_after(10):
        async with (
            serving(
                ring, "compute", Endpoint(), "node1.example.com", {"node1.example.com": address}
            ),
            trizmq.open_client(ring) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(tick)
            answer = await client.call("compute.node1.example.com", "ping", x=1)
            nursery.cancel_scope.cancel()
    assert answer == 2
    assert threads and threading.get_ident() not in threads
    assert ticks >= 20  # 10 ms ticks went on through the 0.5 s lookup


async def test_a_slow_lookup_stalls_no_other_task() -> None:
    ring = trizmq.Ring.from_mapping({"compute:9501": ["node1.example.com"]})
    resolve = unique_resolve(["node1.example.com"])
    resolver = Resolver(resolve, delay=1.0)
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(10):
            async with (
                serving(ring, "compute", Endpoint(), "node1.example.com", resolve),
                trizmq.open_client(ring) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(
                    functools.partial(client.call, "compute.node1.example.com", "ping", x=1)
                )
                began = trio.current_time()
                await trio.sleep(0.1)  # a lookup in progress does not delay this
                slept = trio.current_time() - began
                answer = await client.call("compute.node1.example.com", "ping", x=1)
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert resolver.asked[0] == "node1.example.com"
    assert slept < 0.5
    assert answer == 2


async def test_a_host_whose_address_changes_is_reached_at_its_new_address() -> None:
    host = "node1.example.com"
    ring = trizmq.Ring.from_mapping({"compute:9501": [host]})
    old, new = unique_resolve([host])[host], unique_resolve([host])[host]
    resolver = Resolver({host: old})
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(20):
            async with trizmq.open_client(ring, heartbeat=1.0) as client:
                async with serving(ring, "compute", Endpoint(), host, {host: old}):
                    before = await client.call(f"compute.{host}", "whoami")
                # Once the client has seen the old address go: a call handed over
                # just as its connection closes is lost with it (PeerLost).
                await eventually(lambda: not client.connected(f"compute.{host}"))
                resolver.addresses[host] = new
                async with serving(ring, "compute", Endpoint(), host, {host: new}):
                    moved = trio.current_time()
                    after = await client.call(
                        f"compute.{host}", "whoami", wait_for_ready=True, timeout=15
                    )
                    took = trio.current_time() - moved
                    url = client.url(f"compute.{host}")
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert (before["host"], after["host"]) == (host, host)
    assert url == f"tcp://{new}:9501"
    assert resolver.asked.count(host) >= 2
    assert took < RERESOLVE_INTERVAL + 5  # the documented bound, generously
