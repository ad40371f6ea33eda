"""`trizmq serve`, `call`, `cast` and `fanout`: the RPC core from a shell."""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import importlib
import json
import logging
import math
import resource
import signal
import sys
from collections.abc import Mapping
from typing import Any

import trio

from .._client import DEFAULT_CONNECT_TIMEOUT, Client, open_client
from .._errors import CallTimeout, HostUnreachable, RemoteError, RingError
from .._nursery import open_nursery
from .._ring import Ring, load_json
from .._service import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_HELD_BYTES,
    DEFAULT_MAX_IN_FLIGHT_PER_CALLER,
    DEFAULT_MAX_QUEUED_REPLY_BYTES,
    serve,
)
from .._transport import DEFAULT_HEARTBEAT
from .._wire import DEFAULT_MAX_MESSAGE_SIZE
from .options import (
    UsageError,
    add_client_curve_options,
    add_registry_options,
    add_resolve_option,
    add_service_curve_options,
    client_curve,
    registry,
    resolve_map,
    service_curve,
)
from .serving import HostServices, say, services_of

EXIT_REMOTE_ERROR = 1
EXIT_TIMEOUT = 3
# What `cast` and `fanout` cannot know: the protocol answers neither.
_NO_ANSWER = (
    "A one-way request has no answer: exit 0 does not mean the service has the method "
    "or takes the arguments (it counts a refusal only in its stats, under 'rejected' "
    "in trizmq stats --json); try a method with trizmq call first."
)


def load_app(spec: str) -> dict[str, object]:
    """Import `MODULE:ATTR` and return its topic -> endpoint(s) mapping.

    ATTR (dotted for nested attributes) is a mapping of topic to endpoint, or
    to a list of endpoints (of several namespaces or versions, see
    `trizmq.Target`), or a zero-argument callable returning one. An endpoint
    given as a class is instantiated with no arguments.

    Raises:
        UsageError: The spec is malformed or does not name such a mapping.
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise UsageError(f"--app {spec!r}: expected MODULE:ATTR, e.g. myapp.rpc:SERVICES")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current directory is importable
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--app {spec!r}: {exc}") from None
    if callable(target) and not isinstance(target, Mapping):
        target = target()
    if not isinstance(target, Mapping):
        raise UsageError(f"--app {spec!r}: expected a mapping of topic to endpoint")
    # An endpoint given as a class is instantiated, so one app module can be shared.
    return {
        str(topic): [_instance(e) for e in endpoint]
        if isinstance(endpoint, list | tuple)
        else _instance(endpoint)
        for topic, endpoint in target.items()
    }


def _instance(endpoint: object) -> object:
    return endpoint() if isinstance(endpoint, type) else endpoint


async def _serve_app(args: argparse.Namespace, resolve: dict[str, str]) -> None:
    ring = Ring.load(args.ring)
    endpoints = load_app(args.app)
    wanted = set(args.topic) if args.topic else None
    if wanted is not None and (unknown := wanted - endpoints.keys()):
        raise UsageError(f"--topic {', '.join(sorted(unknown))}: not provided by {args.app}")
    live = registry(args)
    if live is not None:
        _log_registry()
    listed = {s.topic for s in services_of(ring, args.host, live is not None)}
    if wanted is not None and (unlisted := sorted(wanted - listed)):
        # Asked for by name: a misspelt host or topic must not go unnoticed.
        raise RingError(
            f"{ring.source}: {args.app} provides {unlisted[0]!r}, "
            f"which the ring does not list on host {args.host!r}"
        )
    curve = service_curve(args)
    metrics = None
    if args.metrics is not None:
        # Imported here: only `serve --metrics` needs it.
        from .._metrics import parse_address, serve_metrics

        try:
            metrics = parse_address(args.metrics)
        except ValueError as exc:
            raise UsageError(f"--metrics {exc}") from None
    serve_topic = functools.partial(
        serve,
        resolve=resolve,
        bind=args.bind,
        max_concurrency=args.max_concurrency,
        max_in_flight_per_caller=args.max_in_flight_per_caller,
        max_held_bytes=args.max_held_bytes,
        grace_period=args.grace,
        max_message_size=args.max_message_size,
        heartbeat=args.heartbeat,
        curve=curve,
        send_tracebacks=args.send_tracebacks,
        max_queued_reply_bytes=args.max_queued_reply_bytes,
        registry=live,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with open_nursery() as nursery:
            services = HostServices(
                nursery,
                args.host,
                endpoints,
                args.app,
                wanted,
                serve_topic,
                args.grace,
                anywhere=live is not None,
            )
            services.topics(ring)  # before anything starts: serving none is an error
            if metrics is not None:
                # Before the services, so a scraper finds it once they log "serving on".
                url = await nursery.start(serve_metrics, *metrics)
                say(f"metrics on {url}")
            for topic in sorted(endpoints.keys() - listed if wanted is None else ()):
                # Not an error: a reloaded ring that lists it here starts it.
                say(f"{topic}.{args.host}: not listed by the ring for this host, not served")
            await services.start(ring)
            # One reload at a time; a SIGHUP during one asks for one more.
            reload_requests, reloads = trio.open_memory_channel[None](1)
            nursery.start_soon(services.reload_on, reloads, args.ring)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    say(f"SIGHUP, reloading {args.ring}")
                    with contextlib.suppress(trio.WouldBlock):
                        reload_requests.send_nowait(None)
                    continue
                say(f"{signal.Signals(signum).name}, stopping")
                nursery.cancel_scope.cancel()
                break


def _log_registry() -> None:
    """Say on stderr when a service joins and leaves the registry, and when Redis
    goes away and comes back, as the "serving on" lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trizmq: %(message)s"))
    log = logging.getLogger("trizmq.registry")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _cmd_serve(args: argparse.Namespace) -> int:
    _raise_descriptor_limit()
    trio.run(_serve_app, args, resolve_map(args))
    return 0


