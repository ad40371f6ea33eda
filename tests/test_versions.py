"""Versions, namespaces and allowed exceptions between real `trizmq serve` processes.

The ring has one topic, `compute`, on two hosts; `tests/version_app.py` serves
it at version 5.0 or 5.3, with a `baseapi` namespace next to the main API. A
rolling upgrade restarts the hosts one by one on the new version while old
and new callers go on calling.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import version_errors
from conftest import Cluster, eventually

import trizmq
from trizmq.stats import StatsBoard, watch_ring

OLD, NEW = "version_app:SERVICES_5_0", "version_app:SERVICES_5_3"
HOSTS = ("controller", "computenodex")


def _ring(directory: Path) -> Path:
    path = directory / "ring.json"
    path.write_text(json.dumps({"compute:9501": list(HOSTS)}))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Mid-upgrade: controller still at 5.0, computenodex at 5.3."""
    workdir = tmp_path_factory.mktemp("versions")
    cluster = Cluster(
        workdir, ring_path=_ring(workdir), app={"controller": OLD, "computenodex": NEW}
    )
    cluster.start()
    yield cluster
    cluster.stop()


def _compatible(served: str, asked: str) -> bool:
    served_major, served_minor = map(int, served.split("."))
    asked_major, asked_minor = map(int, asked.split("."))
    return served_major == asked_major and served_minor >= asked_minor


async def test_rolling_upgrade_serves_every_call_on_a_compatible_endpoint_or_refuses_it(
    tmp_path: Path,
) -> None:
    """Hosts go from 5.0 to 5.3 one at a time; a 5.0 caller and a 5.3 caller
    call each host by name and the topic round-robin at every step."""
    cluster = Cluster(tmp_path, ring_path=_ring(tmp_path), app=dict.fromkeys(HOSTS, OLD))
    cluster.start()
    try:
        running = dict.fromkeys(HOSTS, "5.0")
        for upgraded in (None, "computenodex", "controller"):
            if upgraded is not None:
                cluster.app = {**cluster.app, upgraded: NEW}  # type: ignore[dict-item]
                cluster.restart(upgraded)
                running[upgraded] = "5.3"
            # What each caller must get from each host: served by the host's
            # own endpoint when compatible, else refused; nothing else.
            expected = {
                (asked, host, running[host] if _compatible(running[host], asked) else "refused")
                for asked in ("5.0", "5.3")
                for host in HOSTS
            }
            seen = set()
            for asked in ("5.0", "5.3"):
                async with cluster.client(name=f"caller-{asked}") as client:
                    by_host = [client.prepare(f"compute.{h}", version=asked) for h in HOSTS]
                    round_robin = [client.prepare("compute", version=asked)] * 4
                    reached = []
                    for target in [*by_host, *round_robin]:
                        try:
                            served = await target.call("boot", name="vm")
                        except trizmq.UnsupportedVersion as exc:
                            assert "it has 5.0" in exc.message
                            seen.add((asked, exc.host, "refused"))
                            reached.append(exc.host)
                        else:
                            seen.add((asked, served["host"], served["version"]))
                            reached.append(served["host"])
                    assert reached == [*HOSTS, *HOSTS, *HOSTS]  # round-robin reached both
            assert seen == expected, (running, seen ^ expected)
    finally:
        cluster.stop()


async def test_a_method_new_in_5_3_is_refused_by_a_5_0_service_as_unsupported_version(
    mixed: Cluster,
) -> None:
    async with mixed.client() as client:
        new = client.prepare("compute.controller", version="5.3")
        with pytest.raises(trizmq.UnsupportedVersion, match=r"it has 5\.0"):
            await new.call("resize", name="vm", gb=20)
        served = await client.prepare("compute.computenodex", version="5.3").call(
            "resize", name="vm", gb=20
        )
        assert (served["version"], served["gb"]) == ("5.3", 20)


async def test_a_caller_naming_neither_namespace_nor_version_reaches_the_default_namespace(
    mixed: Cluster,
) -> None:
    async with mixed.client() as client:
        for host, version in (("controller", "5.0"), ("computenodex", "5.3")):
            who = await client.call(f"compute.{host}", "whoami")
            assert (who["namespace"], who["version"]) == (None, version)


