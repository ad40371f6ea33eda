"""`trizmq bench`: its options; the bench itself (`trizmq.bench`) is imported to run.

The presets live here, with the options that show them, so that building the
parser imports no benchmark; `trizmq.bench.runner.Settings` takes its
defaults from `DEFAULT_COUNTS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..bench.runner import Settings

#: Every benchmark, by the name ``--only`` takes, in the order a round runs them.
BENCHMARK_NAMES = ("latency", "pipelined", "casts", "fanout", "in-flight", "peers", "burst")
#: What each count option sets, and its default and ``--quick`` values.
DEFAULT_COUNTS = {
    "calls": 10_000,
    "pipelined": 30_000,
    "casts": 50_000,
    "fanouts": 5_000,
    "in_flight": 10_000,
    "peers": 200,
    "burst": 100_000,
    "warmup": 300,
}
QUICK_COUNTS = {
    "calls": 300,
    "pipelined": 2_000,
    "casts": 2_000,
    "fanouts": 200,
    "in_flight": 2_000,
    "peers": 20,
    "burst": 5_000,
    "warmup": 50,
}
_COUNT_HELP = {
    "calls": "sequential calls of the latency benchmark",
    "pipelined": "calls of the pipelining benchmark",
    "casts": "casts of the cast benchmark",
    "fanouts": "fanouts to 8 services",
    "in_flight": "calls held in flight at once",
    "peers": "service ports one client talks to",
    "burst": "messages of the adapter burst",
    "warmup": "unmeasured calls or messages before each measurement",
}
_DESCRIPTION = (
    "Measure trizmq against raw blocking pyzmq doing the same work, client and server in "
    "separate processes: call latency, pipelined calls, casts, fanout, memory of calls in "
    "flight, cost per peer and the adapter's burst rate, with the CPU each thread of client "
    "and server spends per message. Each round runs every benchmark's baseline, then "
    "trizmq; the table shows medians over the rounds and the targets."
)


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1 or more")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    """Counts given on the command line, else ``--quick``'s or the defaults."""
    from ..bench.runner import Settings

    preset = QUICK_COUNTS if args.quick else DEFAULT_COUNTS

    def count(key: str) -> int:
        given: int | None = getattr(args, key)
        return given or preset[key]

    return Settings(
        rounds=args.rounds,
        calls=count("calls"),
        pipelined=count("pipelined"),
        casts=count("casts"),
        fanouts=count("fanouts"),
        in_flight=count("in_flight"),
        peers=count("peers"),
        burst=count("burst"),
        warmup=count("warmup"),
        only=tuple(args.only),
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.runner import run_bench  # here, so that other commands start without it

    return run_bench(_settings(args), args.json)


def add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq bench`."""
    parser = commands.add_parser(
        "bench", help="measure trizmq against raw pyzmq", description=_DESCRIPTION
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=3,
        metavar="N",
        help="times every benchmark runs, raw then trizmq; medians are reported (default 3)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts for a smoke test: seconds, not minutes; the numbers mean little",
    )
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also write every number to FILE as JSON"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARK_NAMES,
        default=[],
        metavar="NAME",
        help="run only this benchmark (repeatable): " + ", ".join(BENCHMARK_NAMES),
    )
    for key, what in _COUNT_HELP.items():
        parser.add_argument(
            "--" + key.replace("_", "-"),
            type=_positive,
            default=None,
            metavar="N",
            help=f"{what} (default {DEFAULT_COUNTS[key]:,}; --quick {QUICK_COUNTS[key]:,})",
        )
    parser.set_defaults(func=_cmd_bench)
