"""RPC between real `trizmq serve` processes of the seed cluster, over loopback TCP."""

from __future__ import annotations

import functools
import math
import random
import secrets
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import zmq
from cluster_app import BootRequest, Disk, Instance
from conftest import Cluster, eventually, run_process

import trizmq
from trizmq._wire import Call, Casts, Error, Replies, Reply, decode, encode


def unique(prefix: str) -> str:
    """A key or tag no other test uses, since the module's cluster is shared."""
    return f"{prefix}-{secrets.token_hex(4)}"


async def counts(client: trizmq.Client, topic: str, key: str) -> dict[str, int]:
    """How many messages each host of `topic` counted under `key`."""
    hosts = client.ring.hosts_of(topic)
    return {host: await client.call(f"{topic}.{host}", "count", key=key) for host in hosts}


# -- call, cast and fanout from the test process ------------------------------


async def test_call_returns_the_result_of_the_remote_method(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            assert await client.call("compute", "ping", x=41) == 42


async def test_calls_to_a_topic_alternate_between_its_hosts(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            hosts = [(await client.call("compute", "whoami"))["host"] for _ in range(4)]
    assert hosts == ["controller", "computenodex", "controller", "computenodex"]


async def test_call_to_topic_dot_host_reaches_only_that_host(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            answers = [await client.call("compute.computenodex", "whoami") for _ in range(6)]
    assert {(a["host"], a["topic"]) for a in answers} == {("computenodex", "compute")}


async def test_round_robin_spreads_casts_evenly_over_the_hosts_of_a_topic(
    cluster: Cluster,
) -> None:
    key = unique("rr")
    with trio.fail_after(10):
        async with cluster.client() as client:
            for _ in range(20):
                await client.cast("compute", "record", key=key)
            seen = await eventually(
                lambda: counts(client, "compute", key), until=lambda c: sum(c.values()) >= 20
            )
    assert seen == {"controller": 10, "computenodex": 10}


async def test_cast_to_topic_dot_host_reaches_only_that_host(cluster: Cluster) -> None:
    key = unique("direct")
    with trio.fail_after(10):
        async with cluster.client() as client:
            for _ in range(5):
                await client.cast("compute.computenodex", "record", key=key)
            seen = await eventually(
                lambda: counts(client, "compute", key), until=lambda c: sum(c.values()) >= 5
            )
            kinds = await client.call("compute.computenodex", "kinds_of", key=key)
    assert seen == {"controller": 0, "computenodex": 5}
    assert kinds == ["cast"] * 5


async def test_fanout_reaches_every_host_of_the_topic_exactly_once(cluster: Cluster) -> None:
    key = unique("fanout")
    with trio.fail_after(10):
        async with cluster.client() as client:
            await client.fanout("network", "record", key=key)
            await eventually(
                lambda: counts(client, "network", key), until=lambda c: all(c.values())
            )
            # A call on each connection after the fanout: a duplicate would be counted by now.
            seen = await counts(client, "network", key)
            kinds = await client.call("network.controller", "kinds_of", key=key)
    assert seen == {"controller": 1, "computenodex": 1}
    assert kinds == ["fanout"]


# -- service to service, within a node and across nodes -----------------------


async def test_a_service_calls_another_service_on_its_own_node(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            answer = await client.call(
                "compute.controller", "relay", target="scheduler", method="whoami", args={}
            )
    assert (answer["topic"], answer["host"]) == ("scheduler", "controller")
    assert answer["caller"].startswith("relay:compute.controller/")


async def test_a_service_calls_a_service_on_another_node(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            answer = await client.call(
                "network.computenodex", "relay", target="conductor", method="ping", args={"x": 6}
            )
    assert answer == 7


async def test_a_service_casts_to_a_service_on_another_node(cluster: Cluster) -> None:
    key = unique("relay-cast")
    with trio.fail_after(10):
        async with cluster.client() as client:
            await client.call(
                "compute.controller",
                "relay",
                target="network.computenodex",
                method="record",
                args={"key": key},
                kind="cast",
            )
            seen = await eventually(
                lambda: counts(client, "network", key), until=lambda c: sum(c.values()) >= 1
            )
    assert seen == {"controller": 0, "computenodex": 1}


async def test_a_service_fans_out_to_every_host_of_a_topic(cluster: Cluster) -> None:
    key = unique("relay-fanout")
    with trio.fail_after(10):
        async with cluster.client() as client:
            await client.call(
                "compute.computenodex",
                "relay",
                target="compute",
                method="record",
                args={"key": key},
                kind="fanout",
            )
            seen = await eventually(
                lambda: counts(client, "compute", key), until=lambda c: all(c.values())
            )
    assert seen == {"controller": 1, "computenodex": 1}


CLIENT_CHURN_SCRIPT = textwrap.dedent(
    """
    import os, sys, traceback
    import trio, trizmq
    from cluster_app import Endpoint
    from conftest import serving, unique_resolve

    async def main() -> None:
        resolve = unique_resolve(["node"])
        ring = trizmq.Ring.from_mapping({"compute:9601": ["node"]})
        with trio.fail_after(10):
            async with serving(ring, "compute", Endpoint(), "node", resolve):
                # What a handler that sends with a client of its own does per request.
                for _ in range(200):
                    async with trizmq.open_client(ring, resolve=resolve) as client:
                        await client.cast("compute", "record", key="k")
                async with trizmq.open_client(ring, resolve=resolve) as client:
                    assert await client.call("compute", "count", key="k") == 200
        print("ok")

    try:
        trio.run(main)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # a stalled zmq context would hang the interpreter's exit
    """
)


async def test_a_process_that_opens_and_closes_clients_keeps_serving(tmp_path: Path) -> None:
    # Run apart: if the process's zmq I/O thread stalls, only that process hangs.
    with trio.fail_after(60):
        done = await run_process([sys.executable, "-c", CLIENT_CHURN_SCRIPT], cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == "ok\n"


# -- typed arguments and results ----------------------------------------------

REQUEST = BootRequest(
    name="vm-1",
    image="cirros",
    disks=[Disk("root", 10), Disk("swap", 2)],
    metadata={"owner": "alice", "tier": "gold"},
    user_data=b"\x00#cloud-config\xff",
)


async def test_attrs_classes_round_trip_with_returns(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            instance = await client.call(
                "compute.computenodex", "boot", request=REQUEST, returns=Instance
            )
    assert instance == Instance(
        id="computenodex/vm-1",
        name="vm-1",
        host="computenodex",
        disks=[Disk("root", 10), Disk("swap", 2)],
        metadata={"owner": "alice", "tier": "gold", "image": "cirros"},
        user_data=b"\x00#cloud-config\xff",
        total_gb=12,
        key_name=None,
    )


async def test_without_returns_the_result_is_plain_data(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            result = await client.call("compute.controller", "boot", request=REQUEST)
    assert result == {
        "id": "controller/vm-1",
        "name": "vm-1",
        "host": "controller",
        "disks": [{"name": "root", "size_gb": 10}, {"name": "swap", "size_gb": 2}],
        "metadata": {"owner": "alice", "tier": "gold", "image": "cirros"},
        "user_data": b"\x00#cloud-config\xff",
        "total_gb": 12,
        "key_name": None,
    }


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -(2**40),
        2.5,
        "naïve ☃",
        b"\x00\xff",
        [1, "two", None, [3.0]],
        {"nested": {"list": [1, 2], "bytes": b"x", "none": None}},
    ],
    ids=["none", "bool", "int", "float", "str", "bytes", "list", "dict"],
)
async def test_plain_values_round_trip(cluster: Cluster, value: Any) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            assert await client.call("conductor", "echo", value=value) == value


# -- errors ---------------------------------------------------------------------


async def test_a_remote_exception_comes_back_as_remote_error(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.RemoteError) as caught:
                await client.call("scheduler", "fail", message="10 cores max")
    error = caught.value
    assert type(error) is trizmq.RemoteError
    assert error.type_name == "cluster_app.QuotaExceeded"
    assert error.message == "10 cores max"
    assert (error.topic, error.host) == ("scheduler", "controller")


async def test_a_remote_traceback_stays_in_the_service_log_by_default(cluster: Cluster) -> None:
    tag = f"quota-{secrets.token_hex(4)}"
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.RemoteError) as caught:
                await client.call("scheduler", "fail", message=tag)
        assert caught.value.remote_traceback == ""
        await eventually(lambda: tag in cluster.log("controller"))
    assert "raise QuotaExceeded(message)" in cluster.log("controller")


@pytest.mark.serve_args("--send-tracebacks")
async def test_a_service_run_with_send_tracebacks_sends_the_remote_traceback(
    fresh_cluster: Cluster,
) -> None:
    with trio.fail_after(10):
        async with fresh_cluster.client() as client:
            with pytest.raises(trizmq.RemoteError) as caught:
                await client.call("scheduler", "fail", message="10 cores max")
    assert "raise QuotaExceeded(message)" in caught.value.remote_traceback


async def test_a_remote_error_leaves_the_client_block_unwrapped(cluster: Cluster) -> None:
    with trio.fail_after(10), pytest.raises(trizmq.RemoteError) as caught:
        async with cluster.client() as client:
            await client.call("scheduler", "fail", message="10 cores max")
    assert caught.value.type_name == "cluster_app.QuotaExceeded"


@pytest.mark.parametrize("method", ["no_such_thing", "_secret", "__init__"])
async def test_an_unexposed_method_raises_no_such_method(cluster: Cluster, method: str) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.NoSuchMethod) as caught:
                await client.call("compute.controller", method)
    assert method in caught.value.message
    assert (caught.value.topic, caught.value.host) == ("compute", "controller")


@pytest.mark.parametrize(
    ("args", "named"),
    [({}, "'x'"), ({"x": 1, "y": 2}, "'y'"), ({"x": "one"}, "'x'")],
    ids=["missing", "unexpected", "wrong-type"],
)
async def test_bad_arguments_name_the_argument(
    cluster: Cluster, args: dict[str, Any], named: str
) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.BadArguments) as caught:
                await client.call("compute.controller", "ping", **args)
    assert named in caught.value.message


async def test_a_wrongly_typed_nested_field_is_bad_arguments(cluster: Cluster) -> None:
    request = {"name": "vm", "image": "i", "disks": [{"name": "d", "size_gb": "big"}]}
    request |= {"metadata": {}, "user_data": b""}
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.BadArguments) as caught:
                await client.call("compute.controller", "boot", request=request)
            # The service is unharmed by it.
            assert await client.call("compute.controller", "ping", x=1) == 2
    assert "'request'" in caught.value.message


async def test_a_slow_handler_raises_call_timeout(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            started = trio.current_time()
            with pytest.raises(TimeoutError) as caught:
                await client.call(
                    "compute.controller", "sleep", seconds=5, tag=unique("slow"), timeout=0.3
                )
            elapsed = trio.current_time() - started
    assert isinstance(caught.value, trizmq.CallTimeout)
    assert (caught.value.topic, caught.value.host, caught.value.method) == (
        "compute",
        "controller",
        "sleep",
    )
    assert caught.value.timeout == 0.3
    assert 0.3 <= elapsed < 2


@pytest.mark.parametrize(
    "target", ["nova", "scheduler.computenodex", "compute.nowhere", "zmq_replies"]
)
async def test_a_target_not_in_the_ring_raises_ring_error(cluster: Cluster, target: str) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.RingError, match=repr(target)):
                await client.call(target, "ping", x=1)
            with pytest.raises(trizmq.RingError):
                await client.cast(target, "ping", x=1)
            with pytest.raises(trizmq.RingError):
                await client.fanout(target, "ping", x=1)


# -- deadlines and cancellation -----------------------------------------------


async def test_the_deadline_cancels_the_handler(cluster: Cluster) -> None:
    tag = unique("deadline")
    with trio.fail_after(10):
        async with cluster.client() as client:
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute.controller", "sleep", seconds=30, tag=tag, timeout=0.5)
            await eventually(
                lambda: client.call("compute.controller", "state", tag=tag),
                until=lambda s: s == "cancelled",
            )


async def test_cancelling_the_caller_cancels_the_handler(cluster: Cluster) -> None:
    tag = unique("caller")
    with trio.fail_after(10):
        async with cluster.client() as client:
            with trio.move_on_after(0.5) as scope:
                await client.call("compute.controller", "sleep", seconds=30, tag=tag, timeout=30)
            assert scope.cancelled_caught
            await eventually(
                lambda: client.call("compute.controller", "state", tag=tag),
                until=lambda s: s == "cancelled",
            )


async def test_a_sync_handler_does_not_block_other_calls(cluster: Cluster) -> None:
    tag = unique("blocking")
    done: list[str] = []
    with trio.fail_after(10):
        async with cluster.client() as client:

            async def block() -> None:
                await client.call("compute.controller", "blocking", seconds=1.0, tag=tag)
                done.append("blocking")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(block)
                await eventually(
                    lambda: client.call("compute.controller", "state", tag=tag),
                    until=lambda s: s == "started",
                )
                started = trio.current_time()
                assert await client.call("compute.controller", "ping", x=2) == 3
                ping_seconds = trio.current_time() - started
                done.append("ping")
    assert done == ["ping", "blocking"]
    assert ping_seconds < 0.5


async def test_an_async_handler_that_waits_does_not_hold_up_the_requests_behind_it(
    cluster: Cluster,
) -> None:
    tag = unique("waiting")
    async with cluster.client() as client:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        client.call, "compute.controller", "sleep", seconds=2.0, tag=tag
                    )
                )
                await eventually(
                    lambda: client.call("compute.controller", "state", tag=tag),
                    until=lambda s: s == "started",
                )
                answers = [await client.call("compute.controller", "ping", x=i) for i in range(20)]
                state = await client.call("compute.controller", "state", tag=tag)
    assert answers == list(range(1, 21))
    assert state == "started"


