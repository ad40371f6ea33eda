# --8<-- [start:program]
"""Notifications: a notifier, and listeners in two pools.

The ring puts controller in pool "scheduler" and computenodex in pool "audit"
of the topic "notifications": each pool gets every notification. Run it with
`python notifications.py`. It prints:

    controller: compute.instance.create.start {'name': 'vm1'} from compute.computenodex, for admin
    controller: compute.instance.create.end {'name': 'vm1'} from compute.computenodex, for admin
    computenodex: compute.instance.create.start {'name': 'vm1'} from compute.computenodex, for admin
    computenodex: compute.instance.create.end {'name': 'vm1'} from compute.computenodex, for admin
    computenodex: {'handled': {'info': 2}, 'dropped': {'debug': 1}, 'failed': {}}
"""

from typing import Any

import trio

import trizmq

# Each pool of a topic gets every notification, one host of the pool each.
RING = trizmq.Ring.from_mapping(
    {"notifications:9700": {"scheduler": ["controller"], "audit": ["computenodex"]}}
)
RESOLVE = {"controller": "127.0.0.2", "computenodex": "127.0.0.3"}


# --8<-- [start:endpoint]
class InstanceEvents:
    """A notification endpoint: a method for each priority it wants, as in oslo.messaging."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.received = trio.Semaphore(0)

    async def info(
        self,
        ctx: trizmq.Context,
        publisher_id: str,
        event_type: str,
        payload: dict[str, Any],
        metadata: dict[str, str],
    ) -> None:
        user = ctx.values["user"]
        self.events.append(f"{ctx.host}: {event_type} {payload} from {publisher_id}, for {user}")
        self.received.release()


# --8<-- [end:endpoint]


# --8<-- [start:notifier]
async def create_instance(client: trizmq.Client, ctxt: dict[str, str], name: str) -> None:
    notifier = trizmq.Notifier(client, "compute.computenodex", topics=["notifications"])
    await notifier.debug(ctxt, "compute.instance.create.prepare", {"name": name})
    await notifier.info(ctxt, "compute.instance.create.start", {"name": name})
    await notifier.info(ctxt, "compute.instance.create.end", {"name": name})


# --8<-- [end:notifier]


async def main() -> None:
    # --8<-- [start:listener]
    endpoints = {host: InstanceEvents() for host in RING.hosts_of("notifications")}
    listeners = {host: trizmq.NotificationListener(e) for host, e in endpoints.items()}
    async with trio.open_nursery() as nursery:
        # Each would be its own process on its own node (`trizmq serve`).
        for host, listener in listeners.items():
            await nursery.start(trizmq.serve, RING, "notifications", listener, host, RESOLVE)
        # --8<-- [end:listener]
        async with trizmq.open_client(RING, resolve=RESOLVE, name="nova-compute") as client:
            await create_instance(client, {"user": "admin"}, "vm1")
            for events in endpoints.values():
                for _ in range(2):
                    await events.received.acquire()
                print(*events.events, sep="\n")
        # Nothing has a `debug` method: dropped, and counted.
        print(f"computenodex: {listeners['computenodex'].counts}")
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
