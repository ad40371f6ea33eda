"""The app of the notification tests: a service that emits, and notification listeners.

Run as `trizmq serve RING --host HOST --app notify_app:SERVICES` on a ring with
the topics `emitter` (the service whose handler sends notifications),
`notifications` and `monitoring` (the listeners, in pools) and `probe` (on the
listeners' hosts: what this process's listener got). `Emitter.emit` opens its own client
from the environment variables `TRIZMQ_TEST_RING` (a ring path) and
`TRIZMQ_TEST_RESOLVE` (a JSON host -> address map), as `cluster_app` does.
"""

from __future__ import annotations

import json
import os
from typing import Any

import trizmq


class Recorder:
    """Remembers the `info` (async) and `error` (sync) notifications it gets,
    and the `critical` ones, which `Grumpy` fails on first."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def _record(
        self,
        ctx: trizmq.Context,
        publisher_id: str,
        event_type: str,
        payload: Any,
        metadata: dict[str, Any],
    ) -> None:
        self.seen.append(
            {
                "host": ctx.host,
                "topic": ctx.topic,
                "kind": ctx.kind,
                "method": ctx.method,
                "context": ctx.values,
                "publisher_id": publisher_id,
                "event_type": event_type,
                "payload": payload,
                "metadata": metadata,
            }
        )

    async def info(self, ctx: trizmq.Context, *args: Any) -> None:
        self._record(ctx, *args)

    def error(self, ctx: trizmq.Context, *args: Any) -> None:
        self._record(ctx, *args)

    async def critical(self, ctx: trizmq.Context, *args: Any) -> None:
        self._record(ctx, *args)


class Grumpy:
    """Fails on every `critical` notification."""

    async def critical(
        self,
        ctx: trizmq.Context,
        publisher_id: str,
        event_type: str,
        payload: Any,
        metadata: dict[str, Any],
    ) -> None:
        raise RuntimeError(f"grumpy about {event_type}")


RECORDER = Recorder()
# Grumpy first: the recorder must still get what Grumpy fails on.
LISTENER = trizmq.NotificationListener(Grumpy(), RECORDER)


class Probe:
    """What this process's listener got, for the test to ask."""

    async def seen(self, ctx: trizmq.Context, event_type: str) -> list[dict[str, Any]]:
        return [n for n in RECORDER.seen if n["event_type"] == event_type]

    async def counts(self, ctx: trizmq.Context) -> dict[str, dict[str, int]]:
        return LISTENER.counts


class Emitter:
    """A service whose handler sends notifications with a `trizmq.Notifier`."""

    async def emit(
        self,
        ctx: trizmq.Context,
        priority: str,
        event_type: str,
        count: int,
        topics: list[str] | None = None,
    ) -> list[str]:
        """Send `count` notifications from one client; return their message ids."""
        ring = trizmq.Ring.load(os.environ["TRIZMQ_TEST_RING"])
        resolve = json.loads(os.environ["TRIZMQ_TEST_RESOLVE"])
        async with trizmq.open_client(ring, resolve=resolve, name=f"emitter:{ctx.host}") as client:
            notifier = trizmq.Notifier(
                client, f"emitter.{ctx.host}", topics=topics or ("notifications",)
            )
            return [
                await notifier.notify(priority, {"request_id": f"req-{n}"}, event_type, {"n": n})
                for n in range(count)
            ]


SERVICES = {"emitter": Emitter, "notifications": LISTENER, "monitoring": LISTENER, "probe": Probe}
