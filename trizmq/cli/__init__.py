"""The ``trizmq`` command.

One module per group of subcommands, each with an ``add_*_parser`` function
that registers its commands with ``set_defaults(func=...)``; `build_parser`
calls them all. A command's function takes the parsed arguments and returns
the exit code. Building the parser imports only the command line: the demo and
the bench (and Textual, which the demo's monitor needs) are imported by their
command's function, so ``trizmq call`` starts without them.

- `options`: ``--resolve`` and the CURVE options, public for tools built on
  trizmq (`trizmq-monitor` uses them).
- `ring`, `rpc`, `keys`, `stats`, `demo`, `bench`: the subcommands.

Exit codes: 0 success, 2 a usage or configuration error (argparse's own usage
errors exit 2 as well); ``call``, ``demo`` and ``bench`` document their others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .._errors import TrizmqError
from .bench import add_bench_parser
from .demo import add_demo_parser
from .keys import add_keys_parser
from .options import UsageError
from .ring import add_ring_parser
from .rpc import add_rpc_parsers
from .stats import add_stats_parser

__all__ = ["EXIT_CONFIG_ERROR", "build_parser", "main"]

#: The exit code of a usage or configuration error.
EXIT_CONFIG_ERROR = 2

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the ``trizmq`` argument parser with every subcommand.

    Returns:
        The parser; each leaf subcommand sets ``func``, the function to run.
    """
    parser = argparse.ArgumentParser(
        prog="trizmq", description="RPC on Trio and ZeroMQ: tools for trizmq rings and services."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_ring_parser(commands)
    add_rpc_parsers(commands)
    add_keys_parser(commands)
    add_bench_parser(commands)
    add_stats_parser(commands)
    add_demo_parser(commands)
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
    except (UsageError, TrizmqError, OSError) as exc:
        # A usage or configuration problem (an option, the ring, keys, an address
        # in use): one line, no traceback.
        print(f"trizmq: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