async def test_the_same_method_name_in_two_namespaces_reaches_each_namespace_s_endpoint(
    mixed: Cluster,
) -> None:
    async with mixed.client() as client:
        base = client.prepare("compute.controller", namespace="baseapi")
        assert (await base.call("whoami"))["namespace"] == "baseapi"
        main = client.prepare("compute.controller", version="5.0")
        assert (await main.call("whoami"))["namespace"] is None


async def test_a_method_of_one_namespace_is_not_found_in_another(mixed: Cluster) -> None:
    async with mixed.client() as client:
        with pytest.raises(trizmq.NoSuchMethod, match="has no method 'ping'"):
            await client.call("compute.controller", "ping")
        base = client.prepare("compute.controller", namespace="baseapi")
        with pytest.raises(trizmq.NoSuchMethod, match=r"namespace 'baseapi'.*has no method 'boot'"):
            await base.call("boot", name="vm")


async def test_an_unknown_namespace_is_refused_with_no_such_method(mixed: Cluster) -> None:
    async with mixed.client() as client:
        target = client.prepare("compute.controller", namespace="cells")
        with pytest.raises(trizmq.NoSuchMethod, match="has no namespace 'cells'"):
            await target.call("whoami")


async def test_a_namespace_s_version_is_checked_apart_from_the_main_api(mixed: Cluster) -> None:
    async with mixed.client() as client:
        base = client.prepare("compute.controller", namespace="baseapi", version="1.1")
        assert await base.call("ping") == "pong"
        too_new = base.prepare(version="1.2")
        with pytest.raises(trizmq.UnsupportedVersion, match=r"compatible with version 1\.2"):
            await too_new.call("ping")


async def test_casts_and_fanouts_carry_their_namespace_and_version(mixed: Cluster) -> None:
    # A one-way request has no answer: the refusals show in the services' stats.
    before = await _stats(mixed)
    async with mixed.client() as client:
        await client.prepare("compute", version="5.3").fanout("boot", name="vm")
        await client.prepare("compute.controller", version="5.3").cast("boot", name="vm")
        await client.prepare("compute.controller", version="5.3").cast_many(
            "boot", [{"name": "a"}, {"name": "b"}]
        )
        await client.prepare("compute.computenodex", namespace="baseapi").cast("ping")
        # Each host answers calls in order: once this is back, the casts before it ran.
        for host in HOSTS:
            await client.call(f"compute.{host}", "whoami")
    after = await _stats(mixed)

    def grew(host: str, *path: str) -> int:
        def read(stats: dict[str, Any]) -> int:
            value: Any = stats[host]
            for key in path:
                value = value.get(key, 0) if isinstance(value, dict) else 0
            return int(value)

        return read(after) - read(before)

    assert grew("controller", "rejected", "unsupported_version") == 4
    assert grew("computenodex", "rejected", "unsupported_version") == 0
    assert grew("computenodex", "methods", "boot", "received", "fanout") == 1
    assert grew("computenodex", "methods", "baseapi.ping", "received", "cast") == 1


async def _stats(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The stats of each host's compute port, as `trizmq stats` reads them."""
    board = StatsBoard(cluster.ring(), cluster.resolve)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(watch_ring, board, interval=0.05))
        await eventually(board.answered)
        nursery.cancel_scope.cancel()
    return {host: view.data for (host, _), view in board.ports.items() if view.data}


async def test_can_send_version_follows_the_version_cap(mixed: Cluster) -> None:
    async with mixed.client() as client:
        pinned = client.prepare("compute", version="5.0", version_cap="5.2")
        assert pinned.can_send_version()
        assert pinned.can_send_version("5.2")
        assert not pinned.can_send_version("5.3")
        assert not pinned.can_send_version("6.0")
        assert client.prepare("compute").can_send_version("9.9")
        # The oslo idiom: send the newest version the cap allows, to the host chosen.
        version = "5.3" if pinned.can_send_version("5.3") else "5.0"
        cctxt = pinned.prepare(host="computenodex", version=version)
        assert (cctxt.target, cctxt.version, cctxt.version_cap) == (
            "compute.computenodex",
            "5.0",
            "5.2",
        )
        assert (await cctxt.call("boot", name="vm"))["host"] == "computenodex"


async def test_a_version_above_the_cap_raises_version_cap_error_before_sending(
    mixed: Cluster,
) -> None:
    async with mixed.client() as client:
        with pytest.raises(trizmq.VersionCapError, match=r"5\.3 is above the version cap 5\.2"):
            client.prepare("compute", version="5.3", version_cap="5.2")
        pinned = client.prepare("compute", version_cap="5.2")
        with pytest.raises(trizmq.VersionCapError):
            pinned.prepare(version="5.3")
        assert client.stats() == {}  # nothing was sent, nothing connected


