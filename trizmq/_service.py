"""The service runner: one topic of one host, on its own port."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any, NoReturn, TypeAlias

import attrs
import trio
import zmq

from ._context import Context
from ._curve import Authenticator, Curve
from ._dispatch import ArgumentError, Method, error_fields, expose
from ._errors import ProtocolError, RingError
from ._inline import run_inline
from ._logs import ThrottledLog, clip
from ._nursery import open_nursery
from ._ring import Ring, resolve_address
from ._stats import MAX_SUBSCRIBERS, ServiceStats, Subscriptions
from ._transport import (
    DEFAULT_HEARTBEAT,
    AsyncSocket,
    Unroutable,
    open_monitor,
    open_socket,
    set_heartbeat,
    watch_events,
)
from ._wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Call,
    Cancel,
    Cast,
    Casts,
    Envelope,
    Error,
    ErrorCode,
    Fanout,
    Reply,
    Stats,
    StatsSubscribe,
    decode,
    encode,
    unstructure,
)

logger = logging.getLogger("trizmq.service")

#: Handlers one service runs at once before it stops reading new requests.
DEFAULT_MAX_CONCURRENCY = 1000
#: Requests of one caller (one connection) run at once; its next ones wait
#: in the service, in order, while other callers' requests go ahead.
DEFAULT_MAX_IN_FLIGHT_PER_CALLER = 250
#: Bytes of requests the service holds for callers at their limit; past it,
#: it stops reading until handlers finish (ZeroMQ then pushes back on callers).
DEFAULT_MAX_HELD_BYTES = 64 * 1024 * 1024
#: Seconds in-flight handlers may go on after the service is told to stop.
DEFAULT_GRACE_PERIOD = 5.0
#: Synchronous handlers running at once in worker threads.
DEFAULT_THREAD_LIMIT = 16
#: Requests taken between two schedule points of the reading task.
_BATCH = 256
# Batches of requests refused at once when the service stops (the rest are
# refused as they are read in the grace period, or cut off by the close).
_SHUTDOWN_BATCHES = 4000
#: Bytes of replies that may wait for room in one caller's queue; past it,
#: replies to that caller are dropped (and counted) until it reads again.
DEFAULT_MAX_QUEUED_REPLY_BYTES = 64 * 1024 * 1024
#: Seconds a reply may wait for room in the caller's queue before it is dropped.
REPLY_SEND_TIMEOUT = 5.0
# A ROUTER cannot wait for room at one peer (it signals room when any peer has
# some): a blocked caller's replies are retried at these intervals instead.
_RETRY_FIRST = 0.001
_RETRY_MAX = 0.05

_PEER_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_ACCEPT_FAILED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)
_KIND_NAMES = {Call: "call", Cast: "cast", Fanout: "fanout"}

# A request read and not yet taken: its frames (routing id first), or what is
# left of a CASTS message (routing id, message, index of its next cast).
_Item: TypeAlias = list[bytes] | tuple[bytes, Casts, int]


@functools.lru_cache(maxsize=4096)
def _caller_name(identity: bytes) -> str:
    return identity.decode("utf-8", "replace")


@attrs.define(eq=False)
class _Job:
    """A request accepted for its handler: what the handler needs, and its state."""

    identity: bytes
    request: Call | Cast | Fanout
    method: Method
    args: dict[str, Any]
    ctx: Context
    started: float
    # The cancel scope the handler runs in, once it has had to wait: before
    # that it runs inline, where nothing can cancel it.
    scope: trio.CancelScope | None = None
    stop_reason: str | None = None  # "caller" or "shutdown" once cancelled by them


class _Outbox:
    """Replies to one caller that its full queue did not take yet, oldest first:
    (time they are given up at, "reply" or "error", frame)."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: collections.deque[tuple[float, str, bytes]] = collections.deque()
        self.size = 0

    def pop(self) -> None:
        self.size -= len(self.frames.popleft()[2])


