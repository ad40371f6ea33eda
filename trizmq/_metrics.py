"""Prometheus metrics of the ports this process serves, over HTTP.

A scrape reads the live `ServiceStats` of every port (`serving_stats`) and
turns them into metric families: the data path only counts, as it always does,
and nothing is computed between scrapes. The HTTP side is a minimal Trio
server in the services' own thread, so a scrape never races the counters.

prometheus_client is imported when metrics are first served, not with trizmq:
it would add tens of milliseconds to every `import trizmq`.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

import trio

from ._stats import LATENCY_BUCKETS, ServiceStats, serving_stats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger("trizmq.metrics")

#: The path metrics are served on; every other path is a 404.
METRICS_PATH = "/metrics"
# The text exposition format every Prometheus version reads.
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A request head past this size, or not complete within this time, is dropped:
# a client that is not a scraper must not hold the server's memory or tasks.
_MAX_HEAD = 8192
_REQUEST_TIMEOUT = 10.0

_PORT_LABELS = ("topic", "host")
_METHOD_LABELS = ("topic", "host", "method")
# The histogram's `le` labels: `LATENCY_BUCKETS`, then the unbounded bucket.
_BOUNDS = (*map(str, LATENCY_BUCKETS), "+Inf")
# Registries the collector was added to, so that serving one twice adds it once.
_collecting: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


async def serve_metrics(
    address: str,
    port: int,
    *,
    registry: CollectorRegistry | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve Prometheus metrics of every port this process serves, until cancelled.

    Answers `GET /metrics` with the text exposition format: the counters of
    every service this process runs with `trizmq.serve`, read when scraped
    (see the metrics page for the list). Runs in the caller's Trio thread,
    next to the services: use with `nursery.start`, which returns the URL to
    scrape once the port is bound.

    Args:
        address: The address to listen on, e.g. `"127.0.0.1"`, or `"0.0.0.0"`
            for every interface.
        port: The TCP port; 0 picks a free one (the URL says which).
        registry: The prometheus_client registry to serve; trizmq's collector
            is added to it once. The default, prometheus_client's `REGISTRY`,
            also holds the process metrics and the application's own.
        task_status: Given by `nursery.start`.

    Raises:
        OSError: The address cannot be listened on.
    """
    import prometheus_client

    if registry is None:
        registry = prometheus_client.REGISTRY
    if registry not in _collecting:
        registry.register(_Collector())
        _collecting.add(registry)
    try:
        listeners = await trio.open_tcp_listeners(port, host=address)
    except OSError as exc:
        raise OSError(exc.errno, f"metrics: cannot listen on {address}:{port}: {exc}") from None
    bound = listeners[0].socket.getsockname()
    host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    task_status.started(f"http://{host}:{bound[1]}{METRICS_PATH}")
    await trio.serve_listeners(functools.partial(_answer, registry=registry), listeners)


def parse_address(text: str) -> tuple[str, int]:
    """`ADDR:PORT` (`[ADDR]:PORT` for IPv6) as (address, port).

    Raises:
        ValueError: It is not of that form.
    """
    address, colon, port = text.rpartition(":")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not colon or not address or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9464")
    return address, int(port)


async def _answer(stream: trio.SocketStream, *, registry: CollectorRegistry) -> None:
    """Answer one HTTP request, then close the connection (HTTP/1.0)."""
    async with stream:
        try:
            with trio.move_on_after(_REQUEST_TIMEOUT):
                head = await _read_head(stream)
                if head is not None:
                    await stream.send_all(_response(head, registry))
        except trio.BrokenResourceError:
            pass  # the client went away: nothing to answer


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request up to its blank line, or None if it ends or grows too large first."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > _MAX_HEAD:
            return None
        chunk = await stream.receive_some(_MAX_HEAD)
        if not chunk:
            return None
        data += chunk
    return data


