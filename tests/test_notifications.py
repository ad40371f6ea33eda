"""Notifications: a real service process emitting with a `Notifier`, and two pools
of `NotificationListener` processes (pool `a` of two hosts, pool `b` of one)."""

from __future__ import annotations

import datetime
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Cluster, eventually, run_process, serving, trizmq_command, unique_resolve

import trizmq

#: The test ring: an emitter, the listeners in two pools, a probe on each
#: listener, and a second notification topic of one host.
RING = {
    "emitter:9710": ["emitter"],
    "notifications:9700": {"a": ["a1", "a2"], "b": ["b1"]},
    "probe:9701": ["a1", "a2", "b1"],
    "monitoring:9702": ["b1"],
}
POOL_A = ("a1", "a2")
LISTENERS = ("a1", "a2", "b1")


def event(prefix: str) -> str:
    """An event type no other test uses, since the module's processes are shared."""
    return f"{prefix}.{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def notified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The emitter and the three listeners, each a `trizmq serve` process."""
    workdir = tmp_path_factory.mktemp("notify")
    ring_path = workdir / "ring.json"
    ring_path.write_text(json.dumps(RING))
    running = Cluster(workdir, ring_path=ring_path, app="notify_app:SERVICES")
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def emit(
    cluster: Cluster, priority: str, event_type: str, count: int, **kw: Any
) -> list[str]:
    """Have the emitter process send `count` notifications; their message ids."""
    async with cluster.client() as client:
        ids: list[str] = await client.call(
            "emitter", "emit", priority=priority, event_type=event_type, count=count, **kw
        )
        return ids


async def seen(cluster: Cluster, event_type: str) -> dict[str, list[dict[str, Any]]]:
    """The notifications of `event_type` each listener host got."""
    async with cluster.client() as client:
        return {
            host: await client.call(f"probe.{host}", "seen", event_type=event_type)
            for host in LISTENERS
        }


async def seen_all(cluster: Cluster, event_type: str, count: int) -> dict[str, list[Any]]:
    """`seen`, once pool `a` and pool `b` each got `count` notifications."""

    def complete(got: dict[str, list[Any]]) -> bool:
        return len(got["a1"]) + len(got["a2"]) >= count and len(got["b1"]) >= count

    return await eventually(lambda: seen(cluster, event_type), 10, until=complete)


async def counts(cluster: Cluster, host: str) -> dict[str, dict[str, int]]:
    async with cluster.client() as client:
        result: dict[str, dict[str, int]] = await client.call(f"probe.{host}", "counts")
        return result


# -- pools, between processes -------------------------------------------------


async def test_every_notification_reaches_exactly_one_member_of_each_pool(
    notified: Cluster,
) -> None:
    kind = event("pools")
    with trio.fail_after(30):
        ids = await emit(notified, "info", kind, 10)
        got = await seen_all(notified, kind, 10)
        await trio.sleep(0.3)  # time for a duplicate, if there were one, to show up
        got = await seen(notified, kind)
    assert len(set(ids)) == 10
    pool_a = Counter(n["metadata"]["message_id"] for host in POOL_A for n in got[host])
    pool_b = Counter(n["metadata"]["message_id"] for n in got["b1"])
    assert pool_a == pool_b == Counter(ids)


async def test_round_robin_spreads_a_pool_over_its_members(notified: Cluster) -> None:
    kind = event("spread")
    with trio.fail_after(30):
        ids = await emit(notified, "info", kind, 10)
        got = await seen_all(notified, kind, 10)
    # One client, so its cursor alternates: the 1st, 3rd... to a1, the others to a2.
    assert [n["metadata"]["message_id"] for n in got["a1"]] == ids[0::2]
    assert [n["metadata"]["message_id"] for n in got["a2"]] == ids[1::2]


async def test_a_listener_endpoint_gets_what_the_notifier_sent(notified: Cluster) -> None:
    kind = event("fields")
    with trio.fail_after(30):
        (id,) = await emit(notified, "info", kind, 1)
        got = await seen_all(notified, kind, 1)
    (notification,) = got["b1"]
    assert notification["host"] == "b1"
    assert (notification["kind"], notification["method"]) == ("cast", "info")
    assert notification["publisher_id"] == "emitter.emitter"
    assert notification["payload"] == {"n": 0}
    assert notification["context"] == {"request_id": "req-0"}
    assert notification["metadata"]["message_id"] == id
    sent = datetime.datetime.fromisoformat(notification["metadata"]["timestamp"])
    assert sent.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.UTC) - sent) < datetime.timedelta(seconds=30)


async def test_a_synchronous_endpoint_method_gets_its_priority(notified: Cluster) -> None:
    kind = event("sync")
    with trio.fail_after(30):
        ids = await emit(notified, "ERROR", kind, 2)
        got = await seen_all(notified, kind, 2)
    # Each in a worker thread of its own: they may end in either order.
    assert sorted(n["metadata"]["message_id"] for n in got["b1"]) == sorted(ids)
    assert {n["method"] for n in got["b1"]} == {"error"}


