# --8<-- [start:program]
"""Quickstart: a compute service on two simulated nodes, and a client calling it.

Run it with the seed ring file (the default is ./seed_ring.json):

    python quickstart.py seed_ring.json

Each simulated node has its own loopback address, so both bind compute's
port 9501 side by side on one machine. It prints the lines below; the
one-way messages (cast, fanout) may be handled in another order.

    controller: call ping(x=1)
    compute -> 2
    computenodex: call ping(x=2)
    compute -> 3
    controller: cast ping(x=3)
    controller: fanout ping(x=4)
    computenodex: fanout ping(x=4)
    computenodex: call ping(x=5)
    compute.computenodex -> 6
    controller: call ping(x=6)
    compute.controller -> 7
"""

import sys

import trio

import trizmq

RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}


class Compute:
    """The compute service: its public methods are what callers may call."""

    async def ping(self, ctx: trizmq.Context, x: int) -> int:
        print(f"{ctx.host}: {ctx.kind} ping(x={x})")
        return x + 1


async def node(
    ring: trizmq.Ring, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve compute on every host the ring lists for it, until cancelled."""
    async with trio.open_nursery() as nursery:
        for host in ring.hosts_of("compute"):
            await nursery.start(trizmq.serve, ring, "compute", Compute(), host, RESOLVE)
        task_status.started()


async def caller(ring: trizmq.Ring) -> None:
    async with trizmq.open_client(ring, resolve=RESOLVE) as client:
        # A call to a topic: the next host in round-robin order answers.
        print("compute ->", await client.call("compute", "ping", x=1))
        print("compute ->", await client.call("compute", "ping", x=2))

        # cast: one-way, to one host. fanout: one-way, to every host of the topic.
        await client.cast("compute", "ping", x=3)
        await client.fanout("compute", "ping", x=4)

        # A call to topic.host: that host only, waiting at most 5 seconds.
        result = await client.call("compute.computenodex", "ping", x=5, timeout=5)
        print("compute.computenodex ->", result)

        # prepare: a target with its own defaults, like oslo.messaging's prepare().
        controller = client.prepare("compute.controller", timeout=10)
        print("compute.controller ->", await controller.call("ping", x=6))


async def main(ring_path: str) -> None:
    ring = trizmq.Ring.load(ring_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(node, ring)
        await caller(ring)
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "seed_ring.json")
# --8<-- [end:run]