async def serve(
    ring: Ring,
    topic: str,
    endpoint: object,
    host: str,
    resolve: dict[str, str] | None = None,
    *,
    bind: str | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_in_flight_per_caller: int = DEFAULT_MAX_IN_FLIGHT_PER_CALLER,
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    thread_limit: int = DEFAULT_THREAD_LIMIT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    heartbeat: float = DEFAULT_HEARTBEAT,
    curve: Curve | None = None,
    send_tracebacks: bool = False,
    max_queued_reply_bytes: int = DEFAULT_MAX_QUEUED_REPLY_BYTES,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve one topic of the ring as `host`, until cancelled.

    Binds the topic's port on the host's own address (from `resolve`, else
    the system resolver), so that simulated nodes on 127.0.0.2 and 127.0.0.3
    serve the same port side by side. Use with `nursery.start`: it returns
    the bound endpoint once the port is bound.

    Args:
        ring: The ring the topic and host come from.
        topic: The topic served.
        endpoint: The object whose public methods are callable.
        host: The ring host this service runs as.
        resolve: Host name to address overrides, e.g. `{"controller": "127.0.0.2"}`.
        bind: Bind this address instead of the host's (`"*"` for every interface).
        max_concurrency: Handlers run at once; past it the service stops reading
            and ZeroMQ's high-water marks push back on callers.
        max_in_flight_per_caller: Handlers run at once for one caller (one
            connection); its further requests wait their turn in order, while
            other callers' requests go ahead.
        max_held_bytes: Bytes of requests held for callers at their limit;
            past it the service stops reading until handlers finish.
        grace_period: Seconds in-flight handlers may finish in after cancellation;
            the ones still running then are cancelled and their callers told.
        thread_limit: Synchronous handlers run at once in worker threads.
        max_message_size: Largest request accepted, in bytes; a larger one is
            answered with an error (far larger ones are cut off by ZeroMQ).
        heartbeat: Seconds of silence after which a caller's connection is dropped.
        curve: The service's CURVE keys (`Curve.server`): only allowed clients
            connect, and everything is encrypted.
        send_tracebacks: Send a failed handler's traceback to its caller (for
            development: it shows paths and source lines). Off, callers get the
            exception's type and message, and the traceback goes to the log.
        max_queued_reply_bytes: Bytes of replies that may wait for one caller
            that does not read them; past it, or after 5 s, they are dropped
            and counted under `rejected["reply_blocked"]`.
        task_status: Given by `nursery.start`.

    Raises:
        RingError: The ring does not list `topic` for `host`.
        OSError: The port cannot be bound.
        TypeError: An exposed method cannot take a Context first.
    """
    if not ring.serves(topic, host):
        raise RingError(f"{ring.source}: the ring does not list topic {topic!r} on host {host!r}")
    port = ring.port(topic)
    address = bind if bind is not None else resolve_address(host, resolve)
    methods = expose(endpoint)
    if curve is not None and curve.allowed_clients is None:
        raise TypeError("serve() needs a service's keys: use Curve.server(...)")
    with (
        open_socket(zmq.ROUTER) as sock,
        # Opened before the port takes connections, so no peer event is missed.
        open_monitor(sock, _PEER_EVENTS) as monitor,
        _authenticating(curve, f"{topic}.{host}", sock),
    ):
        # Fail loudly when a reply's caller is gone instead of dropping it unseen.
        sock.zmq.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A caller reconnecting (after a pause, a heartbeat loss, an oversize
        # message) keeps its routing id: its new connection must replace the
        # old one, which this side may not have seen close yet.
        sock.zmq.setsockopt(zmq.ROUTER_HANDOVER, 1)
        set_heartbeat(sock, heartbeat)
        # Up to twice the limit a request is read and refused with a clear error;
        # past that ZeroMQ drops the connection before the message takes memory.
        sock.zmq.setsockopt(zmq.MAXMSGSIZE, 2 * max_message_size)
        url = f"tcp://{address}:{port}"
        try:
            sock.zmq.bind(url)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"{topic}.{host}: cannot bind {url}: {exc}") from None
        runner = _Runner(
            sock,
            monitor,
            methods,
            host,
            topic,
            ServiceStats(host, topic, port),
            max_concurrency=max_concurrency,
            max_in_flight_per_caller=max_in_flight_per_caller,
            max_held_bytes=max_held_bytes,
            max_message_size=max_message_size,
            grace_period=grace_period,
            thread_limit=thread_limit,
            send_tracebacks=send_tracebacks,
            max_queued_reply_bytes=max_queued_reply_bytes,
        )
        logger.info("%s.%s serving on %s", topic, host, url)
        await runner.run(url, task_status)


@contextlib.contextmanager
def _authenticating(curve: Curve | None, domain: str, sock: AsyncSocket) -> Iterator[None]:
    if curve is None or curve.allowed_clients is None:
        yield
        return
    curve.apply(sock.zmq, domain)
    Authenticator.acquire(domain, curve.allowed_clients)
    try:
        yield
    finally:
        Authenticator.release()


class _Runner:
    def __init__(
        self,
        sock: AsyncSocket,
        monitor: AsyncSocket,
        methods: dict[str, Method],
        host: str,
        topic: str,
        stats: ServiceStats,
        *,
        max_concurrency: int,
        max_in_flight_per_caller: int,
        max_held_bytes: int,
        max_message_size: int,
        grace_period: float,
        thread_limit: int,
        send_tracebacks: bool,
        max_queued_reply_bytes: int,
    ) -> None:
        self.sock = sock
        self.monitor = monitor
        self.methods = methods
        self.host = host
        self.topic = topic
        self.stats = stats
        self.max_concurrency = max_concurrency
        self.max_per_caller = max_in_flight_per_caller
        self.max_held_bytes = max_held_bytes
        self._busy: dict[bytes, int] = {}  # handlers in flight, per caller that has any
        # Requests of callers at their limit, in order, and their size in all.
        self._held: dict[bytes, collections.deque[_Item]] = {}
        self._held_bytes = 0
        self.max_message_size = max_message_size
        self.grace_period = grace_period
        self.threads = trio.CapacityLimiter(thread_limit)
        self.send_tracebacks = send_tracebacks
        self.max_queued_reply_bytes = max_queued_reply_bytes
        self._outboxes: dict[bytes, _Outbox] = {}
        self.log = ThrottledLog(logger)
        self.name = f"{topic}.{host}"
        self.flights: dict[tuple[bytes, int], _Job] = {}
        self._room: trio.Event | None = None
        self.subscribers = Subscriptions()
        self.stopping = False
        self._draining: trio.CancelScope | None = None
        # Requests read but not yet taken: a pump that hands over leaves the rest
        # here, and a CASTS message waits here, with the index of its next cast.
        self._backlog: collections.deque[_Item] = collections.deque()
        # Held requests let in again, in order: they go before the backlog.
        self._admitted: collections.deque[_Item] = collections.deque()
        self._handlers: trio.Nursery
        self._pump_scope: trio.CancelScope | None = None  # the reading task's, while it reads
        self._subscribers_changed = trio.Event()

    def _count_peer(self, event: int, value: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            self.stats.peers += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self.stats.peers -= 1
        elif event == zmq.EVENT_ACCEPT_FAILED:
            # Out of descriptors, most likely: callers wait in vain, so say it.
            self.stats.rejected["accept_failed"] += 1
            self.log.warning(
                "accept",
                "%s: cannot accept a connection: %s (raise `ulimit -n`?)",
                self.name,
                os.strerror(value),
            )
        else:
            self.stats.rejected["handshake"] += 1

    async def _publish_stats(self) -> NoReturn:
        # Sleeps while nobody subscribes: stats cost the data path nothing then.
        while True:
            due = self.subscribers.due(trio.current_time())
            if due:
                data = self.stats.snapshot()  # one snapshot for all the subscribers due
                for identity, id in due:
                    try:
                        sent = self.sock.send_nowait([identity, encode(Stats(id, data))])
                    except Unroutable:
                        sent = False
                    if not sent:
                        # Gone, or a full queue of stats it never read: either way, done.
                        self.subscribers.drop(identity)
            with trio.move_on_at(self.subscribers.next_due()):
                await self._subscribers_changed.wait()
                self._subscribers_changed = trio.Event()

    async def run(self, url: str, task_status: trio.TaskStatus[str]) -> NoReturn:
        async with open_nursery() as handlers:
            self._handlers = handlers
            handlers.start_soon(self._publish_stats)
            handlers.start_soon(watch_events, self.sock, self.monitor, self._count_peer)
            handlers.start_soon(self._pump)
            task_status.started(url)
            try:
                await trio.sleep_forever()
            finally:
                self._shut_down(handlers)

    async def _pump(self) -> None:
        """Read requests and run their handlers, one after the other, in this task.

        A handler that returns without waiting costs neither a task nor a
        cancel scope of its own. At a handler's first wait this task becomes
        the handler's, its cancel scope the request's (deadline, caller's
        cancel, grace period), and a new pump takes over the reading and the
        rest of the batch: nothing ever waits behind a handler.
        """
        job: _Job | None = None
        # Shielded: stopping the service stops the reading (`_shut_down` cancels
        # the scope of the task that reads), not a handler; the grace period does.
        with trio.CancelScope(shield=True) as scope:
            self._pump_scope = scope
            backlog = self._backlog
            admitted = self._admitted
            taken = 0
            while not self.stopping:
                if admitted:
                    item = admitted.popleft()
                    job = self._handle(item, admitted=True)
                else:
                    if not backlog:
                        if self._held_bytes > self.max_held_bytes:
                            await self._wait_for_room()
                        else:
                            backlog.extend(await self.sock.receive_batch(_BATCH))
                            taken = 0
                        continue  # requests let in meanwhile go first
                    if taken == _BATCH:
                        # A long backlog (the casts of a CASTS message) must starve
                        # neither other tasks nor other callers.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        backlog.extend(self.sock.receive_available(_BATCH))
                        self._rotate()
                        taken = 0
                    taken += 1
                    item = backlog.popleft()
                    job = self._handle(item)
                if job is not None:
                    if await run_inline(self._run(job), self._hand_over, job, scope):
                        return
                    job = None
                elif self._held:
                    self._let_in(item[0])  # a refusal made room too
                if len(self.flights) >= self.max_concurrency:
                    await self._wait_for_room()
        if job is not None:  # the handler this task took over was cancelled
            self._answer(job, self._stopped(job.request.id, job.stop_reason))

    async def _wait_for_room(self) -> None:
        self._room = trio.Event()
        await self._room.wait()

    def _hold(self, item: _Item) -> bool:
        """Keep a caller's request for later if it is at its limit, or has
        requests waiting already (its requests run in order)."""
        identity = item[0]
        held = self._held.get(identity)
        if held is None:
            if self._busy.get(identity, 0) < self.max_per_caller or self.stopping:
                return False
            held = self._held[identity] = collections.deque()
        held.append(item)
        self._held_bytes += _size(item)
        return True

    def _let_in(self, identity: bytes) -> None:
        """Let a caller's next held request in, if it has room now."""
        held = self._held.get(identity)
        if held is None or self._busy.get(identity, 0) >= self.max_per_caller:
            return
        item = held.popleft()
        self._held_bytes -= _size(item)
        if not held:
            del self._held[identity]
        self._admitted.append(item)
        # The reading task may be waiting for the socket or for room: it must take this.
        self.sock.interrupt()
        self._make_room()

    def _make_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def _rotate(self) -> None:
        """Put the caller at the head of the backlog behind the others, keeping
        the order of each caller's requests."""
        backlog = self._backlog
        first = backlog[0][0]
        if all(item[0] == first for item in backlog):
            return
        theirs = [item for item in backlog if item[0] == first]
        others = [item for item in backlog if item[0] != first]
        backlog.clear()
        backlog.extend(others)
        backlog.extend(theirs)

    def _hand_over(self, job: _Job, scope: trio.CancelScope) -> None:
        job.scope = scope
        scope.deadline = job.ctx.deadline
        self._pump_scope = None
        self._handlers.start_soon(self._pump)

    def _shut_down(self, handlers: trio.Nursery) -> None:
        # From now on requests are refused, so no caller waits in vain: the ones
        # ZeroMQ already holds now, the ones arriving in the grace period as they come.
        self.stopping = True
        if self._pump_scope is not None:
            self._pump_scope.cancel()
        self._backlog.extendleft(reversed(self._admitted))
        self._admitted.clear()
        for held in self._held.values():
            self._backlog.extend(held)
        self._held.clear()
        self._held_bytes = 0
        self._drain([])  # what was read, held or let in, and not yet taken
        for _ in range(_SHUTDOWN_BATCHES):
            if not (batch := self.sock.receive_available(_BATCH)):
                break
            self._drain(batch)
        deadline = trio.current_time() + self.grace_period
        for job in self.flights.values():
            job.stop_reason = job.stop_reason or "shutdown"
            if job.scope is not None:  # it is: every handler not running now is waiting
                job.scope.deadline = min(job.scope.deadline, deadline)
        if self.flights:
            handlers.start_soon(self._refuse_until_idle)

    async def _refuse_until_idle(self) -> None:
        with trio.CancelScope(shield=True) as self._draining:
            if not self.flights:
                return
            while True:
                self._drain(await self.sock.receive_batch())

    def _drain(self, batch: list[list[bytes]]) -> None:
        """Take what is left, then `batch`: at shutdown, when no handler starts."""
        self._backlog.extend(batch)
        while self._backlog:
            self._handle(self._backlog.popleft())

    def _handle(self, item: _Item, admitted: bool = False) -> _Job | None:
        """Take one request: answer what is wrong with it, or return its job
        (none when the request is held for later; an `admitted` one, let in
        from there, never is)."""
        if not admitted and self._hold(item):
            return None
        if isinstance(item, tuple):
            return self._next_cast(*item)
        frames = item
        stats = self.stats
        if len(frames) != 2:
            stats.rejected["frames"] += 1
            if frames:
                message = f"a request is one frame, got {len(frames) - 1}"
                self._send(frames[0], _protocol_error(0, message))
            return None
        identity, frame = frames
        stats.bytes_in += len(frame)
        if len(frame) > self.max_message_size:
            stats.rejected["too_large"] += 1
            message = f"a {len(frame)}-byte request is over the limit of {self.max_message_size}"
            self._send(
                identity, Error(0, ErrorCode.PROTOCOL, "trizmq.MessageTooLarge", message, "")
            )
            return None
        try:
            envelope = decode(frame)
        except ProtocolError as exc:
            stats.rejected["malformed"] += 1
            self._send(identity, _protocol_error(0, str(exc)))
            return None
        if isinstance(envelope, Call | Cast | Fanout):
            return self._start(identity, envelope)
        elif isinstance(envelope, Casts):
            return self._next_cast(identity, envelope, 0)
        elif isinstance(envelope, Cancel):
            job = self.flights.get((identity, envelope.id))
            if job is not None:
                job.stop_reason = "caller"
                if job.scope is not None:
                    job.scope.cancel()
        elif isinstance(envelope, StatsSubscribe):
            now = trio.current_time()
            if self.subscribers.add(identity, envelope.id, envelope.interval, envelope.lease, now):
                self._subscribers_changed.set()
            else:
                stats.rejected["subscribers"] += 1
                message = f"too many stats subscribers ({MAX_SUBSCRIBERS})"
                self._send(identity, _protocol_error(envelope.id, message))
        else:
            stats.rejected["unexpected_kind"] += 1
            message = f"a service does not accept {type(envelope).__name__} messages"
            self._send(identity, _protocol_error(envelope.id, message))
        return None

    def _next_cast(self, identity: bytes, casts: Casts, index: int) -> _Job | None:
        """Start cast `index` of a CASTS message; the rest come next, one at a time."""
        if index >= len(casts.batch):
            return None
        if index + 1 < len(casts.batch):
            rest = (identity, casts, index + 1)
            held = self._held.get(identity)
            # The rest goes before anything else of its caller's.
            if held is None or self.stopping:
                self._backlog.appendleft(rest)
            else:
                held.appendleft(rest)
        args = casts.batch[index]
        return self._start(
            identity, Cast(casts.id + index, casts.topic, casts.method, args, casts.context)
        )

    def _start(self, identity: bytes, request: Call | Cast | Fanout) -> _Job | None:
        kind = _KIND_NAMES[type(request)]
        self.stats.received[kind] += 1
        key = (identity, request.id)
        if key in self.flights:
            message = f"id {request.id} is already in flight on this connection"
            self._refuse(identity, request, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message)
            return None
        if self.stopping:
            message = "the service is stopping"
            self._refuse(identity, request, ErrorCode.SHUTDOWN, "trizmq.ServiceShutdown", message)
            return None
        method = self.methods.get(request.method)
        if method is None:
            message = f"{self.topic} has no method {clip(request.method)!r}"
            self._refuse(
                identity, request, ErrorCode.NO_SUCH_METHOD, "trizmq.NoSuchMethod", message
            )
            return None
        try:
            args = method.bind(request.args)
        except ArgumentError as exc:
            self._refuse(
                identity, request, ErrorCode.BAD_ARGUMENTS, "trizmq.BadArguments", str(exc)
            )
            return None
        timeout = request.timeout if isinstance(request, Call) else None
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        ctx = Context(
            request.id,
            kind,
            request.topic,
            request.method,
            self.host,
            _caller_name(identity),
            deadline,
            request.context,
        )
        job = _Job(identity, request, method, args, ctx, time.monotonic())
        self.flights[key] = job
        self._busy[identity] = self._busy.get(identity, 0) + 1
        self.stats.in_flight += 1
        return job

    async def _run(self, job: _Job) -> None:
        method = job.method
        reply: Reply | Error
        try:
            if method.is_async:
                result = await method.func(job.ctx, **job.args)
            else:
                call = functools.partial(method.func, job.ctx, **job.args)
                result = await trio.to_thread.run_sync(
                    call, limiter=self.threads, abandon_on_cancel=True
                )
            answer = isinstance(job.request, Call)
            reply = Reply(job.request.id, unstructure(result) if answer else None)
        except Exception as exc:
            code, type_name, message, trace = error_fields(exc, with_traceback=True)
            reply = Error(
                job.request.id, code, type_name, message, trace if self.send_tracebacks else ""
            )
            # The caller has the type and message: the log keeps the whole story.
            self.log.warning(
                ("failed", job.identity, job.request.method, type_name),
                "%s: %s %s from %s failed: %s",
                self.name,
                job.ctx.kind,
                clip(job.request.method),
                job.ctx.caller,
                trace,
            )
        self._answer(job, reply)

    def _answer(self, job: _Job, reply: Envelope) -> None:
        # The reply leaves before the bookkeeping: that is not the caller's to
        # wait for. A caller that gave up wants no answer.
        now = time.monotonic()
        if isinstance(job.request, Call) and job.stop_reason != "caller":
            reply = self._send(job.identity, reply)
        self._finish(job, reply, now)

    def _stopped(self, id: int, reason: str | None) -> Error:
        if reason == "shutdown":
            return Error(
                id,
                ErrorCode.SHUTDOWN,
                "trizmq.ServiceShutdown",
                "the service stopped before the handler finished",
                "",
            )
        if reason == "caller":
            self.stats.cancelled += 1
            return Error(id, ErrorCode.DEADLINE, "trizmq.Cancelled", "cancelled by the caller", "")
        self.stats.timeouts += 1
        return Error(id, ErrorCode.DEADLINE, "trizmq.CallTimeout", "the call's deadline passed", "")

    def _finish(self, job: _Job, reply: Envelope, now: float) -> None:
        identity = job.identity
        del self.flights[(identity, job.request.id)]
        busy = self._busy[identity] - 1
        if busy:
            self._busy[identity] = busy
        else:
            del self._busy[identity]
        if self._held:
            self._let_in(identity)
        self.stats.in_flight -= 1
        self.stats.latency.add(now, now - job.started)
        if isinstance(reply, Error) and reply.code == ErrorCode.EXCEPTION:
            self.stats.errors[reply.type_name] += 1
        if self._draining is not None and not self.flights:
            self._draining.cancel()  # the last handler is done: nothing left to wait for
        if len(self.flights) < self.max_concurrency and self._held_bytes <= self.max_held_bytes:
            self._make_room()

    def _refuse(
        self, identity: bytes, request: Envelope, code: str, type_name: str, message: str
    ) -> None:
        """Answer a call with an error without running it; count and log a refused cast."""
        self.stats.rejected[code] += 1
        if isinstance(request, Call):
            self._send(identity, Error(request.id, code, type_name, message, ""))
        else:
            # Nobody to answer: the log says who and what, once per window.
            self.log.warning(
                ("refused", identity, code),
                "%s: a %s from %s refused: %s: %s",
                self.name,
                _KIND_NAMES[type(request)],
                clip(_caller_name(identity)),
                type_name,
                clip(message),
            )

    def _encode(self, reply: Envelope) -> tuple[Envelope, bytes]:
        """The frame of `reply`, or of the error that replaces it when it cannot go."""
        try:
            frame = encode(reply)
        except Exception as exc:
            # A result msgpack cannot carry is the handler's error, not the service's.
            message = f"the result cannot be encoded: {clip(exc)}"
            reply = Error(reply.id, ErrorCode.EXCEPTION, "TypeError", message, "")
            return reply, encode(reply)
        if len(frame) > self.max_message_size:
            # Sent, it would cut the caller's connection and every call on it.
            message = f"the result is {len(frame)} bytes, over the limit of {self.max_message_size}"
            reply = Error(reply.id, ErrorCode.EXCEPTION, "trizmq.MessageTooLarge", message, "")
            return reply, encode(reply)
        return reply, frame

    def _send(self, identity: bytes, reply: Envelope) -> Envelope:
        """Send `reply` now, or queue it for the caller while its queue is full.

        Returns:
            What was sent: `reply`, or the error replacing a result that cannot go.
        """
        reply, frame = self._encode(reply)
        kind = "reply" if isinstance(reply, Reply) else "error"
        outbox = self._outboxes.get(identity)
        if outbox is None:
            try:
                if self.sock.send_nowait([identity, frame]):
                    self._count_out(kind, frame)
                    return reply
            except (Unroutable, trio.ClosedResourceError) as exc:
                self._count_undelivered(exc)
                return reply
            outbox = self._outboxes[identity] = _Outbox()
            self._handlers.start_soon(self._flush, identity, outbox)
        if outbox.size + len(frame) > self.max_queued_reply_bytes:
            self._count_blocked(identity)
        else:
            outbox.frames.append((trio.current_time() + REPLY_SEND_TIMEOUT, kind, frame))
            outbox.size += len(frame)
        return reply

    async def _flush(self, identity: bytes, outbox: _Outbox) -> None:
        """Send a caller's queued replies as its queue makes room, in order.

        Shielded, so replies being delivered at shutdown are not cut off, but
        each reply gives up after `REPLY_SEND_TIMEOUT`.
        """
        frames = outbox.frames
        pause = _RETRY_FIRST
        with trio.CancelScope(shield=True):
            try:
                while frames:
                    await trio.sleep(pause)
                    pause = min(2 * pause, _RETRY_MAX)
                    now = trio.current_time()
                    while frames:
                        expires, kind, frame = frames[0]
                        if expires < now:
                            self._count_blocked(identity)
                        elif self.sock.send_nowait([identity, frame]):
                            self._count_out(kind, frame)
                            pause = _RETRY_FIRST
                        else:
                            break
                        outbox.pop()
            except (Unroutable, trio.ClosedResourceError) as exc:
                for _ in frames:
                    self._count_undelivered(exc)
            finally:
                del self._outboxes[identity]

    def _count_out(self, kind: str, frame: bytes) -> None:
        self.stats.sent[kind] += 1
        self.stats.bytes_out += len(frame)

    def _count_blocked(self, identity: bytes) -> None:
        self.stats.rejected["reply_blocked"] += 1
        self.log.warning(
            ("blocked", identity),
            "%s: a reply to %s dropped: it does not read its replies",
            self.name,
            clip(_caller_name(identity)),
        )

    def _count_undelivered(self, exc: Exception) -> None:
        reason = "caller_gone" if isinstance(exc, Unroutable) else "closed"
        self.stats.rejected[reason] += 1


def _size(item: _Item) -> int:
    return len(item[1]) if isinstance(item, list) and len(item) == 2 else 0


def _protocol_error(id: int, message: str) -> Error:
    return Error(id, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message, "")
