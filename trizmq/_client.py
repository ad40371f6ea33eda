"""The client: cast, call and fanout straight to the services of a ring."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import outcome
import trio
import zmq

from ._curve import Curve
from ._deadlines import Deadlines
from ._errors import AuthenticationFailed, MessageTooLarge, PeerLost, RingError, VersionCapError
from ._known import KnownExceptions
from ._membership import LiveMembers, Members, RingMembers
from ._nursery import open_nursery
from ._protocol.caller import CallerCore, Ids
from ._registry import Registry, as_registry, watch
from ._ring import Ring, resolve_address
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
    DEFAULT_MAX_MESSAGE_SIZE,
    Call,
    Cast,
    Casts,
    Envelope,
    Fanout,
    encode,
    join_calls,
    unstructure,
)

T = TypeVar("T")

#: Seconds a call waits for its reply unless told otherwise (oslo.messaging's default).
DEFAULT_TIMEOUT = 60.0

#: Most casts one `CASTS` message of `Client.cast_many` carries.
_CASTS_PER_MESSAGE = 1000

#: Most calls one `CALLS` message carries.
_CALLS_PER_MESSAGE = 1000

#: Seconds replies may still arrive after ZeroMQ reported their connection closed.
_SETTLE = 0.05

#: Seconds between two looks at whether a connection left out of the ring is idle.
_RETIRE_POLL = 0.05

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
        known: KnownExceptions | None,
    ) -> None:
        self.topic = topic
        self.host = host
        self.url = url
        self.sock = sock
        self.core: CallerCore[_Pending] = CallerCore(topic, host, known)
        self.counts = self.core.counts
        self._down = down  # the hosts of this topic known to be down, shared by its peers
        self.refused: AuthenticationFailed | None = None  # set while handshakes fail
        self.handshaken = False
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
        for waiter, envelope in self.core.answers(batch):
            self.settle(waiter.id, waiter, outcome.Value(envelope))

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
        pending = list(self.core.pending)
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
            self.settle(waiter.id, waiter, outcome.Error(error))

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
        self._peers: dict[tuple[str, str], _Peer] = {}
        self._down: dict[str, set[str]] = {}
        self._ids = Ids()
        self._round_robin = RoundRobin()
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

        Raises:
            RingError: The target is not in the ring.
            ValueError: A version is not `"MAJOR.MINOR"`, or the namespace is
                neither None nor a non-empty str.
            VersionCapError: `version` is above `version_cap`.
        """
        self._members.resolve_target(target)
        return BoundTarget(
            self, target, timeout, dict(context or {}), namespace, version, version_cap
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
        return await self._call(target, method, timeout, returns, context, args, None, None)

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
    ) -> Any:
        seconds = self._timeout if timeout is None else timeout
        peer = self._peer(target)
        id = self._ids.next()
        wire_timeout = None if seconds == math.inf else float(seconds)
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
        await self._cast(target, method, context, args, None, None)

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

        Raises:
            trio.WouldBlock: The host's queue is at its high-water mark (the
                service does not keep up, or the connection is not up yet and
                the queue filled); the cast was not sent. `cast` waits for
                room instead.
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
    ) -> None:
        peer, frame = self._cast_frame(target, method, context, args, namespace, version)
        await peer.sock.send([frame])
        peer.counts["cast"] += 1

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
        if not peer.sock.send_nowait([frame]):
            raise trio.WouldBlock(f"the queue to {peer.topic}.{peer.host} is full")
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
        return await self._cast_many(target, method, calls, context, None, None)

    async def _cast_many(
        self,
        target: str,
        method: str,
        calls: Iterable[Mapping[str, Any]],
        context: Mapping[str, Any] | None,
        namespace: str | None,
        version: str | None,
    ) -> int:
        batches: dict[_Peer, list[dict[str, Any]]] = {}
        for args in calls:
            batches.setdefault(self._peer(target), []).append(_unstructure(args))
        values = self._merge(context)
        for peer, batch in batches.items():
            frames = self._casts_frames(peer.topic, method, batch, values, namespace, version)
            for frame, count in frames:
                await peer.sock.send_soon([frame])
                peer.counts["cast"] += count
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
        **args: Any,
    ) -> None:
        """Send a one-way request to every host of the topic `target`.

        One schedule point for all the hosts, as `cast_many`.

        Raises:
            RingError: The topic is not in the ring.
        """
        await self._fanout(target, method, context, args, None, None)

    async def _fanout(
        self,
        target: str,
        method: str,
        context: Mapping[str, Any] | None,
        args: Mapping[str, Any],
        namespace: str | None,
        version: str | None,
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
        for host in hosts:
            peer = self._peer_of(topic, host)
            await peer.sock.send_soon([frame])
            peer.counts["fanout"] += 1
        await trio.lowlevel.checkpoint()

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
            RingError: The topic is not in the ring.
        """
        pools = self.ring.pools_of(topic)
        live = self._members.hosts_of(topic)
        # One frame for every pool: their hosts are distinct connections.
        frame = self._encode(
            Cast(self._ids.next(), topic, method, _unstructure(args), self._merge(context))
        )
        for pool, hosts in pools.items():
            # With a registry, the members of the pool registered now, if any.
            hosts = tuple(h for h in hosts if h in live) or hosts
            host = self._round_robin.next((topic, pool), hosts, self._down.get(topic))
            peer = self._peer_of(topic, host)
            await peer.sock.send([frame])
            peer.counts["cast"] += 1

    def _merge(self, context: Mapping[str, Any] | None) -> dict[str, Any]:
        if not context:
            return self._context
        return {**self._context, **context}

    def _peer(self, target: str) -> _Peer:
        topic, host = self._members.resolve_target(target)
        if host is None:
            hosts = self._members.hosts_of(topic)
            host = self._round_robin.next(topic, hosts, self._down.get(topic))
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
        peer = self._peers[(topic, host)] = _Peer(
            topic, host, url, sock, down, self._nursery, self._known
        )
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
        topic, host = self._members.resolve_target(target)
        if host is None:
            raise RingError(f"{self.ring.source}: {asker}({target!r}) needs 'topic.host'")
        return topic, host

    def _url(self, topic: str, host: str) -> str:
        member = self._members.member(topic, host)
        if member is not None:
            return member.url
        return f"tcp://{resolve_address(host, self._resolve)}:{self.ring.port(topic)}"

    def stats(self) -> dict[str, dict[str, int]]:
        """The client's side, per `topic.host`: calls, casts, fanouts sent; replies,
        errors, timeouts and lost calls; unmatched replies (to calls that gave up)."""
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
        for peer in self._peers.values():
            peer.sock.close()


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
            self.namespace if namespace is None else namespace,
            self.version if version is None else version,
            self.version_cap if version_cap is None else version_cap,
        )

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
        return await self.client._call(
            self.target,
            method,
            self.timeout if timeout is None else timeout,
            returns,
            self._merge(context),
            args,
            self.namespace,
            self.version,
        )

    async def cast(
        self, method: str, /, *, context: Mapping[str, Any] | None = None, **args: Any
    ) -> None:
        """`Client.cast` on this target, with its defaults."""
        await self.client._cast(
            self.target, method, self._merge(context), args, self.namespace, self.version
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
    ) -> int:
        """`Client.cast_many` on this target, with its defaults."""
        return await self.client._cast_many(
            self.target, method, calls, self._merge(context), self.namespace, self.version
        )

    async def fanout(
        self, method: str, /, *, context: Mapping[str, Any] | None = None, **args: Any
    ) -> None:
        """`Client.fanout` on this target, with its defaults."""
        await self.client._fanout(
            self.target, method, self._merge(context), args, self.namespace, self.version
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
) -> AsyncIterator[Client]:
    """Open a client of the ring's services, for the `async with` block.

    Connections are made lazily, one per (host, topic) the client talks to.
    Leaving the block closes them.

    Args:
        ring: The ring to route by, or the path of a ring file to follow: the
            client loads it, then looks at it once a second and routes by
            it again each time it changes (see
            `Client.ring`). A change that does not load is logged once, on
            the ``trizmq.client`` logger, and the ring loaded before stays in use.
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
    return {name: unstructure(value) for name, value in args.items()}
