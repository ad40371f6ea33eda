# --8<-- [start:program]
"""oslo.messaging's client and server, written with trizmq.

Run it with the seed ring file: `python oslo_style.py seed_ring.json`. It prints:

    computenodex: build_and_run_instance(vm1) for admin
    controller: get_console(vm1) for admin
    console of vm1 on controller
    refresh_cache() ran on controller, computenodex
"""

import sys

import attrs
import trio

import trizmq

RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}


# --8<-- [start:endpoint]
@attrs.define
class Instance:
    """A typed payload: the service structures it from the type hints."""

    name: str
    flavor: str


class ComputeManager:
    """An endpoint: its public methods are what callers may call."""

    def __init__(self) -> None:
        self.done = trio.Semaphore(0)

    async def build_and_run_instance(self, ctx: trizmq.Context, instance: Instance) -> None:
        print(f"{ctx.host}: build_and_run_instance({instance.name}) for {ctx.values['user']}")
        self.done.release()

    async def get_console(self, ctx: trizmq.Context, instance: Instance) -> str:
        print(f"{ctx.host}: get_console({instance.name}) for {ctx.values['user']}")
        return f"console of {instance.name} on {ctx.host}"

    async def refresh_cache(self, ctx: trizmq.Context) -> None:
        self.done.release()


# --8<-- [end:endpoint]


# --8<-- [start:client]
class ComputeAPI:
    """The client side of the compute topic, as nova.compute.rpcapi writes it."""

    def __init__(self, client: trizmq.Client) -> None:
        self.client = client

    async def build_and_run_instance(self, ctxt: dict[str, str], host: str, inst: Instance) -> None:
        cctxt = self.client.prepare(f"compute.{host}")
        await cctxt.cast("build_and_run_instance", context=ctxt, instance=inst)

    async def get_console(self, ctxt: dict[str, str], host: str, inst: Instance) -> str:
        cctxt = self.client.prepare(f"compute.{host}", timeout=30)
        result: str = await cctxt.call("get_console", context=ctxt, instance=inst)
        return result

    async def refresh_cache(self, ctxt: dict[str, str]) -> None:
        await self.client.fanout("compute", "refresh_cache", context=ctxt)


# --8<-- [end:client]


async def main(ring_path: str) -> None:
    # --8<-- [start:server]
    ring = trizmq.Ring.load(ring_path)
    managers = {host: ComputeManager() for host in ring.hosts_of("compute")}
    async with trio.open_nursery() as nursery:
        # Each host's service would be its own process on its own node (`trizmq serve`).
        for host, manager in managers.items():
            await nursery.start(trizmq.serve, ring, "compute", manager, host, RESOLVE)
        # --8<-- [end:server]
        async with trizmq.open_client(ring, resolve=RESOLVE, name="nova-api") as client:
            compute = ComputeAPI(client)
            ctxt = {"user": "admin", "project": "demo"}
            vm1 = Instance("vm1", "m1.small")
            await compute.build_and_run_instance(ctxt, "computenodex", vm1)
            await managers["computenodex"].done.acquire()
            print(await compute.get_console(ctxt, "controller", vm1))
            await compute.refresh_cache(ctxt)
            for manager in managers.values():
                await manager.done.acquire()
            print("refresh_cache() ran on", ", ".join(managers))
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "seed_ring.json")
# --8<-- [end:run]
