"""The app the test clusters serve: one `Endpoint` on every topic of the seed ring.

Run as `trizmq serve RING --host HOST --app cluster_app:SERVICES`; `trizmq serve`
makes one `Endpoint` per topic per process. `relay` opens its own client from
the environment variables `TRIZMQ_TEST_RING` (a ring path) and
`TRIZMQ_TEST_RESOLVE` (a JSON host -> address map), so services call services.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import trio

import trizmq

# The seed ring the package ships (as conftest.SEED_RING: this module runs in
# service processes too, without pytest).
SEED_RING = Path(__file__).resolve().parents[1] / "trizmq" / "demo" / "seed_ring.json"


class QuotaExceeded(Exception):
    """The error `Endpoint.fail` raises."""


@attrs.frozen
class Disk:
    name: str
    size_gb: int


@attrs.frozen
class BootRequest:
    name: str
    image: str
    disks: list[Disk]
    metadata: dict[str, str]
    user_data: bytes
    key_name: str | None = None


@attrs.frozen
class Instance:
    id: str
    name: str
    host: str
    disks: list[Disk]
    metadata: dict[str, str]
    user_data: bytes
    total_gb: int
    key_name: str | None = None


class Endpoint:
    """Every method the RPC tests need, on every topic."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[str]] = collections.defaultdict(list)
        self.states: dict[str, str] = {}
        self.yielded: collections.Counter[str] = collections.Counter()

    async def ping(self, ctx: trizmq.Context, x: int) -> int:
        return x + 1

    async def whoami(self, ctx: trizmq.Context) -> dict[str, Any]:
        return {
            "host": ctx.host,
            "topic": ctx.topic,
            "method": ctx.method,
            "caller": ctx.caller,
            "kind": ctx.kind,
            "values": ctx.values,
        }

    async def record(self, ctx: trizmq.Context, key: str) -> None:
        """Count a message under `key`: the target of casts and fanouts."""
        self.kinds[key].append(ctx.kind)

    async def count(self, ctx: trizmq.Context, key: str) -> int:
        return len(self.kinds.get(key, ()))

    async def kinds_of(self, ctx: trizmq.Context, key: str) -> list[str]:
        """How each message counted under `key` arrived: "call", "cast" or "fanout"."""
        return self.kinds.get(key, [])

    async def boot(self, ctx: trizmq.Context, request: BootRequest) -> Instance:
        return Instance(
            id=f"{ctx.host}/{request.name}",
            name=request.name,
            host=ctx.host,
            disks=request.disks,
            metadata={**request.metadata, "image": request.image},
            user_data=request.user_data,
            total_gb=sum(disk.size_gb for disk in request.disks),
            key_name=request.key_name,
        )

    async def echo(self, ctx: trizmq.Context, value: Any) -> Any:
        return value

    async def blob(self, ctx: trizmq.Context, n: int, delay: float = 0.0) -> bytes:
        """`n` bytes, after `delay` seconds: a reply as large, and as late, as asked."""
        if delay > 0:
            await trio.sleep(delay)
        return b"x" * n

    async def fail(self, ctx: trizmq.Context, message: str) -> None:
        raise QuotaExceeded(message)

    async def sleep(self, ctx: trizmq.Context, seconds: float, tag: str) -> str:
        """Sleep; `state(tag)` says "started", then "finished" or "cancelled"."""
        self.states[tag] = "started"
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.states[tag] = "cancelled"
            raise
        self.states[tag] = "finished"
        return tag

    async def sleep_in_nursery(self, ctx: trizmq.Context, seconds: float, tag: str) -> str:
        """`sleep`, in three child tasks of a nursery of the handler's own."""
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(self.sleep, ctx, seconds, tag)
        return tag

    async def hog(self, ctx: trizmq.Context, seconds: float) -> float:
        """Hold the service's event loop for `seconds` without waiting (what a
        handler must not do): whatever comes meanwhile is read together after."""
        time.sleep(seconds)  # noqa: ASYNC251 (blocking on purpose)
        return seconds

    async def state(self, ctx: trizmq.Context, tag: str) -> str | None:
        return self.states.get(tag)

    def blocking(self, ctx: trizmq.Context, seconds: float, tag: str = "") -> str:
        """A synchronous handler (trizmq runs it in a worker thread); `state(tag)` follows it."""
        self.states[tag] = "started"
        time.sleep(seconds)
        self.states[tag] = "finished"
        return "done"

    async def relay(
        self,
        ctx: trizmq.Context,
        target: str,
        method: str,
        args: dict[str, Any],
        kind: str = "call",
    ) -> Any:
        """Send `method(**args)` to `target` from this service, as `kind`; return the result."""
        ring = trizmq.Ring.load(os.environ["TRIZMQ_TEST_RING"])
        resolve = json.loads(os.environ["TRIZMQ_TEST_RESOLVE"])
        name = f"relay:{ctx.topic}.{ctx.host}"
        async with trizmq.open_client(ring, resolve=resolve, name=name) as client:
            if kind == "cast":
                return await client.cast(target, method, **args)
            if kind == "fanout":
                return await client.fanout(target, method, **args)
            return await client.call(target, method, **args)

    async def numbers(
        self, ctx: trizmq.Context, n: int, tag: str = "", fail_at: int = -1, delay: float = 0.0
    ) -> AsyncIterator[int]:
        """A stream of 0 to n - 1, each after `delay` seconds, QuotaExceeded
        at `fail_at`. `produced(tag)` counts the items yielded; `state(tag)`
        says "started", then "finished", or "closed" when stopped before its end."""
        self.states[tag] = "started"
        try:
            for i in range(n):
                if delay:
                    await trio.sleep(delay)
                if i == fail_at:
                    raise QuotaExceeded(f"no more after {i} items")
                self.yielded[tag] += 1
                yield i
            self.states[tag] = "finished"
        finally:
            if self.states[tag] != "finished":
                self.states[tag] = "closed"

    async def disks(self, ctx: trizmq.Context, n: int) -> AsyncIterator[Disk]:
        """A stream of `n` disks (attrs instances)."""
        for i in range(n):
            yield Disk(f"disk-{i}", i)

    async def produced(self, ctx: trizmq.Context, tag: str) -> int:
        """Items `numbers` yielded under `tag`."""
        return self.yielded[tag]

    def _secret(self, ctx: trizmq.Context) -> str:
        return "not callable over the wire"


SERVICES = {service.topic: Endpoint for service in trizmq.Ring.load(SEED_RING).services()}
#: A hundred topics, ``many000`` to ``many099``: a process serving many services.
MANY = {f"many{i:03d}": Endpoint for i in range(100)}
