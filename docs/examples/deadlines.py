# --8<-- [start:program]
"""Deadlines and cancellation cross the wire: the handler stops when its caller does.

Run it with `python deadlines.py`. It prints:

    CallTimeout: compute.controller: no reply to 'slow' within 0.5 s
    the handler: slow() cancelled
    the caller gave up after 0.3 s
    the handler: slow() cancelled
    scheduler: 2 s left, all of it for compute
    CallTimeout: scheduler.controller: no reply to 'schedule' within 2 s
    the handler: slow() cancelled
"""

import math

import trio

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"], "scheduler:9506": ["controller"]})
resolve = {"controller": "127.0.0.2"}


class Compute:
    def __init__(self) -> None:
        # What became of each handler, for the example to print.
        self.outcomes, self.outcome = trio.open_memory_channel[str](10)

    # --8<-- [start:handler]
    async def slow(self, ctx: trizmq.Context, seconds: float) -> str:
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            # The service cancels this task when the call's deadline passes, or
            # when the caller is cancelled: the work stops, not just the waiting.
            self.outcomes.send_nowait(f"{ctx.method}() cancelled")
            raise
        return "done"

    # --8<-- [end:handler]


# --8<-- [start:propagate]
class Scheduler:
    def __init__(self, client: trizmq.Client) -> None:
        self.client = client

    async def schedule(self, ctx: trizmq.Context, seconds: float) -> str:
        # Hand on what is left of this call's deadline to the call it makes.
        left = ctx.time_remaining()
        print(f"scheduler: {math.ceil(left)} s left, all of it for compute")
        result: str = await self.client.call("compute", "slow", seconds=seconds, timeout=left)
        return result


# --8<-- [end:propagate]


async def main() -> None:
    compute = Compute()
    async with trio.open_nursery() as nursery:
        await nursery.start(trizmq.serve, ring, "compute", compute, "controller", resolve)
        async with trizmq.open_client(ring, resolve=resolve) as client:
            await nursery.start(
                trizmq.serve, ring, "scheduler", Scheduler(client), "controller", resolve
            )
            # --8<-- [start:timeout]
            try:
                await client.call("compute", "slow", seconds=10, timeout=0.5)
            except trizmq.CallTimeout as exc:
                print("CallTimeout:", exc)
            # --8<-- [end:timeout]
            print("the handler:", await compute.outcome.receive())

            # --8<-- [start:cancel]
            with trio.move_on_after(0.3):  # any cancellation: a scope, a failing nursery...
                await client.call("compute", "slow", seconds=10, timeout=math.inf)
            print("the caller gave up after 0.3 s")
            # --8<-- [end:cancel]
            print("the handler:", await compute.outcome.receive())

            try:
                await client.call("scheduler", "schedule", seconds=10, timeout=2)
            except trizmq.CallTimeout as exc:
                print("CallTimeout:", exc)
            print("the handler:", await compute.outcome.receive())
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
