"""Counters of a service port, and the snapshot published to subscribers.

Counting is plain attribute arithmetic on the data path; all the work of
summarising (percentiles, rates) happens in `snapshot`, which runs only when
someone asked for stats.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Any

from ._logs import clip

#: Kinds counted in `received` and `sent`.
RECEIVED_KINDS = ("call", "cast", "fanout")
SENT_KINDS = ("reply", "error")
#: Bounds on what a subscriber may ask for, in seconds.
MIN_INTERVAL = 0.1
MAX_LEASE = 60.0
#: Subscribers one service port pushes stats to at most: each costs a snapshot
#: per interval, so an unbounded number would let subscribers load the service.
MAX_SUBSCRIBERS = 64

#: Seconds of handler latencies the percentiles are computed over.
LATENCY_WINDOW = 10.0
_LATENCY_SAMPLES = 1024
#: Upper bounds, in seconds, of the buckets each method counts every handler
#: latency in since the port started (the metrics' histogram); the last bucket,
#: past them, is unbounded.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Failed handlers a port remembers for its stats (`last_errors`).
LAST_ERRORS = 10
# Lines of a failed handler's traceback kept in `last_errors`: its end, where it was raised.
_TRACEBACK_LINES = 4


class LatencyWindow:
    """Handler latencies of the last `LATENCY_WINDOW` seconds (at most `samples`)."""

    def __init__(self, samples: int = _LATENCY_SAMPLES) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=samples)

    def add(self, now: float, seconds: float) -> None:
        """Record one handler latency, ending at monotonic time `now`."""
        self._samples.append((now, seconds))

    def recent(self, now: float) -> list[float]:
        """The latencies, in seconds, of the window ending at `now`."""
        return [s for t, s in self._samples if now - t <= LATENCY_WINDOW]

    def summary(self, now: float) -> dict[str, float]:
        """p50, p90, p99 and max, in milliseconds, of the window ending at `now`."""
        return summarise(self.recent(now))


def summarise(latencies: list[float]) -> dict[str, float]:
    """p50, p90, p99, max (in milliseconds) and count of `latencies` (in seconds)."""
    if not latencies:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": ordered[-1] * 1000,
        "count": len(ordered),
    }


class MethodLatency(LatencyWindow):
    """A method's latency window, and a histogram of every latency since the port started."""

    def __init__(self, samples: int = _LATENCY_SAMPLES) -> None:
        super().__init__(samples)
        #: Latencies per bucket of `LATENCY_BUCKETS` (not cumulative: one
        #: increment per handler), then the ones past the last bound.
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def add(self, now: float, seconds: float) -> None:
        """Record one handler latency, ending at monotonic time `now`."""
        self._samples.append((now, seconds))
        # bisect_left: a latency equal to a bound counts in that bound's bucket ("le").
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


class MethodStats:
    """What went through one exposed method of a port since it started."""

    __slots__ = ("errors", "in_flight", "items", "latency", "received", "timeouts")

    def __init__(self) -> None:
        self.received: Counter[str] = Counter(dict.fromkeys(RECEIVED_KINDS, 0))
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.timeouts = 0
        self.items = 0  # items its streams sent
        self.latency = MethodLatency()

    def snapshot(self, now: float) -> dict[str, Any]:
        """This method's part of the stats message (`methods` on the monitor page)."""
        return {
            "received": dict(self.received),
            "errors": dict(self.errors),
            "in_flight": self.in_flight,
            "timeouts": self.timeouts,
            "items": self.items,
            "latency_ms": self.latency.summary(now),
        }


