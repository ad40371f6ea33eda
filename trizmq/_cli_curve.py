"""CURVE options of the `trizmq` commands, and `trizmq keys generate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._curve import Curve, generate_keys
from ._errors import TrizmqError


def add_client_curve_options(parser: argparse.ArgumentParser) -> None:
    """`--curve-secret FILE --curve-server FILE`: connect to CURVE services."""
    group = parser.add_argument_group("CurveZMQ (optional)")
    group.add_argument(
        "--curve-secret",
        metavar="FILE",
        type=Path,
        help="this client's secret key file (NAME.key_secret)",
    )
    group.add_argument(
        "--curve-server", metavar="FILE", type=Path, help="the services' public key file (NAME.key)"
    )


def add_service_curve_options(parser: argparse.ArgumentParser) -> None:
    """`--curve-secret FILE --curve-allow DIR`: serve with CURVE."""
    group = parser.add_argument_group("CurveZMQ (optional)")
    group.add_argument(
        "--curve-secret",
        metavar="FILE",
        type=Path,
        help="the service's secret key file (NAME.key_secret)",
    )
    group.add_argument(
        "--curve-allow",
        metavar="DIR",
        type=Path,
        help="a directory of the public key files of allowed clients",
    )


def client_curve(args: argparse.Namespace) -> Curve | None:
    """The client keys the options name, or None; both options or neither."""
    if _given(args, "curve_server"):
        return Curve.client(args.curve_secret, args.curve_server)
    return None


def service_curve(args: argparse.Namespace) -> Curve | None:
    """The service keys the options name, or None; both options or neither."""
    if _given(args, "curve_allow"):
        return Curve.server(args.curve_secret, args.curve_allow)
    return None


def _given(args: argparse.Namespace, other: str) -> bool:
    secret, second = args.curve_secret, getattr(args, other)
    if (secret is None) != (second is None):
        flag = "--" + other.replace("_", "-")
        raise TrizmqError(f"--curve-secret and {flag} go together")
    return secret is not None


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
