"""The client: cast, call and fanout straight to the services of a ring."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar, cast, overload

import outcome
import trio
import zmq

from ._curve import Curve
from ._deadlines import Deadlines
from ._errors import AuthenticationFailed, MessageTooLarge, PeerLost, RingError
from ._nursery import open_nursery
from ._protocol.caller import CallerCore, Ids
from ._ring import Ring, resolve_address
from ._routing import RoundRobin
from ._transport import (
    DEFAULT_HEARTBEAT,
    AsyncSocket,
    open_monitor,
    open_socket,
    set_heartbeat,
    watch_events,
)
from ._wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CREDIT,
    Call,
    Cast,
    Casts,
    Envelope,
    Fanout,
    Items,
    Reply,
    Stream,
    encode,
    unstructure,
)

T = TypeVar("T")

#: Seconds a call waits for its reply unless told otherwise (oslo.messaging's default).
DEFAULT_TIMEOUT = 60.0

#: Most casts one `CASTS` message of `Client.cast_many` carries.
_CASTS_PER_MESSAGE = 1000

#: Items a stream's consumer accepts ahead of what it has read, unless told otherwise.
DEFAULT_WINDOW = 64

#: Seconds replies may still arrive after ZeroMQ reported their connection closed.
_SETTLE = 0.05

_PEER_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class _Expired(Exception):
    """A call's timeout passed (`Client.call` raises CallTimeout)."""


class _Pending:
    """A call waiting for its reply."""

    __slots__ = ("id", "peer", "result", "task")

    def __init__(self, peer: _Peer, id: int) -> None:
        self.peer = peer
        self.id = id
        self.task: trio.lowlevel.Task | None = None  # set while it sleeps
        self.result: outcome.Outcome[Envelope] | None = None

    def expire(self) -> None:
        """The call's timeout passed: it ends now, unless its reply is in."""
        if self.peer.core.pending.pop(self.id, None) is self:
            self.peer.settle(self.id, self, outcome.Error(_Expired()))

    def fail(self, error: Exception) -> None:
        """The call ends with `error` (its connection was lost or refused)."""
        self.peer.settle(self.id, self, outcome.Error(error))


# What wakes a stream's consumer: the news itself is in its `_Flow`.
_NEWS = Reply(0, None)


class _Flow(_Pending):
    """An open stream: what arrived for it and was not read yet.

    It waits on its peer as a call does, `result` telling it that something
    came: items (`batches`), its end (`end`: the `REPLY` or `ERROR`), or a
    failure of this side (`failure`: its deadline, the connection lost).
    """

    __slots__ = ("batches", "end", "failure")

    def __init__(self, peer: _Peer, id: int) -> None:
        super().__init__(peer, id)
        self.batches: collections.deque[list[Any]] = collections.deque()
        self.end: Envelope | None = None
        self.failure: Exception | None = None

    def arrive(self, envelope: Envelope) -> None:
        if type(envelope) is Items:
            if not envelope.items:
                return  # the service asking whether this caller is still there
            self.batches.append(envelope.items)
        else:
            self.end = envelope
        self._news()

    def expire(self) -> None:
        if self.peer.core.streams.pop(self.id, None) is self:
            self.fail(_Expired())

    def fail(self, error: Exception) -> None:
        self.failure = error
        self._news()

    def _news(self) -> None:
        if self.result is None:
            self.peer.settle(self.id, self, outcome.Value(_NEWS))


