# --8<-- [start:program]
"""A script that is not Trio: the blocking client, from its main thread and a thread pool.

Run it from this directory, with the seed ring file: `python blocking.py
seed_ring.json`. It runs compute on `controller` as a `trizmq serve` process
(compute_app.py), calls it, and prints:

    compute.controller -> 3
    from 4 threads -> [0, 2, 4, 6]
    CallTimeout after 0.5 s
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trizmq
import trizmq.sync

RESOLVE = {"controller": "127.0.0.2"}
HERE = Path(__file__).resolve().parent  # where compute_app.py is


def serve_command(ring_path: str) -> list[str]:
    """`trizmq serve` of compute_app.py's compute service, as host controller."""
    return [
        "trizmq", "serve", ring_path, "--host", "controller", "--app", "compute_app:SERVICES",
        "--topic", "compute", "--resolve", f"controller={RESOLVE['controller']}",
    ]  # fmt: skip


def main(ring_path: str) -> None:
    ring = trizmq.Ring.load(ring_path)
    service = subprocess.Popen(serve_command(ring_path), cwd=HERE)
    try:
        # No `async`, no `await`: the client runs its Trio loop in a thread of its own.
        with trizmq.sync.open_client(ring, resolve=RESOLVE, timeout=10) as client:
            # The service may not have bound its port yet: this first call waits for it.
            first = client.call("compute.controller", "add", x=1, y=2, wait_for_ready=True)
            print("compute.controller ->", first)

            # Any number of threads may share the client, and its prepared targets.
            compute = client.prepare("compute.controller")
            with ThreadPoolExecutor(4) as pool:
                sums = pool.map(lambda x: compute.call("add", x=x, y=x), range(4))
                print("from 4 threads ->", list(sums))

            # Errors are the async client's: here trizmq.CallTimeout.
            try:
                compute.call("slow", seconds=5, timeout=0.5)
            except trizmq.CallTimeout as error:
                print(f"CallTimeout after {error.timeout:g} s")
    finally:
        service.terminate()  # SIGTERM: `trizmq serve` stops cleanly
        service.wait()


# --8<-- [end:program]


from example_addresses import addresses_for_tests  # noqa: E402  (not shown in the docs)

RESOLVE.update(addresses_for_tests())

# --8<-- [start:run]
if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "seed_ring.json")
# --8<-- [end:run]
