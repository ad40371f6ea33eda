# --8<-- [start:program]
"""A versioned compute API in a rolling upgrade, as nova writes it with oslo.messaging.

controller still runs version 5.0 of the compute API, computenodex runs 5.3
already (its `resize` takes `clean_shutdown`, new in 5.3). The callers are
pinned to 5.0 until every host is upgraded, then to 5.3.

Run it with the seed ring file: `python oslo_versions.py seed_ring.json`. It prints:

    pinned to 5.0:
      controller (5.0): resized vm1 to 40 GB
      computenodex (5.3): resized vm2 to 40 GB
    pinned to 5.3:
      computenodex (5.3): resized vm2 to 80 GB, clean shutdown
      controller refused: UnsupportedVersion
    NoValidHost from computenodex: no host has 160 GB free
    baseapi on controller: pong
"""

import sys

import trio

import trizmq

RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}


# --8<-- [start:endpoint]
class NoValidHost(Exception):
    """An exception callers allow: they get it back as itself."""


class ComputeManager50:
    target = trizmq.Target(version="5.0")

    async def resize(self, ctx: trizmq.Context, instance: str, gb: int) -> str:
        return f"{ctx.host} (5.0): resized {instance} to {gb} GB"


class ComputeManager53:
    target = trizmq.Target(version="5.3")

    async def resize(
        self, ctx: trizmq.Context, instance: str, gb: int, clean_shutdown: bool = False
    ) -> str:
        if gb > 100:
            raise NoValidHost(f"no host has {gb} GB free")
        shutdown = ", clean shutdown" if clean_shutdown else ""
        return f"{ctx.host} (5.3): resized {instance} to {gb} GB{shutdown}"


class BaseAPI:
    """A second namespace on the same topic, as oslo's `baseapi`."""

    target = trizmq.Target(namespace="baseapi", version="1.0")

    async def ping(self, ctx: trizmq.Context) -> str:
        return "pong"


# --8<-- [end:endpoint]


# --8<-- [start:client]
class ComputeAPI:
    """The client side, as nova.compute.rpcapi writes it: 5.3 when the cap allows."""

    def __init__(self, client: trizmq.Client, version_cap: str) -> None:
        self.client = client.prepare("compute", version="5.0", version_cap=version_cap)

    async def resize(self, ctxt: dict[str, str], host: str, instance: str, gb: int) -> str:
        version = "5.3"
        kwargs = {"instance": instance, "gb": gb, "clean_shutdown": True}
        if not self.client.can_send_version(version):
            version = "5.0"
            del kwargs["clean_shutdown"]
        cctxt = self.client.prepare(host=host, version=version)
        result: str = await cctxt.call("resize", context=ctxt, **kwargs)
        return result


# --8<-- [end:client]


async def main(ring_path: str) -> None:
    # --8<-- [start:server]
    ring = trizmq.Ring.load(ring_path)
    # Mid-upgrade: each host serves its version of the API, and the base API.
    endpoints = {
        "controller": [ComputeManager50(), BaseAPI()],
        "computenodex": [ComputeManager53(), BaseAPI()],
    }
    async with trio.open_nursery() as nursery:
        for host, endpoint_list in endpoints.items():
            await nursery.start(trizmq.serve, ring, "compute", endpoint_list, host, RESOLVE)
        # --8<-- [end:server]
        # --8<-- [start:calls]
        async with trizmq.open_client(
            ring, resolve=RESOLVE, allowed_exceptions=[NoValidHost]
        ) as client:
            ctxt = {"user": "admin"}
            print("pinned to 5.0:")
            old = ComputeAPI(client, version_cap="5.0")
            print(" ", await old.resize(ctxt, "controller", "vm1", 40))
            print(" ", await old.resize(ctxt, "computenodex", "vm2", 40))
            print("pinned to 5.3:")
            new = ComputeAPI(client, version_cap="5.3")
            print(" ", await new.resize(ctxt, "computenodex", "vm2", 80))
            try:
                await new.resize(ctxt, "controller", "vm1", 80)
            except trizmq.UnsupportedVersion as exc:
                print(f"  {exc.host} refused: UnsupportedVersion")
            try:
                await new.resize(ctxt, "computenodex", "vm2", 160)
            except NoValidHost as exc:
                print(f"NoValidHost from {exc.host}: {exc}")  # type: ignore[attr-defined]
            base = client.prepare("compute.controller", namespace="baseapi")
            print("baseapi on controller:", await base.call("ping"))
        # --8<-- [end:calls]
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "seed_ring.json")
# --8<-- [end:run]
