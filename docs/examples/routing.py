# --8<-- [start:program]
"""Routing: a call or cast to a topic, to topic.host, and a fanout to every host.

Run it with the seed ring file: `python routing.py seed_ring.json`. The two
compute services run in this process as two simulated nodes, each on its own
loopback address. It prints:

    compute -> controller
    compute -> computenodex
    compute -> controller
    compute.computenodex -> computenodex
    cast to compute: handled by computenodex
    fanout to compute: handled by computenodex, controller
"""

import sys

import trio

import trizmq

RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}


class Compute:
    def __init__(self, handled: trio.MemorySendChannel[tuple[str, str]]) -> None:
        self.handled = handled

    async def whoami(self, ctx: trizmq.Context) -> str:
        return ctx.host

    async def refresh(self, ctx: trizmq.Context) -> None:
        # One-way messages return nothing to the caller; report to the example instead.
        await self.handled.send((ctx.kind, ctx.host))


async def main(ring_path: str) -> None:
    ring = trizmq.Ring.load(ring_path)
    send, handled = trio.open_memory_channel[tuple[str, str]](10)
    async with trio.open_nursery() as nursery:
        for host in ring.hosts_of("compute"):  # ('controller', 'computenodex')
            await nursery.start(trizmq.serve, ring, "compute", Compute(send), host, RESOLVE)

        async with trizmq.open_client(ring, resolve=RESOLVE) as client:
            # --8<-- [start:call]
            # "compute": the next host of the topic, in round-robin order.
            for _ in range(3):
                print("compute ->", await client.call("compute", "whoami"))
            # "compute.computenodex": that host only.
            print("compute.computenodex ->", await client.call("compute.computenodex", "whoami"))
            # --8<-- [end:call]

            # --8<-- [start:cast]
            # cast: one-way, to one host, round-robin too (computenodex's turn).
            await client.cast("compute", "refresh")
            # --8<-- [end:cast]
            kind, host = await handled.receive()
            print(f"{kind} to compute: handled by {host}")

            # --8<-- [start:fanout]
            # fanout: one-way, to every host of the topic.
            await client.fanout("compute", "refresh")
            # --8<-- [end:fanout]
            hosts = sorted([(await handled.receive())[1] for _ in ring.hosts_of("compute")])
            print("fanout to compute: handled by", ", ".join(hosts))
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "seed_ring.json")
# --8<-- [end:run]
