# --8<-- [start:program]
"""Typed payloads: attrs classes and dataclasses cross the wire both ways.

Run it with `python typed_payloads.py`. It prints:

    booted Instance(name='vm1', host='controller', disks=[Disk(size_gb=10), Disk(size_gb=20)])
    plain data: {'name': 'vm1', 'host': 'controller', 'disks': [{'size_gb': 10}, {'size_gb': 20}]}
    total: 30
    BadArguments: boot() argument 'request': Structuring class Disk @ attribute size_gb: expected int, got str
"""

import dataclasses

import attrs
import trio

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})
resolve = {"controller": "127.0.0.2"}


# --8<-- [start:types]
@dataclasses.dataclass
class Disk:
    size_gb: int


@attrs.define
class BootRequest:
    name: str
    disks: list[Disk]


@attrs.define
class Instance:
    name: str
    host: str
    disks: list[Disk]


class Compute:
    async def boot(self, ctx: trizmq.Context, request: BootRequest) -> Instance:
        # `request` arrives as a BootRequest, its disks as Disk objects.
        return Instance(request.name, ctx.host, request.disks)

    async def total_gb(self, ctx: trizmq.Context, disks: list[Disk]) -> int:
        return sum(disk.size_gb for disk in disks)


# --8<-- [end:types]


async def main() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(trizmq.serve, ring, "compute", Compute(), "controller", resolve)
        async with trizmq.open_client(ring, resolve=resolve) as client:
            # --8<-- [start:calls]
            request = BootRequest("vm1", [Disk(10), Disk(20)])
            # returns=: the result is structured into that class.
            booted = await client.call("compute", "boot", request=request, returns=Instance)
            print("booted", booted)
            # Without returns=, the result is plain data: dicts, lists, str, int...
            print("plain data:", await client.call("compute", "boot", request=request))
            print("total:", await client.call("compute", "total_gb", disks=[Disk(10), Disk(20)]))
            # Types are checked strictly: "10" is not an int. The service says which argument.
            wrong = {"name": "vm2", "disks": [{"size_gb": "10"}]}
            try:
                await client.call("compute", "boot", request=wrong)
            except trizmq.BadArguments as exc:
                print("BadArguments:", exc.message)
            # --8<-- [end:calls]
        nursery.cancel_scope.cancel()


# --8<-- [end:program]
# Not shown in the docs: the docstring shows output lines whole, however long.
# ruff: noqa: E501


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
