"""CurveZMQ: only allowed clients get through, and they are told when they are not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from conftest import Cluster, run_process, trizmq_command

import trizmq


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Key pairs made by `trizmq keys generate`: the services', an allowed and a stranger's."""
    root = tmp_path_factory.mktemp("keys")
    for directory, name in (("server", "server"), ("allowed", "alice"), ("others", "mallory")):
        done = trio.run(
            run_process, trizmq_command("keys", "generate", str(root / directory), "--name", name)
        )
        assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def curve_cluster(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Iterator[Cluster]:
    running = Cluster(
        tmp_path_factory.mktemp("curve-cluster"),
        serve_args=(
            "--curve-secret",
            str(keys / "server" / "server.key_secret"),
            "--curve-allow",
            str(keys / "allowed"),
        ),
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def client_keys(keys: Path, who: str, directory: str) -> trizmq.Curve:
    return trizmq.Curve.client(
        keys / directory / f"{who}.key_secret", keys / "server" / "server.key"
    )


def test_keys_generate_writes_a_public_and_a_secret_key_file(keys: Path) -> None:
    assert (keys / "allowed" / "alice.key").read_text().count("public-key") == 1
    assert "secret-key" in (keys / "allowed" / "alice.key_secret").read_text()
    assert (keys / "allowed" / "alice.key_secret").stat().st_mode & 0o077 == 0


async def test_an_allowed_client_calls_a_curve_service(curve_cluster: Cluster, keys: Path) -> None:
    async with curve_cluster.client(curve=client_keys(keys, "alice", "allowed")) as client:
        with trio.fail_after(10):
            assert await client.call("compute.computenodex", "ping", x=1) == 2


async def test_a_client_whose_key_is_not_allowed_is_refused(
    curve_cluster: Cluster, keys: Path
) -> None:
    async with curve_cluster.client(curve=client_keys(keys, "mallory", "others")) as client:
        with trio.fail_after(10), pytest.raises(trizmq.AuthenticationFailed, match="refused"):
            await client.call("compute.controller", "ping", x=1)


async def test_a_plaintext_client_is_refused_by_a_curve_service(curve_cluster: Cluster) -> None:
    async with curve_cluster.client() as client:
        with (
            trio.fail_after(10),
            pytest.raises(trizmq.AuthenticationFailed, match="CURVE on one side"),
        ):
            await client.call("compute.controller", "ping", x=1)


async def test_a_refused_client_gets_nothing_through(curve_cluster: Cluster, keys: Path) -> None:
    key = "stranger-cast"
    async with curve_cluster.client(curve=client_keys(keys, "mallory", "others")) as stranger:
        with pytest.raises(trizmq.AuthenticationFailed):
            await stranger.call("compute.controller", "ping", x=1)
        with pytest.raises(trizmq.AuthenticationFailed):
            await stranger.cast("compute.controller", "record", key=key)
    async with curve_cluster.client(curve=client_keys(keys, "alice", "allowed")) as client:
        assert await client.call("compute.controller", "count", key=key) == 0


async def test_the_command_line_calls_with_keys_and_reports_a_refusal(
    curve_cluster: Cluster, keys: Path
) -> None:
    def call(who: str, directory: str) -> list[str]:
        return trizmq_command(
            "call",
            str(curve_cluster.ring_path),
            "compute.controller",
            "ping",
            "--arg",
            "x=41",
            *curve_cluster.resolve_args,
            "--curve-secret",
            str(keys / directory / f"{who}.key_secret"),
            "--curve-server",
            str(keys / "server" / "server.key"),
        )

    with trio.fail_after(30):
        allowed = await run_process(call("alice", "allowed"))
        refused = await run_process(call("mallory", "others"))
    assert (allowed.returncode, json.loads(allowed.stdout)) == (0, 42)
    assert refused.returncode == 2
    assert b"refused this client's key" in refused.stderr


async def test_stats_reach_curve_services_with_keys(curve_cluster: Cluster, keys: Path) -> None:
    command = trizmq_command(
        "stats",
        str(curve_cluster.ring_path),
        "--json",
        *curve_cluster.resolve_args,
        "--curve-secret",
        str(keys / "allowed" / "alice.key_secret"),
        "--curve-server",
        str(keys / "server" / "server.key"),
    )
    with trio.fail_after(30):
        done = await run_process(command)
    assert done.returncode == 0, done.stderr
    assert {row["state"] for row in json.loads(done.stdout)} == {"up"}
