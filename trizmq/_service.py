"""The service runner: one topic of one host, on its own port."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import NoReturn

import trio
import zmq

from ._curve import Authenticator, Curve
from ._dispatch import Endpoints
from ._errors import RingError
from ._inline import next_inline, run_inline
from ._logs import ThrottledLog, clip
from ._nursery import open_nursery
from ._protocol.service import ITEMS, Counts, Job, Limits, ServiceCore, caller_name
from ._registry import Member, Registry, as_registry, keep_registered
from ._ring import Ring, is_ipv6, lookup, tcp_url
from ._stats import ServiceStats, registered
from ._transport import (
    DEFAULT_HEARTBEAT,
    AsyncSocket,
    Unroutable,
    open_monitor,
    open_socket,
    set_heartbeat,
    watch_events,
)
from ._wire import DEFAULT_MAX_MESSAGE_SIZE, Stats, encode

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


class _Outbox:
    """Replies to one caller that its full queue did not take yet, oldest first:
    (time they are given up at, frame, what it carries (see `Send`))."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: collections.deque[tuple[float, bytes, Counts]] = collections.deque()
        self.size = 0

    def pop(self) -> None:
        self.size -= len(self.frames.popleft()[1])


async def serve(
    ring: Ring,
    topic: str,
    endpoint: object | Sequence[object],
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
    registry: Registry | str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve one topic of the ring as `host`, until cancelled.

    Binds the topic's port on the host's own address (from `resolve`, else
    the system resolver, asked from a worker thread; IPv4 or IPv6), so that
    simulated nodes on 127.0.0.2 and 127.0.0.3 serve the same port side by
    side. Use with `nursery.start`: it returns the bound endpoint once the
    port is bound.

    Args:
        ring: The ring the topic and host come from.
        topic: The topic served.
        endpoint: The object whose public methods are callable, or a list (or
            tuple) of them: endpoints of other namespaces, or of other versions,
            each declaring its own with a `target` class attribute
            (`trizmq.Target`). A request reaches the first endpoint of its
            namespace whose version is compatible and that has the method.
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
        registry: Register the service in this registry (a `Registry` or its
            URL) once bound, under a lease it renews, so that clients watching
            it route to it; then `host` need not be in the ring, only `topic`.
            When cancelled, it deregisters first and serves for a moment more
            (what clients sent before they heard it), then stops as usual. A
            registry that cannot be reached is logged and retried; the
            service serves on. The services of a process in one registry
            (same URL, prefix and lease) share one Redis connection.
        task_status: Given by `nursery.start`.

    Raises:
        RingError: The ring does not list `topic` for `host` (with a registry:
            the ring has no such topic), or the host name does not resolve.
        OSError: The port cannot be bound.
        TypeError: An exposed method cannot take a Context first, or an
            endpoint's `target` is not a `trizmq.Target`.
        ValueError: An empty list of endpoints.
    """
    live = as_registry(registry)
    if live is not None:
        ring.resolve_target(topic)  # a topic of the ring, not reserved
    elif not ring.serves(topic, host):
        raise RingError(f"{ring.source}: the ring does not list topic {topic!r} on host {host!r}")
    port = ring.port(topic)
    address = bind if bind is not None else await lookup(host, resolve)
    endpoints = Endpoints(list(endpoint) if isinstance(endpoint, list | tuple) else [endpoint])
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
        if is_ipv6(address):
            sock.zmq.setsockopt(zmq.IPV6, 1)
        url = tcp_url(address, port)
        try:
            sock.zmq.bind(url)
        except zmq.ZMQError as exc:
            # pyzmq's own message repeats the address: its errno's text says it once.
            reason = str(exc) if exc.errno is None else zmq.strerror(exc.errno)
            raise OSError(exc.errno, f"{topic}.{host}: cannot bind {url}: {reason}") from None
        runner = _Runner(
            sock,
            monitor,
            endpoints,
            host,
            topic,
            ServiceStats(host, topic, port, endpoints.methods, url),
            Limits(
                max_concurrency=max_concurrency,
                max_in_flight_per_caller=max_in_flight_per_caller,
                max_held_bytes=max_held_bytes,
                max_message_size=max_message_size,
                send_tracebacks=send_tracebacks,
            ),
            grace_period=grace_period,
            thread_limit=thread_limit,
            max_queued_reply_bytes=max_queued_reply_bytes,
        )
        logger.info("%s.%s serving on %s", topic, host, url)
        member = Member(
            topic, host, address if address != "*" else await lookup(host, resolve), port
        )
        with registered(runner.stats):  # for the metrics exporter, while it serves
            async with _registering(live, member) as leave:
                await runner.run(url, task_status, leave)


@contextlib.asynccontextmanager
async def _registering(
    registry: Registry | None, member: Member
) -> AsyncIterator[Callable[[], Awaitable[None]] | None]:
    if registry is None:
        yield None
        return
    async with keep_registered(registry, member) as leave:
        yield leave


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
    """The shell around a port's `ServiceCore`: it reads and writes the socket,
    runs handlers in Trio tasks, and does what the core says."""

    def __init__(
        self,
        sock: AsyncSocket,
        monitor: AsyncSocket,
        endpoints: Endpoints,
        host: str,
        topic: str,
        stats: ServiceStats,
        limits: Limits,
        *,
        grace_period: float,
        thread_limit: int,
        max_queued_reply_bytes: int,
    ) -> None:
        self.sock = sock
        self.monitor = monitor
        self.stats = stats
        self.grace_period = grace_period
        self.threads = trio.CapacityLimiter(thread_limit)
        self.max_queued_reply_bytes = max_queued_reply_bytes
        self.log = ThrottledLog(logger)
        self.core = ServiceCore(
            topic,
            host,
            endpoints,
            stats,
            limits,
            send=self._send,
            cancel=self._cancel,
            wake=self._wake,
            subscribed=self._subscribed,
            # The clock's own method: `trio.current_time` looks the run up first.
            clock=trio.lowlevel.current_clock().current_time,
            log=self.log,
            granted=self._granted,
        )
        # Streams waiting for credit, and what wakes each.
        self._parked: dict[Job, trio.Event] = {}
        self._outboxes: dict[bytes, _Outbox] = {}
        self._room: trio.Event | None = None
        self._draining: trio.CancelScope | None = None
        self._handlers: trio.Nursery
        self._pump_scope: trio.CancelScope | None = None  # the reading task's, while it reads
        self._subscribers_changed = trio.Event()

    def _count_peer(self, event: int, value: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            self.stats.peers += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self.stats.peers -= 1
            self._probe_parked()
        elif event == zmq.EVENT_ACCEPT_FAILED:
            # Out of descriptors, most likely: callers wait in vain, so say it.
            self.stats.rejected["accept_failed"] += 1
            self.log.warning(
                "accept",
                "%s: cannot accept a connection: %s (raise `ulimit -n`?)",
                self.core.name,
                os.strerror(value),
            )
        else:
            self.stats.rejected["handshake"] += 1

    def _subscribed(self) -> None:
        self._subscribers_changed.set()

    async def _publish_stats(self) -> NoReturn:
        # Sleeps while nobody subscribes: stats cost the data path nothing then.
        subscribers = self.core.subscribers
        while True:
            due = subscribers.due(trio.current_time())
            if due:
                data = self.stats.snapshot()  # one snapshot for all the subscribers due
                for identity, id in due:
                    try:
                        sent = self.sock.send_nowait([identity, encode(Stats(id, data))])
                    except Unroutable:
                        sent = False
                    if not sent:
                        # Gone, or a full queue of stats it never read: either way, done.
                        subscribers.drop(identity)
            with trio.move_on_at(subscribers.next_due()):
                await self._subscribers_changed.wait()
                self._subscribers_changed = trio.Event()

    async def run(
        self,
        url: str,
        task_status: trio.TaskStatus[str],
        leave: Callable[[], Awaitable[None]] | None = None,
    ) -> NoReturn:
        async with open_nursery() as handlers:
            self._handlers = handlers
            handlers.start_soon(self._publish_stats)
            handlers.start_soon(watch_events, self.sock, self.monitor, self._count_peer)
            handlers.start_soon(self._pump)
            task_status.started(url)
            try:
                await trio.sleep_forever()
            finally:
                if leave is not None:
                    # Out of the registry first, serving on (the reading task is
                    # shielded) while clients hear it: then nothing new comes.
                    with trio.CancelScope(shield=True):
                        await leave()
                self._shut_down(handlers)

    async def _pump(self) -> None:
        """Read requests and run their handlers, one after the other, in this task.

        A handler that returns without waiting costs neither a task nor a
        cancel scope of its own. At a handler's first wait this task becomes
        the handler's, its cancel scope the request's (deadline, caller's
        cancel, grace period), and a new pump takes over the reading and the
        rest of the batch: nothing ever waits behind a handler.
        """
        job: Job | None = None
        core = self.core
        flights, limit = core.flights, core.limits.max_concurrency
        # Shielded: stopping the service stops the reading (`_shut_down` cancels
        # the scope of the task that reads), not a handler; the grace period does.
        # The answers of a pass over what was read leave together (`core.gather`),
        # before the next wait: one wake-up of ZeroMQ's I/O thread for them all,
        # and a lone answer leaves as soon as it would alone.
        with trio.CancelScope(shield=True) as scope:
            self._pump_scope = scope
            taken = 0
            core.gather()
            while not core.stopping:
                if not core.ready:
                    core.send_gathered()
                    if core.full:
                        await self._wait_for_room()
                    else:
                        core.receive(await self.sock.receive_batch(_BATCH))
                        taken = 0
                    core.gather()
                    continue
                if taken == _BATCH:
                    # A long run of requests (the casts of a CASTS message) must
                    # starve neither other tasks nor other callers.
                    core.send_gathered()
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    core.gather()
                    core.receive(self.sock.receive_available(_BATCH))
                    core.rotate()
                    taken = 0
                taken += 1
                job = core.take()
                if job is not None:
                    if await run_inline(self._run(job), self._hand_over, job, scope):
                        return
                    job = None
                if len(flights) - core.parked >= limit:
                    core.send_gathered()
                    await self._wait_for_room()
                    core.gather()
            core.send_gathered()
        if job is not None:  # the handler this task took over was cancelled
            core.stopped(job)
            self._finished()

    async def _wait_for_room(self) -> None:
        self._room = trio.Event()
        await self._room.wait()

    def _wake(self) -> None:
        # A held request was let in: the reading task may be waiting for the
        # socket or for room, and must take it.
        self.sock.interrupt()
        if self._room is not None:
            self._room.set()
            self._room = None

    def _cancel(self, job: Job) -> None:
        if job.handle is not None:  # else a stream runs inline now: told when it waits
            job.handle.cancel()

    def _hand_over(self, job: Job, scope: trio.CancelScope) -> None:
        self.core.send_gathered()  # this task waits now: what it gathered leaves first
        scope.deadline = job.ctx.deadline
        self.core.waiting(job, scope)
        self._pump_scope = None
        self._handlers.start_soon(self._pump)

    def _shut_down(self, handlers: trio.Nursery) -> None:
        # From now on requests are refused, so no caller waits in vain: the ones
        # ZeroMQ already holds now, the ones arriving in the grace period as they come.
        if self._pump_scope is not None:
            self._pump_scope.cancel()
        core = self.core
        now = trio.current_time()
        core.gather()
        core.stop()
        for _ in range(_SHUTDOWN_BATCHES):
            if not (batch := self.sock.receive_available(_BATCH)):
                break
            core.receive(batch)
            core.refuse_pending()
        core.send_gathered()
        deadline = now + self.grace_period
        for job in core.flights.values():
            if job.handle is not None:  # it is: every handler not running now is waiting
                job.handle.deadline = min(job.handle.deadline, deadline)
        if core.flights:
            handlers.start_soon(self._refuse_until_idle)

    async def _refuse_until_idle(self) -> None:
        with trio.CancelScope(shield=True) as self._draining:
            if not self.core.flights:
                return
            while True:
                self.core.receive(await self.sock.receive_batch())
                self.core.gather()
                self.core.refuse_pending()
                self.core.send_gathered()

    async def _run(self, job: Job) -> None:
        method = job.method
        try:
            if method.is_async:
                result = await method.func(job.ctx, **job.args)
            elif method.is_stream:
                await self._stream(job)
                result = None
            else:
                call = functools.partial(method.func, job.ctx, **job.args)
                result = await trio.to_thread.run_sync(
                    call, limiter=self.threads, abandon_on_cancel=True
                )
        except Exception as exc:
            self.core.failed(job, exc)
        else:
            self.core.succeeded(job, result)
        if self._draining is not None or self._room is not None:
            self._finished()

    async def _stream(self, job: Job) -> None:
        """Run a stream's generator: the next item only while it has credit, a
        burst sent before the generator or the stream waits. Its `finally`
        runs however the stream ends (`aclose`)."""
        core = self.core
        agen = job.method.func(job.ctx, **job.args)
        try:
            pulled = 0
            while job.failure is None:
                if job.credit == 0:
                    await self._wait_for_credit(job)
                    pulled = 0
                elif pulled == _BATCH:
                    # A generator that never waits must not starve the service.
                    core.flush(job)
                    await trio.lowlevel.checkpoint()
                    pulled = 0
                try:
                    item = await next_inline(agen, core.flush, job)
                except StopAsyncIteration:
                    return
                pulled += 1
                core.yielded(job, item)
        finally:
            await agen.aclose()

    async def _wait_for_credit(self, job: Job) -> None:
        # Parked, the stream holds no place among the running: room was made.
        self._finished()
        event = self._parked[job] = trio.Event()
        try:
            await event.wait()
        finally:
            del self._parked[job]

    def _granted(self, job: Job) -> None:
        event = self._parked.get(job)
        if event is not None:
            event.set()

    def _probe_parked(self) -> None:
        """A caller's connection closed: stop the streams waiting for credit
        from a caller that is gone (its routing id is unknown now)."""
        for job in list(self._parked):
            try:
                self.sock.send_nowait([job.identity, self.core.probe(job)])
            except Unroutable:
                self.core.caller_gone(job.identity)
            except trio.ClosedResourceError:
                return

    def _finished(self) -> None:
        """A handler ended: the last one ends the grace period; room was made."""
        core = self.core
        if self._draining is not None and not core.flights:
            self._draining.cancel()  # nothing left to wait for
        if self._room is not None and not core.full:
            self._room.set()
            self._room = None

    def _send(self, identity: bytes, frame: bytes, counts: Counts) -> None:
        """Send a frame now, or queue it for the caller while its queue is full."""
        outbox = self._outboxes.get(identity)
        if outbox is None:
            try:
                if self.sock.send_nowait([identity, frame]):
                    self._count_out(frame, counts)
                    return
            except (Unroutable, trio.ClosedResourceError) as exc:
                self._count_undelivered(exc, counts)
                if counts is ITEMS and isinstance(exc, Unroutable):
                    self.core.caller_gone(identity)
                return
            outbox = self._outboxes[identity] = _Outbox()
            self._handlers.start_soon(self._flush, identity, outbox)
        if outbox.size + len(frame) > self.max_queued_reply_bytes:
            self._count_blocked(identity, counts)
        else:
            outbox.frames.append((trio.current_time() + REPLY_SEND_TIMEOUT, frame, counts))
            outbox.size += len(frame)

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
                        expires, frame, counts = frames[0]
                        if expires < now:
                            self._count_blocked(identity, counts)
                        elif self.sock.send_nowait([identity, frame]):
                            self._count_out(frame, counts)
                            pause = _RETRY_FIRST
                        else:
                            break
                        outbox.pop()
            except (Unroutable, trio.ClosedResourceError) as exc:
                for _, _, counts in frames:
                    self._count_undelivered(exc, counts)
                if isinstance(exc, Unroutable):
                    self.core.caller_gone(identity)  # its streams wait for nobody
            finally:
                del self._outboxes[identity]

    def _count_out(self, frame: bytes, counts: Counts) -> None:
        sent = self.stats.sent
        for kind, n in counts:
            sent[kind] += n
        self.stats.bytes_out += len(frame)

    def _count_blocked(self, identity: bytes, counts: Counts) -> None:
        self.stats.rejected["reply_blocked"] += sum(n for _, n in counts)
        self.log.warning(
            ("blocked", identity),
            "%s: a reply to %s dropped: it does not read its replies",
            self.core.name,
            clip(caller_name(identity)),
        )

    def _count_undelivered(self, exc: Exception, counts: Counts) -> None:
        reason = "caller_gone" if isinstance(exc, Unroutable) else "closed"
        self.stats.rejected[reason] += sum(n for _, n in counts)
