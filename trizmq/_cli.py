"""The ``trizmq`` command.

Each subcommand is one small ``_cmd_*`` function taking the parsed arguments
and returning the exit code; ``build_parser`` wires them up. To add one, write
its function, add a ``_add_*_parser`` helper that registers it with
``set_defaults(func=...)``, and call that helper from ``build_parser``.

Exit codes: 0 success, 2 a usage or configuration error (argparse's own usage
errors exit 2 as well).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from ._bench import add_bench_parser
from ._cli_curve import add_keys_parser
from ._cli_rpc import add_rpc_parsers
from ._cli_stats import add_stats_parser
from ._demo import add_demo_parser
from ._errors import RingError, TrizmqError
from ._ring import Ring, parse_resolve

__all__ = ["add_resolve_option", "build_parser", "format_ring_table", "main", "resolve_map"]

EXIT_OK = 0
EXIT_CONFIG_ERROR = 2

_RESERVED_NOTE = "(reserved: replies travel on the caller's connection)"

Command = Callable[[argparse.Namespace], int]


# -- shared options -----------------------------------------------------------


def add_resolve_option(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--resolve NAME=ADDR`` option to a subcommand.

    Read the result with `resolve_map`.

    Args:
        parser: The subcommand's parser.
    """
    parser.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="NAME=ADDR",
        type=_resolve_item,
        help=(
            "use ADDR for ring host NAME instead of the system resolver, curl style; "
            "repeatable (e.g. --resolve controller=127.0.0.2)"
        ),
    )


def resolve_map(args: argparse.Namespace) -> dict[str, str]:
    """The ``--resolve`` overrides of parsed arguments, as ``{NAME: ADDR}``.

    Args:
        args: Arguments parsed by a parser that has `add_resolve_option`.

    Returns:
        The host overrides, ready for `trizmq._ring.resolve_address`.

    Raises:
        RingError: One host was given two different addresses.
    """
    items: list[str] = args.resolve
    return parse_resolve(items)


def _resolve_item(text: str) -> str:
    """Check one ``--resolve`` value at parse time, for a usage error that names it."""
    try:
        parse_resolve([text])
    except RingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# -- trizmq ring ... ----------------------------------------------------------


def _cmd_ring_check(args: argparse.Namespace) -> int:
    """``trizmq ring check FILE``: validate a ring file and show it."""
    ring = Ring.load(args.file)
    if args.json:
        print(json.dumps(ring.to_json(), indent=2))
    else:
        print(format_ring_table(ring))
    return EXIT_OK


def format_ring_table(ring: Ring) -> str:
    """Render a ring as a text table: topic, port, hosts.

    Args:
        ring: The ring to show.

    Returns:
        The table, one topic a row, sorted by topic, followed by a summary
        line; reserved topics carry a note saying why nothing serves them.
    """
    rows = [("TOPIC", "PORT", "HOSTS", "")]
    for topic in ring.topics:
        note = _RESERVED_NOTE if ring.is_reserved(topic) else ""
        rows.append((topic, str(ring.port(topic)), ", ".join(ring.hosts_of(topic)), note))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{topic:<{widths[0]}}  {port:>{widths[1]}}  {hosts:<{widths[2]}}  {note}".rstrip()
        for topic, port, hosts, note in rows
    ]
    lines.append("")
    lines.append(f"{ring.source}: ring OK, {len(ring.topics)} topics on {len(ring.hosts)} hosts")
    return "\n".join(lines)


def _add_ring_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


# -- entry point --------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the ``trizmq`` argument parser with every subcommand.

    Returns:
        The parser; each leaf subcommand sets ``func``, the function to run.
    """
    parser = argparse.ArgumentParser(
        prog="trizmq", description="RPC on Trio and ZeroMQ: tools for trizmq rings and services."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_ring_parser(commands)
    add_rpc_parsers(commands, add_resolve_option)
    add_keys_parser(commands)
    add_bench_parser(commands)
    add_stats_parser(commands, add_resolve_option)
    add_demo_parser(commands, add_resolve_option)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trizmq`` command.

    The console script calls this and exits with its return value.

    Args:
        argv: The arguments, without the program name; None means
            ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 2 for an invalid ring or option.
    """
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except (TrizmqError, OSError) as exc:
        # A configuration problem (ring, keys, an address in use): one line, no traceback.
        print(f"trizmq: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
