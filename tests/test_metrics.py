"""Prometheus metrics: what a scrape of `serve_metrics` (and `trizmq serve
--metrics`) shows is what the services did, and a real Prometheus server
scrapes it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import (
    SEED_RING,
    Cluster,
    eventually,
    run_process,
    serving,
    trizmq_command,
    unique_resolve,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

import trizmq
from trizmq._stats import LATENCY_BUCKETS, MethodLatency

RING = trizmq.Ring.from_mapping({"compute:9601": ["node"], "network:9602": ["node"]})
PORT = {"topic": "compute", "host": "node"}
# Not through a proxy the environment may name: everything here is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Boom(Exception):
    pass


class Endpoint:
    def __init__(self) -> None:
        self.release = trio.Event()
        self.casts = 0

    async def ping(self, ctx: trizmq.Context, x: int) -> int:
        return x + 1

    async def record(self, ctx: trizmq.Context) -> None:
        self.casts += 1

    async def fail(self, ctx: trizmq.Context) -> None:
        raise Boom("no")

    async def nap(self, ctx: trizmq.Context, seconds: float) -> None:
        await trio.sleep(seconds)

    async def hold(self, ctx: trizmq.Context) -> None:
        await self.release.wait()


class Scrape:
    """The samples of one scrape, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the one sample `name` with these labels (and any others), or None."""
        found = [
            s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()
        ]
        assert len(found) <= 1, f"{name}{labels}: {len(found)} samples"
        return found[0] if found else None


async def http_get(url: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET."""

    def get() -> tuple[int, dict[str, str], str]:
        try:
            with _OPENER.open(url, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    return await trio.to_thread.run_sync(get)


async def scrape(url: str) -> Scrape:
    status, headers, body = await http_get(url)
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(body)


async def raw_request(url: str, request: bytes) -> bytes:
    """What the server answers to `request`, sent as is, up to its close or reset."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    answer = b""
    async with stream:
        await stream.send_all(request)
        # A server closing with part of the request unread resets the connection.
        with contextlib.suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some():
                answer += chunk
    return answer


@contextlib.asynccontextmanager
async def metrics_of(endpoint: Endpoint) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """compute and network served by one `endpoint`, and their metrics: (URL, resolve)."""
    resolve = unique_resolve(["node"])
    async with (
        serving(RING, "compute", endpoint, "node", resolve),
        serving(RING, "network", endpoint, "node", resolve),
        trio.open_nursery() as nursery,
    ):
        url = await nursery.start(trizmq.serve_metrics, resolve["node"], 0)
        yield url, resolve
        nursery.cancel_scope.cancel()


async def test_a_scrape_shows_what_the_service_did() -> None:
    endpoint = Endpoint()
    with trio.fail_after(20):
        async with (
            metrics_of(endpoint) as (url, resolve),
            trizmq.open_client(RING, resolve=resolve) as client,
        ):
            for x in range(3):
                assert await client.call("compute", "ping", x=x) == x + 1
            await client.cast("compute", "record")
            await client.cast("compute", "record")
            with pytest.raises(trizmq.RemoteError):
                await client.call("compute", "fail")
            with pytest.raises(trizmq.NoSuchMethod):
                await client.call("compute", "missing")
            with pytest.raises(trizmq.CallTimeout):
                await client.call("compute", "nap", seconds=10, timeout=0.1)
            await client.call("compute", "nap", seconds=1.0)
            await eventually(lambda: endpoint.casts == 2)
            # The timed-out handler ends on the service's side a moment after the caller's.
            m = await eventually(
                lambda: scrape(url),
                until=lambda m: m.get("trizmq_timeouts_total", **PORT) == 1,
            )

            assert m.get("trizmq_requests_total", **PORT, kind="call") == 7
            assert m.get("trizmq_requests_total", **PORT, kind="cast") == 2
            assert m.get("trizmq_requests_total", **PORT, kind="fanout") == 0
            assert m.get("trizmq_replies_total", **PORT, kind="reply") == 4
            assert m.get("trizmq_replies_total", **PORT, kind="error") == 3
            boom = f"{__name__}.Boom"
            assert m.get("trizmq_errors_total", **PORT, type=boom) == 1
            assert m.get("trizmq_rejected_total", **PORT, reason="no_such_method") == 1
            assert m.get("trizmq_cancelled_total", **PORT) == 0
            assert m.get("trizmq_in_flight", **PORT) == 0
            assert m.get("trizmq_peers", **PORT) == 1
            assert (m.get("trizmq_bytes_received_total", **PORT) or 0) > 0
            assert (m.get("trizmq_bytes_sent_total", **PORT) or 0) > 0
            assert 0 < (m.get("trizmq_uptime_seconds", **PORT) or 0) < 20
            assert (m.get("trizmq_start_time_seconds", **PORT) or 0) > 1.7e9

            ping = {**PORT, "method": "ping"}
            assert m.get("trizmq_method_requests_total", **ping, kind="call") == 3
            record = {**PORT, "method": "record"}
            assert m.get("trizmq_method_requests_total", **record, kind="cast") == 2
            fail = {**PORT, "method": "fail"}
            assert m.get("trizmq_method_errors_total", **fail, type=boom) == 1
            assert m.get("trizmq_method_errors_total", **ping, type=boom) is None
            nap = {**PORT, "method": "nap"}
            assert m.get("trizmq_method_timeouts_total", **nap) == 1
            assert m.get("trizmq_method_in_flight", **nap) == 0

            # The histogram: cumulative buckets, +Inf the count, the sum in seconds.
            bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
            for method, count in (("ping", 3), ("record", 2), ("fail", 1), ("nap", 2)):
                labels = {**PORT, "method": method}
                buckets = [
                    m.get("trizmq_method_latency_seconds_bucket", **labels, le=le) for le in bounds
                ]
                assert buckets == sorted(buckets), method
                assert buckets[-1] == count, method
                assert m.get("trizmq_method_latency_seconds_count", **labels) == count
            # nap ran 0.1 s (cut by the deadline) and 1 s: none up to 0.05, one up to 0.5.
            assert m.get("trizmq_method_latency_seconds_bucket", **nap, le="0.05") == 0
            assert m.get("trizmq_method_latency_seconds_bucket", **nap, le="0.5") == 1
            assert 1.1 <= (m.get("trizmq_method_latency_seconds_sum", **nap) or 0) < 5
            assert (m.get("trizmq_method_latency_seconds_sum", **ping) or 0) < 1

            # The other port of the process, counted apart; its methods are listed unused.
            network = {"topic": "network", "host": "node"}
            assert m.get("trizmq_requests_total", **network, kind="call") == 0
            assert m.get("trizmq_method_latency_seconds_count", **network, method="ping") == 0


def test_a_latency_counts_in_the_first_bucket_whose_bound_it_does_not_pass() -> None:
    latency = MethodLatency()
    for seconds in (LATENCY_BUCKETS[0], LATENCY_BUCKETS[0] * 1.01, LATENCY_BUCKETS[-1] + 1, 0.0):
        latency.add(1.0, seconds)
    assert latency.buckets[:2] == [2, 1]
    assert latency.buckets[-1] == 1 and sum(latency.buckets) == 4
    assert latency.sum == pytest.approx(LATENCY_BUCKETS[0] * 2.01 + LATENCY_BUCKETS[-1] + 1)
    assert latency.summary(1.0)["count"] == 4  # the window of the monitor's percentiles too


async def test_in_flight_handlers_show_and_a_stopped_port_goes() -> None:
    endpoint = Endpoint()
    with trio.fail_after(20):
        async with metrics_of(endpoint) as (url, resolve):
            async with (
                trizmq.open_client(RING, resolve=resolve) as client,
                trio.open_nursery() as nursery,
            ):
                for _ in range(2):
                    nursery.start_soon(client.cast, "network", "hold")
                m = await eventually(
                    lambda: scrape(url),
                    until=lambda m: m.get("trizmq_in_flight", topic="network") == 2,
                )
                assert m.get("trizmq_method_in_flight", topic="network", method="hold") == 2
                assert m.get("trizmq_in_flight", topic="compute") == 0
                endpoint.release.set()
            m = await eventually(
                lambda: scrape(url),
                until=lambda m: m.get("trizmq_in_flight", topic="network") == 0,
            )
    async with trio.open_nursery() as nursery:
        # Only the running ports are listed: a scrape after they stopped shows none of them.
        url = await nursery.start(trizmq.serve_metrics, "127.0.0.1", 0)
        m = await scrape(url)
        assert m.get("trizmq_requests_total", topic="network", kind="cast") is None
        assert "trizmq_requests" in m.families  # described even without a port
        nursery.cancel_scope.cancel()


async def test_the_server_answers_only_get_of_the_metrics_path() -> None:
    with trio.fail_after(20):
        async with metrics_of(Endpoint()) as (url, _):
            root = url.removesuffix("/metrics")
            status, _, body = await http_get(root + "/")
            assert (status, body) == (404, "metrics are at /metrics\n")
            status, _, _ = await http_get(url + "?name[]=trizmq_peers")
            assert status == 200
            answer = await raw_request(url, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body_bytes = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200 OK\r\n") and body_bytes == b""
            assert int(re.findall(rb"Content-Length: (\d+)", head)[0]) > 1000
            answer = await raw_request(url, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.0 405 ")
            assert b"Allow: GET, HEAD\r\n" in answer
            answer = await raw_request(url, b"nonsense\r\n\r\n")
            assert answer.startswith(b"HTTP/1.0 400 ")
            # A head past the limit is cut off, not buffered; the server stays up.
            assert await raw_request(url, b"G" * 20000) == b""
            await scrape(url)


class Failing:
    def collect(self) -> list[Metric]:
        raise RuntimeError("broken collector")


async def test_a_registry_of_ones_own_and_a_failing_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    with trio.fail_after(20):
        async with metrics_of(Endpoint()) as (_, resolve), trio.open_nursery() as nursery:
            serve = functools.partial(trizmq.serve_metrics, resolve["node"], 0, registry=registry)
            url = await nursery.start(serve)
            await nursery.start(serve)  # the collector is added to a registry once
            m = await scrape(url)
            assert m.get("trizmq_requests_total", **PORT, kind="call") == 0
            assert m.get("process_start_time_seconds") is None  # not the default registry
            failing = Failing()
            registry.register(failing)
            status, _, body = await http_get(url)
            assert (status, body) == (500, "a collector failed, see the log\n")
            assert "broken collector" in caplog.text
            registry.unregister(failing)
            await scrape(url)  # the server stayed up
            nursery.cancel_scope.cancel()


async def test_an_address_in_use_is_an_error_that_says_so() -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(trizmq.serve_metrics, "127.0.0.1", 0)
        port = int(url.split(":")[2].split("/")[0])
        with pytest.raises(OSError, match=rf"metrics: cannot listen on 127\.0\.0\.1:{port}"):
            await nursery.start(trizmq.serve_metrics, "127.0.0.1", port)
        nursery.cancel_scope.cancel()


# -- trizmq serve --metrics -------------------------------------------------------------------


async def test_trizmq_serve_metrics_covers_every_topic_of_the_process(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, hosts=["computenodex"], serve_args=["--metrics", "127.0.0.1:0"])
    cluster.start()
    try:
        found = re.search(r"trizmq: metrics on (http://\S+)", cluster.log("computenodex"))
        assert found, cluster.log("computenodex")
        url = found[1]
        with trio.fail_after(20):
            async with cluster.client() as client:
                assert await client.call("compute.computenodex", "ping", x=1) == 2
                await client.cast("network.computenodex", "record", key="k")
                await client.call("network.computenodex", "count", key="k")
            m = await scrape(url)
        labels = {"host": "computenodex", "kind": "call"}
        assert m.get("trizmq_requests_total", topic="compute", **labels) == 1
        assert m.get("trizmq_requests_total", topic="network", **labels) == 1
        assert (
            m.get("trizmq_requests_total", topic="network", host="computenodex", kind="cast") == 1
        )
        # prometheus_client's default registry: the process metrics come along.
        assert m.get("process_start_time_seconds") is not None
    finally:
        cluster.stop()


async def test_trizmq_serve_rejects_a_malformed_metrics_address() -> None:
    command = trizmq_command(
        "serve", str(SEED_RING), "--host", "controller", "--app", "cluster_app:SERVICES"
    )
    done = await run_process([*command, "--metrics", "9464"])
    assert done.returncode == 2
    assert b"trizmq: --metrics '9464': expected ADDR:PORT" in done.stderr


# -- a real Prometheus ----------------------------------------------------------------------


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    assert path, (
        "the Prometheus server is not installed: `make test` installs Debian's `prometheus` "
        "package when run as root; otherwise install it (`sudo apt-get install prometheus`) "
        "or put a `prometheus` binary on PATH"
    )
    return path


@contextlib.asynccontextmanager
async def prometheus_scraping(target: str, workdir: Path) -> AsyncIterator[str]:
    """A Prometheus server scraping `target` (HOST:PORT) every second; yields its URL."""
    address = unique_resolve(["prometheus"])["prometheus"]
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {"job_name": "trizmq", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={address}:9090",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        yield f"http://{address}:9090"
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        with trio.CancelScope(shield=True):
            await _stop(proc)


async def _stop(proc: trio.Process) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after 10 s."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        with trio.move_on_after(10):
            await proc.wait()
            return


async def query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    """The result vector of an instant query, [] until Prometheus answers."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        status, _, body = await http_get(url)
    except OSError:  # not listening yet
        return []
    if status != 200:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def test_a_prometheus_server_scrapes_the_metrics(tmp_path: Path) -> None:
    prometheus_binary()  # a clear failure before anything starts
    endpoint = Endpoint()
    with trio.fail_after(90):
        async with (
            metrics_of(endpoint) as (url, resolve),
            trizmq.open_client(RING, resolve=resolve) as client,
        ):
            for x in range(5):
                await client.call("compute", "ping", x=x)
            with pytest.raises(trizmq.RemoteError):
                await client.call("compute", "fail")
            target = urllib.parse.urlsplit(url).netloc
            async with prometheus_scraping(target, tmp_path) as prometheus:
                selector = '{topic="compute",host="node",kind="call"}'
                result = await eventually(
                    lambda: query(prometheus, "trizmq_requests_total" + selector), timeout=60
                )
                assert [r["value"][1] for r in result] == ["6"]
                assert result[0]["metric"]["job"] == "trizmq"
                count = 'trizmq_method_latency_seconds_count{topic="compute",method="ping"}'
                assert [r["value"][1] for r in await query(prometheus, count)] == ["5"]
                # The histogram works as one in PromQL: a quantile within the buckets.
                quantile = (
                    "histogram_quantile(0.5, trizmq_method_latency_seconds_bucket"
                    '{topic="compute",method="ping"})'
                )
                [median] = await query(prometheus, quantile)
                assert 0 < float(median["value"][1]) <= LATENCY_BUCKETS[-1]
                errors = 'trizmq_errors_total{topic="compute"}'
                [error] = await query(prometheus, errors)
                assert error["metric"]["type"] == f"{__name__}.Boom"
                assert error["value"][1] == "1"


async def test_a_topic_served_on_two_ports_at_once_is_scraped_once_by_the_newer() -> None:
    # A topic that a ring reload moved: its old port serves on through its grace period.
    resolve = unique_resolve(["node"])
    moved = trizmq.Ring.from_mapping({"compute:9611": ["node"]})
    with trio.fail_after(20):
        async with (
            serving(RING, "compute", Endpoint(), "node", resolve),
            serving(moved, "compute", Endpoint(), "node", resolve),
            trio.open_nursery() as nursery,
        ):
            url = await nursery.start(trizmq.serve_metrics, resolve["node"], 0)
            async with trizmq.open_client(moved, resolve=resolve) as client:
                assert await client.call("compute", "ping", x=1) == 2
            m = await scrape(url)
            assert m.get("trizmq_requests_total", **PORT, kind="call") == 1
            nursery.cancel_scope.cancel()
