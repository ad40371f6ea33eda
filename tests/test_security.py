"""CurveZMQ: only allowed clients get through, and they are told when they are not."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from conftest import APP, SEED_RING, Cluster, run_process, trizmq_command, unique_resolve

import trizmq
from trizmq._curve import generate_keys
from trizmq.cli import main


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


def test_keys_generate_creates_the_secret_key_0600_from_the_first_byte(tmp_path: Path) -> None:
    # Under umask 0 a file created with the default mode is 0666. Before every file
    # operation of the command (audit events come before the operation), no file
    # holding the secret key may be readable by anyone but its owner.
    exposed: set[str] = set()
    watching, scanning, thread = True, False, threading.get_ident()

    def scan(event: str, args: tuple[object, ...]) -> None:
        nonlocal scanning
        if not watching or scanning or threading.get_ident() != thread:
            return
        if event == "open" or event.startswith("os."):
            scanning = True  # the scan's own operations raise audit events too
            try:
                for path in tmp_path.iterdir():
                    if path.stat().st_mode & 0o077 and b"secret-key" in path.read_bytes():
                        exposed.add(f"{path.name} {path.stat().st_mode & 0o777:04o}")
            finally:
                scanning = False

    sys.addaudithook(scan)  # hooks cannot be removed: `watching` turns it off
    umask = os.umask(0)
    try:
        assert main(["keys", "generate", str(tmp_path), "--name", "alice"]) == 0
    finally:
        os.umask(umask)
        watching = False
    assert exposed == set()
    assert (tmp_path / "alice.key_secret").stat().st_mode & 0o777 == 0o600


def keys_generate(directory: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
    """Run `trizmq keys generate DIR --name alice`."""
    command = trizmq_command("keys", "generate", str(directory), "--name", "alice", *options)
    return trio.run(run_process, command)


@pytest.mark.parametrize("existing", ["alice.key", "alice.key_secret"])
def test_keys_generate_refuses_to_replace_an_existing_key_file(
    tmp_path: Path, existing: str
) -> None:
    (tmp_path / existing).write_text("kept")
    done = keys_generate(tmp_path)
    assert done.returncode == 2
    assert done.stderr.decode() == (
        f"trizmq: {tmp_path / existing}: already exists (pass --force to replace the key pair)\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "kept"


def test_keys_generate_with_force_replaces_the_key_pair(tmp_path: Path) -> None:
    first = keys_generate(tmp_path, "--force")
    assert first.returncode == 0, first.stderr
    old_public = (tmp_path / "alice.key").read_text()
    second = keys_generate(tmp_path, "--force")
    assert second.returncode == 0, second.stderr
    new_public = (tmp_path / "alice.key").read_text()
    assert new_public != old_public
    new_key = trizmq.Curve.client(tmp_path / "alice.key_secret", tmp_path / "alice.key")
    assert new_key.public_key.decode() in new_public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.key_secret"]


def test_a_service_warns_about_a_secret_key_file_others_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, secret = generate_keys(tmp_path, "server")
    secret.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="trizmq.security"):
        trizmq.Curve.server(secret, tmp_path)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "trizmq.security",
            "WARNING",
            f"{secret}: the secret key file has mode 0640, so other users can read it; "
            f"fix it with `chmod 600 {secret}`",
        )
    ]


def test_a_service_does_not_warn_about_a_private_secret_key_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, secret = generate_keys(tmp_path, "server")
    with caplog.at_level(logging.DEBUG, logger="trizmq.security"):
        trizmq.Curve.server(secret, tmp_path)
    assert caplog.records == []


MALFORMED_KEYS = {
    "no public key": ("curve\n", "no public-key line"),
    "a truncated key": (
        'curve\n    public-key = "rq5:5]tB8pcw"\n',
        "its public-key is not a key (40 Z85 characters expected)",
    ),
}


def allowed_with_a_malformed_key(tmp_path: Path, text: str) -> Path:
    """A directory of allowed keys: alice's, and `broken.key` holding `text`."""
    allowed = tmp_path / "allowed"
    generate_keys(allowed, "alice")
    (allowed / "broken.key").write_text(text)
    return allowed


@pytest.mark.parametrize(("text", "problem"), MALFORMED_KEYS.values(), ids=MALFORMED_KEYS)
def test_a_malformed_allowed_client_key_is_an_error_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    allowed = allowed_with_a_malformed_key(tmp_path, text)
    _, secret = generate_keys(tmp_path, "server")
    with pytest.raises(trizmq.TrizmqError) as raised:
        trizmq.Curve.server(secret, allowed)
    assert str(raised.value) == f"{allowed / 'broken.key'}: malformed CURVE key file: {problem}"


async def test_serve_exits_on_a_malformed_allowed_client_key_naming_the_file(
    tmp_path: Path,
) -> None:
    allowed = allowed_with_a_malformed_key(tmp_path, "curve\n")
    _, secret = generate_keys(tmp_path, "server")
    command = trizmq_command(
        "serve",
        str(SEED_RING),
        "--host",
        "controller",
        "--app",
        APP,
        *(f"--resolve={host}={addr}" for host, addr in unique_resolve().items()),
        "--curve-secret",
        str(secret),
        "--curve-allow",
        str(allowed),
    )
    with trio.fail_after(30):
        done = await run_process(command)
    assert done.returncode == 2
    assert done.stderr.decode() == (
        f"trizmq: {allowed / 'broken.key'}: malformed CURVE key file: no public-key line\n"
    )