async def test_a_priority_no_endpoint_handles_is_dropped_and_counted_not_refused(
    notified: Cluster,
) -> None:
    with trio.fail_after(30):
        before = (await counts(notified, "b1"))["dropped"].get("audit", 0)
        await emit(notified, "audit", event("dropped"), 3)
        after = await eventually(
            lambda: counts(notified, "b1"),
            10,
            until=lambda c: c["dropped"].get("audit", 0) >= before + 3,
        )
    assert after["dropped"]["audit"] == before + 3
    assert "audit" not in after["handled"]
    for host in LISTENERS:
        assert "refused" not in notified.log(host)


async def test_an_endpoint_that_raises_is_logged_and_the_others_still_get_it(
    notified: Cluster,
) -> None:
    kind = event("grumpy")
    with trio.fail_after(30):
        before = (await counts(notified, "b1"))["failed"].get("critical", 0)
        (id,) = await emit(notified, "critical", kind, 1)
        got = await seen_all(notified, kind, 1)
        after = await counts(notified, "b1")
    assert [n["metadata"]["message_id"] for n in got["b1"]] == [id]
    assert after["failed"]["critical"] == before + 1
    log = notified.log("b1")
    assert "notifications.b1: cast critical from emitter:emitter/" in log
    assert f"RuntimeError: grumpy about {kind}" in log


async def test_a_notifier_sends_to_each_of_its_topics(notified: Cluster) -> None:
    kind = event("topics")
    with trio.fail_after(30):
        ids = await emit(notified, "info", kind, 2, topics=["notifications", "monitoring"])
        got = await eventually(
            lambda: seen(notified, kind), 10, until=lambda got: len(got["b1"]) >= 4
        )
    # b1 is the one host of pool `b` of `notifications`, and of `monitoring`.
    sent = {(topic, id) for topic in ("notifications", "monitoring") for id in ids}
    assert sorted((n["topic"], n["metadata"]["message_id"]) for n in got["b1"]) == sorted(sent)


async def test_a_fanout_to_a_topic_of_pools_reaches_every_host_of_every_pool(
    notified: Cluster,
) -> None:
    kind = event("fanout")
    metadata = {"message_id": "by-hand", "timestamp": "2026-11-30T23:00:00+00:00"}
    with trio.fail_after(30):
        async with notified.client() as client:
            await client.fanout(
                "notifications",
                "info",
                publisher_id="me",
                event_type=kind,
                payload={},
                metadata=metadata,
            )
        got = await eventually(
            lambda: seen(notified, kind), 10, until=lambda got: all(got.values())
        )
    assert {host: len(notifications) for host, notifications in got.items()} == {
        "a1": 1,
        "a2": 1,
        "b1": 1,
    }


async def test_serve_refuses_a_ring_with_a_host_in_two_pools(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"notifications:9700": {"a": ["a1"], "b": ["b1", "a1"]}}))
    result = await run_process(
        trizmq_command(
            "serve",
            str(ring),
            "--host",
            "a1",
            "--app",
            "notify_app:SERVICES",
            "--resolve",
            "a1=127.0.0.1",
        )
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"trizmq: {ring}: key 'notifications:9700': host 'a1' is in both pool 'a' and "
        "pool 'b'; a host serves a topic on one port, so it belongs to one pool"
    )


# -- trizmq notify -------------------------------------------------------------


async def test_trizmq_notify_reaches_one_member_of_each_pool_and_prints_the_id(
    notified: Cluster,
) -> None:
    kind = event("cli")
    with trio.fail_after(30):
        result = await run_process(
            trizmq_command(
                "notify",
                str(notified.ring_path),
                "INFO",
                kind,
                "--payload",
                '{"n": 7}',
                "--publisher-id",
                "ops",
                "--context",
                '{"user": "admin"}',
                *notified.resolve_args,
            )
        )
        assert result.returncode == 0, result.stderr
        got = await seen_all(notified, kind, 1)
    id = result.stdout.decode().strip()
    (a,) = got["a1"] + got["a2"]
    (b,) = got["b1"]
    for notification in (a, b):
        assert notification["metadata"]["message_id"] == id
        assert notification["publisher_id"] == "ops"
        assert notification["payload"] == {"n": 7}
        assert notification["context"] == {"user": "admin"}


async def test_trizmq_notify_sends_nothing_while_a_listener_is_not_up(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"notifications:9700": {"a": ["ghost"]}}))
    address = unique_resolve(["ghost"])["ghost"]
    command = ["notify", str(ring), "info", "x", "--timeout", "0.3"]
    result = await run_process(trizmq_command(*command, "--resolve", f"ghost={address}"))
    assert result.returncode == 3
    assert result.stderr.decode() == (
        f"trizmq: notify: notifications.ghost at tcp://{address}:9700: "
        "not connected within 0.3 s, nothing sent\n"
    )
    assert result.stdout == b""


async def test_trizmq_notify_refuses_an_unknown_priority(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps(RING))
    result = await run_process(trizmq_command("notify", str(ring), "notice", "x"))
    assert result.returncode == 2
    assert "argument PRIORITY: invalid choice: 'notice'" in result.stderr.decode()