def _response(head: bytes, registry: CollectorRegistry) -> bytes:
    parts = head.split(b"\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _http("400 Bad Request", b"bad request\n")
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        return _http("405 Method Not Allowed", b"only GET and HEAD\n", extra="Allow: GET, HEAD\r\n")
    if target.partition("?")[0] != METRICS_PATH:
        return _http("404 Not Found", f"metrics are at {METRICS_PATH}\n".encode())
    from prometheus_client import generate_latest

    try:
        body = generate_latest(registry)
    except Exception:
        # A failing collector (the application's, most likely) must not stop the server.
        logger.exception("metrics: a collector failed")
        return _http("500 Internal Server Error", b"a collector failed, see the log\n")
    if method == "HEAD":
        return _http("200 OK", b"", _CONTENT_TYPE, length=len(body))
    return _http("200 OK", body, _CONTENT_TYPE)


def _http(
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    extra: str = "",
    length: int | None = None,
) -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Collector:
    """Metric families of every live port, built from its `ServiceStats` when scraped."""

    def describe(self) -> Iterable[Metric]:
        # The names, for the registry's check against other collectors' names.
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        # A topic a ring reload moved serves its old port too, through its grace
        # period: one sample per label set, the new port's (registered last).
        newest = {(stats.topic, stats.host): stats for stats in serving_stats()}
        for stats in newest.values():
            families.add(stats)
        return families.all()


class _Families:
    """One scrape's metric families, every port's samples in them."""

    def __init__(self) -> None:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        port, method = _PORT_LABELS, _METHOD_LABELS
        self.requests = CounterMetricFamily(
            "trizmq_requests",
            "Requests received, by kind (call, cast, fanout, stream), refused ones included.",
            labels=(*port, "kind"),
        )
        self.replies = CounterMetricFamily(
            "trizmq_replies",
            "Answers sent to callers, by kind (reply, error, items).",
            labels=(*port, "kind"),
        )
        self.errors = CounterMetricFamily(
            "trizmq_errors", "Handler exceptions, by exception type.", labels=(*port, "type")
        )
        self.rejected = CounterMetricFamily(
            "trizmq_rejected",
            "Requests refused or answers not delivered, by reason.",
            labels=(*port, "reason"),
        )
        self.timeouts = CounterMetricFamily(
            "trizmq_timeouts", "Handlers cancelled by their call's deadline.", labels=port
        )
        self.cancelled = CounterMetricFamily(
            "trizmq_cancelled", "Handlers cancelled by their caller.", labels=port
        )
        self.bytes_in = CounterMetricFamily(
            "trizmq_bytes_received", "Bytes of request frames received.", labels=port
        )
        self.bytes_out = CounterMetricFamily(
            "trizmq_bytes_sent", "Bytes of replies and error replies sent.", labels=port
        )
        self.in_flight = GaugeMetricFamily("trizmq_in_flight", "Handlers running now.", labels=port)
        self.peers = GaugeMetricFamily(
            "trizmq_peers", "TCP connections to the port now.", labels=port
        )
        self.start_time = GaugeMetricFamily(
            "trizmq_start_time_seconds", "When the port started, Unix time.", labels=port
        )
        self.uptime = GaugeMetricFamily(
            "trizmq_uptime_seconds", "Seconds since the port started.", labels=port
        )
        self.method_requests = CounterMetricFamily(
            "trizmq_method_requests",
            "Requests that reached the method's handler, by kind.",
            labels=(*method, "kind"),
        )
        self.method_errors = CounterMetricFamily(
            "trizmq_method_errors",
            "The method's handler exceptions, by exception type.",
            labels=(*method, "type"),
        )
        self.method_timeouts = CounterMetricFamily(
            "trizmq_method_timeouts",
            "The method's handlers cancelled by their call's deadline.",
            labels=method,
        )
        self.method_in_flight = GaugeMetricFamily(
            "trizmq_method_in_flight", "The method's handlers running now.", labels=method
        )
        self.method_items = CounterMetricFamily(
            "trizmq_method_items", "Items the method's streams sent.", labels=method
        )
        self.method_latency = HistogramMetricFamily(
            "trizmq_method_latency_seconds",
            "Run time of the method's handlers since the port started.",
            labels=method,
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())

    def add(self, stats: ServiceStats) -> None:
        """Add one port's samples."""
        # Every mapping is copied (list(...)) before it is walked: the copy is
        # one C call, so a scrape from another thread never sees a key added
        # halfway through.
        port = [stats.topic, stats.host]
        for family, counts in (
            (self.requests, stats.received),
            (self.replies, stats.sent),
            (self.errors, stats.errors),
            (self.rejected, stats.rejected),
        ):
            for label, n in list(counts.items()):
                family.add_metric([*port, label], n)
        self.timeouts.add_metric(port, stats.timeouts)
        self.cancelled.add_metric(port, stats.cancelled)
        self.bytes_in.add_metric(port, stats.bytes_in)
        self.bytes_out.add_metric(port, stats.bytes_out)
        self.in_flight.add_metric(port, stats.in_flight)
        self.peers.add_metric(port, stats.peers)
        self.start_time.add_metric(port, stats.started)
        self.uptime.add_metric(port, stats.uptime())
        for name, method in list(stats.methods.items()):
            labels = [*port, name]
            for kind, n in list(method.received.items()):
                self.method_requests.add_metric([*labels, kind], n)
            for type_name, n in list(method.errors.items()):
                self.method_errors.add_metric([*labels, type_name], n)
            self.method_timeouts.add_metric(labels, method.timeouts)
            self.method_in_flight.add_metric(labels, method.in_flight)
            self.method_items.add_metric(labels, method.items)
            latency = method.latency
            # Prometheus buckets are cumulative: each counts the latencies up to its bound.
            buckets, total = [], 0
            for bound, n in zip(_BOUNDS, list(latency.buckets), strict=True):
                total += n
                buckets.append((bound, float(total)))
            self.method_latency.add_metric(labels, buckets, latency.sum)