# -- context ------------------------------------------------------------------


async def test_per_call_context_reaches_the_handler_merged_over_the_client_default(
    cluster: Cluster,
) -> None:
    with trio.fail_after(10):
        async with cluster.client(context={"user": "alice", "project": "p1"}) as client:
            answer = await client.call("compute", "whoami", context={"project": "p2", "req": 7})
    assert answer["values"] == {"user": "alice", "project": "p2", "req": 7}


async def test_prepare_context_merges_over_client_and_under_call(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client(context={"a": 1, "b": 1, "c": 1}) as client:
            target = client.prepare("compute.controller", context={"b": 2, "c": 2})
            answer = await target.call("whoami", context={"c": 3})
            plain = await target.call("whoami")
    assert answer["values"] == {"a": 1, "b": 2, "c": 3}
    assert plain["values"] == {"a": 1, "b": 2, "c": 2}


async def test_prepare_timeout_applies_by_default(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client() as client:
            target = client.prepare("conductor", timeout=0.3)
            with pytest.raises(trizmq.CallTimeout) as caught:
                await target.call("sleep", seconds=5, tag=unique("prepared"))
            assert await target.call("ping", x=1) == 2
    assert caught.value.timeout == 0.3


async def test_ctx_caller_names_the_client(cluster: Cluster) -> None:
    with trio.fail_after(10):
        async with cluster.client(name="nova-api") as client:
            answer = await client.call("consoleauth", "whoami")
            identity = client.identity
    assert answer["caller"] == identity
    assert identity.startswith("nova-api/")
    assert (answer["kind"], answer["method"]) == ("call", "whoami")


# -- concurrency ----------------------------------------------------------------


async def test_1000_concurrent_calls_each_get_their_own_answer(cluster: Cluster) -> None:
    results: dict[int, int] = {}
    with trio.fail_after(30):
        async with cluster.client() as client:

            async def one(i: int) -> None:
                results[i] = await client.call("compute", "ping", x=i)

            async with trio.open_nursery() as nursery:
                for i in range(1000):
                    nursery.start_soon(one, i)
    assert results == {i: i + 1 for i in range(1000)}


CALLER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import trio, trizmq

    async def main() -> None:
        ring = trizmq.Ring.load(os.environ["TRIZMQ_TEST_RING"])
        resolve = json.loads(os.environ["TRIZMQ_TEST_RESOLVE"])
        async with trizmq.open_client(ring, resolve=resolve, name=sys.argv[1]) as client:
            results = {}

            async def one(i):
                results[i] = await client.call("network", "ping", x=i)

            async with trio.open_nursery() as nursery:
                for i in range(300):
                    nursery.start_soon(one, i)
            assert results == {i: i + 1 for i in range(300)}, results
            me = await client.call("network", "whoami")
            assert me["caller"] == client.identity, (me, client.identity)
        print("ok", sys.argv[1])

    trio.run(main)
    """
)


async def test_two_client_processes_on_one_host_call_the_same_service_at_once(
    cluster: Cluster,
) -> None:
    results: dict[str, Any] = {}

    async def run(name: str) -> None:
        results[name] = await run_process(
            [sys.executable, "-c", CALLER_SCRIPT, name], env=cluster.env()
        )

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in ("first", "second"):
                nursery.start_soon(run, name)
    for name, done in results.items():
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split() == ["ok", name]


# -- garbage on the wire --------------------------------------------------------

GARBAGE = {
    "random-bytes": [random.Random(7).randbytes(64)],
    "three-frames": [b"one", b"two", b"three"],
    "msgpack-map": [msgpack.packb({"hello": "world"})],
    "msgpack-short-call": [msgpack.packb([1, 1, 99, "compute"])],
}


def exchange_raw(endpoint: str, messages: list[list[bytes]]) -> list[bytes]:
    """Send each message from a raw pyzmq DEALER and return one reply frame for each."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(endpoint)
        replies = []
        for frames in messages:
            sock.send_multipart(frames)
            reply = sock.recv_multipart()
            assert len(reply) == 1, reply
            replies.append(reply[0])
        return replies


@pytest.mark.parametrize("frames", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_gets_a_protocol_error_and_the_service_keeps_serving(
    cluster: Cluster, frames: list[bytes]
) -> None:
    endpoint = cluster.addresses["compute.controller"]
    call = encode(Call(5, "compute", "ping", {"x": 9}, {}, 5.0))
    with trio.fail_after(15):
        garbage_reply, call_reply = await trio.to_thread.run_sync(
            exchange_raw, endpoint, [frames, [call]]
        )
        async with cluster.client() as client:
            assert await client.call("compute.controller", "ping", x=1) == 2
    error = decode(garbage_reply)
    assert isinstance(error, Error)
    assert error.code == "protocol"
    assert decode(call_reply) == Reply(5, 10)


async def test_an_infinite_timeout_waits_for_the_reply(cluster: Cluster) -> None:
    tag = unique("inf")
    with trio.fail_after(10):
        async with cluster.client(timeout=math.inf) as client:
            assert await client.call("cert", "sleep", seconds=0.2, tag=tag) == tag


@pytest.mark.parametrize("method", ["sleep", "sleep_in_nursery"])
async def test_the_deadline_travels_with_the_call_and_stops_the_handler_by_itself(
    cluster: Cluster, method: str
) -> None:
    # A raw caller that never sends Cancel: only the service's own deadline can
    # stop the handler, waiting by itself or in a nursery of its own.
    tag = unique("wire-deadline")
    call = encode(Call(1, "compute", method, {"seconds": 30, "tag": tag}, {}, 0.3))
    with trio.fail_after(10):
        (reply,) = await trio.to_thread.run_sync(
            exchange_raw, cluster.addresses["compute.computenodex"], [[call]]
        )
        async with cluster.client() as client:
            state = await client.call("compute.computenodex", "state", tag=tag)
            assert await client.call("compute.computenodex", "ping", x=1) == 2
    error = decode(reply)
    assert isinstance(error, Error)
    assert (error.id, error.code, error.type_name) == (1, "deadline", "trizmq.CallTimeout")
    assert state == "cancelled"


def cast_then_call(endpoint: str, casts: bytes, call: bytes) -> bytes:
    """From one raw DEALER: a message that gets no answer, then a call; the call's reply."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(endpoint)
        sock.send(casts)
        sock.send(call)
        return sock.recv()


def burst(endpoint: str, calls: list[bytes], answers: int) -> list[bytes]:
    """From one raw DEALER: `calls` at once; the messages that bring `answers` answers."""
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(endpoint)
        for frame in calls:
            sock.send(frame)
        received: list[bytes] = []
        while answers > 0:
            received.append(sock.recv())
            envelope = decode(received[-1])
            answers -= len(envelope.answers) if isinstance(envelope, Replies) else 1
        return received


async def test_answers_ready_together_come_back_in_one_replies_message(cluster: Cluster) -> None:
    # The service is held up by the first call: the others wait in ZeroMQ,
    # are read together after it, and answered together.
    pings = [encode(Call(id, "compute", "ping", {"x": id}, {}, 10.0)) for id in range(2, 12)]
    hog = encode(Call(1, "compute", "hog", {"seconds": 0.5}, {}, 10.0))
    with trio.fail_after(15):
        received = await trio.to_thread.run_sync(
            burst, cluster.addresses["compute.controller"], [hog, *pings], 11
        )
    envelopes = [decode(frame) for frame in received]
    answers = [a for e in envelopes for a in (e.answers if isinstance(e, Replies) else [e])]
    assert answers == [Reply(1, 0.5), *(Reply(id, id + 1) for id in range(2, 12))]
    assert any(isinstance(e, Replies) for e in envelopes)
    assert len(envelopes) <= 3


async def test_a_client_with_a_small_size_limit_takes_its_answers_batched(
    cluster: Cluster,
) -> None:
    # Thirty 200-byte answers read together make a REPLIES of some 7 kB, over
    # this client's 2 kB limit; each alone is within it, and so is the batch.
    value = "v" * 200
    async with cluster.client(max_message_size=2_000) as client:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(client.call, "compute.controller", "hog", seconds=0.5)
                )
                await trio.sleep(0.2)  # the service is held up now: the calls wait together
                results: list[Any] = []

                async def echo() -> None:
                    results.append(await client.call("compute.controller", "echo", value=value))

                for _ in range(30):
                    nursery.start_soon(echo)
    assert results == [value] * 30


@pytest.mark.parametrize(
    ("batch", "counted"),
    [([], 0), ([{"key": "k"}, {"nope": 1}, {"key": "k"}], 2)],
    ids=["empty", "a-bad-cast-among-good-ones"],
)
async def test_a_casts_message_runs_its_good_casts_and_refuses_the_bad_ones(
    cluster: Cluster, batch: list[dict[str, Any]], counted: int
) -> None:
    key = unique("casts")
    batch = [{"key": key} if "key" in args else args for args in batch]
    casts = encode(Casts(1, "compute", "record", batch, {}))
    # On the same connection, after the casts: they have run when it is answered.
    call = encode(Call(9, "compute", "count", {"key": key}, {}, 5.0))
    with trio.fail_after(15):
        reply = await trio.to_thread.run_sync(
            cast_then_call, cluster.addresses["compute.controller"], casts, call
        )
    assert decode(reply) == Reply(9, counted)
