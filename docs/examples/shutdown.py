# --8<-- [start:program]
"""Stopping a service with work in flight: short handlers finish, long ones are told.

Run it with `python shutdown.py`. It prints:

    stopping the service (grace period 1 s)
    short call -> done in 0.3 s
    long call -> ServiceShutdown: the service stopped before the handler finished
    stopped after the grace period
"""

import functools

import trio

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})
resolve = {"controller": "127.0.0.2"}


class Compute:
    def __init__(self) -> None:
        self.running = 0
        self.both_running = trio.Event()

    async def work(self, ctx: trizmq.Context, seconds: float) -> str:
        self.running += 1
        if self.running == 2:
            self.both_running.set()
        await trio.sleep(seconds)
        return f"done in {seconds:g} s"


async def call(client: trizmq.Client, name: str, seconds: float) -> None:
    try:
        print(f"{name} call ->", await client.call("compute", "work", seconds=seconds))
    except trizmq.ServiceShutdown as exc:
        print(f"{name} call -> ServiceShutdown: {exc.message}")


async def main() -> None:
    compute = Compute()
    async with trizmq.open_client(ring, resolve=resolve) as client:
        # --8<-- [start:stop]
        async with trio.open_nursery() as nursery:
            # The service runs in a cancel scope of its own, so it can be stopped alone.
            service = trio.CancelScope()
            serve = functools.partial(trizmq.serve, ring, "compute", compute, "controller", resolve)

            async def run_service(task_status: trio.TaskStatus[str]) -> None:
                with service:
                    await serve(grace_period=1.0, task_status=task_status)

            await nursery.start(run_service)
            nursery.start_soon(call, client, "short", 0.3)
            nursery.start_soon(call, client, "long", 30)
            await compute.both_running.wait()
            print("stopping the service (grace period 1 s)")
            service.cancel()  # as SIGTERM does for `trizmq serve`
        # --8<-- [end:stop]
        print("stopped after the grace period")


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
