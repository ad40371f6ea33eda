# --8<-- [start:program]
"""Context: a dict that travels with every message, merged from client, target and call.

Run it with `python context.py`. It prints:

    call from cli to compute.controller: show()
    {'user': 'admin', 'request_id': 'req-1'}
    call from cli to compute.controller: show()
    {'user': 'admin', 'request_id': 'req-2', 'project': 'demo'}
    cast from cli to compute.controller: show()
    {'user': 'admin', 'request_id': 'req-1', 'project': 'demo'}
"""

import trio

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})
resolve = {"controller": "127.0.0.2"}


# --8<-- [start:handler]
class Compute:
    def __init__(self) -> None:
        self.seen = trio.Event()

    async def show(self, ctx: trizmq.Context) -> dict[str, str]:
        # ctx.caller is "name/pid/nonce": the client's name comes first.
        name = ctx.caller.split("/")[0]
        print(f"{ctx.kind} from {name} to {ctx.topic}.{ctx.host}: {ctx.method}()")
        if ctx.kind == "cast":
            print(ctx.values)
            self.seen.set()
        return ctx.values


# --8<-- [end:handler]


async def main() -> None:
    compute = Compute()
    async with trio.open_nursery() as nursery:
        await nursery.start(trizmq.serve, ring, "compute", compute, "controller", resolve)
        # --8<-- [start:client]
        values = {"user": "admin", "request_id": "req-1"}
        async with trizmq.open_client(ring, resolve=resolve, context=values, name="cli") as client:
            print(await client.call("compute", "show"))
            # A prepared target adds its own; a call's own context wins over both.
            project = client.prepare("compute", context={"project": "demo"})
            print(await project.call("show", context={"request_id": "req-2"}))
            await project.cast("show")
            # --8<-- [end:client]
            await compute.seen.wait()
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
