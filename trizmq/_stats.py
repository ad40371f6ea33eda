"""Counters of a service port, and the snapshot published to subscribers.

Counting is plain attribute arithmetic on the data path; all the work of
summarising (percentiles, rates) happens in `snapshot`, which runs only when
someone asked for stats.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

#: Seconds of handler latencies the percentiles are computed over.
LATENCY_WINDOW = 10.0
_LATENCY_SAMPLES = 8192


class LatencyWindow:
    """Handler latencies of the last `LATENCY_WINDOW` seconds (at most 8192 samples)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=_LATENCY_SAMPLES)

    def add(self, now: float, seconds: float) -> None:
        """Record one handler latency, ending at monotonic time `now`."""
        self._samples.append((now, seconds))

    def summary(self, now: float) -> dict[str, float]:
        """p50, p90, p99 and max, in milliseconds, of the window ending at `now`."""
        recent = sorted(s for t, s in self._samples if now - t <= LATENCY_WINDOW)
        if not recent:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "count": 0}

        def at(q: float) -> float:
            return recent[min(len(recent) - 1, int(q * len(recent)))] * 1000

        return {
            "p50": at(0.5),
            "p90": at(0.9),
            "p99": at(0.99),
            "max": recent[-1] * 1000,
            "count": len(recent),
        }


class ServiceStats:
    """What went through one service port since it started."""

    def __init__(self, host: str, topic: str, port: int) -> None:
        self.host = host
        self.topic = topic
        self.port = port
        self.started = time.time()
        self._started_monotonic = time.monotonic()
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.in_flight = 0
        self.errors: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.timeouts = 0
        self.cancelled = 0
        self.peers = 0
        self.latency = LatencyWindow()

    def snapshot(self) -> dict[str, Any]:
        """The stats message's `data`: plain data, documented on the monitor page."""
        now = time.monotonic()
        return {
            "host": self.host,
            "topic": self.topic,
            "port": self.port,
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
            "latency_ms": self.latency.summary(now),
        }
