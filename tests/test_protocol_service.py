"""The service side of the protocol, driven as a state machine without sockets.

Hypothesis sends `ServiceCore` random interleavings of what callers can send
(calls, CALLS, casts, CASTS, fanouts, streams and their credit, cancels, stats
subscriptions, garbage; good,
reused, zero, negative and huge ids; wrong topics; timeouts from negative to
huge; namespaces and versions, absent, served, refused or malformed), takes
requests the way the service runner does, ends handlers in any order and any
way, moves time on and stops the service at any point. After
every step and at the end it checks the rules of docs/protocol.md:

- the core never raises;
- every call and every stream gets exactly one answer (a stream's `REPLY`
  or `ERROR`), unless its caller cancelled it while it ran; nothing answers
  a call that was never sent;
- a stream sends its items in order, only while it runs, and never more
  than its caller's credit (its generator is pulled only while it has
  credit, as the runner does);
- answers gathered in one pass leave as one message per caller, a REPLIES
  only for two or more, and no message is over the size limit;
- no caller has more handlers running than its limit, nor the service more
  than its own, nor more stats subscribers than the cap.

300 examples run by default; set `TRIZMQ_STATE_EXAMPLES` for more.
"""

from __future__ import annotations

import ast
import math
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import trizmq
from trizmq._dispatch import Endpoints
from trizmq._protocol.service import ITEMS, Counts, Job, Limits, ServiceCore
from trizmq._stats import MAX_SUBSCRIBERS, ServiceStats
from trizmq._wire import (
    MAX_CREDIT,
    MAX_REPLIES_SIZE,
    Call,
    ErrorCode,
    Items,
    Kind,
    Replies,
    Reply,
    Stream,
    decode,
    encode,
)

EXAMPLES = int(os.environ.get("TRIZMQ_STATE_EXAMPLES", "300"))
TOPIC = "compute"
CALLERS = (b"alice", b"bob", b"carol")
LIMITS = Limits(
    max_concurrency=6,
    max_in_flight_per_caller=3,
    max_held_bytes=2_000,
    max_message_size=4_096,
)

