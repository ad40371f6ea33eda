# --8<-- [start:program]
"""A service with Prometheus metrics, scraped once after three calls.

Run it with `python metrics.py`. It prints:

    trizmq_requests_total{host="controller",kind="call",topic="compute"} 3.0
    trizmq_method_latency_seconds_count{host="controller",method="add",topic="compute"} 3.0
"""

import urllib.request

import trio

import trizmq

ring = trizmq.Ring.from_mapping({"compute:9501": ["controller"]})
resolve = {"controller": "127.0.0.2"}


class Compute:
    async def add(self, ctx: trizmq.Context, x: int, y: int) -> int:
        return x + y


def fetch(url: str) -> str:
    with urllib.request.urlopen(url) as response:
        return response.read().decode()


async def main() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(trizmq.serve, ring, "compute", Compute(), "controller", resolve)
        # One HTTP port for every service of the process, in the same nursery.
        url = await nursery.start(trizmq.serve_metrics, resolve["controller"], 9464)
        async with trizmq.open_client(ring, resolve=resolve) as client:
            for x in range(3):
                await client.call("compute", "add", x=x, y=1)
        text = await trio.to_thread.run_sync(fetch, url)  # what Prometheus scrapes
        wanted = (
            'trizmq_requests_total{host="controller",kind="call"',
            "trizmq_method_latency_seconds_count",
        )
        print(*(line for line in text.splitlines() if line.startswith(wanted)), sep="\n")
        nursery.cancel_scope.cancel()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

resolve.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main)
# --8<-- [end:run]
