"""Stopping a service with work in flight: short handlers finish, long ones are told."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio
from cluster_app import Endpoint
from conftest import Cluster, eventually, serving, unique_resolve

import trizmq

GRACE = 1.0


async def started(client: trizmq.Client, target: str, tag: str) -> None:
    """Return once the `sleep` call tagged `tag` runs on `target`."""
    await eventually(
        lambda: client.call(target, "state", tag=tag), until=lambda state: state == "started"
    )


@pytest.mark.serve_args("--grace", str(GRACE))
async def test_a_short_call_in_flight_at_sigterm_still_returns_its_result(
    fresh_cluster: Cluster,
) -> None:
    result: list[str] = []
    with trio.fail_after(15):
        async with fresh_cluster.client() as client:

            async def call() -> None:
                result.append(
                    await client.call(
                        "compute.controller", "sleep", seconds=0.3, tag="short", timeout=10
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await started(client, "compute.controller", "short")
                fresh_cluster.send_signal("controller", signal.SIGTERM)
        code = await trio.to_thread.run_sync(fresh_cluster.wait, "controller")
    assert result == ["short"]
    assert code == 0


@pytest.mark.serve_args("--grace", str(GRACE))
async def test_a_long_call_in_flight_at_sigterm_gets_service_shutdown_after_the_grace(
    fresh_cluster: Cluster,
) -> None:
    signalled: list[float] = []
    with trio.fail_after(15):
        async with fresh_cluster.client() as client:

            async def terminate_once_started() -> None:
                await started(client, "network.computenodex", "long")
                signalled.append(trio.current_time())
                fresh_cluster.send_signal("computenodex", signal.SIGTERM)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(terminate_once_started)
                with pytest.raises(trizmq.ServiceShutdown) as caught:
                    await client.call(
                        "network.computenodex", "sleep", seconds=30, tag="long", timeout=30
                    )
            waited = trio.current_time() - signalled[0]
        code = await trio.to_thread.run_sync(fresh_cluster.wait, "computenodex")
    assert (caught.value.topic, caught.value.host) == ("network", "computenodex")
    assert GRACE * 0.9 <= waited < GRACE + 3
    assert code == 0


@pytest.mark.serve_args("--grace", str(GRACE))
def test_a_node_exits_0_after_sigterm(fresh_cluster: Cluster) -> None:
    assert fresh_cluster.stop("controller") == {"controller": 0}
    assert "trizmq: SIGTERM, stopping" in fresh_cluster.log("controller")


async def test_a_client_reaches_a_node_again_after_it_restarts(fresh_cluster: Cluster) -> None:
    async def ping() -> int | None:
        try:
            answer: int = await client.call("compute.computenodex", "ping", x=1, timeout=1)
        except (trizmq.CallTimeout, trizmq.PeerLost):
            return None
        return answer

    with trio.fail_after(30):
        async with fresh_cluster.client() as client:
            assert await ping() == 2
            await trio.to_thread.run_sync(fresh_cluster.restart, "computenodex")
            assert await eventually(ping, timeout=5) == 2


async def test_cancelling_serve_lets_a_short_handler_finish_and_stops_a_long_one() -> None:
    resolve = unique_resolve(["node"])
    ring = trizmq.Ring.from_mapping({"compute:9601": ["node"]})
    endpoint = Endpoint()
    outcomes: dict[str, Any] = {}
    with trio.fail_after(15):
        async with (
            serving(ring, "compute", endpoint, "node", resolve, grace_period=GRACE) as service,
            trizmq.open_client(ring, resolve=resolve) as client,
        ):

            async def call(tag: str, seconds: float) -> None:
                try:
                    outcomes[tag] = await client.call(
                        "compute", "sleep", seconds=seconds, tag=tag, timeout=30
                    )
                except trizmq.ServiceShutdown as exc:
                    outcomes[tag] = exc

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "short", 0.3)
                nursery.start_soon(call, "long", 30)
                await eventually(lambda: len(endpoint.states) == 2)
                stopped_at = trio.current_time()
                service.cancel()
            waited = trio.current_time() - stopped_at
    assert outcomes["short"] == "short"
    assert isinstance(outcomes["long"], trizmq.ServiceShutdown)
    assert endpoint.states == {"short": "finished", "long": "cancelled"}
    assert GRACE * 0.9 <= waited < GRACE + 3


async def test_a_call_arriving_in_the_grace_period_is_refused_at_once() -> None:
    resolve = unique_resolve(["node"])
    ring = trizmq.Ring.from_mapping({"compute:9601": ["node"]})
    endpoint = Endpoint()
    with trio.fail_after(15):
        async with (
            serving(ring, "compute", endpoint, "node", resolve, grace_period=GRACE) as service,
            trizmq.open_client(ring, resolve=resolve) as client,
            trio.open_nursery() as nursery,
        ):

            async def long_call() -> None:
                with pytest.raises(trizmq.ServiceShutdown):
                    await client.call("compute", "sleep", seconds=30, tag="long", timeout=30)

            nursery.start_soon(long_call)
            await eventually(lambda: endpoint.states.get("long") == "started")
            service.cancel()
            await trio.sleep(0.1)  # the service is now in its grace period
            asked = trio.current_time()
            with pytest.raises(trizmq.ServiceShutdown, match="stopping"):
                await client.call("compute", "ping", x=1, timeout=30)
            assert trio.current_time() - asked < GRACE / 2
