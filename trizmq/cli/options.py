"""Options the ``trizmq`` commands share, public for tools built on trizmq.

`trizmq-monitor` takes ``--resolve`` and the client CURVE options from here,
so that every tool spells them, checks them and reports them alike:

```python
parser = argparse.ArgumentParser(prog="my-tool")
add_resolve_option(parser)
add_client_curve_options(parser)
args = parser.parse_args()
try:
    resolve, curve = resolve_map(args), client_curve(args)
except (UsageError, trizmq.TrizmqError) as exc:
    parser.exit(2, f"my-tool: {exc}\\n")
```
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._curve import Curve
from .._errors import RingError
from .._registry import DEFAULT_LEASE, Registry
from .._ring import parse_resolve

__all__ = [
    "UsageError",
    "add_client_curve_options",
    "add_registry_options",
    "add_resolve_option",
    "add_service_curve_options",
    "client_curve",
    "registry",
    "resolve_map",
    "service_curve",
]


class UsageError(Exception):
    """An option's value is malformed, or options that go together were not given together.

    `trizmq.cli.main` reports it like argparse's own usage errors: one
    ``trizmq: ...`` line, exit code 2.
    """


# -- --resolve ------------------------------------------------------------------


def add_resolve_option(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--resolve NAME=ADDR`` option to a parser.

    A malformed value is a usage error at parse time. Read the result with
    `resolve_map`.

    Args:
        parser: The command's parser.
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
        The host overrides, ready for `trizmq.open_client(resolve=...)`.

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


# -- --registry -----------------------------------------------------------------


def add_registry_options(parser: argparse.ArgumentParser, *, lease: bool = False) -> None:
    """Add ``--registry URL --registry-prefix NAME`` (and ``--registry-lease S``).

    Read them with `registry`.

    Args:
        parser: The command's parser.
        lease: Add ``--registry-lease`` too (services set the lease).
    """
    group = parser.add_argument_group("live membership (optional)")
    group.add_argument(
        "--registry",
        metavar="URL",
        default=None,
        help="a Redis registry of live members: redis://[:PASSWORD@]HOST:PORT/DB, or "
        "rediss://...?ssl_ca_certs=CA.pem for TLS",
    )
    group.add_argument(
        "--registry-prefix",
        metavar="NAME",
        default="trizmq",
        help="prefix of the registry's keys: one per cluster sharing a Redis (default %(default)s)",
    )
    if lease:
        group.add_argument(
            "--registry-lease",
            metavar="S",
            type=float,
            default=DEFAULT_LEASE,
            help="seconds a member stays registered unless renewed: a killed service "
            "leaves within it (default %(default)s)",
        )


def registry(args: argparse.Namespace) -> Registry | None:
    """The registry that parsed arguments name, or None if they name none.

    Args:
        args: Arguments parsed by a parser that has `add_registry_options`.

    Raises:
        UsageError: The URL, prefix or lease is not valid.
    """
    if args.registry is None:
        return None
    try:
        return Registry(
            args.registry,
            prefix=args.registry_prefix,
            lease=getattr(args, "registry_lease", DEFAULT_LEASE),
        )
    except ValueError as exc:
        raise UsageError(f"--registry: {exc}") from None


# -- CURVE ----------------------------------------------------------------------


def add_client_curve_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--curve-secret FILE --curve-server FILE``: connect to CURVE services.

    Read the keys with `client_curve`.

    Args:
        parser: The command's parser.
    """
    _add_curve_options(
        parser,
        "this client's secret key file (NAME.key_secret)",
        ("--curve-server", "FILE", "the services' public key file (NAME.key)"),
    )


def add_service_curve_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--curve-secret FILE --curve-allow DIR``: serve with CURVE.

    Read the keys with `service_curve`.

    Args:
        parser: The command's parser.
    """
    _add_curve_options(
        parser,
        "the service's secret key file (NAME.key_secret)",
        ("--curve-allow", "DIR", "a directory of the public key files of allowed clients"),
    )


def _add_curve_options(
    parser: argparse.ArgumentParser, secret_help: str, other: tuple[str, str, str]
) -> None:
    group = parser.add_argument_group("CurveZMQ (optional)")
    group.add_argument("--curve-secret", metavar="FILE", type=Path, help=secret_help)
    flag, metavar, help = other
    group.add_argument(flag, metavar=metavar, type=Path, help=help)


def client_curve(args: argparse.Namespace) -> Curve | None:
    """The client keys that parsed arguments name, or None if they name none.

    Args:
        args: Arguments parsed by a parser that has `add_client_curve_options`.

    Raises:
        UsageError: Only one of the two options was given.
        TrizmqError: A key file is missing or malformed.
    """
    if _given(args, "curve_server"):
        return Curve.client(args.curve_secret, args.curve_server)
    return None


def service_curve(args: argparse.Namespace) -> Curve | None:
    """The service keys that parsed arguments name, or None if they name none.

    Args:
        args: Arguments parsed by a parser that has `add_service_curve_options`.

    Raises:
        UsageError: Only one of the two options was given.
        TrizmqError: A key file or the allowed directory is missing or malformed.
    """
    if _given(args, "curve_allow"):
        return Curve.server(args.curve_secret, args.curve_allow)
    return None


def _given(args: argparse.Namespace, other: str) -> bool:
    secret, second = args.curve_secret, getattr(args, other)
    if (secret is None) != (second is None):
        flag = "--" + other.replace("_", "-")
        raise UsageError(f"--curve-secret and {flag} go together")
    return secret is not None
