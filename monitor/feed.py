"""The stats feed, run by Trio as a guest inside Textual's asyncio loop.

`GuestFeed.start` starts `trizmq.stats.watch_ring` with
`trio.lowlevel.start_guest_run`: Trio's tasks run in the app's own thread, on
ticks the asyncio loop schedules, while Trio's I/O wait happens in a helper
thread of Trio's. The Trio side only fills a `StatsBoard`; the app reads it on
a timer and Trio never touches a widget.

`GuestFeed.stop` cancels the run's root cancel scope through its Trio token and
waits until the run has finished. A guest run left unfinished would break every
later `trio.run()` in the thread, so the app always awaits `stop` before it
exits.

`ReplayFeed` stands in for it where the numbers must not change from one run
to the next (the monitor's screenshot tests, the pictures of the docs): it
plays recorded snapshots into a board of its own, and nothing runs.

Both are a `Feed`, what `MonitorApp` takes: the app calls `steps` on every
refresh and reads the board after each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import outcome
import trio

from trizmq import Curve, Registry, Ring, TrizmqError
from trizmq.stats import DEFAULT_INTERVAL, StatsBoard, watch_ring

__all__ = ["Feed", "Frame", "GuestFeed", "MonotonicClock", "ReplayFeed", "describe_error"]

#: One step of a `ReplayFeed`: a time, and the snapshots the ports sent then.
Frame = tuple[float, Mapping[tuple[str, str], Mapping[str, Any]]]


class MonotonicClock(trio.abc.Clock):
    """Trio's clock as `time.monotonic`, so the UI can read it outside the run.

    Trio's default clock adds a random offset; the board's `last_seen` times
    are in the run's clock, and the UI compares them with `current_time` from
    its own callbacks, also after the run has ended.
    """

    def start_clock(self) -> None:
        """Nothing to set up."""

    def current_time(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        """Seconds from now until `deadline`."""
        return deadline - time.monotonic()


class Feed(Protocol):
    """Where `MonitorApp` gets its numbers: a board, kept up to date.

    Attributes:
        board: The board to read; None until it exists.
        interval: Seconds between two stats messages of a port.
    """

    board: StatsBoard | None
    interval: float

    @property
    def finished(self) -> bool:
        """Whether nothing of the feed runs any more (or ever ran)."""

    def start(self, on_done: Callable[[outcome.Outcome[None]], object]) -> None:
        """Start filling the board; `on_done` gets the outcome if it ever stops."""

    async def stop(self) -> outcome.Outcome[None] | None:
        """Stop filling the board and wait until everything has stopped."""

    def steps(self) -> Iterator[float]:
        """Bring the board up to date, yielding the feed's time after each change.

        The last time yielded is now; the app reads the board after each step,
        so that it sees every snapshot.
        """


class GuestFeed:
    """`watch_ring` in a Trio guest run on the running asyncio loop.

    Args:
        ring: The ring whose ports to watch.
        resolve: Host name to address overrides, as `--resolve` gives them.
        interval: Seconds between two stats messages of a port.
        curve: The client's CURVE keys (`Curve.client`), for services that require them.
        registry: A registry of live members to hold against the ring (`StatsBoard`).

    Attributes:
        board: The board the feed fills; None until the ring's host names are
            resolved (in a worker thread, since a resolver can be slow).
        clock: The run's clock; `clock.current_time()` is what `PortView.state` expects.
    """

    def __init__(
        self,
        ring: Ring,
        resolve: Mapping[str, str] | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        curve: Curve | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.ring = ring
        self.resolve = dict(resolve or {})
        self.interval = interval
        self.curve = curve
        self.registry = registry
        self.board: StatsBoard | None = None
        self.clock = MonotonicClock()
        # Created outside the run: entered by the root task, cancelled via the token.
        self._scope = trio.CancelScope()
        self._token: trio.lowlevel.TrioToken | None = None
        self._done: asyncio.Future[outcome.Outcome[None]] | None = None

    @property
    def started(self) -> bool:
        """Whether `start` was called."""
        return self._done is not None

    @property
    def finished(self) -> bool:
        """Whether the guest run has ended (or never started)."""
        return self._done is None or self._done.done()

    def start(self, on_done: Callable[[outcome.Outcome[None]], object]) -> None:
        """Start the guest run on the running asyncio loop.

        Args:
            on_done: Called on the loop's thread with the run's outcome when it
                ends: `Value(None)` after `stop`, an `Error` if the feed failed.

        Raises:
            RuntimeError: Already started, or no asyncio loop is running.
        """
        if self._done is not None:
            raise RuntimeError("the feed was already started")
        loop = asyncio.get_running_loop()
        done = self._done = loop.create_future()

        def done_callback(result: outcome.Outcome[None]) -> None:
            if not done.done():
                done.set_result(result)
            on_done(result)

        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done_callback,
            host_uses_signal_set_wakeup_fd=True,
            clock=self.clock,
        )
        # Valid from here on: start_guest_run has set the run up in this thread.
        self._token = trio.lowlevel.current_trio_token()

    async def stop(self) -> outcome.Outcome[None] | None:
        """Cancel the feed and wait until the guest run has finished.

        Safe to call more than once, and after the run ended by itself.

        Returns:
            The run's outcome, or None if it never started.
        """
        if self._done is None:
            return None
        if not self._done.done() and self._token is not None:
            # Not `trio.from_thread.run_sync`: this is the run's own thread.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._scope.cancel)
        # Shielded: the run must finish even if the waiting task is cancelled.
        return await asyncio.shield(self._done)

    def steps(self) -> Iterator[float]:
        """The board is filled as snapshots arrive: one step, now."""
        yield self.clock.current_time()

    async def _main(self) -> None:
        with self._scope:
            # The system resolver may block for a while on an unknown name.
            self.board = await trio.to_thread.run_sync(
                functools.partial(StatsBoard, self.ring, self.resolve, registry=self.registry),
                abandon_on_cancel=True,
            )
            await watch_ring(self.board, interval=self.interval, curve=self.curve)


class ReplayFeed:
    """Recorded snapshots played into a board, for a display that is the same on every run.

    Nothing runs: the first `steps` plays every frame in order, as if each
    had just arrived at its time, and the feed's time then stays at `now`.

    Args:
        ring: The ring the snapshots are of.
        frames: `(time, {(host, topic): snapshot})`, in time order; a port
            missing from the last frames has stopped sending (stale, then down).
        resolve: Host name to address overrides, so that no name is looked up.
        interval: Seconds between two stats messages, as when they were recorded.
        now: The feed's time once played; by default the last frame's time.

    Attributes:
        board: The board, complete once `steps` has run.
    """

    def __init__(
        self,
        ring: Ring,
        frames: Sequence[Frame],
        resolve: Mapping[str, str] | None = None,
        *,
        interval: float = DEFAULT_INTERVAL,
        now: float | None = None,
    ) -> None:
        self.ring = ring
        self.interval = interval
        self.board: StatsBoard | None = StatsBoard(ring, resolve)
        self._frames = list(frames)
        self._played = 0
        self.now = now if now is not None else (self._frames[-1][0] if self._frames else 0.0)

    @property
    def finished(self) -> bool:
        """Always true: nothing runs."""
        return True

    def start(self, on_done: Callable[[outcome.Outcome[None]], object]) -> None:
        """Nothing to start; `on_done` is never called."""

    async def stop(self) -> outcome.Outcome[None] | None:
        """Nothing to stop."""
        return None

    def steps(self) -> Iterator[float]:
        """Play the frames not played yet, one step each, then yield `now`."""
        assert self.board is not None
        while self._played < len(self._frames):
            at, snapshots = self._frames[self._played]
            self._played += 1
            for key, data in snapshots.items():
                self.board.ports[key].update(dict(data), at)
            yield at
        yield self.now


def describe_error(exc: BaseException) -> str:
    """One readable line per underlying error, exception groups flattened.

    Args:
        exc: What the feed raised.

    Returns:
        `"message"` for trizmq's own errors (they are written to be read),
        `"Type: message"` for anything else; several lines for a group.
    """
    if isinstance(exc, BaseExceptionGroup):
        lines = dict.fromkeys(describe_error(inner) for inner in exc.exceptions)
        return "\n".join(lines)
    if isinstance(exc, TrizmqError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
