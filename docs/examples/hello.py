# --8<-- [start:program]
"""A service and a client in one process: the smallest trizmq program.

Run it with `python hello.py`. It prints:

    3
"""

import trio

import trizmq

# The ring: topic "compute" is served on port 9501 of one host, this machine.
ring = trizmq.Ring.from_mapping({"compute:9501": ["localhost"]})
# Host name -> address overrides; none here: "localhost" resolves as usual.
resolve: dict[str, str] = {}


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


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
