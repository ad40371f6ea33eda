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
    assert text(done.stderr) == "cluster_app.QuotaExceeded: over quota\n"


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


async def test_serve_of_an_app_topic_the_ring_does_not_list_for_the_host_exits_2() -> None:
    # cluster_app serves every topic of the seed ring; computenodex runs only two.
    command = trizmq_command(
        "serve", str(SEED_RING), "--host", "computenodex", "--app", APP, "--resolve",
        f"computenodex={unique_resolve(['computenodex'])['computenodex']}",
    )  # fmt: skip
    with trio.fail_after(20):
        done = await run_process(command)
    assert done.returncode == 2
    assert "'computenodex'" in text(done.stderr)
    assert "does not list" in text(done.stderr)
    assert "serving on" not in text(done.stderr)


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
