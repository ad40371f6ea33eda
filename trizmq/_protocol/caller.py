"""The caller side of one peer: the rules of docs/protocol.md for a caller, without I/O.

`CallerCore` keeps the calls waiting on one service port by id, and the
streams open on it, matches the answers its socket received to them,
forgets the calls its callers gave up on (saying what `CANCEL` to send),
fails the calls of a lost connection, and turns an answer into the value
or exception the caller gets. The client (`trizmq._client`) is the shell:
it sends, reads, and wakes the tasks waiting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final, Generic, TypeVar

from .._errors import (
    BadArguments,
    CallTimeout,
    NoSuchMethod,
    ProtocolError,
    RemoteError,
    ServiceShutdown,
    UnsupportedVersion,
)
from .._known import KnownExceptions
from .._wire import (
    Calls,
    Cancel,
    Credit,
    Envelope,
    Error,
    ErrorCode,
    Items,
    Message,
    Replies,
    Reply,
    converter,
    decode,
    describe,
    encode,
)

W = TypeVar("W")

_REMOTE_ERRORS: Final[dict[str, type[RemoteError]]] = {
    ErrorCode.NO_SUCH_METHOD: NoSuchMethod,
    ErrorCode.BAD_ARGUMENTS: BadArguments,
    ErrorCode.SHUTDOWN: ServiceShutdown,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
}


class Ids:
    """The message ids of one client: 1, 2, 3... (2**64 - 1 is never reached:
    a million a second would take half a million years)."""

    def __init__(self) -> None:
        self._next = 1

    def next(self) -> int:
        """A fresh id."""
        id = self._next
        self._next += 1
        return id

    def take(self, count: int) -> int:
        """`count` consecutive fresh ids (a CASTS message's); the first of them."""
        first = self._next
        self._next += count
        return first


class CallerCore(Generic[W]):
    """The calls waiting on one service port, each with its waiter `W`.

    Attributes:
        pending: The waiter of each call waiting for its answer, by id.
        streams: The waiter of each stream open, by id: it takes `ITEMS`
            until its `REPLY` or `ERROR`.
        streamed: What `answers` matched to streams, in order, for the shell
            to take (and clear): calls, the common case, pay nothing for it.
        counts: What went through this peer: calls, casts, fanouts, streams
            sent; replies, errors, timeouts, lost calls; answers that matched no
            call (`unmatched`: late, for a call given up) and frames that did
            not decode (`malformed`).
    """

    def __init__(self, topic: str, host: str, known: KnownExceptions | None = None) -> None:
        self.topic = topic
        self.host = host
        self.known = known
        self.pending: dict[int, W] = {}
        self.streams: dict[int, W] = {}
        self.streamed: list[tuple[W, Message]] = []
        self.counts: Counter[str] = Counter()

    def answers(self, batch: Iterable[list[bytes]]) -> list[tuple[W, Message]]:
        """Match what the socket received to the calls waiting (each answer of
        a `REPLIES` on its own); the others are counted, never raised: a late
        answer to a call given up is normal."""
        matched: list[tuple[W, Message]] = []
        pending = self.pending
        counts = self.counts
        for frames in batch:
            try:
                envelope = decode(frames[-1])
            except ProtocolError:
                counts["malformed"] += 1
                continue
            if isinstance(envelope, Calls):  # a request: it answers no call
                counts["unmatched"] += 1
                continue
            answers = envelope.answers if isinstance(envelope, Replies) else (envelope,)
            for answer in answers:
                waiter = pending.pop(answer.id, None)
                if waiter is not None:
                    matched.append((waiter, answer))
                elif (waiter := self.streams.get(answer.id)) is not None:
                    if type(answer) is not Items:
                        del self.streams[answer.id]  # its end
                    self.streamed.append((waiter, answer))
                else:
                    counts["unmatched"] += 1
        return matched

    def give_up(self, id: int) -> bytes:
        """Forget call `id` (its caller stopped waiting); the `CANCEL` to send,
        so that the service stops its handler too."""
        if self.pending.pop(id, None) is None:
            self.streams.pop(id, None)
        return encode(Cancel(id))

    def grant(self, id: int, n: int) -> bytes:
        """The `CREDIT` that lets stream `id` send `n` more items."""
        return encode(Credit(id, n))

    def lose(self, ids: Iterable[int]) -> list[W]:
        """The waiters of the calls and streams among `ids` still waiting,
        forgotten: their connection was lost, and their outcome is unknown."""
        lost = [
            w
            for id in ids
            if (w := self.pending.pop(id, None)) is not None
            or (w := self.streams.pop(id, None)) is not None
        ]
        self.counts["lost"] += len(lost)
        return lost

    def item(self, value: Any, method: str, returns: type[Any] | None) -> Any:
        """An item of a stream of `method`, structured into `returns` when given.

        Raises:
            TypeError: The item does not fit `returns`.
        """
        return value if returns is None else self._fit(value, returns, "an item", method)

    def _fit(self, value: Any, returns: type[Any], what: str, method: str) -> Any:
        try:
            return converter.structure(value, returns)
        except Exception as exc:
            raise TypeError(
                f"{self.topic}.{self.host}: {what} of {method!r} does not fit "
                f"returns={getattr(returns, '__name__', returns)}: {describe(exc)}"
            ) from None

    def outcome(
        self, envelope: Envelope, method: str, timeout: float | None, returns: type[Any] | None
    ) -> Any:
        """The value a call returns for the answer `envelope`, or raise its error.

        Raises:
            RemoteError: The service answered with an error (`NoSuchMethod`,
                `BadArguments`, `UnsupportedVersion`, `ServiceShutdown` for
                their codes).
            Exception: A handler's exception of a type `known` allows, as itself.
            CallTimeout: The service's deadline passed (code `deadline`).
            ProtocolError: The answer is neither `REPLY` nor `ERROR`.
            TypeError: The result does not fit `returns`.
        """
        if isinstance(envelope, Reply):
            self.counts["reply"] += 1
            if returns is None:
                return envelope.result
            return self._fit(envelope.result, returns, "the result", method)
        if isinstance(envelope, Error) and envelope.code == ErrorCode.DEADLINE:
            # The service's deadline passed before the caller's: a timeout all the same.
            self.counts["timeout"] += 1
            raise self.timed_out(method, timeout)
        self.counts["error"] += 1
        if not isinstance(envelope, Error):
            raise ProtocolError(f"{self.topic}.{self.host}: a call was answered with {envelope!r}")
        if envelope.code == ErrorCode.EXCEPTION and self.known is not None:
            allowed = self.known.build(envelope, self.host, self.topic)
            if allowed is not None:
                raise allowed
        cls = _REMOTE_ERRORS.get(envelope.code, RemoteError)
        raise cls(
            envelope.type_name,
            envelope.message,
            envelope.traceback,
            host=self.host,
            topic=self.topic,
        )

    def timed_out(self, method: str, timeout: float | None) -> CallTimeout:
        """The error of a call to `method` whose `timeout` passed."""
        return CallTimeout(self.topic, self.host, method, math.inf if timeout is None else timeout)