# -- in one process -----------------------------------------------------------


def test_a_listener_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="at least one endpoint"):
        trizmq.NotificationListener()


def test_a_listener_refuses_an_endpoint_with_no_priority_method() -> None:
    class Misspelt:
        def infos(self, ctx: trizmq.Context) -> None: ...

    with pytest.raises(TypeError, match="has no method named for a priority"):
        trizmq.NotificationListener(Misspelt())


async def test_a_notifier_refuses_an_unknown_topic() -> None:
    async with trizmq.open_client(trizmq.Ring.from_mapping(RING)) as client:
        with pytest.raises(trizmq.RingError, match="unknown topic 'notification'"):
            trizmq.Notifier(client, "me", topics=["notification"])


async def test_a_notifier_topic_with_an_oslo_priority_suffix_says_what_to_give() -> None:
    async with trizmq.open_client(trizmq.Ring.from_mapping(RING)) as client:
        with pytest.raises(trizmq.RingError) as info:
            trizmq.Notifier(client, "me", topics=["notifications.info"])
    assert str(info.value) == (
        "<mapping>: notification topic 'notifications.info' names a host: a notification "
        "goes to one host of each pool of a topic; the priority travels as the method: "
        "give topics=['notifications']"
    )


async def test_a_notifier_refuses_an_unknown_priority() -> None:
    async with trizmq.open_client(trizmq.Ring.from_mapping(RING)) as client:
        notifier = trizmq.Notifier(client, "me")
        with pytest.raises(ValueError, match="unknown priority 'notice'"):
            await notifier.notify("notice", None, "x", {})


class Inbox:
    """A notification endpoint in the test process."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, str]] = []

    async def warn(self, ctx: trizmq.Context, publisher_id: str, *rest: Any) -> None:
        self.got.append((ctx.host, ctx.method, publisher_id))


async def test_prepare_and_warning_send_as_oslo_s_do(tmp_path: Path) -> None:
    ring = trizmq.Ring.from_mapping({"notifications:9700": {"a": ["a1"]}})
    resolve = unique_resolve(["a1"])
    inbox = Inbox()
    listener = trizmq.NotificationListener(inbox)
    with trio.fail_after(10):
        async with (
            serving(ring, "notifications", listener, "a1", resolve),
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            notifier = trizmq.Notifier(client, "compute.host1")
            await notifier.prepare(publisher_id="compute.host2").warning(None, "x", {})
            await notifier.warn(None, "x", {})
            await eventually(lambda: len(inbox.got) == 2)
    assert inbox.got == [("a1", "warn", "compute.host2"), ("a1", "warn", "compute.host1")]


async def test_a_pool_member_known_down_is_passed_over() -> None:
    ring = trizmq.Ring.from_mapping({"notifications:9700": {"a": ["a1", "a2"]}})
    resolve = unique_resolve(["a1", "a2"])
    inboxes = {host: Inbox() for host in ("a1", "a2")}
    with trio.fail_after(20):
        async with (
            serving(
                ring, "notifications", trizmq.NotificationListener(inboxes["a1"]), "a1", resolve
            ),
            serving(
                ring, "notifications", trizmq.NotificationListener(inboxes["a2"]), "a2", resolve
            ) as a2,
            trizmq.open_client(ring, resolve=resolve, heartbeat=1) as client,
        ):
            notifier = trizmq.Notifier(client, "me")
            for _ in range(2):
                await notifier.warn(None, "x", {})
            # Each member has its one notification before a2 stops: none is cut off.
            await eventually(lambda: [len(i.got) for i in inboxes.values()] == [1, 1])
            a2.cancel()
            await eventually(lambda: not client.connected("notifications.a2"))
            for _ in range(4):
                await notifier.warn(None, "x", {})
            await eventually(lambda: len(inboxes["a1"].got) == 5)
    assert len(inboxes["a2"].got) == 1


class Failing:
    """A notification endpoint that fails on every `warn`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def warn(self, ctx: trizmq.Context, *rest: Any) -> None:
        raise LookupError(f"{self.name} failed")


async def test_every_endpoint_gets_a_notification_however_many_others_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ring = trizmq.Ring.from_mapping({"notifications:9700": ["a1"]})
    resolve = unique_resolve(["a1"])
    inbox = Inbox()
    listener = trizmq.NotificationListener(Failing("first"), inbox, Failing("second"))
    with trio.fail_after(10):
        async with (
            serving(ring, "notifications", listener, "a1", resolve),
            trizmq.open_client(ring, resolve=resolve) as client,
        ):
            await trizmq.Notifier(client, "me").warn(None, "x", {})
            await eventually(lambda: listener.counts["failed"].get("warn") == 2)
    assert inbox.got == [("a1", "warn", "me")]
    assert listener.counts == {"handled": {"warn": 1}, "dropped": {}, "failed": {"warn": 2}}
    (line,) = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert "notifications.a1: cast warn from client/" in line
    assert "LookupError: first failed" in line
    assert "LookupError: second failed" in line
