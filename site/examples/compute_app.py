"""The compute service as an app for `trizmq serve`.

    trizmq serve seed_ring.json --host controller --app compute_app:SERVICES

`trizmq serve` serves every topic of SERVICES that the ring lists for the host
(here, "compute"), making one `Compute` per topic. Importing this module does
nothing else.
"""

import trio

import trizmq


class Compute:
    """Its public methods are what callers may call."""

    async def add(self, ctx: trizmq.Context, x: int, y: int) -> int:
        return x + y

    async def whoami(self, ctx: trizmq.Context) -> str:
        """The ring host this service runs as."""
        return ctx.host

    async def slow(self, ctx: trizmq.Context, seconds: float) -> str:
        """Take `seconds` to answer: a handler still working when something goes wrong."""
        await trio.sleep(seconds)
        return f"{ctx.host} slept {seconds:g} s"


#: Topic -> endpoint: what `--app compute_app:SERVICES` serves.
SERVICES = {"compute": Compute}
