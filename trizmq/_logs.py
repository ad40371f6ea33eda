"""Logging that a flood of bad input cannot turn against the host.

A service logs what an operator needs about refused and failed requests (who,
what, how often), but a caller sending a million bad casts must not make it
write a million lines. Each kind of event is logged at most once per window
for each caller, the number left out rides on the next line of that kind, and
every value put into a line is cut to a bounded size. The exact counts are in
the service's stats.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

#: Seconds between two log lines of the same kind for the same caller.
LOG_WINDOW = 10.0
#: Characters of one value in a log line; longer values are cut.
MAX_LOGGED_CHARS = 200
#: Lines one service logs per window at most, whatever the number of callers.
MAX_LINES_PER_WINDOW = 100


def clip(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """`str(value)`, cut to `limit` characters with the full length said."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class ThrottledLog:
    """A logger's warnings, at most one per key per window, at most
    `MAX_LINES_PER_WINDOW` in all per window."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float = LOG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._window = window
        self._clock = clock
        # key -> [start of its window, lines left out since]
        self._keys: dict[Hashable, list[float]] = {}
        self._window_start = -window
        self._lines = 0
        self._over_budget = 0  # lines left out because of the budget, this window

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        """Log `message % args` unless a line of this `key` went out in the window."""
        now = self._clock()
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self._window:
            entry[1] += 1
            return
        if now - self._window_start >= self._window:
            if self._over_budget:
                self._logger.warning(
                    "%d more log lines left out in the last %.0f s (too many callers at once)",
                    self._over_budget,
                    self._window,
                )
            self._window_start, self._lines, self._over_budget = now, 0, 0
            # Keys whose window ended carry nothing forward: forget them.
            self._keys = {k: v for k, v in self._keys.items() if now - v[0] < self._window}
        if self._lines >= MAX_LINES_PER_WINDOW:
            self._over_budget += 1
            return
        self._lines += 1
        left_out = int(entry[1]) if entry is not None else 0
        self._keys[key] = [now, 0]
        if left_out:
            message += " (and %d more like it since the last such line)"
            args = (*args, left_out)
        self._logger.warning(message, *args)
