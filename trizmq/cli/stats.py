"""`trizmq stats`: the stats of every service port of a ring, once or live."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any

import trio

from .._ring import Ring
from ..stats import StatsBoard, watch_ring
from .options import add_client_curve_options, add_resolve_option, client_curve, resolve_map

#: Seconds a one-shot snapshot waits for ports that have not answered yet.
SNAPSHOT_WAIT = 2.0


def format_board(board: StatsBoard) -> str:
    """A text table of every port: state, messages, rates, latency, errors."""
    header = (
        "HOST",
        "TOPIC:PORT",
        "STATE",
        "CALL",
        "CAST",
        "FANOUT",
        "IN/S",
        "OUT/S",
        "P50ms",
        "P99ms",
        "ERR",
        "FLIGHT",
        "PEERS",
    )
    rows = [header]
    for row in board.as_json():
        got: dict[str, int] = row["received"] or {}
        lat: dict[str, float] = row["latency_ms"] or {}
        state = row["state"] if row["fresh"] or row["state"] == "down" else "stale"
        rows.append(
            (
                row["host"],
                f"{row['topic']}:{row['port']}",
                state,
                *(str(got.get(kind, "-")) for kind in ("call", "cast", "fanout")),
                f"{row['rate_in']:.1f}",
                f"{row['rate_out']:.1f}",
                _ms(lat.get("p50")),
                _ms(lat.get("p99")),
                str(sum((row["errors"] or {}).values())) if row["errors"] is not None else "-",
                _int(row["in_flight"]),
                _int(row["peers"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _int(value: Any) -> str:
    return "-" if value is None else str(value)


async def _stats(args: argparse.Namespace) -> None:
    board = StatsBoard(Ring.load(args.ring), resolve_map(args))
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(watch_ring, board, curve=client_curve(args)))
        with trio.move_on_after(SNAPSHOT_WAIT):
            # The board is plain data filled by the feed's tasks: look, don't wait on it.
            while not board.answered():  # noqa: ASYNC110
                await trio.sleep(0.05)
        while True:
            if args.json:
                print(json.dumps(board.as_json(), indent=None if args.watch else 2), flush=True)
            else:
                print(format_board(board) + ("\n" if args.watch else ""), flush=True)
            if not args.watch:
                break
            await trio.sleep(args.interval)
        nursery.cancel_scope.cancel()


def _cmd_stats(args: argparse.Namespace) -> int:
    try:
        trio.run(_stats, args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 0


def add_stats_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq stats`."""
    p = commands.add_parser(
        "stats",
        help="show the stats of every service port of a ring",
        description=(
            "Subscribe to the stats of every (host, topic:port) of the ring and print one "
            "snapshot, unreachable ports shown as down; --watch keeps printing."
        ),
    )
    p.add_argument("ring", metavar="RING", help="the JSON ring file")
    p.add_argument(
        "--json", action="store_true", help="print a JSON list, one object per (host, topic, port)"
    )
    p.add_argument("--watch", action="store_true", help="keep printing until interrupted")
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between two prints with --watch (default %(default)s)",
    )
    add_resolve_option(p)
    add_client_curve_options(p)
    p.set_defaults(func=_cmd_stats)
