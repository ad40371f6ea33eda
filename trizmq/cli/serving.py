"""What `trizmq serve` runs: the topics of one host, changed in place when the ring is reloaded.

`HostServices` runs each topic the process serves in a task of its own, under
a cancel scope of its own, so that a reload stops one topic (through its
normal graceful shutdown) without touching the others. A reload computes the
topics the new ring wants served here and applies the difference:

- a topic new to this host starts (and logs its usual ``serving on`` line);
- a topic gone from this host stops after its grace period;
- a topic whose port changed starts on its new port first, then stops on
  the old one, so that callers following the ring always find it;
- every other topic goes on untouched: same socket, no call dropped.

A ring that fails validation, or that would leave this process nothing to
serve, is refused: the topics go on as before.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from .._errors import RingError
from .._ring import Ring, Service

#: Seconds a reload tries again to bind a port in use, and the pause between tries.
_REBIND_PATIENCE = 2.0
_REBIND_PAUSE = 0.05

#: Runs one topic until cancelled: `trizmq.serve` with the command's options.
ServeTopic = Callable[..., Awaitable[Any]]


def services_of(ring: Ring, host: str, anywhere: bool) -> tuple[Service, ...]:
    """The services `ring` lists for `host`; with `anywhere` (a registry), a host
    the ring does not list joins through the registry and may serve any topic."""
    if anywhere and host not in ring.hosts:
        topics = (t for t in ring.topics if not ring.is_reserved(t))
        return tuple(Service(host, topic, ring.port(topic)) for topic in topics)
    return ring.services_of(host)


def say(line: str) -> None:
    """One line of the command's log, on stderr."""
    print(f"trizmq: {line}", file=sys.stderr, flush=True)


@attrs.define(eq=False)
class _Running:
    """One topic served on one port, in a task of its own."""

    topic: str
    port: int
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    url: str = ""
    stopping: bool = False  # stopped by a reload, not by the end of the process


class HostServices:
    """The topics one `trizmq serve` process serves, following its ring.

    Args:
        nursery: Where the topics' tasks run.
        host: The ring host this process is.
        endpoints: The app's endpoints by topic.
        app: The ``--app`` spec, for messages.
        wanted: The ``--topic`` topics, or None for every topic of the app.
        serve_topic: `trizmq.serve` with every option but the ring, topic,
            endpoint and host bound.
        grace: The grace period of a stopping topic, for messages.
        anywhere: Served with a registry: a host the ring does not list may
            serve any topic of it.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        host: str,
        endpoints: Mapping[str, object],
        app: str,
        wanted: set[str] | None,
        serve_topic: ServeTopic,
        grace: float,
        *,
        anywhere: bool = False,
    ) -> None:
        self._nursery = nursery
        self._host = host
        self._endpoints = endpoints
        self._app = app
        self._wanted = wanted
        self._serve_topic = serve_topic
        self._grace = grace
        self._anywhere = anywhere
        self._serving: dict[str, _Running] = {}
        self._draining: set[_Running] = set()
        self._ring: Ring | None = None

    def topics(self, ring: Ring) -> dict[str, int]:
        """The topics this process serves by `ring`, with their ports.

        Raises:
            RingError: The ring does not list this host, or none of its
                topics is one this process serves.
        """
        listed = services_of(ring, self._host, self._anywhere)
        topics = {s.topic: s.port for s in listed if self._serves(s.topic)}
        if not topics:
            raise RingError(
                f"{ring.source}: {self._app} provides none of the topics of host {self._host!r}"
            )
        return topics

    def _serves(self, topic: str) -> bool:
        return topic in self._endpoints and (self._wanted is None or topic in self._wanted)

    async def start(self, ring: Ring) -> None:
        """Start every topic `ring` wants served here; the first failure to bind is raised.

        Raises:
            RingError: As `topics`.
            OSError: A port cannot be bound.
        """
        for topic in self.topics(ring):
            await self._start(ring, topic)
        self._ring = ring

    async def reload_on(self, requests: trio.MemoryReceiveChannel[None], path: str) -> None:
        """Reload the ring file at `path` on each request, one reload at a time."""
        async for _ in requests:
            await self.reload(path)

    async def reload(self, path: str | os.PathLike[str]) -> None:
        """Load the ring file again and apply its changes to the topics of this host.

        A ring that does not load, does not list this host, or leaves it
        nothing to serve is refused with its message, and nothing changes.
        """
        try:
            ring = Ring.load(path)
            topics = self.topics(ring)
        except RingError as exc:
            say(f"{exc}; ring not reloaded, serving on as before")
            return
        assert self._ring is not None, "start() first"
        self._say_unserved(ring)
        changes = 0
        # Stops first: a topic coming to a port another one leaves waits for it.
        for topic in self._serving.keys() - topics.keys():
            self._stop(self._serving.pop(topic), "no longer in the ring for this host")
            changes += 1
        for topic, port in topics.items():
            running = self._serving.get(topic)
            if running is not None and running.port == port:
                continue
            changes += 1
            try:
                await self._start(ring, topic, patience=_REBIND_PATIENCE)
            except (OSError, RingError) as exc:  # its port is taken, its host unresolvable
                keeping = "" if running is None else f"; still serving on {running.url}"
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                say(f"{reason}{keeping}")
                continue
            if running is not None:
                self._stop(running, f"moved to port {port}")
        self._ring = ring
        if not changes:
            say(f"{ring.source}: no change for host {self._host}")

    def _say_unserved(self, ring: Ring) -> None:
        """Say which topics the new ring lists here that this process does not serve."""
        assert self._ring is not None
        before = {s.topic for s in services_of(self._ring, self._host, self._anywhere)}
        for service in services_of(ring, self._host, self._anywhere):
            if service.topic in before or self._serves(service.topic):
                continue
            why = (
                f"{self._app} does not provide it"
                if service.topic not in self._endpoints
                else "not among the --topic options"
            )
            say(f"{service.target}: listed by the ring, not served: {why}")

    async def _start(self, ring: Ring, topic: str, *, patience: float = 0.0) -> None:
        """Start a topic; a port in use is tried again for `patience` seconds."""
        port = ring.port(topic)
        # A stopping topic may still hold the port: it frees it at the end of its grace.
        for old in list(self._draining):
            if old.port == port:
                await old.done.wait()
        give_up = trio.current_time() + patience
        while True:
            running = _Running(topic, port)  # a cancel scope serves one attempt only
            try:
                running.url = await self._nursery.start(self._run, ring, running)
                break
            except OSError as exc:
                # ZeroMQ lets go of a closed socket's port in its I/O thread, a
                # moment after the close: a topic just stopped may still hold it.
                if exc.errno != errno.EADDRINUSE or trio.current_time() > give_up:
                    raise
                await trio.sleep(_REBIND_PAUSE)
        self._serving[topic] = running
        say(f"{topic}.{self._host} serving on {running.url}")

    async def _run(self, ring: Ring, running: _Running, task_status: trio.TaskStatus[str]) -> None:
        try:
            with running.scope:
                topic = running.topic
                await self._serve_topic(
                    ring, topic, self._endpoints[topic], self._host, task_status=task_status
                )
        finally:
            self._draining.discard(running)
            running.done.set()
            if running.stopping:
                say(f"{running.topic}.{self._host} stopped on {running.url}")

    def _stop(self, running: _Running, why: str) -> None:
        """Stop a topic the graceful way: new requests refused, handlers given the grace."""
        running.stopping = True
        self._draining.add(running)
        running.scope.cancel()
        say(
            f"{running.topic}.{self._host}: {why}, stopping on {running.url} "
            f"(grace {self._grace:g} s)"
        )
