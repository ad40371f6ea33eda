"""`trizmq keys generate`: CurveZMQ key pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._curve import generate_keys


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    public, secret = generate_keys(args.directory, args.name, force=args.force)
    print(f"public key: {public}\nsecret key: {secret}")
    return 0


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq keys generate DIR [--name NAME] [--force]`."""
    keys = commands.add_parser("keys", help="CurveZMQ key pairs", description="CurveZMQ key pairs.")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "generate",
        help="write a key pair into DIR",
        description="Write a CURVE key pair, NAME.key and NAME.key_secret (mode 0600), "
        "into DIR (created if missing). Exits 2 if either file exists, unless --force.",
    )
    p.add_argument("directory", metavar="DIR", type=Path, help="where to write the key files")
    p.add_argument("--name", default="trizmq", help="the files' base name (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=_cmd_keys_generate)
