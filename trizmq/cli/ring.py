"""`trizmq ring check`: validate a ring file and show it."""

from __future__ import annotations

import argparse
import json

from .._ring import DEFAULT_POOL, Ring

_RESERVED_NOTE = "(reserved: replies travel on the caller's connection)"


def _cmd_ring_check(args: argparse.Namespace) -> int:
    ring = Ring.load(args.file)
    if args.json:
        print(json.dumps(ring.to_json(), indent=2))
    else:
        print(format_ring_table(ring))
    return 0


def format_ring_table(ring: Ring) -> str:
    """Render a ring as a text table: topic, port, hosts (or pools of hosts).

    Args:
        ring: The ring to show.

    Returns:
        The table, one topic a row, sorted by topic, followed by a summary
        line; reserved topics carry a note saying why nothing serves them.
    """
    rows = [("TOPIC", "PORT", "HOSTS", "")]
    for topic in ring.topics:
        note = _RESERVED_NOTE if ring.is_reserved(topic) else ""
        rows.append((topic, str(ring.port(topic)), _hosts_cell(ring, topic), note))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{topic:<{widths[0]}}  {port:>{widths[1]}}  {hosts:<{widths[2]}}  {note}".rstrip()
        for topic, port, hosts, note in rows
    ]
    lines.append("")
    lines.append(f"{ring.source}: ring OK, {len(ring.topics)} topics on {len(ring.hosts)} hosts")
    return "\n".join(lines)


def _hosts_cell(ring: Ring, topic: str) -> str:
    """A topic's hosts, or its pools as ``pool: host, host; pool: host``."""
    pools = ring.pools_of(topic)
    if list(pools) == [DEFAULT_POOL]:
        return ", ".join(pools[DEFAULT_POOL])
    return "; ".join(f"{name}: {', '.join(hosts)}" for name, hosts in pools.items())


def add_ring_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq ring check FILE [--json]`."""
    ring = commands.add_parser("ring", help="inspect ring files", description="Inspect ring files.")
    ring_commands = ring.add_subparsers(dest="ring_command", required=True, metavar="COMMAND")
    check = ring_commands.add_parser(
        "check",
        help="validate a ring file and show its topics",
        description=(
            "Validate a ring file and print its topics, ports and hosts. "
            "Exits 0 for a valid ring, 2 for an invalid one (the problem goes to stderr)."
        ),
    )
    check.add_argument("file", metavar="FILE", help="the JSON ring file")
    check.add_argument("--json", action="store_true", help="print the parsed ring as JSON")
    check.set_defaults(func=_cmd_ring_check)
