"""What a client counts, and batched casts."""

from __future__ import annotations

import random
import secrets

import pytest
import trio
import trio.testing
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


async def test_calls_waiting_behind_a_call_that_times_out_still_get_their_replies(
    cluster: Cluster,
) -> None:
    # The first call reads the socket for the calls after it: its timeout must
    # pass the reading on to them.
    answers: list[str] = []
    async with cluster.client() as client:

        async def first() -> None:
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute.controller", "sleep", seconds=3, tag="a", timeout=0.3)

        async def next_one(tag: str) -> None:
            answers.append(
                await client.call("compute.controller", "sleep", seconds=0.8, tag=tag, timeout=5)
            )

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                for i in range(5):
                    nursery.start_soon(next_one, f"next-{i}")
    assert sorted(answers) == [f"next-{i}" for i in range(5)]


async def test_a_late_reply_is_counted_unmatched_by_the_next_call(cluster: Cluster) -> None:
    async with cluster.client() as client:
        with trio.fail_after(10):
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute.controller", "sleep", seconds=0.2, tag="b", timeout=0.05)
            await trio.sleep(0.4)
            await client.call("compute.controller", "ping", x=1)
    assert client.stats()["compute.controller"]["unmatched"] == 1


async def test_calls_cancelled_at_random_moments_leave_every_other_call_its_own_answer(
    cluster: Cluster,
) -> None:
    # Callers give up at random moments while others wait, lead or are being
    # answered, and handlers either answer at once or wait first: every call
    # that is not given up gets its own answer, and the client works after.
    rng = random.Random(6)
    answered: list[bool] = []
    gave_up = {"impatient": 0, "patient": 0}
    async with cluster.client() as client:

        async def one(i: int) -> None:
            seconds = rng.choice([0.0, 0.0, 0.002, 0.01])
            patience = rng.choice([0.001, 0.005, 0.02, 10.0])
            with trio.move_on_after(patience) as scope:
                if seconds:
                    tag = f"storm-{i}"
                    got = await client.call("compute.controller", "sleep", seconds=seconds, tag=tag)
                    answered.append(got == tag)
                else:
                    answered.append(await client.call("compute.controller", "echo", value=i) == i)
            gave_up["patient" if patience == 10.0 else "impatient"] += scope.cancelled_caught

        with trio.fail_after(60):
            for _ in range(4):
                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
            after = await client.call("compute.controller", "echo", value="after")
    assert all(answered)
    assert len(answered) + sum(gave_up.values()) == 400
    assert gave_up["patient"] == 0 < gave_up["impatient"]
    assert after == "after"