class ServiceStats:
    """What went through one service port since it started."""

    def __init__(
        self, host: str, topic: str, port: int, methods: Iterable[str] = (), endpoint: str = ""
    ) -> None:
        self.host = host
        self.topic = topic
        self.port = port
        self.endpoint = endpoint
        self.pid = os.getpid()
        # Only exposed methods get here, so the table stays as small as the endpoint.
        self.methods: defaultdict[str, MethodStats] = defaultdict(MethodStats)
        for name in methods:
            self.methods[name] = MethodStats()
        self.last_errors: deque[dict[str, Any]] = deque(maxlen=LAST_ERRORS)
        self.started = time.time()
        self._started_monotonic = time.monotonic()
        # The kinds are always present, so a reader can rely on the keys.
        self.received: Counter[str] = Counter(dict.fromkeys(RECEIVED_KINDS, 0))
        self.sent: Counter[str] = Counter(dict.fromkeys(SENT_KINDS, 0))
        self.bytes_in = 0
        self.bytes_out = 0
        self.rejected: Counter[str] = Counter()
        self.cancelled = 0
        self.peers = 0

    # Handlers run only for exposed methods, so the port's handler counts are its
    # methods' together: counted once, per method, and summed when read.

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return sum(m.in_flight for m in self.methods.values())

    @property
    def errors(self) -> Counter[str]:
        """Handler exceptions since the port started, by exception type."""
        total: Counter[str] = Counter()
        for m in self.methods.values():
            total.update(m.errors)
        return total

    @property
    def timeouts(self) -> int:
        """Handlers cancelled because their call's deadline passed."""
        return sum(m.timeouts for m in self.methods.values())

    def failed(self, method: str, type_name: str, message: str, trace: str) -> None:
        """Remember a failed handler for `last_errors`."""
        self.last_errors.append(
            {
                "time": time.time(),
                "method": method,
                "type": type_name,
                "message": clip(message),
                "traceback": [clip(line) for line in trace.splitlines()[-_TRACEBACK_LINES:]],
            }
        )

    def uptime(self) -> float:
        """Seconds since the port started, on a monotonic clock."""
        return time.monotonic() - self._started_monotonic

    def snapshot(self) -> dict[str, Any]:
        """The stats message's `data`: plain data, documented on the monitor page."""
        now = time.monotonic()
        return {
            "host": self.host,
            "topic": self.topic,
            "port": self.port,
            "pid": self.pid,
            "endpoint": self.endpoint,
            "started": self.started,
            "uptime": now - self._started_monotonic,
            "received": dict(self.received),
            "sent": dict(self.sent),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "in_flight": self.in_flight,
            "errors": dict(self.errors),
            "rejected": dict(self.rejected),
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "peers": self.peers,
            # The port's latencies are its methods': recorded once, for the method.
            "latency_ms": summarise(
                [s for m in self.methods.values() for s in m.latency.recent(now)]
            ),
            "methods": {name: m.snapshot(now) for name, m in self.methods.items()},
            "last_errors": list(self.last_errors),
        }


# The ports this process serves now, in the order they started (a dict as an
# ordered set), for the metrics exporter to read when it is scraped.
_serving: dict[ServiceStats, None] = {}


@contextlib.contextmanager
def registered(stats: ServiceStats) -> Iterator[None]:
    """List a port's stats in `serving_stats` while the service runs."""
    _serving[stats] = None
    try:
        yield
    finally:
        del _serving[stats]


def serving_stats() -> list[ServiceStats]:
    """The stats of every port this process serves now."""
    return list(_serving)


class Subscriptions:
    """Who wants stats pushed, how often, and until when (monotonic seconds).

    A subscriber renews its lease by subscribing again; one that stops renewing
    (it quit, or its node died) is forgotten when the lease ends.
    """

    def __init__(self) -> None:
        # identity -> [subscription id, interval, next due, lease end]
        self._subs: dict[bytes, list[Any]] = {}

    def add(self, identity: bytes, id: int, interval: float, lease: float, now: float) -> bool:
        """Subscribe (the first push is due now), or renew a lease on the same schedule.

        The interval is bounded to `MIN_INTERVAL`..`MAX_LEASE` and the lease to
        interval..`MAX_LEASE`; NaN counts as the lower bound.

        Returns:
            False, with nothing changed, when a new identity would be subscriber
            number `MAX_SUBSCRIBERS` + 1; a known identity is always accepted.
        """
        sub = self._subs.get(identity)
        if sub is None and len(self._subs) >= MAX_SUBSCRIBERS:
            return False
        interval = _bounded(interval, MIN_INTERVAL, MAX_LEASE)
        end = now + _bounded(lease, interval, MAX_LEASE)
        if sub is not None and sub[0] == id and sub[1] == interval:
            sub[3] = end  # a renewal must not push early: rates are per interval
        else:
            self._subs[identity] = [id, interval, now, end]
        return True

    def drop(self, identity: bytes) -> None:
        """Forget a subscriber (it cannot be reached)."""
        self._subs.pop(identity, None)

    def due(self, now: float) -> list[tuple[bytes, int]]:
        """The (identity, subscription id) to push to now; expired leases are dropped."""
        result = []
        for identity, sub in list(self._subs.items()):
            if sub[3] < now:
                del self._subs[identity]
            elif sub[2] <= now:
                sub[2] = now + sub[1]
                result.append((identity, sub[0]))
        return result

    def next_due(self) -> float:
        """The monotonic time of the next push or expiry (`math.inf` with no subscriber)."""
        return min((min(sub[2], sub[3]) for sub in self._subs.values()), default=math.inf)


def _bounded(value: float, low: float, high: float) -> float:
    # NaN fails every comparison, so min/max alone would let it through: a NaN
    # lease end never passes, and the subscription would never expire.
    return low if math.isnan(value) else min(max(value, low), high)
