"""The service side of one port: the rules of docs/protocol.md, without I/O.

The shell feeds `ServiceCore` the messages its socket received
(`receive`), asks it for the next request to run (`take`), and tells it how
each handler ended (`succeeded`, `failed`, `stopped`). The core answers
through callables the shell gives it: `send` a frame to a caller, `cancel` a
running handler, `wake` the reading loop when a held request may go in, and
tell the stats publisher a subscription came (`subscribed`). A stream's
generator runs in the shell too: the core takes each item it yields
(`yielded`), sends them in bursts (`flush`) within the caller's credit, and
tells the shell when credit comes for a stream waiting for it (`granted`).
The time comes from the shell's `clock`, read only where a rule needs it (a
call's deadline, a subscription's lease), so the core's behaviour depends
only on what it is given.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import attrs

from .._context import Context
from .._dispatch import ArgumentError, Endpoints, Method, Refused, error_fields
from .._errors import ProtocolError
from .._logs import ThrottledLog, clip
from .._stats import MAX_SUBSCRIBERS, ServiceStats, Subscriptions
from .._wire import (
    MAX_CREDIT,
    MAX_REPLIES_SIZE,
    REPLIES_OVERHEAD,
    Call,
    Calls,
    Cancel,
    Cast,
    Casts,
    Credit,
    Error,
    ErrorCode,
    Fanout,
    Items,
    Replies,
    Reply,
    StatsSubscribe,
    Stream,
    decode,
    encode,
    encode_replies,
    unstructure,
)

#: The largest message id; ids run from 1 (0 answers what carried no readable id).
MAX_ID: Final = 2**64 - 1

#: Items of one stream sent in one `ITEMS` message at most.
MAX_BURST: Final = 256

_KIND_NAMES: Final = {Call: "call", Cast: "cast", Fanout: "fanout", Stream: "stream"}

# The first bytes of a CANCEL ([1, 6, id]) and of a CREDIT ([1, 12, id, n]):
# they concern requests running already, so they are never held behind others.
_CONTROL_PREFIXES: Final = (b"\x93\x01\x06", b"\x94\x01\x0c")

# A request received and not yet taken: its frames (routing id first), or
# what is left of a CASTS or CALLS message (routing id, message, index of its
# next request).
Item: TypeAlias = list[bytes] | tuple[bytes, Casts | Calls, int]

#: What a frame sent carries: (kind, how many) pairs, the kinds those of
#: `ServiceStats.sent` ("reply", "error", "items").
Counts: TypeAlias = tuple[tuple[str, int], ...]
#: `send(identity, frame, counts)`.
Send: TypeAlias = Callable[[bytes, bytes, Counts], None]
#: The counts of a lone answer and of an `ITEMS` message, built once.
REPLY: Final[Counts] = (("reply", 1),)
ERROR: Final[Counts] = (("error", 1),)
ITEMS: Final[Counts] = (("items", 1),)


@functools.lru_cache(maxsize=4096)
def caller_name(identity: bytes) -> str:
    """A routing id as the caller name handlers see (`Context.caller`)."""
    return identity.decode("utf-8", "replace")


@attrs.frozen
class Limits:
    """What one port takes at most (see the protocol page's service limits)."""

    max_concurrency: int
    max_in_flight_per_caller: int
    max_held_bytes: int
    max_message_size: int
    send_tracebacks: bool = False


@attrs.define(eq=False)
class Job:
    """A request accepted for its handler: what the handler needs, and its state."""

    identity: bytes
    request: Call | Cast | Fanout | Stream
    method: Method
    args: dict[str, Any]
    ctx: Context
    started: float  # monotonic seconds, for the latency stats
    # The shell's hold on the handler (its cancel scope) once it waits; see `waiting`.
    handle: Any = None
    stop_reason: str | None = None  # "caller", "shutdown" or "protocol" once stopped so
    # A stream's: items it may still send, the items yielded and not sent yet
    # (None for other requests), and the error that ends it once known.
    credit: int = 0
    burst: list[Any] | None = None
    failure: Error | None = None


class ServiceCore:
    """The service side of one port: admission, refusals, deadlines, casts,
    cancellation, stats subscriptions and shutdown."""

    def __init__(
        self,
        topic: str,
        host: str,
        endpoints: Endpoints,
        stats: ServiceStats,
        limits: Limits,
        *,
        send: Send,
        cancel: Callable[[Job], None],
        wake: Callable[[], None],
        subscribed: Callable[[], None],
        clock: Callable[[], float],
        log: ThrottledLog | None = None,
        granted: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.topic = topic
        self.host = host
        self.name = f"{topic}.{host}"
        self.endpoints = endpoints
        self._default = endpoints.default
        self.stats = stats
        self.limits = limits
        self._send = send
        self._cancel = cancel
        self._wake = wake
        self._subscribed = subscribed
        self._granted = granted
        self._clock = clock
        self._per_caller = limits.max_in_flight_per_caller
        self._method_stats = stats.methods
        self.log = log or ThrottledLog(logging.getLogger("trizmq.service"))
        self.flights: dict[tuple[bytes, int], Job] = {}
        self.subscribers = Subscriptions()
        self.stopping = False
        self.parked = 0  # streams out of credit: they hold no place among the running
        self._busy: dict[bytes, int] = {}  # handlers in flight, per caller that has any
        # Requests received and not yet taken, in order.
        self.pending: collections.deque[Item] = collections.deque()
        # Requests of callers at their limit, in order, and their size in all.
        self._held: dict[bytes, collections.deque[Item]] = {}
        self.held_bytes = 0
        # Held requests let in again, in order: they go before the pending ones.
        self._admitted: collections.deque[Item] = collections.deque()
        # Answers held back since `gather`, per caller, in order: (frame, is an error).
        self._gathering = False
        self._gathered: dict[bytes, list[tuple[bytes, bool]]] = {}

    # -- what the shell asks ---------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a request waits to be taken."""
        return bool(self._admitted or self.pending)

    @property
    def full(self) -> bool:
        """Whether the service should stop reading: the handlers are at the
        concurrency limit, or the held requests at their budget."""
        return (
            len(self.flights) - self.parked >= self.limits.max_concurrency
            or self.held_bytes > self.limits.max_held_bytes
        )

    def receive(self, batch: list[list[bytes]]) -> None:
        """Messages the socket received, each its frames with the routing id first."""
        self.pending.extend(batch)

    def take(self) -> Job | None:
        """Take the next request: answer what is wrong with it, or return the
        job whose handler the shell must run now (None when there is none)."""
        if self._admitted:
            item = self._admitted.popleft()
        else:
            item = self.pending.popleft()
            if (self._held or self._busy.get(item[0], 0) >= self._per_caller) and self._hold(item):
                return None
        job = self._take(item)
        if job is None and self._held:
            self._let_in(item[0])  # a refusal made room too
        return job

    def gather(self) -> None:
        """Hold the answers back until `send_gathered`: the shell's pass over
        what it read, whose answers leave together."""
        self._gathering = True

    def send_gathered(self) -> None:
        """Send the answers held back since `gather`, each caller's in order;
        from now on answers leave as they come."""
        self._gathering = False
        if not self._gathered:
            return
        gathered, self._gathered = self._gathered, {}
        send = self._send
        for identity, answers in gathered.items():
            if len(answers) == 1:
                frame, error = answers[0]
                send(identity, frame, ERROR if error else REPLY)
            else:
                self._send_batches(identity, answers)

    def _send_batches(self, identity: bytes, answers: list[tuple[bytes, bool]]) -> None:
        """Send a caller's answers in `REPLIES` messages, in order, each within
        `MAX_REPLIES_SIZE` and the message size limit (an answer that fits
        with no other goes alone)."""
        room = min(self.limits.max_message_size, MAX_REPLIES_SIZE) - REPLIES_OVERHEAD
        frames: list[bytes] = []
        size = errors = 0
        for frame, error in answers:
            if frames and size + len(frame) > room:
                self._send_batch(identity, frames, errors)
                frames, size, errors = [], 0, 0
            frames.append(frame)
            size += len(frame)
            errors += error
        self._send_batch(identity, frames, errors)

    def _send_batch(self, identity: bytes, frames: list[bytes], errors: int) -> None:
        if len(frames) == 1:
            self._send(identity, frames[0], ERROR if errors else REPLY)
        else:
            counts = (("reply", len(frames) - errors), ("error", errors))
            self._send(identity, encode_replies(frames), counts)

    def rotate(self) -> None:
        """Put the caller at the head of the pending requests behind the others
        (a long CASTS must not starve them), keeping each caller's order."""
        pending = self.pending
        if not pending:
            return
        first = pending[0][0]
        if all(item[0] == first for item in pending):
            return
        theirs = [item for item in pending if item[0] == first]
        others = [item for item in pending if item[0] != first]
        pending.clear()
        pending.extend(others)
        pending.extend(theirs)

    # -- how handlers run and end --------------------------------------------------

    def waiting(self, job: Job, handle: Any) -> None:
        """The handler of `job` waits: the shell runs it on with `handle` (its
        cancel scope), and from now on it is in flight: it counts against
        its caller's limit and the service's, and can be cancelled.

        A handler that returns without waiting never is: nothing else
        happens while it runs, so nothing could see it, reuse its id, cancel
        it or want its place, and its bookkeeping would be pure cost. (A
        stream is in flight from its start: while its generator runs, what it
        sends can find its caller gone.)
        """
        job.handle = handle
        identity = job.identity
        self.flights[(identity, job.request.id)] = job  # a stream's is there already
        self._busy[identity] = self._busy.get(identity, 0) + 1
        if job.stop_reason is not None:  # a stream stopped before it could be told
            self._cancel(job)

    def succeeded(self, job: Job, result: Any) -> None:
        """The handler of `job` returned `result`."""
        reply: Reply | Error | None = None  # nothing answers a cast
        if type(job.request) is Call:
            try:
                reply = Reply(job.request.id, unstructure(result))
            except Exception as exc:
                reply = self._error(job, exc)
        elif job.burst is not None:  # a stream's generator ended, or an item failed
            self.flush(job)
            reply = job.failure or Reply(job.request.id, None)
        self._answer(job, reply)

    def failed(self, job: Job, exc: BaseException) -> None:
        """The handler of `job` raised `exc`."""
        self._answer(job, self._error(job, exc))

    def stopped(self, job: Job) -> None:
        """The handler of `job` was cancelled: by its deadline, its caller or shutdown."""
        id = job.request.id
        reason = job.stop_reason
        if reason == "shutdown":
            message = "the service stopped before the handler finished"
            reply = Error(id, ErrorCode.SHUTDOWN, "trizmq.ServiceShutdown", message, "")
        elif reason == "caller":
            self.stats.cancelled += 1
            reply = Error(id, ErrorCode.DEADLINE, "trizmq.Cancelled", "cancelled by the caller", "")
        elif reason == "protocol" and job.failure is not None:
            reply = job.failure
        else:
            self._method_stats[job.method.name].timeouts += 1
            message = "the call's deadline passed"
            reply = Error(id, ErrorCode.DEADLINE, "trizmq.CallTimeout", message, "")
        self._answer(job, reply)

    # -- streams ----------------------------------------------------------------

    def yielded(self, job: Job, item: Any) -> None:
        """The generator of stream `job` yielded `item`: it takes one credit,
        and goes with the next burst (sent once the credit or the burst is full).

        Raises:
            Exception: `item` cannot be unstructured (the handler's error).
        """
        burst = job.burst
        assert burst is not None
        burst.append(unstructure(item))
        job.credit -= 1
        if job.credit == 0:
            self.parked += 1
            self.flush(job)
        elif len(burst) >= MAX_BURST:
            self.flush(job)

    def flush(self, job: Job) -> None:
        """Send the items stream `job` yielded and has not sent yet, as few
        `ITEMS` as the message size limit allows. An item that cannot go (too
        large, or not encodable) becomes the stream's `failure`: the items
        before it are sent, the ones after it dropped."""
        burst = job.burst
        if burst and job.failure is None and job.stop_reason != "caller":
            job.burst = []
            self._send_items(job, burst)

    def _send_items(self, job: Job, items: list[Any]) -> bool:
        try:
            frame = encode(Items(job.request.id, items))
        except Exception as exc:
            frame, problem = b"", f"an item cannot be encoded: {clip(exc)}"
            type_name = "TypeError"
        else:
            limit = self.limits.max_message_size
            if len(frame) <= limit:
                self._send(job.identity, frame, ITEMS)
                self._method_stats[job.method.name].items += len(items)
                return True
            problem = f"an item is {len(frame)} bytes, over the limit of {limit}"
            type_name = "trizmq.MessageTooLarge"
        if len(items) > 1:
            half = len(items) // 2
            return self._send_items(job, items[:half]) and self._send_items(job, items[half:])
        job.failure = Error(job.request.id, ErrorCode.EXCEPTION, type_name, problem, "")
        self.stats.failed(job.request.method, type_name, problem, "")
        return False

    def probe(self, job: Job) -> bytes:
        """An empty `ITEMS` for stream `job`: sent to learn whether its caller is still there."""
        return encode(Items(job.request.id, []))

    def caller_gone(self, identity: bytes) -> None:
        """The caller `identity` is gone: stop its streams (nobody gives them credit)."""
        for job in self.flights.values():
            if job.identity == identity and job.burst is not None and _stoppable(job):
                job.stop_reason = "caller"
                self._cancel(job)

    def _credit(self, identity: bytes, credit: Credit) -> None:
        job = self.flights.get((identity, credit.id))
        if job is None or job.burst is None or not _stoppable(job):
            return  # not a stream running (any more): nothing to grant
        n = credit.n
        if not 0 < n <= MAX_CREDIT:
            self.stats.rejected["protocol"] += 1
            message = f"credit {n} is not between 1 and {MAX_CREDIT}"
            job.failure = _protocol_error(credit.id, message)
            job.stop_reason = "protocol"
            self._cancel(job)
            return
        was = job.credit
        job.credit = min(was + n, MAX_CREDIT)
        if was == 0:
            self.parked -= 1
            self._granted(job)

    # -- shutdown --------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking requests: refuse every one not taken yet, and mark the
        handlers in flight as stopped by shutdown (the shell gives them their
        grace period)."""
        self.stopping = True
        waiting = [*self._admitted]
        for held in self._held.values():
            waiting.extend(held)
        self._admitted.clear()
        self._held.clear()
        self.held_bytes = 0
        self.pending.extendleft(reversed(waiting))
        self.refuse_pending()
        for job in self.flights.values():
            job.stop_reason = job.stop_reason or "shutdown"

    def refuse_pending(self) -> None:
        """Take every pending request once stopping: each is refused, none runs."""
        while self.pending:
            self._take(self.pending.popleft())

    # -- the rules ---------------------------------------------------------------

    def _hold(self, item: Item) -> bool:
        """Keep a caller's request for later if it is at its limit, or has
        requests waiting already (its requests run in order)."""
        if type(item) is list and len(item) == 2 and item[1][:3] in _CONTROL_PREFIXES:
            return False
        identity = item[0]
        held = self._held.get(identity)
        if held is None:
            if self.stopping or self._busy.get(identity, 0) < self._per_caller:
                return False
            held = self._held[identity] = collections.deque()
        held.append(item)
        self.held_bytes += _size(item)
        return True

    def _let_in(self, identity: bytes) -> None:
        """Let a caller's next held request in, if it has room now."""
        held = self._held.get(identity)
        if held is None or self._busy.get(identity, 0) >= self._per_caller:
            return
        item = held.popleft()
        self.held_bytes -= _size(item)
        if not held:
            del self._held[identity]
        self._admitted.append(item)
        self._wake()

    def _take(self, item: Item) -> Job | None:
        if type(item) is tuple:
            return self._next_of(*item)
        stats = self.stats
        if len(item) != 2:
            stats.rejected["frames"] += 1
            if item:
                self._refuse_frame(item[0], f"a request is one frame, got {len(item) - 1}")
            return None
        identity, frame = item
        stats.bytes_in += len(frame)
        limit = self.limits.max_message_size
        if len(frame) > limit:
            stats.rejected["too_large"] += 1
            message = f"a {len(frame)}-byte request is over the limit of {limit}"
            self._reply(
                identity, Error(0, ErrorCode.PROTOCOL, "trizmq.MessageTooLarge", message, "")
            )
            return None
        try:
            envelope = decode(frame)
        except ProtocolError as exc:
            stats.rejected["malformed"] += 1
            self._refuse_frame(identity, str(exc))
            return None
        if type(envelope) is Call or type(envelope) is Cast or type(envelope) is Fanout:
            return self._start(identity, envelope)
        if isinstance(envelope, Casts | Calls):
            return self._next_of(identity, envelope, 0)
        if isinstance(envelope, Stream):
            return self._start(identity, envelope)
        if isinstance(envelope, Cancel):
            # An unknown or finished id, or a cast's, is nothing to cancel.
            job = self.flights.get((identity, envelope.id))
            if job is not None and job.stop_reason is None:
                job.stop_reason = "caller"
                self._cancel(job)
        elif isinstance(envelope, Credit):
            self._credit(identity, envelope)
        elif isinstance(envelope, StatsSubscribe):
            now = self._clock()
            if self.subscribers.add(identity, envelope.id, envelope.interval, envelope.lease, now):
                self._subscribed()
            else:
                stats.rejected["subscribers"] += 1
                message = f"too many stats subscribers ({MAX_SUBSCRIBERS})"
                self._reply(identity, _protocol_error(envelope.id, message))
        else:
            stats.rejected["unexpected_kind"] += 1
            message = f"a service does not accept {type(envelope).__name__} messages"
            id = 0 if isinstance(envelope, Replies) else envelope.id
            self._reply(identity, _protocol_error(id, message))
        return None

    def _next_of(self, identity: bytes, many: Casts | Calls, index: int) -> Job | None:
        """Start request `index` of a CASTS or CALLS message; the rest come
        next, one at a time."""
        if index >= len(many.batch):
            return None
        if index + 1 < len(many.batch):
            rest = (identity, many, index + 1)
            held = self._held.get(identity)
            # The rest goes before anything else of its caller's.
            if held is None or self.stopping:
                self.pending.appendleft(rest)
            else:
                held.appendleft(rest)
        if isinstance(many, Calls):
            return self._start(identity, many.batch[index])
        cast = Cast(
            many.id + index,
            many.topic,
            many.method,
            many.batch[index],
            many.context,
            many.namespace,
            many.version,
        )
        return self._start(identity, cast)

    def _start(self, identity: bytes, request: Call | Cast | Fanout | Stream) -> Job | None:
        kind = _KIND_NAMES[type(request)]
        self.stats.received[kind] += 1
        id = request.id
        if not 0 < id <= MAX_ID:
            message = f"id {id} is not between 1 and 2**64 - 1"
            self._refuse(identity, request, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message, 0)
            return None
        if (identity, id) in self.flights:
            message = f"id {id} is already in flight on this connection"
            self._refuse(identity, request, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message)
            return None
        if request.topic != self.topic:
            message = f"this port serves topic {self.topic!r}, not {clip(request.topic)!r}"
            self._refuse(identity, request, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message)
            return None
        if self.stopping:
            message = "the service is stopping"
            self._refuse(identity, request, ErrorCode.SHUTDOWN, "trizmq.ServiceShutdown", message)
            return None
        method = None
        if request.namespace is None and request.version is None:
            method = self._default.get(request.method)
        if method is None:
            try:
                method = self.endpoints.find(
                    self.topic, request.method, request.namespace, request.version
                )
            except Refused as refused:
                self._refuse(identity, request, refused.code, refused.type_name, refused.message)
                return None
        if method.is_stream is not (type(request) is Stream):
            self._refuse(identity, request, *_wrong_form(self.topic, method))
            return None
        if type(request) is Stream and not 0 < request.credit <= MAX_CREDIT:
            message = f"credit {request.credit} is not between 1 and {MAX_CREDIT}"
            self._refuse(identity, request, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message)
            return None
        try:
            args = method.bind(request.args)
        except ArgumentError as exc:
            code, name = ErrorCode.BAD_ARGUMENTS, "trizmq.BadArguments"
            self._refuse(identity, request, code, name, str(exc))
            return None
        deadline = math.inf
        if (type(request) is Call or type(request) is Stream) and request.timeout is not None:
            if request.timeout <= 0:
                # Already late: running it could only waste the service's time.
                message = "the call's deadline had passed when it arrived"
                self._refuse(identity, request, ErrorCode.DEADLINE, "trizmq.CallTimeout", message)
                return None
            deadline = self._clock() + request.timeout
        ctx = Context(
            id,
            kind,
            request.topic,
            request.method,
            self.host,
            caller_name(identity),
            deadline,
            request.context,
        )
        job = Job(identity, request, method, args, ctx, time.monotonic())
        if type(request) is Stream:
            # In flight at once, even while its generator runs without waiting:
            # credit may come for it, and a caller gone may stop it.
            job.credit = request.credit
            job.burst = []
            self.flights[(identity, id)] = job
        counts = self._method_stats[method.name]
        counts.received[kind] += 1
        counts.in_flight += 1
        return job

    def _error(self, job: Job, exc: BaseException) -> Error:
        code, type_name, message, trace = error_fields(exc, with_traceback=True)
        # The caller has the type and message: the log keeps the whole story.
        self.log.warning(
            ("failed", job.identity, job.request.method, type_name),
            "%s: %s %s from %s failed: %s",
            self.name,
            job.ctx.kind,
            job.request.method,
            job.ctx.caller,
            trace,
        )
        self.stats.failed(job.method.name, type_name, message, trace)
        if not self.limits.send_tracebacks:
            trace = ""
        return Error(job.request.id, code, type_name, message, trace)

    def _answer(self, job: Job, reply: Reply | Error | None) -> None:
        # The reply leaves before the bookkeeping: that is not the caller's to
        # wait for. A caller that gave up wants no answer.
        now = time.monotonic()
        if job.burst is not None:
            self.flush(job)  # the items before the end go first
            if job.credit == 0:
                self.parked -= 1
        if (
            reply is not None
            and (type(job.request) is Call or type(job.request) is Stream)
            and job.stop_reason != "caller"
        ):
            reply = self._reply(job.identity, reply)
        identity = job.identity
        if job.handle is not None or job.burst is not None:  # in flight: see `waiting`
            del self.flights[(identity, job.request.id)]
        if job.handle is not None:
            busy = self._busy[identity] - 1
            if busy:
                self._busy[identity] = busy
            else:
                del self._busy[identity]
            if self._held:
                self._let_in(identity)
        counts = self._method_stats[job.method.name]
        counts.in_flight -= 1
        counts.latency.add(now, now - job.started)
        if isinstance(reply, Error) and reply.code == ErrorCode.EXCEPTION:
            counts.errors[reply.type_name] += 1

    def _refuse(
        self,
        identity: bytes,
        request: Call | Cast | Fanout | Stream,
        code: str,
        type_name: str,
        message: str,
        id: int | None = None,
    ) -> None:
        """Answer a call with an error (under `id`, else its own) without running
        it; count and log a refused cast."""
        self.stats.rejected[code] += 1
        if isinstance(request, Call | Stream):
            reply_id = request.id if id is None else id
            self._reply(identity, Error(reply_id, code, type_name, message, ""))
        else:
            # Nobody to answer: the log says who and what, once per window.
            self.log.warning(
                ("refused", identity, code),
                "%s: a %s from %s refused: %s: %s",
                self.name,
                _KIND_NAMES[type(request)],
                clip(caller_name(identity)),
                type_name,
                clip(message),
            )

    def _refuse_frame(self, identity: bytes, message: str) -> None:
        self._reply(identity, _protocol_error(0, message))

    def _reply(self, identity: bytes, reply: Reply | Error) -> Reply | Error:
        """Send `reply`, or the error that replaces it when it cannot go; return
        what was sent."""
        try:
            frame = encode(reply)
        except Exception as exc:
            # A result msgpack cannot carry is the handler's error, not the service's.
            message = f"the result cannot be encoded: {clip(exc)}"
            reply = Error(reply.id, ErrorCode.EXCEPTION, "TypeError", message, "")
            frame = encode(reply)
        limit = self.limits.max_message_size
        if len(frame) > limit:
            # Sent, it would cut the caller's connection and every call on it.
            message = f"the result is {len(frame)} bytes, over the limit of {limit}"
            reply = Error(reply.id, ErrorCode.EXCEPTION, "trizmq.MessageTooLarge", message, "")
            frame = encode(reply)
        error = type(reply) is Error
        if self._gathering:
            gathered = self._gathered.get(identity)
            if gathered is None:
                self._gathered[identity] = [(frame, error)]
            else:
                gathered.append((frame, error))
        else:
            self._send(identity, frame, ERROR if error else REPLY)
        return reply


def _stoppable(job: Job) -> bool:
    """Whether `job` runs on: not stopped, or only in the grace period of a shutdown."""
    return job.stop_reason is None or job.stop_reason == "shutdown"


def _size(item: Item) -> int:
    return len(item[1]) if isinstance(item, list) and len(item) == 2 else 0


def _wrong_form(topic: str, method: Method) -> tuple[str, str, str]:
    """The refusal of a request in the wrong form for its method: a `STREAM`
    of a plain method, or a call, cast or fanout of a stream's."""
    name = f"{topic}.{method.name}"
    if method.is_stream:
        message = f"{name} is a stream: open it with STREAM (Client.stream)"
    else:
        message = f"{name} is not a stream: send it a CALL (Client.call)"
    return ErrorCode.NO_SUCH_METHOD, "trizmq.NoSuchMethod", message


def _protocol_error(id: int, message: str) -> Error:
    return Error(id, ErrorCode.PROTOCOL, "trizmq.ProtocolError", message, "")
