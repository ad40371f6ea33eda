"""The client: cast, call and fanout straight to the services of a ring."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar, cast, overload

import outcome
import trio
import zmq

from ._curve import Curve
from ._deadlines import Deadlines
from ._errors import (
    AuthenticationFailed,
    HostUnreachable,
    MessageTooLarge,
    PeerLost,
    RingError,
    VersionCapError,
)
from ._known import KnownExceptions
from ._membership import LiveMembers, Members, RingMembers
from ._nursery import open_nursery
from ._protocol.caller import CallerCore, Ids
from ._registry import Registry, as_registry, watch
from ._ring import Ring, is_ipv6, lookup, tcp_url
from ._ring_watch import RingFile
from ._routing import RoundRobin
from ._transport import (
    DEFAULT_HEARTBEAT,
    AsyncSocket,
    open_monitor,
    open_socket,
    set_heartbeat,
    watch_events,
)
from ._versions import check_namespace, is_compatible, parse_version
from ._wire import (
    _PLAIN,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CREDIT,
    MAX_REPLIES_SIZE,
    Call,
    Cast,
    Casts,
    Envelope,
    Fanout,
    Items,
    Reply,
    Stream,
    encode,
    join_calls,
    unstructure,
)

T = TypeVar("T")

logger = logging.getLogger("trizmq.client")

#: Seconds a call waits for its reply unless told otherwise (oslo.messaging's default).
DEFAULT_TIMEOUT = 60.0
#: Seconds a call, cast or fanout that does not wait for its host (`wait_for_ready`)
#: gives a connection to come up before it fails with `HostUnreachable`; a refused
#: connection fails it at once.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds between two lookups of one host's name: it is looked up again when
#: its connection is lost or a connect attempt fails, at most this often.
RERESOLVE_INTERVAL = 2.0

#: Most casts one `CASTS` message of `Client.cast_many` carries.
_CASTS_PER_MESSAGE = 1000

#: Items a stream's consumer accepts ahead of what it has read, unless told otherwise.
DEFAULT_WINDOW = 64
#: Most calls one `CALLS` message carries.
_CALLS_PER_MESSAGE = 1000

#: Seconds replies may still arrive after ZeroMQ reported their connection closed.
_SETTLE = 0.05

#: Seconds between two looks at whether a connection left out of the ring is idle.
_RETIRE_POLL = 0.05

_PEER_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
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
        changed: Callable[[], None],
        known: KnownExceptions | None,
    ) -> None:
        self.topic = topic
        self.host = host
        self.url = url  # tcp://NAME:PORT until the name is looked up
        self.address: str | None = None  # the address connected to, once known
        self.sock = sock
        self.core: CallerCore[_Pending] = CallerCore(topic, host, known)
        self.counts = self.core.counts
        # The hosts of this topic known to be down (lost, or failing to connect),
        # shared by its peers.
        self._down = down
        self._changed = changed  # tells the client's waiting tasks to look again
        self.refused: AuthenticationFailed | None = None  # set while handshakes fail
        self.unreachable: HostUnreachable | None = None  # set while connecting fails
        self.failures = 0  # connect attempts (and lookups) failed so far
        self.up = False  # handshake done, connection not lost since
        self.trouble = trio.Event()  # set when a connect fails or the connection is lost
        self.waiting_casts = 0  # casts and fanouts waiting to be handed to ZeroMQ
        self.blocked: set[trio.CancelScope] = set()  # sends waiting for room, while up
        self._nursery = nursery
        self._sleeping: dict[int, _Pending] = {}  # followers, oldest first
        self._leader: _Pending | None = None
        # Calls of this scheduler pass, by id, to be sent together (`Client._queue`).
        self.queued: dict[int, bytes] = {}
        self.stalled = False  # ZeroMQ's queue was full: `drain` sends the queued calls

    def flush(self, max_size: int) -> bool:
        """Send the queued calls still waiting: one alone as a `CALL`, several as
        few `CALLS` as the size limit allows.

        Returns:
            False when ZeroMQ's queue is full: the calls not sent stay queued.
        """
        queued, pending = self.queued, self.core.pending
        ids = [id for id in queued if id in pending]
        sent = 0
        while sent < len(ids):
            end, size = sent, 6  # a CALLS's head, at most
            while end < len(ids) and end - sent < _CALLS_PER_MESSAGE:
                size += len(queued[ids[end]])
                if size > max_size and end > sent:
                    break
                end += 1
            frames = [queued[id] for id in ids[sent:end]]
            if not self.sock.send_nowait([frames[0] if len(frames) == 1 else join_calls(frames)]):
                self.queued = {id: queued[id] for id in ids[sent:]}
                return False
            sent = end
        queued.clear()
        return True

    async def drain(self, max_size: int) -> None:
        """Send the queued calls as ZeroMQ's queue takes them, while any is waiting."""
        try:
            while any(id in self.core.pending for id in self.queued):
                await self.sock.wait_writable()
                if not self.flush(max_size):
                    await trio.lowlevel.checkpoint()
        except trio.ClosedResourceError:
            pass
        finally:
            self.queued.clear()
            self.stalled = False

    @property
    def target(self) -> str:
        """`"topic.host"`."""
        return f"{self.topic}.{self.host}"

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
            self.settle(waiter.id, waiter, outcome.Value(envelope))
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

    def connect(self, address: str, port: int) -> None:
        """Connect the DEALER to `address` (instead of the one before, if any)."""
        url = tcp_url(address, port)
        if url == self.url and self.address is not None:
            return
        if self.address is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.zmq.disconnect(self.url)
        self.sock.zmq.setsockopt(zmq.IPV6, int(is_ipv6(address)))
        self.address, self.url = address, url
        self.sock.zmq.connect(url)

    def cannot_reach(self, address: str, reason: str) -> None:
        """The host cannot be reached now: calls that do not wait for it fail."""
        self.unreachable = HostUnreachable(self.topic, self.host, address, reason)
        self.failures += 1
        self._down.add(self.host)
        self.trouble.set()
        self._changed()

    def on_event(self, event: int, value: int) -> None:
        """A socket monitor event: the connection came up, went down, or was refused."""
        if event == zmq.EVENT_CONNECTED:
            self.unreachable = None
            return
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up = True
            self.refused = None
            self._down.discard(self.host)
            self._changed()
            return
        if event == zmq.EVENT_CONNECT_RETRIED:
            # Refused, or timed out (ZMQ_CONNECT_TIMEOUT): libzmq tries again soon.
            self.cannot_reach(self.url, "cannot connect (nothing listening, or no route)")
            return
        pending = [*self.core.pending, *self.core.streams]
        if event == zmq.EVENT_DISCONNECTED and self.up:
            self.up = False
            self._down.add(self.host)
            self.trouble.set()
            self._changed()
            for scope in self.blocked:
                scope.cancel()  # they wait for a connection again, or fail
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
        self._changed()
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

    async def retire(self) -> None:
        """Left out of the client's ring: calls in flight finish, then the connection closes."""
        self._down = set()  # its closing says nothing of the host's other connections
        try:
            # Polled: calls end in many ways (reply, timeout, cancel, loss), and a
            # retired connection is rare enough not to cost every call a check.
            while self.core.pending:  # noqa: ASYNC110
                await trio.sleep(_RETIRE_POLL)
        finally:
            self.sock.zmq.disable_monitor()  # before the socket closes (see watch_events)
            self.sock.close()


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
        known: KnownExceptions | None = None,
        members: Members | None = None,
        wait_for_ready: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._ring = ring
        # Who serves what: the ring's hosts, or a registry's live members.
        self._members: Members = RingMembers(ring) if members is None else members
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
        self._known = known
        self._wait_for_ready = wait_for_ready
        self._connect_timeout = connect_timeout
        self._peers: dict[tuple[str, str], _Peer] = {}
        self._down: dict[str, set[str]] = {}
        self._changed = trio.Event()  # set (and replaced) when a connection's state changes
        self._closed = False
        self._ids = Ids()
        self._round_robin = RoundRobin()
        self._whole_topics: set[str] = set()  # topics with a peer for every host
        self._deadlines = Deadlines()
        nursery.start_soon(self._deadlines.run)
        self._due: list[_Peer] = []  # peers with calls queued
        self._flusher: trio.lowlevel.Task | None = None  # while it sleeps
        nursery.start_soon(self._flush)

    @property
    def ring(self) -> Ring:
        """The ring the client routes by.

        Assign another ring to route by it from now on (`open_client` with a
        ring file does so whenever the file changes): its new topics and
        hosts are routable at once; a host it no longer lists for a topic, or
        a topic whose port it changed, gets no new request, while the calls
        in flight there finish; that connection closes after them.
        """
        return self._ring

    @ring.setter
    def ring(self, ring: Ring) -> None:
        old, self._ring = self._ring, ring
        self._members = members = self._members.with_ring(ring)
        for (topic, host), peer in list(self._peers.items()):
            gone = not ring.serves(topic, host) and members.member(topic, host) is None
            if gone or ring.port(topic) != old.port(topic):
                del self._peers[(topic, host)]
                self._nursery.start_soon(peer.retire)

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
        version: str | None = None,
        namespace: str | None = None,
        version_cap: str | None = None,
        wait_for_ready: bool | None = None,
    ) -> BoundTarget:
        """A target with its own defaults, as oslo.messaging's `RPCClient.prepare`.

        Args:
            target: `"topic"` or `"topic.host"`.
            timeout: Default timeout of its calls (else the client's).
            context: Default context of its messages (merged over the client's).
            version: The API version its calls, casts and fanouts need,
                `"MAJOR.MINOR"`: the service runs them on an endpoint of the
                same major version and a minor at least this one, or answers
                calls with `UnsupportedVersion`. None: any endpoint of the
                namespace.
            namespace: The namespace of the methods (an endpoint's
                `Target.namespace`); None for the topic's main API.
            version_cap: The highest version this target may send (a rolling
                upgrade's pin): see `BoundTarget.can_send_version`.
            wait_for_ready: Default of its messages' `wait_for_ready` (else the client's).

        Raises:
            RingError: The target is not in the ring.
            ValueError: A version is not `"MAJOR.MINOR"`, or the namespace is
                neither None nor a non-empty str.
            VersionCapError: `version` is above `version_cap`.
        """
        self._members.resolve_target(target)
        return BoundTarget(
            self,
            target,
            timeout,
            dict(context or {}),
            wait_for_ready,
            namespace,
            version,
            version_cap,
        )

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
        wait_for_ready: bool | None = ...,
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
        wait_for_ready: bool | None = ...,
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
        wait_for_ready: bool | None = None,
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
            wait_for_ready: Wait, within the timeout, for a host that cannot be
                reached, instead of failing with `HostUnreachable`. Default:
                the client's (False unless set).
            **args: The method's arguments, by name.

        Raises:
            RemoteError: The handler raised; `NoSuchMethod` and `BadArguments`
                are its subclasses for calls the service refused.
            CallTimeout: No reply before the timeout.
            HostUnreachable: No connection to the host (for a `"topic"`, to
                any of its hosts) could be made; the call was not sent.
            RingError: The target is not in the ring.
            TypeError: The result does not fit `returns`.
        """
        return await self._call(
            target, method, timeout, returns, context, args, None, None, wait_for_ready
        )

    async def _call(
        self,
        target: str,
        method: str,
        timeout: float | None,
        returns: type[Any] | None,
        context: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
        wait_for_ready: bool | None,
    ) -> Any:
        seconds = self._timeout if timeout is None else timeout
        peer, left = await self._up_peer(target, method, seconds, self._waits(wait_for_ready))
        id = self._ids.next()
        wire_timeout = None if seconds == math.inf else float(left)
        frame = self._encode(
            Call(
                id,
                peer.topic,
                method,
                _unstructure(args),
                self._merge(context),
                wire_timeout,
                namespace,
                version,
            )
        )
        waiter = _Pending(peer, id)
        pending = peer.core.pending
        busy = pending or peer.queued
        pending[id] = waiter
        deadline = math.inf
        if wire_timeout is not None:
            deadline = self._deadlines.add(waiter, wire_timeout, waiter.expire)
        try:
            if busy:
                self._queue(peer, id, frame)
            elif not peer.sock.send_nowait([frame]):
                # The service's queue is full: wait for room, within the timeout.
                wait = self._waits(wait_for_ready)
                await self._hand_over(peer.target, peer, frame, deadline, wait)
            peer.counts["call"] += 1
            envelope = await peer.wait_reply(id, waiter)  # a checkpoint
        except _Expired:
            self._give_up(peer, id)
            peer.counts["timeout"] += 1
            raise peer.core.timed_out(method, seconds) from None
        except (HostUnreachable, AuthenticationFailed):
            peer.core.give_up(id)  # never sent: nobody to tell
            raise
        except PeerLost:
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
        wait_for_ready: bool | None = ...,
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
        wait_for_ready: bool | None = ...,
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
        wait_for_ready: bool | None = None,
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
            wait_for_ready: As for `call`: wait, within the timeout, for a
                host that cannot be reached.
            **args: The method's arguments, by name.

        Returns:
            An async context manager; inside it, an async iterator of the items.
            The iterator raises, after the items that came before:

        Raises:
            RemoteError: The generator raised; `NoSuchMethod` when the method
                is not exposed or is not an async generator (a plain method
                is called with `call`); `BadArguments` for arguments refused.
            CallTimeout: The stream did not end before the timeout.
            HostUnreachable: No connection to the host could be made (raised
                entering the block); the stream was not opened.
            PeerLost: The connection to the service was lost.
            RingError: The target is not in the ring.
            TypeError: An item does not fit `returns`.
            ValueError: `window` is not an int within its range.
        """
        return self._stream(
            target, method, timeout, returns, context, window, args, None, None, wait_for_ready
        )

    def _stream(
        self,
        target: str,
        method: str,
        timeout: float | None,
        returns: type[Any] | None,
        context: Mapping[str, Any] | None,
        window: int,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
        wait_for_ready: bool | None,
    ) -> _ItemStream[Any]:
        if type(window) is not int or not 0 < window <= MAX_CREDIT:
            raise ValueError(f"window must be an int between 1 and {MAX_CREDIT}, got {window!r}")
        seconds = self._timeout if timeout is None else timeout
        return _ItemStream(
            self,
            target,
            method,
            _unstructure(args),
            self._merge(context),
            seconds,
            returns,
            window,
            (namespace, version),
            self._waits(wait_for_ready),
        )

    async def cast(
        self,
        target: str,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> None:
        """Send a one-way request to one host of `target`.

        Returns once ZeroMQ has queued the message on a connection that is up;
        waits while the peer's queue is at its high-water mark.

        Args:
            target: `"topic"` (next host in round-robin order) or `"topic.host"`.
            method: The endpoint method to run.
            context: A dict the handler sees as `ctx.values`.
            wait_for_ready: Wait for a host that cannot be reached, with no
                bound, instead of failing with `HostUnreachable`. Default: the
                client's.
            **args: The method's arguments, by name.

        Raises:
            HostUnreachable: No connection to the host could be made; the cast
                was not sent.
            RingError: The target is not in the ring.
        """
        await self._cast(target, method, context, args, None, None, wait_for_ready)

    def cast_nowait(
        self,
        target: str,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        **args: Any,
    ) -> None:
        """`cast`, without waiting: ZeroMQ takes the message now, or it is not sent.

        A plain function, like Trio's `send_nowait`: no schedule point, so a
        task sending many casts pays no trip through the scheduler per cast,
        and the casts it sends between two of its schedule points reach
        ZeroMQ in one burst.

        Only a connection that is up takes a message: the first cast to a
        host (whose connection is made on first use) is an `await cast`, or
        follows `Client.connected`.

        Raises:
            trio.WouldBlock: The connection is not up yet, or the host's queue
                is at its high-water mark (the service does not keep up); the
                cast was not sent. `cast` waits instead.
            HostUnreachable: The last attempt to connect to the host failed;
                the cast was not sent.
            AuthenticationFailed: The service refused this client's handshake.
            RingError: The target is not in the ring.
        """
        self._cast_nowait(target, method, context, args, None, None)

    async def _cast(
        self,
        target: str,
        method: str,
        context: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
        wait_for_ready: bool | None,
    ) -> None:
        peer, frame = self._cast_frame(target, method, context, args, namespace, version)
        if peer.up and peer.sock.send_nowait([frame]):
            sent = peer  # the common case, taken at once: nothing to wait for
        else:
            peer.waiting_casts += 1
            try:
                sent = await self._hand_over(
                    target, peer, frame, math.inf, self._waits(wait_for_ready)
                )
            finally:
                peer.waiting_casts -= 1
        sent.counts["cast"] += 1
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _cast_nowait(
        self,
        target: str,
        method: str,
        context: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
    ) -> None:
        peer, frame = self._cast_frame(target, method, context, args, namespace, version)
        if not peer.up:
            # Only a connection that is up gets a message (see `_hand_over`).
            if peer.refused is not None:
                raise peer.refused
            if peer.unreachable is not None:
                peer.counts["unreachable"] += 1
                raise peer.unreachable
            raise trio.WouldBlock(f"the connection to {peer.target} is not up yet")
        if not peer.sock.send_nowait([frame]):
            raise trio.WouldBlock(f"the queue to {peer.target} is full")
        peer.counts["cast"] += 1

    def _cast_frame(
        self,
        target: str,
        method: str,
        context: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
    ) -> tuple[_Peer, bytes]:
        """The peer a cast goes to, and its frame."""
        peer = self._peer(target)
        frame = self._encode(
            Cast(
                self._ids.next(),
                peer.topic,
                method,
                _unstructure(args),
                self._merge(context),
                namespace,
                version,
            )
        )
        return peer, frame

    async def cast_many(
        self,
        target: str,
        method: str,
        calls: Iterable[Mapping[str, Any]],
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
    ) -> int:
        """Send one cast per item of `calls` (each a dict of arguments), in a batch.

        The same as casting each in turn (round-robin over the topic's hosts
        for a `"topic"` target, each host receiving its casts in order), but
        the casts for one host travel together, as few messages as the
        message size limit allows, with one schedule point for the whole batch.

        `wait_for_ready` is as for `cast`.

        Returns:
            The number of casts sent.

        Raises:
            HostUnreachable: A host could not be reached: its casts were not
                sent (those of the hosts before it in the batch were).
            RingError: The target is not in the ring.
            MessageTooLarge: One cast alone is over the message size limit.
        """
        return await self._cast_many(target, method, calls, context, None, None, wait_for_ready)

    async def _cast_many(
        self,
        target: str,
        method: str,
        calls: Iterable[Mapping[str, Any]],
        context: Mapping[str, Any] | None,
        namespace: str | None,
        version: str | None,
        wait_for_ready: bool | None,
    ) -> int:
        batches: dict[_Peer, list[dict[str, Any]]] = {}
        for args in calls:
            batches.setdefault(self._peer(target), []).append(_unstructure(args))
        values = self._merge(context)
        wait = self._waits(wait_for_ready)
        give_up = trio.current_time() + self._connect_timeout
        for chosen, batch in batches.items():
            left = len(batch)
            chosen.waiting_casts += left
            frames = self._casts_frames(chosen.topic, method, batch, values, namespace, version)
            try:
                for frame, count in frames:
                    await self._hand_over(chosen.target, chosen, frame, math.inf, wait, give_up)
                    chosen.counts["cast"] += count
                    chosen.waiting_casts -= count
                    left -= count
            finally:
                chosen.waiting_casts -= left
        await trio.lowlevel.checkpoint()
        return sum(map(len, batches.values()))

    def _casts_frames(
        self,
        topic: str,
        method: str,
        batch: list[dict[str, Any]],
        values: dict[str, Any],
        namespace: str | None,
        version: str | None,
    ) -> Iterator[tuple[bytes, int]]:
        """`CASTS` frames carrying `batch` in order, each within the size limit,
        with how many casts each carries."""
        chunks = [
            batch[i : i + _CASTS_PER_MESSAGE] for i in range(0, len(batch), _CASTS_PER_MESSAGE)
        ]
        while chunks:
            chunk = chunks.pop(0)
            first = self._ids.take(len(chunk))
            frame = encode(Casts(first, topic, method, chunk, values, namespace, version))
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
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> None:
        """Send a one-way request to every host of the topic `target`.

        One schedule point for all the hosts, as `cast_many`. `wait_for_ready`
        is as for `cast`.

        Raises:
            HostUnreachable: Hosts could not be reached (the error names them):
                the others got the message, these did not.
            RingError: The topic is not in the ring.
        """
        await self._fanout(target, method, context, args, None, None, wait_for_ready)

    async def _fanout(
        self,
        target: str,
        method: str,
        context: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
        wait_for_ready: bool | None,
    ) -> None:
        topic, only = self._members.resolve_target(target)
        hosts = self._members.hosts_of(topic) if only is None else (only,)
        # One frame for every host: an id need only be unique on its connection.
        frame = self._encode(
            Fanout(
                self._ids.next(),
                topic,
                method,
                _unstructure(args),
                self._merge(context),
                namespace,
                version,
            )
        )
        wait = self._waits(wait_for_ready)
        give_up = trio.current_time() + self._connect_timeout
        failed: list[HostUnreachable] = []
        for host in hosts:
            peer = self._peer_of(topic, host)
            peer.waiting_casts += 1
            try:
                await self._hand_over(peer.target, peer, frame, math.inf, wait, give_up)
            except HostUnreachable as exc:
                failed.append(exc)
                continue
            finally:
                peer.waiting_casts -= 1
            peer.counts["fanout"] += 1
        await trio.lowlevel.checkpoint()
        if len(failed) == 1:
            raise failed[0]
        if failed:
            first = failed[0]
            others = "; ".join(str(exc) for exc in failed[1:])
            raise HostUnreachable(topic, first.host, first.address, f"{first.reason}; {others}")

    async def _cast_to_pools(
        self,
        topic: str,
        method: str,
        args: Mapping[str, Any],
        context: Mapping[str, Any] | None,
    ) -> None:
        """Send one cast to one host of each pool of `topic` (see `Ring.pools_of`).

        `Notifier`'s delivery: within a pool, hosts take turns as for `cast`,
        hosts known to be down passed over.

        Raises:
            HostUnreachable: The host chosen in a pool could not be reached
                (unless the client waits for ready hosts); the pools before it
                got the notification.
            RingError: The topic is not in the ring.
        """
        pools = self.ring.pools_of(topic)
        live = set(self._members.hosts_of(topic))
        # One frame for every pool: their hosts are distinct connections.
        frame = self._encode(
            Cast(self._ids.next(), topic, method, _unstructure(args), self._merge(context))
        )
        for pool, hosts in pools.items():
            # With a registry, the members of the pool registered now, if any.
            hosts = tuple(h for h in hosts if h in live) or hosts
            host = self._round_robin.next((topic, pool), hosts, self._down.get(topic))
            peer = self._peer_of(topic, host)
            peer.waiting_casts += 1
            try:
                # To this host: another host of the topic may be of another pool.
                await self._hand_over(peer.target, peer, frame, math.inf, self._wait_for_ready)
            finally:
                peer.waiting_casts -= 1
            peer.counts["cast"] += 1

    def _merge(self, context: Mapping[str, Any] | None) -> dict[str, Any]:
        if not context:
            return self._context
        return {**self._context, **context}

    def _waits(self, wait_for_ready: bool | None) -> bool:
        return self._wait_for_ready if wait_for_ready is None else wait_for_ready

    def _peer(self, target: str) -> _Peer:
        topic, host = self._members.resolve_target(target)
        if host is None:
            hosts = self._members.hosts_of(topic)
            if topic not in self._whole_topics:
                # Connect to every host of a topic at once: round-robin learns
                # which are up, and skips the others.
                self._whole_topics.add(topic)
                for each in hosts:
                    if (topic, each) not in self._peers:
                        self._connect(topic, each)
            host = self._round_robin.next(topic, hosts, self._down.get(topic))
        return self._peer_of(topic, host)

    def _peer_of(self, topic: str, host: str) -> _Peer:
        peer = self._peers.get((topic, host)) or self._connect(topic, host)
        if peer.refused is not None:
            raise peer.refused
        return peer

    async def _hand_over(
        self,
        target: str,
        peer: _Peer,
        frame: bytes,
        deadline: float,
        wait_for_ready: bool,
        give_up: float | None = None,
    ) -> _Peer:
        """Hand `frame` to ZeroMQ on a connection that is up, to `peer` (chosen
        for `target`) or, for a `"topic"` whose chosen host is unreachable, to
        another host: at once if ZeroMQ takes it, else once the connection is
        up and has room. Returns the peer that took it.

        Only a connection that is up (its handshake done) gets a message:
        ZeroMQ would queue it for a connection not made yet, to run after its
        caller was told it failed. (`ZMQ_IMMEDIATE` would keep it too, but
        drops a reply not yet read when its connection closes.)

        Raises:
            HostUnreachable, _Expired, trio.ClosedResourceError: As `_ready`;
                the frame was not sent.
        """
        while True:
            if not peer.up:
                peer = await self._ready(target, peer, deadline, wait_for_ready, give_up)
            if peer.sock.send_nowait([frame]):
                return peer
            # The service's queue is full: wait for room while the connection is up.
            with trio.CancelScope(deadline=deadline) as scope:
                peer.blocked.add(scope)
                try:
                    await peer.sock.send([frame])
                    return peer
                finally:
                    peer.blocked.discard(scope)
            if trio.current_time() >= deadline:
                raise _Expired()

    async def _up_peer(
        self, target: str, method: str, seconds: float, wait_for_ready: bool
    ) -> tuple[_Peer, float]:
        """The peer a call or stream of `method` to `target` goes to, once its
        connection is up, and the seconds of `seconds` left then.

        Raises:
            CallTimeout: `seconds` passed first.
            HostUnreachable: As `_ready`.
        """
        peer = self._peer(target)
        if peer.up:
            return peer, seconds
        start = trio.current_time()
        try:
            peer = await self._ready(target, peer, start + seconds, wait_for_ready)
        except _Expired:
            peer.counts["timeout"] += 1
            raise peer.core.timed_out(method, seconds) from None
        return peer, seconds - (trio.current_time() - start)

    async def _ready(
        self,
        target: str,
        peer: _Peer,
        deadline: float,
        wait_for_ready: bool,
        give_up: float | None = None,
    ) -> _Peer:
        """`peer`, chosen for `target`, once its connection is up; for a `"topic"`
        whose chosen host turns out unreachable, the next host in turn that is not.

        Nothing was handed to ZeroMQ yet: whatever this raises, the message
        was not sent.

        Raises:
            HostUnreachable: Unless `wait_for_ready`: the last connect attempt
                to every host `target` may go to failed, or none came up by
                `give_up` (the connect timeout from now, unless given).
            _Expired: `deadline` passed first.
            trio.ClosedResourceError: The client was closed.
        """
        if give_up is None:
            give_up = trio.current_time() + self._connect_timeout
        limit = deadline if wait_for_ready else min(deadline, give_up)
        topic = peer.topic
        # Each peer's failures when this wait first looked at it: only an attempt
        # made since fails the wait, so a host back since its last failure is
        # not reported unreachable.
        seen: dict[_Peer, int] = {}
        while not peer.up:
            if self._closed:
                raise trio.ClosedResourceError("the client was closed")
            if peer.refused is not None:
                raise peer.refused
            failed = peer.failures > seen.setdefault(peer, peer.failures)
            if failed and topic == target:
                # Another host of the topic in turn, unless each one failed since.
                other = self._peer(target)
                if other.up or other.failures == seen.get(other, other.failures):
                    peer = other
                    continue
            if failed and not wait_for_ready:
                assert peer.unreachable is not None
                peer.counts["unreachable"] += 1
                raise peer.unreachable
            changed = self._changed
            with trio.move_on_at(limit):
                await changed.wait()
                continue
            if trio.current_time() >= deadline:
                raise _Expired()
            peer.counts["unreachable"] += 1
            raise HostUnreachable(
                topic, peer.host, peer.url, f"not connected within {self._connect_timeout:g} s"
            )
        return peer

    def _notify(self) -> None:
        """A connection's state changed: tasks waiting for one look again."""
        self._changed.set()
        self._changed = trio.Event()

    def _address_of(self, topic: str, host: str) -> tuple[str | None, int]:
        """Where `topic.host` listens: a registered member's address and port,
        else the `resolve` override (None: its name is looked up) and the ring's port."""
        member = self._members.member(topic, host)
        if member is not None:
            return member.address, member.port
        return self._resolve.get(host), self.ring.port(topic)

    def _connect(self, topic: str, host: str) -> _Peer:
        address, port = self._address_of(topic, host)
        sock = open_socket(zmq.DEALER)
        sock.zmq.setsockopt(zmq.ROUTING_ID, self._identity)
        set_heartbeat(sock, self._heartbeat)
        # Never below a REPLIES's size: it batches answers that each fit the limit.
        sock.zmq.setsockopt(zmq.MAXMSGSIZE, max(self._max_message_size, MAX_REPLIES_SIZE))
        # A connect that hangs (no answer at all) is a failed attempt after this.
        sock.zmq.setsockopt(zmq.CONNECT_TIMEOUT, max(1, round(self._connect_timeout * 1000)))
        if self._curve is not None:
            self._curve.apply(sock.zmq)
        down = self._down.setdefault(topic, set())
        url = tcp_url(host if address is None else address, port)
        peer = _Peer(topic, host, url, sock, down, self._nursery, self._notify, self._known)
        self._peers[(topic, host)] = peer
        monitor = open_monitor(sock, _PEER_EVENTS)
        self._nursery.start_soon(watch_events, sock, monitor, peer.on_event)
        if address is not None:
            peer.connect(address, port)
        else:
            self._nursery.start_soon(self._keep_resolved, peer, port)
        return peer

    async def _keep_resolved(self, peer: _Peer, port: int) -> None:
        """Look the peer's host name up (off the Trio thread) and connect; look it
        up again when a connect fails or the connection is lost, at most every
        `RERESOLVE_INTERVAL`, and move to its new address if it changed."""
        while True:
            looked_up = trio.current_time()
            peer.trouble = trio.Event()
            try:
                address = await lookup(peer.host, None)
            except RingError as exc:
                peer.cannot_reach("", str(exc))
            else:
                if not peer.up:
                    peer.connect(address, port)
                await peer.trouble.wait()
            await trio.sleep_until(looked_up + RERESOLVE_INTERVAL)

    def connected(self, target: str) -> bool:
        """Whether the connection to the service `"topic.host"` is up: its
        handshake done and not lost since. Connects first if it was not yet.

        Raises:
            RingError: The target is not a host of a topic of the ring.
            AuthenticationFailed: The service refused this client's handshake.
        """
        topic, host = self._service_of(target, "connected")
        return self._peer_of(topic, host).up

    def url(self, target: str) -> str:
        """The address the client connects to for the service `"topic.host"`.

        The address its host name was last looked up to, once it was (a
        `resolve` override at once); before that, the name itself
        (``tcp://node1.example.com:9501``). Never looks the name up.
        """
        topic, host = self._service_of(target, "url")
        peer = self._peers.get((topic, host))
        if peer is not None:
            return peer.url
        address, port = self._address_of(topic, host)
        return tcp_url(host if address is None else address, port)

    def _service_of(self, target: str, asker: str) -> tuple[str, str]:
        topic, host = self._members.resolve_target(target)
        if host is None:
            raise RingError(f"{self.ring.source}: {asker}({target!r}) needs 'topic.host'")
        return topic, host

    def stats(self) -> dict[str, dict[str, int]]:
        """The client's side, per `topic.host`: calls, casts, fanouts, streams sent;
        replies, errors, timeouts and lost calls and streams; unmatched replies
        (to calls that gave up); `unreachable`, calls and casts that failed with
        `HostUnreachable`; and `lost_at_close`, casts and fanouts still waiting
        to be handed to a connection when the client closed (see `open_client`)."""
        return {f"{p.topic}.{p.host}": dict(p.counts) for p in self._peers.values()}

    def _queue(self, peer: _Peer, id: int, frame: bytes) -> None:
        """Send call `id` with the others queued in this pass of the scheduler.

        A call made while others are in flight on its connection is queued:
        their replies wake their callers in one pass, and the calls these
        make then leave together at the start of the next, in one message
        (`CALLS`), which costs ZeroMQ's I/O thread one wake-up, not one per
        call. A lone call is sent at once.
        """
        if not peer.queued and not peer.stalled:
            self._due.append(peer)
            if self._flusher is not None:
                trio.lowlevel.reschedule(self._flusher)
                self._flusher = None
        peer.queued[id] = frame

    async def _flush(self) -> None:
        """Send the calls queued in each pass of the scheduler, at the start of the next."""

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._flusher = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if not self._due:
                self._flusher = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(abort)
            due, self._due = self._due, []
            for peer in due:
                try:
                    if peer.flush(self._max_message_size):
                        continue
                except trio.ClosedResourceError:
                    peer.queued.clear()
                    continue
                peer.stalled = True
                self._nursery.start_soon(peer.drain, self._max_message_size)

    def _give_up(self, peer: _Peer, id: int) -> None:
        if peer.queued.pop(id, None) is not None:
            peer.core.pending.pop(id, None)  # never sent: nothing to cancel
            return
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
        self._closed = True
        lost: dict[str, int] = {}
        for peer in self._peers.values():
            if peer.waiting_casts:
                lost[peer.target] = peer.waiting_casts
                peer.counts["lost_at_close"] += peer.waiting_casts
        if lost:
            logger.warning(
                "%d casts or fanouts were still waiting for a connection when the client "
                "closed, and were not sent: %s",
                sum(lost.values()),
                ", ".join(f"{target}: {n}" for target, n in lost.items()),
            )
        self._notify()  # the waiting tasks see the client closed
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
        addressed: tuple[str | None, str | None],
        wait_for_ready: bool,
    ) -> None:
        self._client = client
        self._addressed = addressed  # (namespace, version)
        self._wait_for_ready = wait_for_ready
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
        wait = self._wait_for_ready
        peer, left = await client._up_peer(self._target, self._method, self._seconds, wait)
        if self._wire_timeout is not None:
            self._wire_timeout = float(left)
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
                *self._addressed,
            )
        )
        flow = self._flow = _Flow(peer, id)
        peer.core.streams[id] = flow
        deadline = math.inf
        if self._wire_timeout is not None:
            deadline = client._deadlines.add(flow, self._wire_timeout, flow.expire)
        try:
            if not peer.sock.send_nowait([frame]):
                await client._hand_over(peer.target, peer, frame, deadline, wait)
            peer.counts["stream"] += 1
            await trio.lowlevel.checkpoint()
        except _Expired:
            await self.__aexit__(None, None, None)
            peer.counts["timeout"] += 1
            raise peer.core.timed_out(self._method, self._seconds) from None
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
    """A target prepared with `Client.prepare`: the same calls, fewer arguments.

    Its calls, casts and fanouts carry its namespace and version (see
    `Client.prepare`).

    Attributes:
        client: The client it sends through.
        target: `"topic"` or `"topic.host"`.
        timeout: Default timeout of its calls, or None for the client's.
        context: Default context of its messages.
        namespace: The namespace its requests name, or None.
        version: The version its requests need, or None.
        version_cap: The highest version it may send, or None.
    """

    def __init__(
        self,
        client: Client,
        target: str,
        timeout: float | None,
        context: dict[str, Any],
        wait_for_ready: bool | None = None,
        namespace: str | None = None,
        version: str | None = None,
        version_cap: str | None = None,
    ) -> None:
        check_namespace(namespace)
        for given in (version, version_cap):
            if given is not None:
                parse_version(given)
        self.client = client
        self.target = target
        self.timeout = timeout
        self.context = context
        self.wait_for_ready = wait_for_ready
        self.namespace = namespace
        self.version = version
        self.version_cap = version_cap
        if version is not None and not self.can_send_version(version):
            raise VersionCapError(
                f"{target}: version {version} is above the version cap {version_cap}"
            )

    def can_send_version(self, version: str | None = None) -> bool:
        """Whether this target may send `version` (its own when None), as oslo's
        `can_send_version`: always without a cap, else when the cap allows it
        (the same major version, a minor at most the cap's).

        Raises:
            ValueError: The version is not `"MAJOR.MINOR"`.
        """
        version = self.version if version is None else version
        if self.version_cap is None or version is None:
            return True
        return is_compatible(self.version_cap, version)

    def prepare(
        self,
        *,
        host: str | None = None,
        timeout: float | None = None,
        context: Mapping[str, Any] | None = None,
        version: str | None = None,
        namespace: str | None = None,
        version_cap: str | None = None,
        wait_for_ready: bool | None = None,
    ) -> BoundTarget:
        """A copy of this target with some defaults changed, as oslo's
        `prepare(server=host, version=...)` on a prepared client.

        Args:
            host: Send to this host of the topic (`"topic.host"`).
            timeout: Replaces the default timeout.
            context: Merged over the default context.
            version: Replaces the version (checked against the cap).
            namespace: Replaces the namespace.
            version_cap: Replaces the version cap.
            wait_for_ready: Replaces the default `wait_for_ready`.

        Each argument left None keeps this target's value.

        Raises:
            RingError: The host does not serve the topic.
            ValueError: A version is not `"MAJOR.MINOR"`, or the namespace is
                neither None nor a non-empty str.
            VersionCapError: The version is above the cap.
        """
        target = self.target
        if host is not None:
            topic, _ = self.client.ring.resolve_target(target)
            target = f"{topic}.{host}"
            self.client.ring.resolve_target(target)
        return BoundTarget(
            self.client,
            target,
            self.timeout if timeout is None else timeout,
            self._merge(context),
            self.wait_for_ready if wait_for_ready is None else wait_for_ready,
            self.namespace if namespace is None else namespace,
            self.version if version is None else version,
            self.version_cap if version_cap is None else version_cap,
        )

    def _waits(self, wait_for_ready: bool | None) -> bool | None:
        return self.wait_for_ready if wait_for_ready is None else wait_for_ready

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
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> Any:
        """`Client.call` on this target, with its defaults."""
        return await self.client._call(
            self.target,
            method,
            self.timeout if timeout is None else timeout,
            returns,
            self._merge(context),
            args,
            self.namespace,
            self.version,
            self._waits(wait_for_ready),
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
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """`Client.stream` on this target, with its defaults."""
        return self.client._stream(
            self.target,
            method,
            self.timeout if timeout is None else timeout,
            returns,
            self._merge(context),
            window,
            args,
            self.namespace,
            self.version,
            self._waits(wait_for_ready),
        )

    async def cast(
        self,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> None:
        """`Client.cast` on this target, with its defaults."""
        await self.client._cast(
            self.target,
            method,
            self._merge(context),
            args,
            self.namespace,
            self.version,
            self._waits(wait_for_ready),
        )

    def cast_nowait(
        self, method: str, /, *, context: Mapping[str, Any] | None = None, **args: Any
    ) -> None:
        """`Client.cast_nowait` on this target, with its defaults."""
        self.client._cast_nowait(
            self.target, method, self._merge(context), args, self.namespace, self.version
        )

    async def cast_many(
        self,
        method: str,
        calls: Iterable[Mapping[str, Any]],
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
    ) -> int:
        """`Client.cast_many` on this target, with its defaults."""
        return await self.client._cast_many(
            self.target,
            method,
            calls,
            self._merge(context),
            self.namespace,
            self.version,
            self._waits(wait_for_ready),
        )

    async def fanout(
        self,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> None:
        """`Client.fanout` on this target, with its defaults."""
        await self.client._fanout(
            self.target,
            method,
            self._merge(context),
            args,
            self.namespace,
            self.version,
            self._waits(wait_for_ready),
        )


@asynccontextmanager
async def open_client(
    ring: Ring | str | os.PathLike[str],
    *,
    resolve: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    name: str = "client",
    heartbeat: float = DEFAULT_HEARTBEAT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    curve: Curve | None = None,
    allowed_exceptions: Iterable[type[BaseException] | str] = (),
    registry: Registry | str | None = None,
    wait_for_ready: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[Client]:
    """Open a client of the ring's services, for the `async with` block.

    Connections are made lazily, one per (host, topic) the client talks to
    (for a `"topic"` target, to every host of the topic at once). Leaving the
    block closes them: what ZeroMQ holds for a connection that is up is sent
    within the next second; casts and fanouts still waiting for a connection
    are not sent, and are logged (a warning with their count) and counted
    under `lost_at_close` in `Client.stats`.

    Args:
        ring: The ring to route by, or the path of a ring file to follow: the
            client loads it, then looks at it once a second and routes by
            it again each time it changes (see
            `Client.ring`). A change that does not load is logged once, on
            the ``trizmq.client`` logger, and the ring loaded before stays in use.
        resolve: Host name to address overrides, e.g. `{"controller": "127.0.0.2"}`;
            other hosts' names are looked up in a worker thread, and again
            when their connection fails (see Deploying).
        context: Default context dict sent with every message.
        timeout: Default call timeout in seconds; `math.inf` waits forever. As
            everywhere a timeout is given, `None` means "not given": here,
            `DEFAULT_TIMEOUT`.
        name: Prefix of the caller name services see as `ctx.caller`.
        heartbeat: Seconds without a sign of life (ZMTP heartbeats) after which
            a connection is lost: calls in flight on it fail with `PeerLost`,
            and round-robin skips the host until it is back.
        max_message_size: Largest message, in bytes, sent or accepted (a
            service's batch of answers is accepted up to 64 KiB whatever
            this says).
        curve: The client's CURVE keys (`Curve.client`), for services that
            require them; a refused handshake raises `AuthenticationFailed`.
        allowed_exceptions: Exception classes, and module names
            (`"nova.exception"`), whose remote exceptions a call raises as
            themselves (oslo's `allowed_remote_exmods`): a handler's exception
            whose type is such a class, or a class of such a module, is
            raised as an instance of it, made from its message, with the
            attributes of a `RemoteError` (`type_name`, `message`,
            `remote_traceback`, `host`, `topic`); any other stays a
            `RemoteError`. A listed module is imported when a remote error
            first names one of its classes; nothing else is ever imported.

        registry: Route over the live members of this registry (a `Registry`
            or its URL) instead of the ring's hosts: a host joins and leaves
            round-robin as it registers and deregisters, and a registered host
            the ring does not list is a target too. Members are loaded before
            the block starts; if Redis cannot be reached the ring's hosts stand
            in until it can. The ring still names the topics.
        wait_for_ready: Default of the calls' and casts' `wait_for_ready`:
            wait for hosts that cannot be reached instead of failing with
            `HostUnreachable`.
        connect_timeout: Seconds a connection may take to come up before a
            call or cast that does not wait for its host fails with
            `HostUnreachable`; a refused connection fails it at once.

    Raises:
        RingError: The ring file given does not load.
        TypeError: An item of `allowed_exceptions` is neither an `Exception`
            subclass nor a module name.
    """
    # Checked before the block: a bad list opens no client.
    known = KnownExceptions(allowed_exceptions) if allowed_exceptions else None
    ring_file = None
    if not isinstance(ring, Ring):
        ring_file = RingFile(ring)
        ring = ring_file.load()
    if not connect_timeout > 0 or connect_timeout == math.inf:
        raise ValueError(f"connect_timeout {connect_timeout!r}: must be a positive number")
    client: Client | None = None
    live = as_registry(registry)
    try:
        async with open_nursery() as nursery:
            members = None
            if live is not None:
                members = LiveMembers(ring, live)
                await nursery.start(functools.partial(watch, live, members))
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
                known=known,
                members=members,
                wait_for_ready=wait_for_ready,
                connect_timeout=connect_timeout,
            )
            if ring_file is not None:
                # Each ring the file changes to becomes the client's.
                nursery.start_soon(ring_file.follow, functools.partial(setattr, client, "ring"))
            yield client
            nursery.cancel_scope.cancel()
    finally:
        # After the monitor tasks stopped, so none of them sees its socket vanish.
        if client is not None:
            client._close()


def _unstructure(args: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value if _is_plain(value) else unstructure(value) for name, value in args.items()}


def _is_plain(value: Any) -> bool:
    """Whether `value` is plain data already (a scalar, or a map of str to
    scalars): the converter would only copy it."""
    kind = type(value)
    return kind in _PLAIN or (
        kind is dict and all(type(k) is str and type(v) in _PLAIN for k, v in value.items())
    )