callers = st.sampled_from(CALLERS)
# Mostly what an honest caller sends (ids 1 to 3, reused often); in one
# request of four, every field may be what nobody should send.
honest = st.sampled_from([True, True, True, False])
ids = st.sampled_from([1, 2, 3, 2**64 - 1, 0, -1, -(2**63)])
methods = st.sampled_from(["work", "nop", "missing"])
topics = st.sampled_from([TOPIC, "network"])
arguments = st.sampled_from([{"n": 1}, {"n": "one"}, {}, {"m": 1}])
timeouts = st.sampled_from([None, 30.0, 1.0, 0.0, -5.0, 1e300, math.nan, math.inf])
# The optional (namespace, version) of a request: mostly absent; else the
# endpoint's (1.0 of the default namespace), a newer minor or major, an
# unknown namespace, or a malformed version.
addressings = st.sampled_from(
    [
        (),
        (),
        (None, None),
        (None, "1.0"),
        (None, "1.1"),
        (None, "2.0"),
        ("other", None),
        (None, "x"),
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, str, str, dict[str, Any], float | None]:
    """(id, method, topic, args, timeout) of a request."""
    if draw(honest):
        return draw(st.integers(1, 3)), "work", TOPIC, {"n": 1}, draw(st.sampled_from([None, 30.0]))
    return draw(ids), draw(methods), draw(topics), draw(arguments), draw(timeouts)


class Endpoint:
    async def work(self, ctx: trizmq.Context, n: int) -> int:
        return n

    async def nop(self, ctx: trizmq.Context) -> None:
        return None

    async def numbers(self, ctx: trizmq.Context, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


def pack(*fields: Any) -> bytes:
    frame: bytes = msgpack.packb([1, *fields], use_bin_type=True)
    return frame


class ServiceSide(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.queue: list[list[bytes]] = []  # what ZeroMQ holds, not read yet
        self.running: list[Job] = []
        self.answers: Counter[tuple[bytes, int]] = Counter()
        self.calls: Counter[tuple[bytes, int]] = Counter()
        self.unanswerable = 0  # frames answered under id 0
        self.silenced: Counter[tuple[bytes, int]] = Counter()  # calls cancelled by their callers
        self.produced: dict[Job, int] = {}  # items each stream's generator yielded
        self.next_item: dict[tuple[bytes, int], int] = {}  # the item each stream sends next
        # Valid credit each caller sent for an id, ever: more than any one stream got.
        self.granted: Counter[tuple[bytes, int]] = Counter()
        self.core = ServiceCore(
            TOPIC,
            "node",
            Endpoints([Endpoint()]),
            ServiceStats("node", TOPIC, 9601),
            LIMITS,
            send=self.sent,
            cancel=lambda job: None,
            wake=lambda: None,
            subscribed=lambda: None,
            clock=lambda: self.now,
        )

    def sent(self, identity: bytes, frame: bytes, counts: Counts) -> None:
        assert len(frame) <= LIMITS.max_message_size
        envelope = decode(frame)
        if isinstance(envelope, Items):
            # Items of a stream running, in order, each once, within its credit.
            assert counts == ITEMS and envelope.items
            key = (identity, envelope.id)
            job = self.core.flights[key]
            assert isinstance(job.request, Stream)
            first = self.next_item[key]
            assert envelope.items == list(range(first, first + len(envelope.items)))
            self.next_item[key] += len(envelope.items)
            assert self.next_item[key] <= job.request.credit + self.granted[key]
            return
        answers = envelope.answers if isinstance(envelope, Replies) else [envelope]
        assert len(answers) >= 2 or not isinstance(envelope, Replies)
        kinds = Counter("reply" if isinstance(a, Reply) else "error" for a in answers)
        assert {kind: n for kind, n in counts if n} == dict(kinds)
        for answer in answers:
            if isinstance(answer, Reply):  # a result, for a call that was sent
                assert (identity, answer.id) in self.calls
            if answer.id == 0:
                self.unanswerable += 1
            else:
                self.answers[(identity, answer.id)] += 1

    # -- what callers send ---------------------------------------------------------

    @rule(caller=callers, request=requests(), addressing=addressings)
    def call(
        self,
        caller: bytes,
        request: tuple[int, str, str, dict[str, Any], float | None],
        addressing: tuple[str | None, ...],
    ) -> None:
        id, method, topic, args, timeout = request
        frame = pack(Kind.CALL, id, topic, method, args, {}, timeout, *addressing)
        self.queue.append([caller, frame])
        # A non-finite timeout makes the envelope invalid: answered under id 0.
        if id > 0 and (timeout is None or math.isfinite(timeout)):
            self.calls[(caller, id)] += 1

    @rule(
        caller=callers,
        request=requests(),
        credit=st.sampled_from([1, 2, 5, 0, -1, MAX_CREDIT, MAX_CREDIT + 1]),
        method=st.sampled_from(["numbers", "numbers", "work"]),
    )
    def stream(
        self,
        caller: bytes,
        request: tuple[int, str, str, dict[str, Any], float | None],
        credit: int,
        method: str,
    ) -> None:
        id, _, topic, _, timeout = request
        frame = pack(Kind.STREAM, id, topic, method, {"n": 1}, {}, timeout, credit)
        self.queue.append([caller, frame])
        if id > 0 and (timeout is None or math.isfinite(timeout)):
            self.calls[(caller, id)] += 1

    @rule(
        caller=callers,
        id=st.integers(1, 3),
        n=st.sampled_from([1, 3, 100, 0, -2, MAX_CREDIT, MAX_CREDIT + 1]),
    )
    def credit(self, caller: bytes, id: int, n: int) -> None:
        self.queue.append([caller, pack(Kind.CREDIT, id, n)])
        if 0 < n <= MAX_CREDIT:
            self.granted[(caller, id)] += n

    @rule(
        caller=callers,
        request=requests(),
        kind=st.sampled_from([Kind.CAST, Kind.FANOUT]),
        addressing=addressings,
    )
    def cast(
        self,
        caller: bytes,
        request: tuple[int, str, str, dict[str, Any], float | None],
        kind: Kind,
        addressing: tuple[str | None, ...],
    ) -> None:
        id, method, topic, args, _ = request
        self.queue.append([caller, pack(kind, id, topic, method, args, {}, *addressing)])

    @rule(
        caller=callers,
        id=st.integers(1, 3) | ids,
        method=st.just("work") | methods,
        batch=st.lists(st.just({"n": 1}) | arguments, max_size=8),
        addressing=addressings,
    )
    def casts(
        self,
        caller: bytes,
        id: int,
        method: str,
        batch: list[dict[str, Any]],
        addressing: tuple[str | None, ...],
    ) -> None:
        self.queue.append([caller, pack(Kind.CASTS, id, TOPIC, method, batch, {}, *addressing)])

    @rule(
        caller=callers,
        batch=st.lists(st.tuples(requests(), addressings), max_size=5),
    )
    def calls(
        self,
        caller: bytes,
        batch: list[tuple[tuple[int, str, str, dict[str, Any], float | None], tuple[Any, ...]]],
    ) -> None:
        fields = [
            [id, topic, method, args, {}, timeout, *addressing]
            for (id, method, topic, args, timeout), addressing in batch
        ]
        self.queue.append([caller, pack(Kind.CALLS, fields)])
        # One non-finite timeout makes the whole message invalid: answered under id 0.
        if all(t is None or math.isfinite(t) for (_, _, _, _, t), _ in batch):
            for (id, *_), _ in batch:
                if id > 0:
                    self.calls[(caller, id)] += 1

    @rule(caller=callers, id=st.integers(1, 3) | ids)
    def cancel(self, caller: bytes, id: int) -> None:
        self.queue.append([caller, pack(Kind.CANCEL, id)])

    @rule(
        caller=callers,
        id=ids,
        interval=st.sampled_from([0.0, 0.1, 1.0, math.nan, math.inf]),
        lease=st.sampled_from([0.0, 5.0, 1e9, math.nan, -1.0]),
    )
    def subscribe(self, caller: bytes, id: int, interval: float, lease: float) -> None:
        self.queue.append([caller, pack(Kind.STATS_SUBSCRIBE, id, interval, lease)])

    @rule(caller=callers, frames=st.lists(st.binary(max_size=40), min_size=1, max_size=3))
    def garbage(self, caller: bytes, frames: list[bytes]) -> None:
        self.queue.append([caller, *frames])

    @rule(caller=callers, size=st.sampled_from([4_097, 10_000]))
    def oversize(self, caller: bytes, size: int) -> None:
        self.queue.append([caller, b"\x00" * size])

    # -- what the service runner does ----------------------------------------------

    @rule(count=st.integers(1, 12), inline=st.booleans())
    def pump(self, count: int, inline: bool) -> None:
        """Take up to `count` requests as the runner does, reading when it has
        none; what they answer leaves together at the end. With `inline`,
        their handlers return without waiting (the runner runs them in its
        own task), else each waits (and gets a task)."""
        core = self.core
        core.gather()
        try:
            self.take(count, inline)
        finally:
            core.send_gathered()

    def take(self, count: int, inline: bool) -> None:
        core = self.core
        for _ in range(count):
            if not core.ready:
                if core.full or not self.queue:
                    return  # the runner waits for room, or for the socket
                core.receive(self.queue)
                self.queue = []
            if len(core.flights) >= LIMITS.max_concurrency and not core.stopping:
                return  # the runner waits for room
            if len(core.flights) - core.parked >= LIMITS.max_concurrency and not core.stopping:
                return  # the runner waits for room
            job = core.take()
            if job is not None:
                if inline:
                    self.end(job, "result")
                else:  # its handler waits: the runner gives it a task
                    core.waiting(job, object())
                    self.running.append(job)
                    if isinstance(job.request, Stream):
                        self.produced[job] = 0
                        self.next_item[(job.identity, job.request.id)] = 0

    def streams(self) -> list[Job]:
        return [job for job in self.running if isinstance(job.request, Stream)]

    @precondition(lambda self: self.streams())
    @rule(which=st.integers(min_value=0), count=st.integers(1, 300), large=st.booleans())
    def produce(self, which: int, count: int, large: bool) -> None:
        """A stream's generator yields, as the runner pulls it: only while it has
        credit, and not after an item failed; `large` ends with one too large."""
        streams = self.streams()
        job = streams[which % len(streams)]
        for _ in range(count):
            if job.credit == 0 or job.failure is not None:
                return
            self.core.yielded(job, self.produced[job])
            self.produced[job] += 1
        if large and job.credit > 0 and job.failure is None:
            self.core.yielded(job, b"x" * LIMITS.max_message_size)

    @precondition(lambda self: self.streams())
    @rule(which=st.integers(min_value=0))
    def generator_waits(self, which: int) -> None:
        streams = self.streams()
        self.core.flush(streams[which % len(streams)])

    @precondition(lambda self: self.running)
    @rule(which=st.integers(min_value=0), how=st.sampled_from(["result", "raise", "stopped"]))
    def finish(self, which: int, how: str) -> None:
        job = self.running.pop(which % len(self.running))
        self.end(job, how)

    def end(self, job: Job, how: str) -> None:
        if job.stop_reason == "caller" and isinstance(job.request, Call | Stream):
            self.silenced[(job.identity, job.request.id)] += 1
        if how == "result":
            self.core.succeeded(job, job.args.get("n"))
        elif how == "raise":
            self.core.failed(job, ValueError("boom"))
        else:
            self.core.stopped(job)

    @rule(seconds=st.sampled_from([0.05, 1.0, 100.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.core.subscribers.due(self.now)

    @rule()
    def stop(self) -> None:
        self.core.stop()

    # -- the rules -------------------------------------------------------------------

    @invariant()
    def within_limits(self) -> None:
        flights = self.core.flights.values()
        busy = Counter(job.identity for job in flights)
        assert all(n <= LIMITS.max_in_flight_per_caller for n in busy.values()), busy
        # Streams out of credit hold no place: the others are within the limit.
        assert sum(job.burst is None for job in flights) <= LIMITS.max_concurrency
        assert len(self.core.subscribers._subs) <= MAX_SUBSCRIBERS
        assert self.core.held_bytes >= 0
        assert set(self.core.flights.values()) == set(self.running)

    @invariant()
    def streams_keep_within_their_credit(self) -> None:
        streams = [job for job in self.core.flights.values() if job.burst is not None]
        assert all(0 <= job.credit <= MAX_CREDIT for job in streams)
        assert self.core.parked == sum(job.credit == 0 for job in streams)

    @invariant()
    def no_call_answered_twice(self) -> None:
        for key, count in self.answers.items():
            assert count <= self.calls[key], (key, count, self.calls[key])

    def teardown(self) -> None:
        if not hasattr(self, "core"):
            return
        # The end of the service: everything read, the rest refused, the
        # handlers stopped by the grace period.
        self.core.stop()
        self.core.receive(self.queue)
        self.core.refuse_pending()
        while self.running:
            self.end(self.running.pop(), "stopped")
        assert not self.core.flights
        for key, count in self.calls.items():
            assert self.answers[key] == count - self.silenced[key], (
                key,
                self.answers[key],
                count,
                self.silenced[key],
            )


ServiceSide.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None
)
test_the_service_side_keeps_every_rule_whatever_callers_send = ServiceSide.TestCase


def test_the_protocol_core_imports_neither_trio_nor_zmq() -> None:
    package = Path(trizmq.__file__).parent / "_protocol"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"trio", "zmq"}, f"{path.name} imports {name}"


def test_a_call_already_past_its_deadline_is_answered_without_running() -> None:
    answers: list[Any] = []
    core = ServiceCore(
        TOPIC,
        "node",
        Endpoints([Endpoint()]),
        ServiceStats("node", TOPIC, 9601),
        LIMITS,
        send=lambda identity, frame, *counts: answers.append(decode(frame)),
        cancel=lambda job: None,
        wake=lambda: None,
        subscribed=lambda: None,
        clock=lambda: 0.0,
    )
    core.receive([[b"alice", pack(Kind.CALL, 7, TOPIC, "work", {"n": 1}, {}, 0.0)]])
    assert core.take() is None
    [error] = answers
    assert (error.id, error.code, error.type_name) == (7, ErrorCode.DEADLINE, "trizmq.CallTimeout")


def answering_core(limits: Limits = LIMITS) -> tuple[ServiceCore, list[tuple[bytes, Any]]]:
    """A core whose handlers the test ends, and the (caller, envelope) it sends."""
    sent: list[tuple[bytes, Any]] = []
    core = ServiceCore(
        TOPIC,
        "node",
        Endpoints([Endpoint()]),
        ServiceStats("node", TOPIC, 9601),
        limits,
        send=lambda identity, frame, *counts: sent.append((identity, decode(frame))),
        cancel=lambda job: None,
        wake=lambda: None,
        subscribed=lambda: None,
        clock=lambda: 0.0,
    )
    return core, sent


def take_and_answer(core: ServiceCore, requests: list[list[bytes]], padding: str = "") -> None:
    """Read `requests` and run each handler inline, in one pass: it returns
    its `n`, or `padding` if any."""
    core.receive(requests)
    while core.ready:
        job = core.take()
        if job is not None:
            core.succeeded(job, padding or job.args["n"])


def call(caller: bytes, id: int, n: Any) -> list[bytes]:
    return [caller, pack(Kind.CALL, id, TOPIC, "work", {"n": n}, {}, None)]


def test_answers_of_one_pass_leave_as_one_replies_per_caller_in_order() -> None:
    core, sent = answering_core()
    core.gather()
    requests = [call(b"alice", 1, 10), call(b"bob", 1, 20), call(b"alice", 2, 11)]
    take_and_answer(core, [*requests, call(b"alice", 3, "ten")])
    assert sent == []  # held back until the pass ends
    core.send_gathered()
    [(first, replies), (second, lone)] = sent
    assert first == b"alice"
    assert isinstance(replies, Replies)
    assert replies.answers[:2] == [Reply(1, 10), Reply(2, 11)]
    assert (replies.answers[2].id, replies.answers[2].code) == (3, ErrorCode.BAD_ARGUMENTS)
    assert (second, lone) == (b"bob", Reply(1, 20))


def test_an_answer_outside_a_pass_leaves_at_once_alone() -> None:
    core, sent = answering_core()
    take_and_answer(core, [call(b"alice", 1, 10), call(b"alice", 2, 11)])
    assert sent == [(b"alice", Reply(1, 10)), (b"alice", Reply(2, 11))]


def test_a_lone_answer_of_a_pass_travels_as_a_reply() -> None:
    core, sent = answering_core()
    core.gather()
    take_and_answer(core, [call(b"alice", 1, 10)])
    core.send_gathered()
    assert sent == [(b"alice", Reply(1, 10))]


def test_answers_over_the_size_limit_travel_in_several_replies_each_within_it() -> None:
    limits = attrs.evolve(LIMITS, max_message_size=1_000)
    core, sent = answering_core(limits)
    core.gather()
    # Ten answers of some 300 bytes: three fit in a message, the tenth goes alone.
    take_and_answer(core, [call(b"alice", id, id) for id in range(1, 11)], padding="x" * 300)
    core.send_gathered()
    frames = [encode(envelope) for _, envelope in sent]
    assert all(len(frame) <= 1_000 for frame in frames)
    assert [len(e.answers) if isinstance(e, Replies) else 1 for _, e in sent] == [3, 3, 3, 1]
    answered = [a for _, e in sent for a in (e.answers if isinstance(e, Replies) else [e])]
    assert answered == [Reply(id, "x" * 300) for id in range(1, 11)]


def test_a_replies_message_stays_within_64_kib_whatever_the_service_limit() -> None:
    core, sent = answering_core(attrs.evolve(LIMITS, max_message_size=16 * 1024 * 1024))
    core.gather()
    take_and_answer(core, [call(b"alice", id, id) for id in range(1, 401)], padding="x" * 300)
    core.send_gathered()
    assert [len(encode(envelope)) <= MAX_REPLIES_SIZE for _, envelope in sent] == [True, True]
    answered = [a for _, e in sent for a in e.answers]
    assert [a.id for a in answered] == list(range(1, 401))


def test_the_calls_of_a_calls_message_run_and_are_answered_each_under_its_own_id() -> None:
    core, sent = answering_core()
    batch = [
        [4, TOPIC, "work", {"n": 40}, {}, 30.0],
        [5, TOPIC, "missing", {}, {}, None],
        [6, TOPIC, "work", {"n": 60}, {}, None, None, "1.0"],
    ]
    core.receive([[b"alice", pack(Kind.CALLS, batch)]])
    jobs = [core.take() for _ in range(3)]
    assert [job.request.id if job else None for job in jobs] == [4, None, 6]
    assert jobs[0] is not None and jobs[0].ctx.deadline == 30.0
    for job in jobs:
        if job is not None:
            core.succeeded(job, job.args["n"])
    answers = [envelope for _, envelope in sent]
    assert [(a.id, type(a).__name__) for a in answers] == [(5, "Error"), (4, "Reply"), (6, "Reply")]
    assert [a.result for a in answers[1:]] == [40, 60]
    assert core.stats.received["call"] == 3


def test_a_calls_message_with_one_call_that_does_not_decode_is_refused_whole() -> None:
    core, sent = answering_core()
    batch = [[4, TOPIC, "work", {"n": 1}, {}, None], [5, TOPIC, "work", {"n": 1}, {}]]
    core.receive([[b"alice", pack(Kind.CALLS, batch)]])
    assert core.take() is None
    assert not core.ready
    [(_, error)] = sent
    assert (error.id, error.code) == (0, ErrorCode.PROTOCOL)
    assert error.message == "invalid Calls message: call 1 is not an array of 6 or 8 fields"
