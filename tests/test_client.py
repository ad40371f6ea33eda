"""What a client counts, and batched casts."""

from __future__ import annotations

import secrets

import pytest
import trio
from conftest import Cluster, eventually

import trizmq


async def test_cast_many_sends_one_cast_per_item_round_robin(cluster: Cluster) -> None:
    key = f"many-{secrets.token_hex(4)}"
    async with cluster.client() as client:
        sent = await client.cast_many("compute", "record", [{"key": key}] * 10)
        counts = [
            await eventually(
                lambda host=host: client.call(f"compute.{host}", "count", key=key),
                until=lambda n: n == 5,
            )
            for host in ("controller", "computenodex")
        ]
    assert (sent, counts) == (10, [5, 5])


async def test_a_client_counts_its_side_per_target(cluster: Cluster) -> None:
    async with cluster.client() as client:
        with trio.fail_after(10):
            await client.call("compute.controller", "ping", x=1)
            await client.cast("compute.controller", "ping", x=1)
            await client.fanout("network", "ping", x=1)
            with pytest.raises(trizmq.RemoteError):
                await client.call("compute.controller", "fail", message="no")
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute.controller", "sleep", seconds=5, tag="t", timeout=0.1)
        stats = client.stats()
    assert stats["compute.controller"] == {
        "call": 3,
        "reply": 1,
        "error": 1,
        "timeout": 1,
        "cast": 1,
    }
    assert stats["network.controller"] == {"fanout": 1}
    assert stats["network.computenodex"] == {"fanout": 1}


async def test_a_result_that_does_not_fit_returns_is_a_type_error_naming_it(
    cluster: Cluster,
) -> None:
    async with cluster.client() as client:
        with pytest.raises(TypeError, match="does not fit returns=int"):
            await client.call("compute.controller", "echo", value="forty-two", returns=int)