class _Peer:
    """One service port of one host: a DEALER and the calls waiting on it.

    No task of its own reads the socket: a waiting call does (the leader),
    hands the replies it reads to the calls they answer (the followers,
    asleep until then), and passes the reading on when its own reply is in.
    A lone call thus reads its own reply, with no task switch between.
    """

    def __init__(
        self,
        topic: str,
        host: str,
        url: str,
        sock: AsyncSocket,
        down: set[str],
        nursery: trio.Nursery,
    ) -> None:
        self.topic = topic
        self.host = host
        self.url = url
        self.sock = sock
        self.core: CallerCore[_Pending] = CallerCore(topic, host)
        self.counts = self.core.counts
        self._down = down  # the hosts of this topic known to be down, shared by its peers
        self.refused: AuthenticationFailed | None = None  # set while handshakes fail
        self.handshaken = False
        self._nursery = nursery
        self._sleeping: dict[int, _Pending] = {}  # followers, oldest first
        self._leader: _Pending | None = None

    async def wait_reply(self, id: int, waiter: _Pending) -> Envelope:
        """Wait for the reply to call `id`, reading the socket while nobody else does."""
        if waiter.result is not None:
            await trio.lowlevel.checkpoint()
        try:
            while waiter.result is None:
                if self._leader is None:
                    self._dispatch(await self._lead(waiter))
                else:
                    await self._follow(id, waiter)
        finally:
            if self._leader is None and self._sleeping:
                self._wake_next()
        return waiter.result.unwrap()

    async def _lead(self, waiter: _Pending) -> list[list[bytes]]:
        self._leader = waiter
        try:
            # Empty when `settle` interrupts it: the reply came another way.
            return await self.sock.receive_batch()
        finally:
            self._leader = None

    async def _follow(self, id: int, waiter: _Pending) -> None:
        waiter.task = trio.lowlevel.current_task()
        self._sleeping[id] = waiter

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiter.task = None
            del self._sleeping[id]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_next(self) -> None:
        """Wake the oldest follower: it leads now, unless its reply is in."""
        id = next(iter(self._sleeping))
        self._wake(id, self._sleeping[id])

    def _wake(self, id: int, waiter: _Pending) -> None:
        del self._sleeping[id]
        if waiter.task is not None:
            trio.lowlevel.reschedule(waiter.task)
            waiter.task = None

    def _dispatch(self, batch: list[list[bytes]]) -> None:
        core = self.core
        for waiter, envelope in core.answers(batch):
            self.settle(envelope.id, waiter, outcome.Value(envelope))
        if core.streamed:
            for flow, envelope in core.streamed:
                cast(_Flow, flow).arrive(envelope)
            core.streamed.clear()

    def settle(self, id: int, waiter: _Pending, result: outcome.Outcome[Envelope]) -> None:
        """End the wait of call `id` with `result`."""
        waiter.result = result
        if waiter.task is not None:
            self._wake(id, waiter)
        elif waiter is self._leader:
            self.sock.interrupt()

    def on_event(self, event: int, value: int) -> None:
        """A socket monitor event: the connection came up, went down, or was refused."""
        if event == zmq.EVENT_CONNECTED:
            self._down.discard(self.host)
            self.handshaken = False
            return
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshaken = True
            self.refused = None
            return
        pending = [*self.core.pending, *self.core.streams]
        if event == zmq.EVENT_DISCONNECTED and self.handshaken:
            self._down.add(self.host)
            lost = PeerLost(
                "PeerLost", f"connection to {self.url} lost", host=self.host, topic=self.topic
            )
            self._nursery.start_soon(self._fail, pending, lost)
            return
        # A connection closed before its handshake succeeded was refused too: the
        # side that detects a mismatch may close without telling the other why,
        # and the reason, when given, may come after the close.
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = "refused this client's key"
        elif self.refused is None:
            why = (
                "refused the security handshake"
                " (CURVE on one side only, or a key it does not allow?)"
            )
        else:
            return
        self.refused = AuthenticationFailed(f"{self.topic}.{self.host} at {self.url} {why}")
        self._nursery.start_soon(self._fail, pending, None)

    async def _fail(self, ids: list[int], failure: Exception | None) -> None:
        """Fail calls in flight on a lost (or, with None, refused) connection.

        Replies a service sent just before closing (ServiceShutdown at the end
        of its grace period) may still be on their way through ZeroMQ, which
        reports the closed connection on another path: they are taken
        first. A refusal is the latest reason known then, if still refused.
        """
        await trio.sleep(_SETTLE)
        if not self.sock.closed:
            self._dispatch(self.sock.receive_available())
        error = failure if failure is not None else self.refused
        if error is None:
            return
        for waiter in self.core.lose(ids):
            waiter.fail(error)


