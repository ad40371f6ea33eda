"""The service runner: one topic of one host, on its own port."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import attrs
import trio
import zmq

from ._context import Context
from ._curve import Authenticator, Curve
from ._dispatch import ArgumentError, Method, error_fields, expose
from ._errors import ProtocolError, RingError
from ._inline import run_inline
from ._nursery import open_nursery
from ._ring import Ring, resolve_address
from ._stats import ServiceStats, Subscriptions
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
#: Seconds in-flight handlers may go on after the service is told to stop.
DEFAULT_GRACE_PERIOD = 5.0
#: Synchronous handlers running at once in worker threads.
DEFAULT_THREAD_LIMIT = 16
#: Requests taken between two schedule points of the reading task.
_BATCH = 256
#: Seconds a reply may wait for room in the caller's queue before it is dropped.
_REPLY_SEND_TIMEOUT = 5.0

_PEER_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)
_KIND_NAMES = {Call: "call", Cast: "cast", Fanout: "fanout"}


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


async def serve(
    ring: Ring,
    topic: str,
    endpoint: object,
    host: str,
    resolve: dict[str, str] | None = None,
    *,
    bind: str | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    thread_limit: int = DEFAULT_THREAD_LIMIT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    heartbeat: float = DEFAULT_HEARTBEAT,
    curve: Curve | None = None,
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
        grace_period: Seconds in-flight handlers may finish in after cancellation;
            the ones still running then are cancelled and their callers told.
        thread_limit: Synchronous handlers run at once in worker threads.
        max_message_size: Largest request accepted, in bytes; a larger one is
            answered with an error (far larger ones are cut off by ZeroMQ).
        heartbeat: Seconds of silence after which a caller's connection is dropped.
        curve: The service's CURVE keys (`Curve.server`): only allowed clients
            connect, and everything is encrypted.
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
            max_message_size=max_message_size,
            grace_period=grace_period,
            thread_limit=thread_limit,
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
        max_message_size: int,
        grace_period: float,
        thread_limit: int,
    ) -> None:
        self.sock = sock
        self.monitor = monitor
        self.methods = methods
        self.host = host
        self.topic = topic
        self.stats = stats
        self.max_concurrency = max_concurrency
        self.max_message_size = max_message_size
        self.grace_period = grace_period
        self.threads = trio.CapacityLimiter(thread_limit)
        self.flights: dict[tuple[bytes, int], _Job] = {}
        self._room: trio.Event | None = None
        self.subscribers = Subscriptions()
        self.stopping = False
        self._draining: trio.CancelScope | None = None
        # Requests read but not yet taken: a pump that hands over leaves the rest
        # here, and a CASTS message waits here, with the index of its next cast.
        self._backlog: collections.deque[list[bytes] | tuple[bytes, Casts, int]] = (
            collections.deque()
        )
        self._handlers: trio.Nursery
        self._pump_scope: trio.CancelScope | None = None  # the reading task's, while it reads
        self._subscribers_changed = trio.Event()

    def _count_peer(self, event: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            self.stats.peers += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self.stats.peers -= 1
        else:
            self.stats.rejected["handshake"] += 1

    async def _publish_stats(self) -> NoReturn:
        # Sleeps while nobody subscribes: stats cost the data path nothing then.
        while True:
            for identity, id in self.subscribers.due(trio.current_time()):
                frame = encode(Stats(id, self.stats.snapshot()))
                try:
                    self.sock.send_nowait([identity, frame])
                except Unroutable:
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
            taken = 0
            while not self.stopping:
                if not backlog:
                    backlog.extend(await self.sock.receive_batch(_BATCH))
                    taken = 0
                elif taken == _BATCH:
                    # A long backlog (casts of CASTS messages) must not starve other tasks.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    taken = 0
                taken += 1
                job = self._handle(backlog.popleft())
                if job is not None:
                    if await run_inline(self._run(job), self._hand_over, job, scope):
                        return
                    job = None
                if len(self.flights) >= self.max_concurrency:
                    self._room = trio.Event()
                    await self._room.wait()
        if job is not None:  # the handler this task took over was cancelled
            await self._answer(job, self._stopped(job.request.id, job.stop_reason))

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
        self._drain(self.sock.receive_available(max_messages=1_000_000))
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

    def _handle(self, item: list[bytes] | tuple[bytes, Casts, int]) -> _Job | None:
        """Take one request: answer what is wrong with it, or return its job."""
        if isinstance(item, tuple):
            return self._next_cast(*item)
        frames = item
        stats = self.stats
        if len(frames) != 2:
            stats.rejected["frames"] += 1
            if frames:
                self._send_nowait(
                    frames[0],
                    Error(
                        0,
                        ErrorCode.PROTOCOL,
                        "ProtocolError",
                        f"a request is one frame, got {len(frames) - 1}",
                        "",
                    ),
                )
            return None
        identity, frame = frames
        stats.bytes_in += len(frame)
        if len(frame) > self.max_message_size:
            stats.rejected["too_large"] += 1
            message = f"a {len(frame)}-byte request is over the limit of {self.max_message_size}"
            self._send_nowait(
                identity, Error(0, ErrorCode.PROTOCOL, "MessageTooLarge", message, "")
            )
            return None
        try:
            envelope = decode(frame)
        except ProtocolError as exc:
            stats.rejected["malformed"] += 1
            self._send_nowait(identity, Error(0, ErrorCode.PROTOCOL, "ProtocolError", str(exc), ""))
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
            self.subscribers.add(identity, envelope.id, envelope.interval, envelope.lease, now)
            self._subscribers_changed.set()
        else:
            stats.rejected["unexpected_kind"] += 1
            message = f"a service does not accept {type(envelope).__name__} messages"
            error = Error(envelope.id, ErrorCode.PROTOCOL, "ProtocolError", message, "")
            self._send_nowait(identity, error)
        return None

    def _next_cast(self, identity: bytes, casts: Casts, index: int) -> _Job | None:
        """Start cast `index` of a CASTS message; the rest come next, one at a time."""
        if index >= len(casts.batch):
            return None
        if index + 1 < len(casts.batch):
            self._backlog.appendleft((identity, casts, index + 1))
        args = casts.batch[index]
        return self._start(
            identity, Cast(casts.id + index, casts.topic, casts.method, args, casts.context)
        )

    def _start(self, identity: bytes, request: Call | Cast | Fanout) -> _Job | None:
        kind = _KIND_NAMES[type(request)]
        self.stats.received[kind] += 1
        if self.stopping:
            message = "the service is stopping"
            self._refuse(identity, request, ErrorCode.SHUTDOWN, "ServiceShutdown", message)
            return None
        method = self.methods.get(request.method)
        if method is None:
            message = f"{self.topic} has no method {request.method!r}"
            self._refuse(identity, request, ErrorCode.NO_SUCH_METHOD, "NoSuchMethod", message)
            return None
        try:
            args = method.bind(request.args)
        except ArgumentError as exc:
            self._refuse(identity, request, ErrorCode.BAD_ARGUMENTS, "BadArguments", str(exc))
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
        self.flights[(identity, request.id)] = job
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
            reply = Error(job.request.id, *error_fields(exc))
        await self._answer(job, reply)

    async def _answer(self, job: _Job, reply: Reply | Error) -> None:
        request = job.request
        now = time.monotonic()
        # The reply leaves before the bookkeeping: that is not the caller's to wait for.
        # A caller that gave up wants no answer.
        blocked = None
        if isinstance(request, Call) and job.stop_reason != "caller":
            blocked = self._queue(job.identity, reply)
        self._finish(job, reply, now)
        if blocked is not None:
            await self._send_blocked(job.identity, reply, blocked)
        elif isinstance(reply, Error) and not isinstance(request, Call):
            # Nobody to answer for a cast: the log is its trace.
            logger.warning(
                "%s.%s: %s %s failed: %s: %s",
                self.topic,
                self.host,
                job.ctx.kind,
                request.method,
                reply.type_name,
                reply.message,
            )

    def _stopped(self, id: int, reason: str | None) -> Error:
        if reason == "shutdown":
            return Error(
                id,
                ErrorCode.SHUTDOWN,
                "ServiceShutdown",
                "the service stopped before the handler finished",
                "",
            )
        if reason == "caller":
            self.stats.cancelled += 1
            return Error(id, ErrorCode.DEADLINE, "Cancelled", "cancelled by the caller", "")
        self.stats.timeouts += 1
        return Error(id, ErrorCode.DEADLINE, "CallTimeout", "the call's deadline passed", "")

    def _finish(self, job: _Job, reply: Envelope, now: float) -> None:
        del self.flights[(job.identity, job.request.id)]
        self.stats.in_flight -= 1
        self.stats.latency.add(now, now - job.started)
        if isinstance(reply, Error) and reply.code == ErrorCode.EXCEPTION:
            self.stats.errors[reply.type_name] += 1
        if self._draining is not None and not self.flights:
            self._draining.cancel()  # the last handler is done: nothing left to wait for
        if self._room is not None and len(self.flights) < self.max_concurrency:
            self._room.set()
            self._room = None

    def _refuse(
        self, identity: bytes, request: Envelope, code: str, type_name: str, message: str
    ) -> None:
        """Answer a call with an error without running it; count a refused cast."""
        self.stats.rejected[code] += 1
        if isinstance(request, Call):
            self._send_nowait(identity, Error(request.id, code, type_name, message, ""))
        else:
            logger.warning("%s.%s: %s refused: %s", self.topic, self.host, request, message)

    def _encode(self, reply: Envelope) -> bytes:
        try:
            return encode(reply)
        except Exception as exc:
            # A result msgpack cannot carry is the handler's error, not the service's.
            return encode(
                Error(
                    reply.id,
                    ErrorCode.EXCEPTION,
                    "TypeError",
                    f"the result cannot be encoded: {exc}",
                    "",
                )
            )

    def _count_out(self, reply: Envelope, frame: bytes) -> None:
        self.stats.sent["reply" if isinstance(reply, Reply) else "error"] += 1
        self.stats.bytes_out += len(frame)

    async def _send_blocked(self, identity: bytes, reply: Envelope, frame: bytes) -> None:
        """Send a reply the caller's full queue did not take at once.

        Shielded, so a reply being delivered at shutdown is not cut off, but bounded.
        """
        with trio.CancelScope(shield=True), trio.move_on_after(_REPLY_SEND_TIMEOUT):
            try:
                await self.sock.send([identity, frame])
            except (Unroutable, trio.ClosedResourceError) as exc:
                self._count_undelivered(exc)
                return
            self._count_out(reply, frame)
            return
        self.stats.rejected["reply_blocked"] += 1

    def _send_nowait(self, identity: bytes, reply: Envelope) -> None:
        if self._queue(identity, reply) is not None:
            self.stats.rejected["reply_blocked"] += 1

    def _queue(self, identity: bytes, reply: Envelope) -> bytes | None:
        """Queue a reply if ZeroMQ takes it now; return its frame if the queue is full."""
        frame = self._encode(reply)
        try:
            if not self.sock.send_nowait([identity, frame]):
                return frame
        except (Unroutable, trio.ClosedResourceError) as exc:
            self._count_undelivered(exc)
            return None
        self._count_out(reply, frame)
        return None

    def _count_undelivered(self, exc: Exception) -> None:
        reason = "caller_gone" if isinstance(exc, Unroutable) else "closed"
        self.stats.rejected[reason] += 1
