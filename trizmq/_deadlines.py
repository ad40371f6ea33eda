"""Call timeouts kept by one task, not by a cancel scope per call.

A cancel scope is how Trio code times an operation out, and it is among the
dearest things Trio has: building and leaving one costs about as much as
encoding, sending and decoding a small call. A client's calls mostly share
one timeout length, so their deadlines arrive in the order they end: one
insertion-ordered dict per timeout length keeps them sorted for free, a
finished call leaves its dict at once, and a single task sleeps until the
earliest deadline and expires what is due.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import trio


class Deadlines:
    """Deadlines of calls in flight; `run` expires them, calling their `expire`."""

    def __init__(self) -> None:
        # Per timeout length, each call's deadline and what to call when it passes.
        self._queues: dict[float, dict[Hashable, tuple[float, Callable[[], None]]]] = {}
        self._wake_at = math.inf  # when `run` wakes up next
        self._changed = trio.Event()

    def add(self, key: Hashable, seconds: float, expire: Callable[[], None]) -> float:
        """Call `expire()` in `seconds`, unless `discard(key, seconds)` comes first.

        Returns:
            The deadline, on the Trio clock.
        """
        deadline = trio.current_time() + seconds
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = {}
        queue[key] = (deadline, expire)
        if deadline < self._wake_at:
            self._wake_at = deadline
            self._changed.set()
        return deadline

    def discard(self, key: Hashable, seconds: float) -> None:
        """Forget the deadline of `key` (added with the same `seconds`)."""
        queue = self._queues.get(seconds)
        if queue is not None:
            queue.pop(key, None)

    async def run(self) -> None:
        """Expire deadlines as they pass, until cancelled."""
        while True:
            now = trio.current_time()
            self._wake_at = math.inf
            for queue in self._queues.values():
                while queue:
                    key = next(iter(queue))
                    deadline, expire = queue[key]
                    if deadline > now:
                        self._wake_at = min(self._wake_at, deadline)
                        break
                    del queue[key]
                    expire()
            with trio.move_on_at(self._wake_at):
                await self._changed.wait()
            self._changed = trio.Event()