class Client:
    """Reaches the services of a ring directly: one DEALER per service port.

    Create one with `open_client`; it lives as long as its `async with` block.
    """

    def __init__(
        self,
        ring: Ring,
        nursery: trio.Nursery,
        *,
        resolve: Mapping[str, str] | None,
        context: Mapping[str, Any] | None,
        timeout: float | None,
        name: str,
        heartbeat: float,
        max_message_size: int,
        curve: Curve | None,
    ) -> None:
        self.ring = ring
        self._nursery = nursery
        self._resolve = dict(resolve or {})
        self._context = dict(context or {})
        self._timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        # 64 random bits: a service hands a routing id's replies to the newest
        # connection using it, so an id must not be guessable.
        self._identity = f"{name}/{os.getpid()}/{secrets.token_hex(8)}".encode()
        self._heartbeat = heartbeat
        self._curve = curve
        self._max_message_size = max_message_size
        self._peers: dict[tuple[str, str], _Peer] = {}
        self._down: dict[str, set[str]] = {}
        self._ids = Ids()
        self._round_robin = RoundRobin()
        self._deadlines = Deadlines()
        nursery.start_soon(self._deadlines.run)

    @property
    def identity(self) -> str:
        """The name services see as `Context.caller`."""
        return self._identity.decode()

    def prepare(
        self,
        target: str,
        *,
        timeout: float | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> BoundTarget:
        """A target with its own default timeout and context, as `RPCClient.prepare`.

        Args:
            target: `"topic"` or `"topic.host"`.
            timeout: Default timeout of its calls (else the client's).
            context: Default context of its messages (merged over the client's).

        Raises:
            RingError: The target is not in the ring.
        """
        self.ring.resolve_target(target)
        return BoundTarget(self, target, timeout, dict(context or {}))

    @overload
    async def call(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = ...,
        returns: type[T],
        context: Mapping[str, Any] | None = ...,
        **args: Any,
    ) -> T: ...

    @overload
    async def call(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = ...,
        returns: None = ...,
        context: Mapping[str, Any] | None = ...,
        **args: Any,
    ) -> Any: ...

    async def call(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = None,
        returns: type[Any] | None = None,
        context: Mapping[str, Any] | None = None,
        **args: Any,
    ) -> Any:
        """Call `method` on one host of `target` and return its result.

        Args:
            target: `"topic"` (next host in round-robin order) or `"topic.host"`.
            method: The endpoint method to call.
            timeout: Seconds to wait for the reply; it travels to the service as
                the handler's deadline. Default: the client's (60 s unless set).
                `math.inf` waits forever.
            returns: Structure the result into this type (an attrs class, a
                dataclass, `list[int]`...); plain data when omitted.
            context: A dict the handler sees as `ctx.values`, merged over the
                client's default context.
            **args: The method's arguments, by name.

        Raises:
            RemoteError: The handler raised; `NoSuchMethod` and `BadArguments`
                are its subclasses for calls the service refused.
            CallTimeout: No reply before the timeout.
            RingError: The target is not in the ring.
            TypeError: The result does not fit `returns`.
        """
        seconds = self._timeout if timeout is None else timeout
        peer = self._peer(target)
        id = self._ids.next()
        wire_timeout = None if seconds == math.inf else float(seconds)
        frame = self._encode(
            Call(id, peer.topic, method, _unstructure(args), self._merge(context), wire_timeout)
        )
        waiter = _Pending(peer, id)
        peer.core.pending[id] = waiter
        deadline = math.inf
        if wire_timeout is not None:
            deadline = self._deadlines.add(waiter, wire_timeout, waiter.expire)
        try:
            if not peer.sock.send_nowait([frame]):
                # The service's queue is full: wait for room, within the timeout.
                with trio.move_on_at(deadline) as scope:
                    await peer.sock.send([frame])
                if scope.cancelled_caught:
                    raise _Expired()
            peer.counts["call"] += 1
            envelope = await peer.wait_reply(id, waiter)  # a checkpoint
        except _Expired:
            self._give_up(peer, id)
            peer.counts["timeout"] += 1
            raise peer.core.timed_out(method, seconds) from None
        except (PeerLost, AuthenticationFailed):
            raise  # the connection is gone: nobody to tell
        except BaseException:
            # The caller was cancelled: the service stops the handler too.
            self._give_up(peer, id)
            raise
        finally:
            if wire_timeout is not None:
                self._deadlines.discard(waiter, wire_timeout)
        return peer.core.outcome(envelope, method, seconds, returns)

    @overload
    def stream(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = ...,
        returns: type[T],
        context: Mapping[str, Any] | None = ...,
        window: int = ...,
        **args: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[T]]: ...

    @overload
    def stream(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = ...,
        returns: None = ...,
        context: Mapping[str, Any] | None = ...,
        window: int = ...,
        **args: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]: ...

    def stream(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = None,
        returns: type[Any] | None = None,
        context: Mapping[str, Any] | None = None,
        window: int = DEFAULT_WINDOW,
        **args: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """Open a stream of the items an async-generator method yields, on one
        host of `target`: `async with client.stream(...) as items: async for
        item in items: ...`.

        The service runs the generator only as far as the consumer reads: it
        never has more than `window` items sent and not read, so a slow
        consumer costs bounded memory on both sides. Leaving the `async with`
        block before the end (`break`, an exception, a cancellation) stops
        the generator on the service, whose `finally` runs.

        Args:
            target: `"topic"` (next host in round-robin order) or `"topic.host"`.
            method: The endpoint method, an async generator.
            timeout: Seconds the whole stream may take, from its opening to its
                last item; it travels to the service, which stops the generator
                when it passes. Default: the client's. `math.inf` for none.
            returns: Structure each item into this type, as `Client.call`'s
                result; plain data when omitted.
            context: A dict the handler sees as `ctx.values`, merged over the
                client's default context.
            window: Items the consumer accepts ahead of what it read, from 1
                to 65,536. Credit for more goes back as it reads (each time
                it has read half the window).
            **args: The method's arguments, by name.

        Returns:
            An async context manager; inside it, an async iterator of the items.
            The iterator raises, after the items that came before:

        Raises:
            RemoteError: The generator raised; `NoSuchMethod` when the method
                is not exposed or is not an async generator (a plain method
                is called with `call`); `BadArguments` for arguments refused.
            CallTimeout: The stream did not end before the timeout.
            PeerLost: The connection to the service was lost.
            RingError: The target is not in the ring.
            TypeError: An item does not fit `returns`.
            ValueError: `window` is not an int within its range.
        """
        if type(window) is not int or not 0 < window <= MAX_CREDIT:
            raise ValueError(f"window must be an int between 1 and {MAX_CREDIT}, got {window!r}")
        seconds = self._timeout if timeout is None else timeout
        return _ItemStream(
            self, target, method, _unstructure(args), self._merge(context), seconds, returns, window
        )

    async def cast(
        self,
        target: str,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        **args: Any,
    ) -> None:
        """Send a one-way request to one host of `target`.

        Returns once ZeroMQ has queued the message; waits while the peer's
        queue is at its high-water mark.

        Raises:
            RingError: The target is not in the ring.
        """
        peer = self._peer(target)
        frame = self._encode(
            Cast(self._ids.next(), peer.topic, method, _unstructure(args), self._merge(context))
        )
        await peer.sock.send([frame])
        peer.counts["cast"] += 1

    async def cast_many(
        self,
        target: str,
        method: str,
        calls: Iterable[Mapping[str, Any]],
        /,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Send one cast per item of `calls` (each a dict of arguments), in a batch.

        The same as casting each in turn (round-robin over the topic's hosts
        for a `"topic"` target, each host receiving its casts in order), but
        the casts for one host travel together, as few messages as the
        message size limit allows, with one schedule point for the whole batch.

        Returns:
            The number of casts sent.

        Raises:
            RingError: The target is not in the ring.
            MessageTooLarge: One cast alone is over the message size limit.
        """
        batches: dict[_Peer, list[dict[str, Any]]] = {}
        for args in calls:
            batches.setdefault(self._peer(target), []).append(_unstructure(args))
        values = self._merge(context)
        for peer, batch in batches.items():
            for frame, count in self._casts_frames(peer.topic, method, batch, values):
                await peer.sock.send_soon([frame])
                peer.counts["cast"] += count
        await trio.lowlevel.checkpoint()
        return sum(map(len, batches.values()))

    def _casts_frames(
        self, topic: str, method: str, batch: list[dict[str, Any]], values: dict[str, Any]
    ) -> Iterator[tuple[bytes, int]]:
        """`CASTS` frames carrying `batch` in order, each within the size limit,
        with how many casts each carries."""
        chunks = [
            batch[i : i + _CASTS_PER_MESSAGE] for i in range(0, len(batch), _CASTS_PER_MESSAGE)
        ]
        while chunks:
            chunk = chunks.pop(0)
            first = self._ids.take(len(chunk))
            frame = encode(Casts(first, topic, method, chunk, values))
            if len(frame) <= self._max_message_size:
                yield frame, len(chunk)
            elif len(chunk) == 1:
                raise self._too_large(len(frame))
            else:
                half = len(chunk) // 2
                chunks[:0] = [chunk[:half], chunk[half:]]

    async def fanout(
        self,
        target: str,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        **args: Any,
    ) -> None:
        """Send a one-way request to every host of the topic `target`.

        One schedule point for all the hosts, as `cast_many`.

        Raises:
            RingError: The topic is not in the ring.
        """
        topic, only = self.ring.resolve_target(target)
        hosts = self.ring.hosts_of(topic) if only is None else (only,)
        # One frame for every host: an id need only be unique on its connection.
        frame = self._encode(
            Fanout(self._ids.next(), topic, method, _unstructure(args), self._merge(context))
        )
        for host in hosts:
            peer = self._peer_of(topic, host)
            await peer.sock.send_soon([frame])
            peer.counts["fanout"] += 1
        await trio.lowlevel.checkpoint()

    def _merge(self, context: Mapping[str, Any] | None) -> dict[str, Any]:
        if not context:
            return self._context
        return {**self._context, **context}

    def _peer(self, target: str) -> _Peer:
        topic, host = self.ring.resolve_target(target)
        if host is None:
            host = self._round_robin.next(topic, self.ring.hosts_of(topic), self._down.get(topic))
        return self._peer_of(topic, host)

    def _peer_of(self, topic: str, host: str) -> _Peer:
        peer = self._peers.get((topic, host)) or self._connect(topic, host)
        if peer.refused is not None:
            raise peer.refused
        return peer

    def _connect(self, topic: str, host: str) -> _Peer:
        url = self._url(topic, host)
        sock = open_socket(zmq.DEALER)
        sock.zmq.setsockopt(zmq.ROUTING_ID, self._identity)
        set_heartbeat(sock, self._heartbeat)
        sock.zmq.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        if self._curve is not None:
            self._curve.apply(sock.zmq)
        down = self._down.setdefault(topic, set())
        peer = self._peers[(topic, host)] = _Peer(topic, host, url, sock, down, self._nursery)
        monitor = open_monitor(sock, _PEER_EVENTS)
        self._nursery.start_soon(watch_events, sock, monitor, peer.on_event)
        sock.zmq.connect(url)
        return peer

    def connected(self, target: str) -> bool:
        """Whether the connection to the service `"topic.host"` is up: its
        handshake done and not lost since. Connects first if it was not yet.

        Raises:
            RingError: The target is not a host of a topic of the ring.
            AuthenticationFailed: The service refused this client's handshake.
        """
        topic, host = self._service_of(target, "connected")
        peer = self._peer_of(topic, host)
        return peer.handshaken and host not in self._down.get(topic, ())

    def url(self, target: str) -> str:
        """The address the client connects to for the service `"topic.host"`."""
        return self._url(*self._service_of(target, "url"))

    def _service_of(self, target: str, asker: str) -> tuple[str, str]:
        topic, host = self.ring.resolve_target(target)
        if host is None:
            raise RingError(f"{self.ring.source}: {asker}({target!r}) needs 'topic.host'")
        return topic, host

    def _url(self, topic: str, host: str) -> str:
        return f"tcp://{resolve_address(host, self._resolve)}:{self.ring.port(topic)}"

    def stats(self) -> dict[str, dict[str, int]]:
        """The client's side, per `topic.host`: calls, casts, fanouts, streams sent;
        replies, errors, timeouts and lost calls and streams; unmatched replies
        (to calls that gave up)."""
        return {f"{p.topic}.{p.host}": dict(p.counts) for p in self._peers.values()}

    def _give_up(self, peer: _Peer, id: int) -> None:
        cancel = peer.core.give_up(id)
        with contextlib.suppress(trio.ClosedResourceError):
            peer.sock.send_nowait([cancel])

    def _encode(self, envelope: Envelope) -> bytes:
        frame = encode(envelope)
        if len(frame) > self._max_message_size:
            raise self._too_large(len(frame))
        return frame

    def _too_large(self, size: int) -> MessageTooLarge:
        return MessageTooLarge(
            f"the message is {size} bytes, over the limit of {self._max_message_size}"
        )

    def _close(self) -> None:
        for peer in self._peers.values():
            peer.sock.close()


class _ItemStream(Generic[T]):
    """`Client.stream`'s context manager, and the iterator of its items."""

    def __init__(
        self,
        client: Client,
        target: str,
        method: str,
        args: dict[str, Any],
        context: dict[str, Any],
        seconds: float,
        returns: type[T] | None,
        window: int,
    ) -> None:
        self._client = client
        self._target = target
        self._method = method
        self._args = args
        self._context = context
        self._seconds = seconds
        self._wire_timeout = None if seconds == math.inf else float(seconds)
        self._returns = returns
        self._window = window
        # Credit goes back once half the window is read: one CREDIT per half window.
        self._refill = max(1, window // 2)
        self._read = 0  # items read since credit last went back
        self._batch: list[Any] = []
        self._next = 0  # index in `_batch` of the next item
        self._flow: _Flow | None = None
        self._over = False  # ended: nothing to cancel

    async def __aenter__(self) -> AsyncIterator[T]:
        client = self._client
        peer = client._peer(self._target)
        id = client._ids.next()
        frame = client._encode(
            Stream(
                id,
                peer.topic,
                self._method,
                self._args,
                self._context,
                self._wire_timeout,
                self._window,
            )
        )
        flow = self._flow = _Flow(peer, id)
        peer.core.streams[id] = flow
        deadline = math.inf
        if self._wire_timeout is not None:
            deadline = client._deadlines.add(flow, self._wire_timeout, flow.expire)
        try:
            if not peer.sock.send_nowait([frame]):
                with trio.move_on_at(deadline):
                    await peer.sock.send([frame])
            peer.counts["stream"] += 1
            await trio.lowlevel.checkpoint()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        flow = self._flow
        if flow is None:
            return
        self._flow = None
        if self._wire_timeout is not None:
            self._client._deadlines.discard(flow, self._wire_timeout)
        if not self._over:
            # Left early: the service stops the generator (its `finally` runs).
            self._client._give_up(flow.peer, flow.id)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        flow = self._flow
        if flow is None:
            if self._over:
                raise StopAsyncIteration
            raise RuntimeError("a stream's items are read inside its `async with` block")
        while True:
            if flow.failure is not None:
                raise self._failed(flow, flow.failure)
            batch = self._batch
            if self._next < len(batch):
                value = batch[self._next]
                self._next += 1
                self._read += 1
                if self._read >= self._refill:
                    await self._grant(flow)
                await trio.lowlevel.checkpoint_if_cancelled()
                item: T = flow.peer.core.item(value, self._method, self._returns)
                return item
            if flow.batches:
                self._batch = flow.batches.popleft()
                self._next = 0
                # Items were waiting: let other tasks run once per batch.
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            if flow.end is not None:
                self._over = True
                self._batch = []
                # Raises the stream's error, if it ended with one.
                flow.peer.core.outcome(flow.end, self._method, self._seconds, None)
                raise StopAsyncIteration
            flow.result = None
            await flow.peer.wait_reply(flow.id, flow)

    async def _grant(self, flow: _Flow) -> None:
        frame = flow.peer.core.grant(flow.id, self._read)
        self._read = 0
        with contextlib.suppress(trio.ClosedResourceError):
            if not flow.peer.sock.send_nowait([frame]):
                await flow.peer.sock.send([frame])

    def _failed(self, flow: _Flow, failure: Exception) -> Exception:
        """What to raise for a failure of this side: its deadline, or its connection."""
        if isinstance(failure, _Expired):
            flow.peer.counts["timeout"] += 1
            return flow.peer.core.timed_out(self._method, self._seconds)
        self._over = True  # the connection is gone: nobody to tell
        return failure


class BoundTarget:
    """A target prepared with `Client.prepare`: the same calls, fewer arguments."""

    def __init__(
        self,
        client: Client,
        target: str,
        timeout: float | None,
        context: dict[str, Any],
    ) -> None:
        self.client = client
        self.target = target
        self.timeout = timeout
        self.context = context

    def _merge(self, context: Mapping[str, Any] | None) -> dict[str, Any]:
        # The call's context over the target's; the client adds its own under both.
        return {**self.context, **(context or {})}

    async def call(
        self,
        method: str,
        /,
        *,
        timeout: float | None = None,
        returns: type[Any] | None = None,
        context: Mapping[str, Any] | None = None,
        **args: Any,
    ) -> Any:
        """`Client.call` on this target, with its defaults."""
        return await self.client.call(
            self.target,
            method,
            timeout=self.timeout if timeout is None else timeout,
            returns=returns,
            context=self._merge(context),
            **args,
        )

    def stream(
        self,
        method: str,
        /,
        *,
        timeout: float | None = None,
        returns: type[Any] | None = None,
        context: Mapping[str, Any] | None = None,
        window: int = DEFAULT_WINDOW,
        **args: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """`Client.stream` on this target, with its defaults."""
        return self.client.stream(
            self.target,
            method,
            timeout=self.timeout if timeout is None else timeout,
            returns=returns,
            context=self._merge(context),
            window=window,
            **args,
        )

    async def cast(
        self, method: str, /, *, context: Mapping[str, Any] | None = None, **args: Any
    ) -> None:
        """`Client.cast` on this target, with its default context."""
        await self.client.cast(self.target, method, context=self._merge(context), **args)

    async def fanout(
        self, method: str, /, *, context: Mapping[str, Any] | None = None, **args: Any
    ) -> None:
        """`Client.fanout` on this target, with its default context."""
        await self.client.fanout(self.target, method, context=self._merge(context), **args)


@asynccontextmanager
async def open_client(
    ring: Ring,
    *,
    resolve: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    name: str = "client",
    heartbeat: float = DEFAULT_HEARTBEAT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    curve: Curve | None = None,
) -> AsyncIterator[Client]:
    """Open a client of the ring's services, for the `async with` block.

    Connections are made lazily, one per (host, topic) the client talks to.
    Leaving the block closes them.

    Args:
        ring: The ring to route by.
        resolve: Host name to address overrides, e.g. `{"controller": "127.0.0.2"}`.
        context: Default context dict sent with every message.
        timeout: Default call timeout in seconds; `math.inf` waits forever. As
            everywhere a timeout is given, `None` means "not given": here,
            `DEFAULT_TIMEOUT`.
        name: Prefix of the caller name services see as `ctx.caller`.
        heartbeat: Seconds without a sign of life (ZMTP heartbeats) after which
            a connection is lost: calls in flight on it fail with `PeerLost`,
            and round-robin skips the host until it is back.
        max_message_size: Largest message, in bytes, sent or accepted.
        curve: The client's CURVE keys (`Curve.client`), for services that
            require them; a refused handshake raises `AuthenticationFailed`.
    """
    client: Client | None = None
    try:
        async with open_nursery() as nursery:
            client = Client(
                ring,
                nursery,
                resolve=resolve,
                context=context,
                timeout=timeout,
                name=name,
                heartbeat=heartbeat,
                max_message_size=max_message_size,
                curve=curve,
            )
            yield client
            nursery.cancel_scope.cancel()
    finally:
        # After the monitor tasks stopped, so none of them sees its socket vanish.
        if client is not None:
            client._close()


def _unstructure(args: Mapping[str, Any]) -> dict[str, Any]:
    return {name: unstructure(value) for name, value in args.items()}
