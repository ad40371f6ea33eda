"""`trizmq stats`: the stats of every service port of a ring, once or live."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from .._nursery import open_nursery
from .._ring import Ring
from ..stats import StatsBoard, watch_ring
from .options import (
    add_client_curve_options,
    add_registry_options,
    add_resolve_option,
    client_curve,
    registry,
    resolve_map,
)

#: Seconds a one-shot snapshot waits for ports that have not answered yet.
SNAPSHOT_WAIT = 2.0
#: The exit code of ``trizmq stats --check`` when a port of the ring is down.
EXIT_DOWN = 4


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A text table of ports as `StatsBoard.as_json` gives them.

    One line per port: state, messages, rates, latency, errors; ``-`` for
    every number of a port that is down.
    """
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
    lines = [header]
    for row in rows:
        got: dict[str, int] = row["received"] or {}
        lat: dict[str, float] = row["latency_ms"] or {}
        state = row["state"] if row["fresh"] or row["state"] == "down" else "stale"
        lines.append(
            (
                row["host"],
                f"{row['topic']}:{row['port']}",
                state,
                *(str(got.get(kind, "-")) for kind in ("call", "cast", "fanout")),
                _rate(row["rate_in"]),
                _rate(row["rate_out"]),
                _ms(lat.get("p50")),
                _ms(lat.get("p99")),
                str(sum((row["errors"] or {}).values())) if row["errors"] is not None else "-",
                _int(row["in_flight"]),
                _int(row["peers"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _int(value: Any) -> str:
    return "-" if value is None else str(value)


def format_membership(board: StatsBoard) -> str:
    """The ring against the board's registry: who is registered, who is missing,
    who is registered but in no ring."""
    assert board.registry is not None
    where = f"registry {board.registry.display_url} (prefix {board.registry.prefix})"
    membership = board.membership()
    if membership is None:
        return f"{where}: not reached: {board.registry_error}"
    lines = [f"{where}: {len(membership.registered)} registered"]
    if board.registry_error is not None:
        lines[0] += f" when last reached (now: {board.registry_error})"
    missing = ", ".join(s.target for s in membership.missing) or "none"
    lines.append(f"  in the ring, not registered: {missing}")
    unlisted = ", ".join(f"{m.target} at {m.address}:{m.port}" for m in membership.unlisted)
    lines.append(f"  registered, in no ring: {unlisted or 'none'}")
    return "\n".join(lines)


def _down_report(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The ``--check`` line naming the ports that are down, or None if none is."""
    down = [
        f"{row['topic']}.{row['host']} at {row['address']}:{row['port']}"
        for row in rows
        if row["state"] == "down"
    ]
    if not down:
        return None
    return f"trizmq: {len(down)} of {len(rows)} ports down: {', '.join(down)}"


async def _stats(args: argparse.Namespace) -> int:
    # The board looks the ring's host names up: in a worker thread, as the
    # monitor does, since the system resolver may block on an unknown name.
    board = await trio.to_thread.run_sync(
        functools.partial(
            StatsBoard, Ring.load(args.ring), resolve_map(args), registry=registry(args)
        ),
        abandon_on_cancel=True,
    )
    # trizmq's nursery, so that a lone error (a closed pipe) reaches `main` as itself.
    async with open_nursery() as nursery:
        await nursery.start(functools.partial(watch_ring, board, curve=client_curve(args)))
        with trio.move_on_after(SNAPSHOT_WAIT):
            # The board is plain data filled by the feed's tasks: look, don't wait on it.
            while not board.answered():  # noqa: ASYNC110
                await trio.sleep(0.05)
        while True:
            rows = board.as_json()
            if args.json:
                print(json.dumps(rows, indent=None if args.watch else 2), flush=True)
            else:
                text = format_table(rows)
                if board.registry is not None:
                    text += "\n\n" + format_membership(board)
                print(text + ("\n" if args.watch else ""), flush=True)
            if not args.watch:
                break
            await trio.sleep(args.interval)
        nursery.cancel_scope.cancel()
    if args.check and (report := _down_report(rows)) is not None:
        print(report, file=sys.stderr)
        return EXIT_DOWN
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    try:
        code: int = trio.run(_stats, args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0
    return code


def add_stats_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq stats`."""
    p = commands.add_parser(
        "stats",
        help="show the stats of every service port of a ring",
        description=(
            "Subscribe to the stats of every (host, topic:port) of the ring and print one "
            f"snapshot, ports that do not answer within {SNAPSHOT_WAIT:g} s shown as down "
            "(their numbers '-'); --watch keeps printing. With --check it is a health check: "
            f"exit {EXIT_DOWN} if any port is down, naming them on stderr. A reader that "
            "closes the pipe (trizmq stats --watch | head) ends it quietly, with exit 141 "
            "as for a command killed by SIGPIPE. With --registry, the ring is held against "
            "the live members: which are registered, which ring services are not, and "
            "which registered ones no ring lists (their ports shown too); --json adds "
            "'registered' to each port."
        ),
    )
    p.add_argument("ring", metavar="RING", help="the JSON ring file")
    p.add_argument(
        "--json", action="store_true", help="print a JSON list, one object per (host, topic, port)"
    )
    once = p.add_mutually_exclusive_group()
    once.add_argument("--watch", action="store_true", help="keep printing until interrupted")
    once.add_argument(
        "--check",
        action="store_true",
        help=f"exit {EXIT_DOWN} if a port of the ring is down (after printing, as without it)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between two prints with --watch (default %(default)s)",
    )
    add_resolve_option(p)
    add_client_curve_options(p)
    add_registry_options(p)
    p.set_defaults(func=_cmd_stats)
