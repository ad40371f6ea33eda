"""`trizmq notify`: send a notification from a shell."""

from __future__ import annotations

import argparse

import trio

from .._client import DEFAULT_CONNECT_TIMEOUT, open_client
from .._notify import PRIORITIES, Notifier
from .._ring import Ring
from .options import (
    add_client_curve_options,
    add_resolve_option,
    client_curve,
    resolve_map,
)
from .rpc import EXIT_TIMEOUT, _connected_within, _load_json, _parse_context


async def _notify(args: argparse.Namespace, resolve: dict[str, str]) -> int:
    ring = Ring.load(args.ring)
    payload = _load_json(args.payload, "--payload")
    context = _parse_context(args.context)
    curve = client_curve(args)
    async with open_client(ring, resolve=resolve, name="trizmq-cli", curve=curve) as client:
        notifier = Notifier(client, args.publisher_id, topics=args.topic or ["notifications"])
        # Every listener up first, as for a fanout: then whichever member of a
        # pool the notifier picks takes it, rather than a queue nobody reads.
        services = [f"{t}.{host}" for t in notifier.topics for host in ring.hosts_of(t)]
        if not await _connected_within(client, "notify", services, args.timeout, need_all=True):
            return EXIT_TIMEOUT
        print(await notifier.notify(args.priority, context, args.event_type, payload))
    return 0


def _cmd_notify(args: argparse.Namespace) -> int:
    code: int = trio.run(_notify, args, resolve_map(args))
    return code


def add_notify_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `trizmq notify RING PRIORITY EVENT_TYPE`."""
    p = commands.add_parser(
        "notify",
        help="send a notification to one listener of each pool",
        description=(
            "Send a notification, as trizmq.Notifier does: to one host of each pool of each "
            "topic, and print its message id. Waits until the connection to every host of "
            "the topics is up; if one is not up within --timeout, sends nothing and "
            "exits 3."
        ),
    )
    p.add_argument("ring", metavar="RING", help="the JSON ring file")
    p.add_argument(
        "priority",
        metavar="PRIORITY",
        type=str.lower,
        choices=PRIORITIES,
        help=f"the priority: {', '.join(PRIORITIES)}",
    )
    p.add_argument("event_type", metavar="EVENT_TYPE", help="what happened, e.g. compute.create")
    p.add_argument(
        "--payload",
        metavar="JSON",
        default="{}",
        help="the notification's data, in JSON (default %(default)s)",
    )
    p.add_argument(
        "--publisher-id",
        metavar="ID",
        default="trizmq-cli",
        help="who publishes (default %(default)s)",
    )
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="a topic to notify (repeatable; default notifications)",
    )
    p.add_argument(
        "--context",
        metavar="JSON",
        default=None,
        help="a JSON object the listeners' endpoints see as ctx.values",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help="seconds to wait for the connections before sending nothing and "
        "exiting 3 (default %(default)s)",
    )
    add_resolve_option(p)
    add_client_curve_options(p)
    p.set_defaults(func=_cmd_notify)
