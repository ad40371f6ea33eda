"""`Trends`: smoothed rates and recent history of every port, from the snapshots the board shows.

A snapshot carries counters since the service started (`received`, `sent`,
`errors`, per method too) and the current latency percentiles. Rates are the
difference of two snapshots' counters over the difference of their `uptime`.
Between two consecutive snapshots (0.5 s apart) a port that handles a
message a second would show 0, 2, 0, 2...: so the rates here are taken
between the latest snapshot and the oldest one of the last `SMOOTHING`
seconds, which moves smoothly and only when a new snapshot arrives.

The app calls `Trends.observe` on every refresh (four times a second, twice
per stats interval, so no snapshot is missed; a missed one would only widen
the window, counters being cumulative), also while the display is paused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trizmq.stats import HISTORY, StatsBoard

__all__ = ["SMOOTHING", "PortTrend", "Sample", "Trends"]

#: Seconds of snapshots the rates are computed over.
SMOOTHING = 3.0
# Snapshots arrive every interval give or take scheduling jitter: one a little
# older than the window still counts as in it.
_SLACK = 0.25


@dataclass(frozen=True)
class Sample:
    """The counters of one snapshot.

    Attributes:
        uptime: The service's `uptime`, the clock the rates are measured on.
        pid: The service's process id (a new one means a restart).
        received: Requests received, every kind.
        sent: Answers sent, every kind.
        errors: Handler exceptions, every type.
        methods: Requests received per method, every kind.
    """

    uptime: float
    pid: int | None
    received: int
    sent: int
    errors: int
    methods: Mapping[str, int]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Sample:
        """The counters of a snapshot."""
        methods = data.get("methods") or {}
        pid = data.get("pid")
        return cls(
            uptime=float(data.get("uptime", 0.0)),
            pid=None if pid is None else int(pid),
            received=_sum(data.get("received")),
            sent=_sum(data.get("sent")),
            errors=_sum(data.get("errors")),
            methods={name: _sum(m.get("received")) for name, m in methods.items()},
        )

    def follows(self, previous: Sample) -> bool:
        """Whether this snapshot comes from the same process, after `previous`."""
        return (
            self.pid == previous.pid
            and self.uptime > previous.uptime
            and self.received >= previous.received
        )


def _sum(counts: Mapping[str, Any] | None) -> int:
    return int(sum((counts or {}).values()))


class PortTrend:
    """One port's recent snapshots, its smoothed rates and their history.

    Attributes:
        rate_in: Requests received per second over the last `SMOOTHING` seconds.
        rate_out: Answers sent per second, likewise.
        error_rate: Handler errors per second, likewise.
        method_rates: Requests per second of each method, likewise.
        history: `rate_in` after each snapshot, oldest first (`HISTORY` at most).
        error_history: `error_rate` after each snapshot.
        p50_history: The snapshots' median latency, in milliseconds.
        p99_history: The snapshots' 99th percentile latency, in milliseconds.
    """

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()
        self._last: Mapping[str, Any] | None = None
        self.rate_in = 0.0
        self.rate_out = 0.0
        self.error_rate = 0.0
        self.method_rates: dict[str, float] = {}
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.error_history: deque[float] = deque(maxlen=HISTORY)
        self.p50_history: deque[float] = deque(maxlen=HISTORY)
        self.p99_history: deque[float] = deque(maxlen=HISTORY)

    def observe(self, data: Mapping[str, Any] | None) -> bool:
        """Take the port's latest snapshot; returns whether it was a new one."""
        if data is None or data is self._last:
            return False
        self._last = data
        sample = Sample.of(data)
        if self._samples and not sample.follows(self._samples[-1]):
            self._samples.clear()  # a restarted service: its counters start again
        self._samples.append(sample)
        while sample.uptime - self._samples[0].uptime > SMOOTHING + _SLACK:
            self._samples.popleft()
        base = self._samples[0]
        span = sample.uptime - base.uptime
        if span > 0:
            self.rate_in = (sample.received - base.received) / span
            self.rate_out = (sample.sent - base.sent) / span
            self.error_rate = max(0, sample.errors - base.errors) / span
            self.method_rates = {
                name: max(0, count - base.methods.get(name, 0)) / span
                for name, count in sample.methods.items()
            }
        else:  # the first snapshot seen: no rate yet
            self.rate_in = self.rate_out = self.error_rate = 0.0
            self.method_rates = dict.fromkeys(sample.methods, 0.0)
        latency = data.get("latency_ms") or {}
        self.history.append(self.rate_in)
        self.error_history.append(self.error_rate)
        self.p50_history.append(float(latency.get("p50", 0.0)))
        self.p99_history.append(float(latency.get("p99", 0.0)))
        return True

    def row_fields(self) -> dict[str, Any]:
        """The `PortRow` fields that come from here."""
        return {
            "rate_in": self.rate_in,
            "rate_out": self.rate_out,
            "history": tuple(self.history),
            "error_rate": self.error_rate,
            "error_history": tuple(self.error_history),
            "p50_history": tuple(self.p50_history),
            "p99_history": tuple(self.p99_history),
            "method_rates": dict(self.method_rates),
        }


class Trends:
    """A `PortTrend` per `(host, topic)`, fed from a board."""

    def __init__(self) -> None:
        self._ports: dict[tuple[str, str], PortTrend] = {}

    def observe(self, board: StatsBoard) -> None:
        """Take every new snapshot of the board."""
        for key, view in board.ports.items():
            trend = self._ports.get(key)
            if trend is None:
                trend = self._ports[key] = PortTrend()
            trend.observe(view.data)

    def get(self, key: tuple[str, str]) -> PortTrend | None:
        """The port's trend, or None if no snapshot of it was seen."""
        return self._ports.get(key)
