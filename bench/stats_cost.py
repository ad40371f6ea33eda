"""What a stats subscriber costs a service: pipelined calls with and without one.

One service in its own process; a client keeping 100 calls in flight; rounds
alternate without a subscriber and with `trizmq stats --watch --interval 0.5`
subscribed to the service's port. Prints the medians and their ratio.

    .venv/bin/python bench/stats_cost.py [--rounds 4] [--calls 6000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

import trizmq

ADDRESS = f"127.78.{os.getpid() % 250}.2"
APP = """
class Compute:
    async def echo(self, ctx, x: int, name: str) -> dict:
        return {"x": x, "name": name}

SERVICES = {"compute": Compute}
"""


async def pipelined(ring: trizmq.Ring, calls: int) -> float:
    """Calls per second with 100 in flight, after a warm-up."""
    async with trizmq.open_client(ring, resolve={"node": ADDRESS}) as client:
        for _ in range(200):
            await client.call("compute", "echo", x=1, name="instance-0001")
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def worker() -> None:
                for _ in range(calls // 100):
                    await client.call("compute", "echo", x=1, name="instance-0001")

            for _ in range(100):
                nursery.start_soon(worker)
        return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        ring_path = Path(work) / "ring.json"
        ring_path.write_text(json.dumps({"compute:9701": ["node"]}))
        (Path(work) / "stats_cost_app.py").write_text(APP)
        trizmq_cli = [sys.executable, "-m", "trizmq.cli"]
        resolve = ["--resolve", f"node={ADDRESS}"]
        service = subprocess.Popen(
            [
                *trizmq_cli,
                "serve",
                str(ring_path),
                "--host",
                "node",
                "--app",
                "stats_cost_app:SERVICES",
                *resolve,
            ],
            cwd=work,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert service.stderr is not None
            service.stderr.readline()  # "serving on ..."
            ring = trizmq.Ring.load(ring_path)
            results: dict[str, list[float]] = {"without": [], "with": []}
            for _ in range(args.rounds):
                results["without"].append(trio.run(pipelined, ring, args.calls))
                subscriber = subprocess.Popen(
                    [
                        *trizmq_cli,
                        "stats",
                        str(ring_path),
                        "--watch",
                        "--interval",
                        "0.5",
                        *resolve,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)  # subscribed, and pushes flowing
                results["with"].append(trio.run(pipelined, ring, args.calls))
                subscriber.send_signal(signal.SIGINT)
                subscriber.wait()
        finally:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
    for name, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name} a subscriber: median {statistics.median(values):,.0f} calls/s ({runs})")
    ratio = statistics.median(results["with"]) / statistics.median(results["without"])
    print(f"with / without: {ratio:.3f}")


if __name__ == "__main__":
    main()
