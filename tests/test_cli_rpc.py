"""`trizmq serve`, `call`, `cast` and `fanout` as a user runs them, against real processes."""

from __future__ import annotations

import functools
import json
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import (
    APP,
    SEED_RING,
    Cluster,
    eventually,
    run_process,
    trizmq_command,
    unique_resolve,
)

from trizmq.cli import main


async def trizmq(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `trizmq COMMAND RING ARGS --resolve ...` against the cluster."""
    command, *rest = args
    return await run_process(
        trizmq_command(command, str(cluster.ring_path), *rest, *cluster.resolve_args)
    )


def text(stream: bytes) -> str:
    return stream.decode(errors="replace")


async def test_call_prints_the_result_as_json_and_exits_0(cluster: Cluster) -> None:
    with trio.fail_after(20):
        done = await trizmq(cluster, "call", "compute", "ping", "--arg", "x=1")
    assert (done.returncode, text(done.stdout), text(done.stderr)) == (0, "2\n", "")


async def test_call_sends_the_context_option_to_the_handler(cluster: Cluster) -> None:
    with trio.fail_after(20):
        done = await trizmq(
            cluster, "call", "compute.computenodex", "whoami", "--context", '{"user": "alice"}'
        )
    assert done.returncode == 0, text(done.stderr)
    answer = json.loads(done.stdout)
    assert (answer["host"], answer["values"]) == ("computenodex", {"user": "alice"})
    assert answer["caller"].startswith("trizmq-cli/")


async def test_call_of_a_failing_method_prints_the_remote_error_and_exits_1(
    cluster: Cluster,
) -> None:
    with trio.fail_after(20):
        done = await trizmq(cluster, "call", "scheduler", "fail", "--arg", 'message="over quota"')
    assert done.returncode == 1
    assert done.stdout == b""
    assert text(done.stderr) == "trizmq: cluster_app.QuotaExceeded: over quota\n"


@pytest.mark.serve_args("--send-tracebacks")
async def test_call_with_traceback_prints_the_remote_traceback(fresh_cluster: Cluster) -> None:
    with trio.fail_after(20):
        done = await trizmq(
            fresh_cluster,
            "call",
            "scheduler",
            "fail",
            "--arg",
            'message="over quota"',
            "--traceback",
        )
    assert done.returncode == 1
    assert "raise QuotaExceeded(message)" in text(done.stderr)


async def test_call_that_times_out_exits_3(cluster: Cluster) -> None:
    tag = f"cli-{secrets.token_hex(4)}"
    with trio.fail_after(20):
        done = await trizmq(
            cluster,
            "call",
            "compute.controller",
            "sleep",
            "--arg",
            "seconds=5",
            "--arg",
            f'tag="{tag}"',
            "--timeout",
            "0.3",
        )
    assert done.returncode == 3
    assert "timeout" in text(done.stderr)


async def test_call_to_a_target_not_in_the_ring_exits_2(cluster: Cluster) -> None:
    with trio.fail_after(20):
        done = await trizmq(cluster, "call", "scheduler.computenodex", "ping", "--arg", "x=1")
    assert done.returncode == 2
    assert text(done.stderr).startswith("trizmq: ")
    assert "'scheduler.computenodex'" in text(done.stderr)
    assert "Traceback" not in text(done.stderr)


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ("{bad", "invalid JSON at line 1 column 2: Expecting property name"),
        ("[1]", "expected a JSON object"),
    ],
)
async def test_call_with_a_context_that_is_not_a_json_object_exits_2(
    context: str, problem: str
) -> None:
    command = trizmq_command("call", str(SEED_RING), "compute", "ping", "--context", context)
    with trio.fail_after(20):
        done = await run_process(command)
    assert (done.returncode, done.stdout) == (2, b"")
    assert text(done.stderr).startswith(f"trizmq: --context: {problem}")
    assert text(done.stderr).count("\n") == 1


async def test_call_with_an_argument_nested_too_deeply_exits_2() -> None:
    value = "[" * 10_000 + "]" * 10_000
    command = trizmq_command("call", str(SEED_RING), "compute", "ping", "--arg", f"x={value}")
    with trio.fail_after(20):
        done = await run_process(command)
    assert (done.returncode, text(done.stderr)) == (
        2,
        "trizmq: --arg x: invalid JSON: nested too deeply\n",
    )


async def test_cast_exits_0_and_reaches_one_host(cluster: Cluster) -> None:
    key = f"cli-cast-{secrets.token_hex(4)}"
    with trio.fail_after(20):
        done = await trizmq(
            cluster, "cast", "compute.computenodex", "record", "--arg", f'key="{key}"'
        )
        assert done.returncode == 0, text(done.stderr)
        async with cluster.client() as client:
            seen = await eventually(
                lambda: client.call("compute.computenodex", "kinds_of", key=key)
            )
            other = await client.call("compute.controller", "count", key=key)
    assert (seen, other) == (["cast"], 0)


async def test_fanout_exits_0_and_reaches_every_host(cluster: Cluster) -> None:
    key = f"cli-fanout-{secrets.token_hex(4)}"
    with trio.fail_after(20):
        done = await trizmq(cluster, "fanout", "network", "record", "--arg", f'key="{key}"')
        assert done.returncode == 0, text(done.stderr)
        async with cluster.client() as client:
            for host in ("controller", "computenodex"):
                target = f"network.{host}"
                seen = await eventually(functools.partial(client.call, target, "kinds_of", key=key))
                assert seen == ["fanout"], host


def elsewhere(cluster: Cluster, host: str) -> tuple[list[str], str]:
    """`--resolve` options with `host` at an address nothing serves (the others the
    cluster's), and that address."""
    resolve = {**cluster.resolve, **unique_resolve([host])}
    options = [arg for name, addr in resolve.items() for arg in ("--resolve", f"{name}={addr}")]
    return options, resolve[host]


async def test_cast_to_a_host_not_connected_exits_3_and_says_nothing_was_sent(
    cluster: Cluster,
) -> None:
    resolve, address = elsewhere(cluster, "controller")
    command = trizmq_command(
        "cast", str(SEED_RING), "compute.controller", "ping", "--arg", "x=1",
        "--timeout", "0.5", *resolve,
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
    assert (done.returncode, text(done.stderr)) == (
        3,
        f"trizmq: cast: compute.controller at tcp://{address}:9501: "
        "not connected within 0.5 s, nothing sent\n",
    )


async def test_call_to_a_host_with_nothing_listening_exits_3_naming_host_and_address(
    cluster: Cluster,
) -> None:
    resolve, address = elsewhere(cluster, "controller")
    command = trizmq_command(
        "call", str(SEED_RING), "compute.controller", "ping", "--arg", "x=1", *resolve,
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
    assert (done.returncode, done.stdout) == (3, b"")
    assert text(done.stderr) == (
        f"trizmq: unreachable: compute.controller at tcp://{address}:9501: "
        "cannot connect (nothing listening, or no route), nothing sent\n"
    )


async def test_cast_with_a_timeout_exits_0_once_handed_to_the_service(cluster: Cluster) -> None:
    key = f"cli-cast-{secrets.token_hex(4)}"
    with trio.fail_after(20):
        done = await trizmq(
            cluster, "cast", "compute.controller", "record", "--arg", f'key="{key}"',
            "--timeout", "2",
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (0, b"")
        async with cluster.client() as client:
            seen = await eventually(lambda: client.call("compute.controller", "kinds_of", key=key))
    assert seen == ["cast"]


async def test_cast_to_a_topic_goes_to_a_host_whose_connection_is_up(cluster: Cluster) -> None:
    # compute's first host, controller, is down here: the cast goes to computenodex.
    key = f"cli-cast-{secrets.token_hex(4)}"
    command = trizmq_command(
        "cast", str(SEED_RING), "compute", "record", "--arg", f'key="{key}"',
        *elsewhere(cluster, "controller")[0],
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
        assert (done.returncode, done.stderr) == (0, b"")
        async with cluster.client() as client:
            seen = await eventually(
                lambda: client.call("compute.computenodex", "kinds_of", key=key)
            )
    assert seen == ["cast"]


async def test_fanout_with_a_host_not_connected_exits_3_and_sends_to_none(
    cluster: Cluster,
) -> None:
    key = f"cli-fanout-{secrets.token_hex(4)}"
    command = trizmq_command(
        "fanout", str(SEED_RING), "network", "record", "--arg", f'key="{key}"',
        "--timeout", "0.5", *elsewhere(cluster, "controller")[0],
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
        async with cluster.client() as client:
            seen = await client.call("network.computenodex", "kinds_of", key=key)
    assert done.returncode == 3
    assert text(done.stderr).startswith("trizmq: fanout: network.controller at tcp://")
    assert "computenodex" not in text(done.stderr)
    assert seen == []


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`trizmq COMMAND --help`, its words one space apart."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_cast_and_fanout_help_say_what_the_cli_cannot_know(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cast, fanout = help_of("cast", capsys), help_of("fanout", capsys)
    for help in (cast, fanout):
        assert "has no answer" in help and "try a method with trizmq call first" in help
    assert "sends nothing and exits 3" in cast and "sends to none and exits 3" in fanout


def test_fanout_help_says_it_takes_a_topic_or_a_topic_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    help = help_of("fanout", capsys)
    assert "TARGET 'topic' (every host of it) or 'topic.host' (that host only)" in help


async def test_serve_on_an_address_in_use_says_so_in_one_line(cluster: Cluster) -> None:
    address = cluster.resolve["computenodex"]
    command = trizmq_command(
        "serve", str(SEED_RING), "--host", "computenodex", "--app", APP, "--topic", "compute",
        "--resolve", f"computenodex={address}",
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
    assert (done.returncode, text(done.stderr)) == (
        2,
        f"trizmq: compute.computenodex: cannot bind tcp://{address}:9501: Address already in use\n",
    )


async def test_serve_of_a_topic_option_the_ring_does_not_list_for_the_host_exits_2() -> None:
    command = trizmq_command(
        "serve", str(SEED_RING), "--host", "computenodex", "--app", APP, "--topic", "cert",
        "--resolve", f"computenodex={unique_resolve(['computenodex'])['computenodex']}",
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
    assert done.returncode == 2
    assert "'cert'" in text(done.stderr)
    assert "'computenodex'" in text(done.stderr)


async def test_serve_of_a_ring_with_a_number_too_long_exits_2(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text('{"compute:9501": [' + "1" * 5_000 + "]}", encoding="utf-8")
    command = trizmq_command("serve", str(ring), "--host", "computenodex", "--app", APP)
    with trio.fail_after(20):
        done = await run_process(command)
    problem = f"invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
    assert (done.returncode, text(done.stderr)) == (2, f"trizmq: {ring}: {problem}\n")


def test_sigint_stops_serve_with_exit_0(tmp_path: Path) -> None:
    node = Cluster(tmp_path, hosts=["computenodex"])
    node.start()
    try:
        codes = node.stop(signum=signal.SIGINT)
    finally:
        node.stop()
    assert codes == {"computenodex": 0}
    assert "trizmq: SIGINT, stopping" in node.log("computenodex")