@pytest.mark.parametrize("version", ["5", "5.3.1", "v5.3", "5.x", "05.3", " 5.3", ""])
async def test_a_malformed_version_is_refused_at_prepare(mixed: Cluster, version: str) -> None:
    async with mixed.client() as client:
        with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
            client.prepare("compute", version=version)
        with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
            client.prepare("compute", version_cap=version)
        with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
            trizmq.Target(version=version)


async def test_an_allowed_exception_class_is_raised_as_itself(mixed: Cluster) -> None:
    async with mixed.client(allowed_exceptions=[version_errors.NoValidHost, KeyError]) as client:
        with pytest.raises(version_errors.NoValidHost) as caught:
            await client.call("compute.controller", "fail", kind="no_valid_host")
        exc = caught.value
        assert type(exc) is version_errors.NoValidHost
        assert str(exc) == "no host has 4 GB free"
        assert (exc.host, exc.topic) == ("controller", "compute")  # type: ignore[attr-defined]
        assert exc.type_name == "version_errors.NoValidHost"  # type: ignore[attr-defined]
        with pytest.raises(KeyError) as key_error:
            await client.call("compute.controller", "fail", kind="key")
        assert key_error.value.message == "'flavor'"  # type: ignore[attr-defined]
        # Not allowed: still a RemoteError.
        with pytest.raises(trizmq.RemoteError) as other:
            await client.call("compute.controller", "fail", kind="quota")
        assert other.value.type_name == "version_errors.QuotaExceeded"


async def test_an_allowed_module_s_exceptions_are_raised_as_themselves(mixed: Cluster) -> None:
    async with mixed.client(allowed_exceptions=["version_errors"]) as client:
        with pytest.raises(version_errors.QuotaExceeded, match="cores: 20 of 20 used"):
            await client.call("compute.computenodex", "fail", kind="quota")


async def test_the_remote_traceback_travels_with_an_allowed_exception(tmp_path: Path) -> None:
    cluster = Cluster(
        tmp_path,
        ring_path=_ring(tmp_path),
        hosts=("controller",),
        app=NEW,
        serve_args=("--send-tracebacks",),
    )
    cluster.start()
    try:
        async with cluster.client(allowed_exceptions=["version_errors"]) as client:
            with pytest.raises(version_errors.NoValidHost) as caught:
                await client.call("compute.controller", "fail", kind="no_valid_host")
        trace = caught.value.remote_traceback  # type: ignore[attr-defined]
        assert "in fail" in trace and "NoValidHost: no host has 4 GB free" in trace
    finally:
        cluster.stop()


async def test_an_exception_of_a_module_not_allowed_is_a_remote_error_and_never_imported(
    mixed: Cluster,
) -> None:
    # Another test may have imported the service's app in this process (it
    # imports the module): the client must not import it again.
    sys.modules.pop("version_secret_errors", None)
    async with mixed.client(allowed_exceptions=["version_errors", "version_errors.sub"]) as client:
        with pytest.raises(trizmq.RemoteError) as caught:
            await client.call("compute.controller", "fail", kind="secret")
    assert type(caught.value) is trizmq.RemoteError
    assert caught.value.type_name == "version_secret_errors.Boom"
    assert "version_secret_errors" not in sys.modules


async def test_an_allowed_exception_that_cannot_be_made_from_its_message_stays_a_remote_error(
    mixed: Cluster,
) -> None:
    async with mixed.client(allowed_exceptions=[version_errors.NeedsTwoArguments]) as client:
        with pytest.raises(trizmq.RemoteError) as caught:
            await client.call("compute.controller", "fail", kind="two_arguments")
    assert caught.value.type_name == "version_errors.NeedsTwoArguments"
    assert caught.value.message == "cores over 20"


@pytest.mark.parametrize("item", [version_errors.Interrupt, 42, "not a module!", object])
async def test_allowed_exceptions_takes_only_exception_classes_and_module_names(
    mixed: Cluster, item: Any
) -> None:
    with pytest.raises(TypeError, match="allowed_exceptions"):
        async with mixed.client(allowed_exceptions=[item]):
            pass
