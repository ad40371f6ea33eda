"""Streams: items per second to a fast consumer, and memory with a slow one.

One service in its own process (`trizmq serve`), streaming small items from an
async generator; the consumer in this process. Two measurements:

- **fast**: items per second of one stream read as fast as the consumer can,
  for each window given;
- **slow**: a stream the consumer reads slowly (20 ms of pause every 1,000 items),
  with the resident memory (`VmRSS`) of both processes sampled as it goes:
  flat, whatever the length of the stream, because the service never runs
  more than a window ahead of the consumer.

    .venv/bin/python bench/streams.py [--items 200000] [--slow-items 100000]
        [--window 64 --window 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
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

ADDRESS = f"127.79.{os.getpid() % 250}.2"
APP = """
class Compute:
    async def numbers(self, ctx, n: int):
        for i in range(n):
            yield {"i": i, "name": "instance-0001"}

SERVICES = {"compute": Compute}
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def fast(client: trizmq.Client, items: int, window: int) -> float:
    """Items per second of one stream of `items`, read as fast as possible."""
    started = time.perf_counter()
    count = 0
    async with client.stream("compute", "numbers", n=items, window=window) as stream:
        async for _ in stream:
            count += 1
    assert count == items
    return items / (time.perf_counter() - started)


async def slow(client: trizmq.Client, items: int, service: int) -> list[tuple[int, int, int]]:
    """(items read, service KiB, consumer KiB) every tenth of a stream read slowly."""
    samples = []
    count = 0
    async with client.stream("compute", "numbers", n=items) as stream:
        async for _ in stream:
            count += 1
            if count % 1000 == 0:
                await trio.sleep(0.02)
            if count % (items // 10) == 0:
                samples.append((count, rss_kib(service), rss_kib(os.getpid())))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--slow-items", type=int, default=100_000)
    parser.add_argument("--window", type=int, action="append")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    windows = args.window or [64, 1024]
    with tempfile.TemporaryDirectory() as work:
        ring_path = Path(work) / "ring.json"
        ring_path.write_text('{"compute:9501": ["node"]}')
        (Path(work) / "stream_app.py").write_text(APP)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([work, *sys.path])}
        command = [sys.executable, "-m", "trizmq.cli", "serve", str(ring_path)]
        command += ["--host", "node", "--app", "stream_app:SERVICES"]
        command += ["--resolve", f"node={ADDRESS}"]
        server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, start_new_session=True)
        try:
            assert server.stderr is not None
            while b"serving on" not in server.stderr.readline():
                if server.poll() is not None:
                    raise SystemExit("the service did not start")

            async def run() -> None:
                ring = trizmq.Ring.load(ring_path)
                async with trizmq.open_client(ring, resolve={"node": ADDRESS}) as client:
                    await fast(client, 5_000, 64)  # warm up
                    for window in windows:
                        rates = [await fast(client, args.items, window) for _ in range(args.rounds)]
                        print(
                            f"fast consumer, window {window}: {statistics.median(rates):,.0f}"
                            f" items/s (median of {args.rounds}:"
                            f" {', '.join(f'{r:,.0f}' for r in rates)})"
                        )
                    started = time.perf_counter()
                    samples = await slow(client, args.slow_items, server.pid)
                    seconds = time.perf_counter() - started
                    print(
                        f"slow consumer, {args.slow_items:,} items in {seconds:.1f} s"
                        " (a 20 ms pause every 1,000 items), window 64:"
                    )
                    print("  items read   service RSS   consumer RSS")
                    for count, service, consumer in samples:
                        print(f"  {count:>10,}   {service:>7,} KiB   {consumer:>8,} KiB")

            trio.run(run)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(10)


if __name__ == "__main__":
    main()
