"""`trizmq demo`: its options; the demo itself (`trizmq.demo`) is imported to run."""

from __future__ import annotations

import argparse

from .options import UsageError, add_resolve_option, resolve_map


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.rate < 0:
        raise UsageError(f"--rate {args.rate:g}: must be 0 (no traffic) or more")
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration {args.duration:g}: must be more than 0")
    from ..demo.runner import run_demo  # here, so that other commands start without it

    return run_demo(
        args.ring,
        resolve_map(args),
        monitor=args.monitor,
        curve=args.curve,
        duration=args.duration,
        rate=args.rate,
    )


def add_demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq demo`."""
    p = commands.add_parser(
        "demo",
        help="run the seed ring's services on this machine, with live traffic",
        description=(
            "Start every (host, topic) of the ring as its own `trizmq serve` process, on "
            "loopback addresses (controller=127.0.0.2, computenodex=127.0.0.3 unless "
            "--resolve says otherwise), then send them the traffic of a small cloud. "
            "Prints a line per service and a traffic summary every few seconds, or runs "
            "trizmq-monitor with --monitor. Stops every process it started on Ctrl-C, "
            "SIGTERM, at the end of --duration or when the monitor quits. "
            "Exits 1 if a service fails to start."
        ),
    )
    p.add_argument("--monitor", action="store_true", help="watch the traffic in trizmq-monitor")
    p.add_argument(
        "--curve",
        action="store_true",
        help="encrypt and authenticate everything with CurveZMQ keys made for this run",
    )
    p.add_argument(
        "--ring",
        metavar="FILE",
        default=None,
        help="the ring file (default: the seed ring shipped with trizmq)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds of traffic (default: run until interrupted)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="R",
        help="scale the traffic by R: 1 is about 50 requests/s, 0 none (default %(default)s)",
    )
    add_resolve_option(p)
    p.set_defaults(func=_cmd_demo)