def _raise_descriptor_limit() -> None:
    """Take the hard limit of open descriptors: each caller's connection holds one,
    and the usual soft limit of 1,024 is a few hundred callers per service."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _parse_args(items: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name:
            raise UsageError(f"--arg {item!r}: expected NAME=JSON, e.g. x=1 or name='\"vm\"'")
        args[name] = _load_json(text, f"--arg {name}")
    return args


def _parse_context(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    context = _load_json(text, "--context")
    if not isinstance(context, dict):
        raise UsageError('--context: expected a JSON object, e.g. \'{"user": "alice"}\'')
    return context


def _load_json(text: str, what: str) -> Any:
    try:
        return load_json(text, what)
    except RingError as exc:  # the ring's JSON helper, for the same messages
        raise UsageError(str(exc)) from None


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def _send(args: argparse.Namespace, resolve: dict[str, str]) -> int:
    ring = Ring.load(args.ring)
    kwargs = _parse_args(args.arg)
    context = _parse_context(args.context)
    curve = client_curve(args)
    async with open_client(ring, resolve=resolve, name="trizmq-cli", curve=curve) as client:
        if args.command == "call":
            timeout = math.inf if args.timeout == 0 else args.timeout
            try:
                result = await client.call(
                    args.target, args.method, timeout=timeout, context=context, **kwargs
                )
            except CallTimeout as exc:
                print(f"trizmq: timeout: {exc}", file=sys.stderr)
                return EXIT_TIMEOUT
            except HostUnreachable as exc:
                print(f"trizmq: unreachable: {exc}, nothing sent", file=sys.stderr)
                return EXIT_TIMEOUT
            except RemoteError as exc:
                print(f"trizmq: {exc.type_name}: {exc.message}", file=sys.stderr)
                if args.traceback and exc.remote_traceback:
                    print(exc.remote_traceback, file=sys.stderr, end="")
                return EXIT_REMOTE_ERROR
            print(json.dumps(result, default=_json_default))
            return 0
        target = await _connected_target(client, args.command, args.target, args.timeout)
        if target is None:
            return EXIT_TIMEOUT
        send = client.cast if args.command == "cast" else client.fanout
        await send(target, args.method, context=context, **kwargs)
    return 0


async def _connected_target(
    client: Client, command: str, target: str, seconds: float
) -> str | None:
    """Where to send a cast or fanout once the connections it needs are up, or None.

    A cast needs one host: of a bare topic, the first in ring order whose
    connection is up. A fanout needs every host of its target. None (after
    saying which were not up) when that is not so within `seconds`: nothing
    is sent, rather than a message queued for a service that may never take it.
    """
    topic, only = client.ring.resolve_target(target)
    hosts = client.ring.hosts_of(topic) if only is None else (only,)
    services = [f"{topic}.{host}" for host in hosts]
    if command == "cast":
        up = await _connected_within(client, command, services, seconds, need_all=False)
        return up[0] if up else None
    up = await _connected_within(client, command, services, seconds, need_all=True)
    return target if up else None


async def _connected_within(
    client: Client, command: str, services: list[str], seconds: float, *, need_all: bool
) -> list[str]:
    """The services (``topic.host``, in order) whose connection is up, once all
    of them are (`need_all`) or one is, within `seconds`; else [] after saying
    on stderr which were not up.

    Raises:
        UsageError: `seconds` is not more than 0.
    """
    if not seconds > 0:
        raise UsageError(f"--timeout {seconds:g}: must be more than 0")
    with trio.move_on_after(seconds):
        while True:
            up = [service for service in services if client.connected(service)]
            if up and (len(up) == len(services) or not need_all):
                return up
            await trio.sleep(0.01)
    down = ", ".join(
        f"{service} at {client.url(service)}"
        for service in services
        if not client.connected(service)
    )
    print(
        f"trizmq: {command}: {down}: not connected within {seconds:g} s, nothing sent",
        file=sys.stderr,
    )
    return []


def _cmd_send(args: argparse.Namespace) -> int:
    code: int = trio.run(_send, args, resolve_map(args))
    return code


def add_rpc_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve`, `call`, `cast` and `fanout`."""
    p = commands.add_parser(
        "serve",
        help="serve the topics of one host",
        description=(
            "Serve, in one process, every topic that the ring lists for HOST and that the "
            "app provides. Logs one line per bound port; stops on SIGINT or SIGTERM. "
            "On SIGHUP, loads RING again: topics it adds for HOST start, topics it removes "
            "stop after their grace period, a topic whose port changed moves to it, the "
            "others serve on untouched; a ring that fails validation is refused, logged, "
            "and the one loaded before stays."
        ),
    )
    p.add_argument("ring", metavar="RING", help="the JSON ring file")
    p.add_argument("--host", required=True, metavar="NAME", help="the ring host this process is")
    p.add_argument(
        "--app",
        required=True,
        metavar="MODULE:ATTR",
        help="a mapping of topic to endpoint, or to a list of endpoints"
        " (or a zero-argument factory of the mapping)",
    )
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="serve only this topic of the app (repeatable)",
    )
    p.add_argument(
        "--bind",
        metavar="ADDR",
        default=None,
        help="bind ADDR ('*' for all interfaces) instead of the host's address",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        metavar="N",
        help="handlers run at once per topic (default %(default)s)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_PERIOD,
        metavar="S",
        help="seconds in-flight handlers may finish in at shutdown (default %(default)s)",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="B",
        help="largest request accepted, in bytes (default %(default)s)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT,
        metavar="S",
        help="seconds of silence before a caller's connection is dropped (default %(default)s)",
    )
    p.add_argument(
        "--max-in-flight-per-caller",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT_PER_CALLER,
        metavar="N",
        help="handlers run at once for one caller; its next requests wait in order "
        "(default %(default)s)",
    )
    p.add_argument(
        "--max-held-bytes",
        type=int,
        default=DEFAULT_MAX_HELD_BYTES,
        metavar="B",
        help="bytes of requests held for callers at their limit before the service "
        "stops reading (default %(default)s)",
    )
    p.add_argument(
        "--max-queued-reply-bytes",
        type=int,
        default=DEFAULT_MAX_QUEUED_REPLY_BYTES,
        metavar="B",
        help="bytes of replies that may wait for a caller that does not read them "
        "(default %(default)s)",
    )
    p.add_argument(
        "--send-tracebacks",
        action="store_true",
        help="send failed handlers' tracebacks to callers (for development; "
        "by default they go to the log only)",
    )
    p.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        default=None,
        help="serve Prometheus metrics of every topic on http://ADDR:PORT/metrics "
        "(PORT 0 picks a free port; the log says which)",
    )
    add_resolve_option(p)
    add_service_curve_options(p)
    add_registry_options(p, lease=True)
    p.set_defaults(func=_cmd_serve)

    for name, what, target, more in (
        (
            "call",
            "call a method and print its result as JSON",
            "'topic' (its next host, round-robin) or 'topic.host' (that host)",
            "",
        ),
        (
            "cast",
            "send a one-way request to one host of a topic",
            "'topic' (the first of its hosts, in ring order, whose connection is up) "
            "or 'topic.host' (that host)",
            "Waits until the connection to the service is up, hands the message to it and "
            "exits 0; if it is not up within --timeout, sends nothing and exits 3. " + _NO_ANSWER,
        ),
        (
            "fanout",
            "send a one-way request to every host of a topic",
            "'topic' (every host of it) or 'topic.host' (that host only)",
            "Waits until the connection to every host is up, hands the message to each and "
            "exits 0; if one is not up within --timeout, sends to none and exits 3. " + _NO_ANSWER,
        ),
    ):
        p = commands.add_parser(name, help=what, description=f"{what.capitalize()}. {more}".strip())
        p.add_argument("ring", metavar="RING", help="the JSON ring file")
        p.add_argument("target", metavar="TARGET", help=target)
        p.add_argument("method", metavar="METHOD", help="the method to run")
        p.add_argument(
            "--arg",
            action="append",
            default=[],
            metavar="NAME=JSON",
            help="an argument, its value in JSON (repeatable)",
        )
        p.add_argument(
            "--context",
            metavar="JSON",
            default=None,
            help="a JSON object the handler sees as ctx.values",
        )
        if name == "call":
            p.add_argument(
                "--timeout",
                type=float,
                default=60.0,
                metavar="S",
                help="seconds to wait for the reply; 0 waits forever "
                "(default %(default)s). Exit 3 on timeout or when the host cannot be "
                "reached, 1 on a remote error",
            )
            p.add_argument(
                "--traceback",
                action="store_true",
                help="print the remote traceback of a remote error",
            )
        else:
            p.add_argument(
                "--timeout",
                type=float,
                default=DEFAULT_CONNECT_TIMEOUT,
                metavar="S",
                help="seconds to wait for the connection before sending nothing and "
                "exiting 3 (default %(default)s)",
            )
        add_resolve_option(p)
        add_client_curve_options(p)
        p.set_defaults(func=_cmd_send)
