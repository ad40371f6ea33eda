"""The ``trizmq`` command.

One module per group of subcommands, each with an ``add_*_parser`` function
that registers its commands with ``set_defaults(func=...)``; `build_parser`
calls them all. A command's function takes the parsed arguments and returns
the exit code. Building the parser imports only the command line: the demo and
the bench (and Textual, which the demo's monitor needs) are imported by their
command's function, so ``trizmq call`` starts without them.

- `options`: ``--resolve`` and the CURVE options, public for tools built on
  trizmq (`trizmq-monitor` uses them).
- `ring`, `rpc`, `notify`, `keys`, `stats`, `demo`, `bench`: the subcommands.
- `serving`: the topics one ``trizmq serve`` runs, and their changes when
  SIGHUP reloads the ring.

Exit codes: 0 success, 2 a usage or configuration error (argparse's own usage
errors exit 2 as well), 141 when the reader of the output closed the pipe (as
for a command killed by SIGPIPE); ``call``, ``cast``, ``fanout``, ``notify``, ``stats``,
``demo`` and ``bench`` document their others. Every error is one line on
stderr that starts with ``trizmq: ``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence

from .._errors import TrizmqError
from .bench import add_bench_parser
from .demo import add_demo_parser
from .keys import add_keys_parser
from .notify import add_notify_parser
from .options import UsageError
from .ring import add_ring_parser
from .rpc import add_rpc_parsers
from .stats import add_stats_parser

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CONFIG_ERROR", "build_parser", "main"]

#: The exit code of a usage or configuration error.
EXIT_CONFIG_ERROR = 2
#: The exit code when the reader of the output went away: a shell's for SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the ``trizmq`` argument parser with every subcommand.

    Returns:
        The parser; each leaf subcommand sets ``func``, the function to run.
    """
    parser = argparse.ArgumentParser(
        prog="trizmq", description="RPC on Trio and ZeroMQ: tools for trizmq rings and services."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"trizmq {importlib.metadata.version('trizmq')}",
        help="print the installed version, 'trizmq X.Y.Z', and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_ring_parser(commands)
    add_rpc_parsers(commands)
    add_notify_parser(commands)
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
        The exit code: 0 on success, 2 for an invalid ring or option, 141 when
        the output's reader closed the pipe.
    """
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except BrokenPipeError:
        # `trizmq stats --watch | head`: the reader has all it wanted. Output still
        # buffered would fail again when Python flushes at exit: send it nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (UsageError, TrizmqError, OSError) as exc:
        # A usage or configuration problem (an option, the ring, keys, an address
        # in use): one line, no traceback.
        print(f"trizmq: {_message(exc)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def _message(exc: Exception) -> str:
    """An error's text, without the ``[Errno N]`` that `str` puts before an OSError's."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
