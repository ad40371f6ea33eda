# --8<-- [start:program]
"""A service process dies in the middle of a call: the caller is told at once.

Run it from this directory, with the seed ring file: `python peer_lost.py
seed_ring.json`. It runs compute on `controller` as a `trizmq serve` process
(compute_app.py), kills it with SIGKILL during a call, and starts it again.
It prints:

    compute.controller -> 3
    killed compute.controller (SIGKILL)
    PeerLost from compute.controller after less than 3 s
    compute.controller is back -> 5
"""

import functools
import os
import signal
import sys
from pathlib import Path

import trio

import trizmq

RESOLVE = {"controller": "127.0.0.2"}
HERE = Path(__file__).resolve().parent  # where compute_app.py is


def serve_command(ring_path: str) -> list[str]:
    """`trizmq serve` of compute_app.py's compute service, as host controller."""
    return [
        "trizmq", "serve", ring_path, "--host", "controller", "--app", "compute_app:SERVICES",
        "--topic", "compute", "--resolve", f"controller={RESOLVE['controller']}",
    ]  # fmt: skip


async def main(ring_path: str) -> None:
    ring = trizmq.Ring.load(ring_path)
    command = serve_command(ring_path)
    start_service = functools.partial(trio.run_process, command, cwd=HERE, check=False)
    async with trio.open_nursery() as nursery, trizmq.open_client(ring, resolve=RESOLVE) as client:
        service = await nursery.start(start_service)
        # The service is starting: this call waits for it (else HostUnreachable at once).
        first = await client.call("compute.controller", "add", x=1, y=2, wait_for_ready=True)
        print("compute.controller ->", first)

        # --8<-- [start:lost]
        async def crash_soon() -> None:
            await trio.sleep(0.5)
            service.send_signal(signal.SIGKILL)
            print("killed compute.controller (SIGKILL)")

        nursery.start_soon(crash_soon)
        started = trio.current_time()
        try:
            await client.call("compute.controller", "slow", seconds=30, timeout=60)
        except trizmq.PeerLost as lost:
            # Did the handler run? Maybe: a lost call's outcome is unknown.
            # trizmq never sends it again; retry only what is safe to repeat.
            waited = trio.current_time() - started
            assert waited < 3
            print(f"{lost.type_name} from {lost.topic}.{lost.host} after less than 3 s")
        # --8<-- [end:lost]

        # --8<-- [start:restart]
        service = await nursery.start(start_service)
        # The same client reconnects by itself: nothing to restart on this side.
        result = await client.call(
            "compute.controller", "add", x=2, y=3, timeout=10, wait_for_ready=True
        )
        print("compute.controller is back ->", result)
        # --8<-- [end:restart]
        service.terminate()  # SIGTERM: `trizmq serve` stops cleanly


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    trio.run(main, os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "seed_ring.json"))
# --8<-- [end:run]
