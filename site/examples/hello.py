"""A service and a client in one process: the smallest trizmq program.

Run it with `python hello.py`. It prints:

    3
"""

import json
import os

import trio

import trizmq

# The ring: topic "compute" is served on port 9501 of one host, this machine.
ring = trizmq.Ring.from_mapping({"compute:9501": ["localhost"]})
# Host name -> address overrides; the docs' tests use one to give each run its own address.
resolve = json.loads(os.environ.get("TRIZMQ_EXAMPLE_RESOLVE", "{}"))


class Compute:
    async def add(self, ctx: trizmq.Context, x: int, y: int) -> int:
        return x + y


async def main() -> None:
    async with trio.open_nursery() as nursery:
        # Returns once the port is bound; the service runs until the nursery is cancelled.
        await nursery.start(trizmq.serve, ring, "compute", Compute(), "localhost", resolve)
        async with trizmq.open_client(ring, resolve=resolve) as client:
            print(await client.call("compute", "add", x=1, y=2))
        nursery.cancel_scope.cancel()


trio.run(main)
