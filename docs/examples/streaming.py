# --8<-- [start:program]
"""Streaming: an async-generator method sends its items as the consumer reads them.

Run it with `python streaming.py`. It prints:

    Instance(name='vm-0', host='controller')
    Instance(name='vm-1', host='controller')
    Instance(name='vm-2', host='controller')
    read 3, stopped: the service closed its generator
    RemoteError after 2 items: no more than 2
"""

from collections.abc import AsyncIterator

import attrs
import trio

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})
resolve = {"controller": "127.0.0.2"}


@attrs.frozen
class Instance:
    name: str
    host: str


class QuotaExceeded(Exception):
    pass


class Compute:
    def __init__(self) -> None:
        self.closed = trio.Event()

    # --8<-- [start:handler]
    async def instances(self, ctx: trizmq.Context, count: int) -> AsyncIterator[Instance]:
        """Yield `count` instances, one at a time: a stream, not a list."""
        try:
            for i in range(count):
                yield Instance(f"vm-{i}", ctx.host)
        finally:
            # Runs however the stream ends: exhausted, failed, or stopped by
            # its consumer, its deadline, or the service shutting down.
            self.closed.set()

    # --8<-- [end:handler]

    async def limited(self, ctx: trizmq.Context, count: int) -> AsyncIterator[int]:
        for i in range(count):
            if i == 2:
                raise QuotaExceeded("no more than 2")
            yield i


async def main() -> None:
    compute = Compute()
    async with trio.open_nursery() as nursery:
        await nursery.start(trizmq.serve, ring, "compute", compute, "controller", resolve)
        async with trizmq.open_client(ring, resolve=resolve) as client:
            # --8<-- [start:consume]
            async with client.stream(
                "compute", "instances", count=10**6, returns=Instance
            ) as items:
                read = 0
                async for instance in items:
                    print(instance)
                    read += 1
                    if read == 3:
                        break  # leaving the block stops the generator on the service
            # --8<-- [end:consume]
            await compute.closed.wait()
            print(f"read {read}, stopped: the service closed its generator")

            # --8<-- [start:error]
            received = []
            try:
                async with client.stream("compute", "limited", count=5) as items:
                    async for number in items:
                        received.append(number)
            except trizmq.RemoteError as exc:
                print(f"RemoteError after {len(received)} items: {exc.message}")
            # --8<-- [end:error]
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
