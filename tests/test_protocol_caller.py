"""The caller side of the protocol, driven as a state machine without sockets.

Hypothesis starts calls and streams on one peer, lets answers arrive for
them (alone or several in a REPLIES), for calls given up, for ids never
used and as garbage, gives calls up and loses the connection under some of
them, in any order. The rules of docs/protocol.md for a caller hold
throughout: every call ends exactly once (its answer, its caller giving up,
or the connection lost), a stream takes any number of `ITEMS` and ends
exactly once (its `REPLY` or `ERROR`, its
caller giving up, or the connection lost), an answer matching no waiting
call or open stream is counted and never raised, and each `ERROR` code
becomes its documented exception.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import trizmq
from trizmq._protocol.caller import CallerCore, Ids
from trizmq._wire import (
    Call,
    Calls,
    Cancel,
    Credit,
    Error,
    ErrorCode,
    Items,
    Reply,
    Stats,
    decode,
    encode,
    encode_replies,
)

EXAMPLES = int(os.environ.get("TRIZMQ_STATE_EXAMPLES", "300"))

answers = st.sampled_from(["reply", "exception", "deadline", "no_such_method", "garbage", "items"])


def answer(kind: str, id: int) -> bytes:
    if kind == "reply":
        return encode(Reply(id, id))
    if kind == "garbage":
        return b"\xc1not msgpack"
    if kind == "items":
        return encode(Items(id, [id, id]))
    return encode(Error(id, kind, "ValueError", "boom", ""))


class CallerSide(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.core: CallerCore[int] = CallerCore("compute", "node")
        self.ids = Ids()
        self.waiting: set[int] = set()  # calls and streams
        self.streams: set[int] = set()
        self.ended: Counter[int] = Counter()
        self.unmatched = 0
        self.malformed = 0

    @rule()
    def call(self) -> None:
        id = self.ids.next()
        self.core.pending[id] = id  # the waiter is the id itself
        self.waiting.add(id)

    @rule()
    def stream(self) -> None:
        id = self.ids.next()
        self.core.streams[id] = id
        self.waiting.add(id)
        self.streams.add(id)
        assert decode(self.core.grant(id, 8)) == Credit(id, 8)

    @rule(kind=answers, which=st.integers(0, 10**6), known=st.booleans())
    def answer_arrives(self, kind: str, which: int, known: bool) -> None:
        ids = sorted(self.waiting | set(self.ended)) if known else [10**6 + which]
        id = ids[which % len(ids)] if ids else 1
        matched = self.core.answers([[answer(kind, id)]])
        streamed, self.core.streamed = self.core.streamed, []
        if kind == "garbage":
            self.malformed += 1
            assert matched == streamed == []
        elif id in self.streams:
            # A stream's items leave it open; its answer ends it.
            [(waiter, envelope)] = streamed
            assert matched == [] and waiter == id == envelope.id
            if kind != "items":
                self.end(id)
        elif id in self.waiting:
            [(waiter, envelope)] = matched
            assert waiter == id == envelope.id
            self.end(id)
        else:
            self.unmatched += 1
            assert matched == []

    @rule(
        chosen=st.lists(
            st.tuples(st.sampled_from(["reply", "exception", "deadline"]), st.integers(0, 10**6)),
            min_size=2,
            max_size=6,
        )
    )
    def answers_arrive_together(self, chosen: list[tuple[str, int]]) -> None:
        """A REPLIES: each of its answers counts as if it had come alone."""
        known = sorted(self.waiting | set(self.ended)) or [1]
        ids = [known[which % len(known)] if which % 3 else 10**6 + which for _, which in chosen]
        frames = [answer(kind, id) for (kind, _), id in zip(chosen, ids, strict=True)]
        matched = self.core.answers([[encode_replies(frames)]])
        streamed, self.core.streamed = self.core.streamed, []
        calls, streams = [], []
        for id in ids:
            if id in self.waiting:  # a stream's answer ends it
                (streams if id in self.streams else calls).append((id, id))
                self.end(id)
            else:
                self.unmatched += 1
        assert [(waiter, envelope.id) for waiter, envelope in matched] == calls
        assert [(waiter, envelope.id) for waiter, envelope in streamed] == streams

    @precondition(lambda self: self.waiting)
    @rule(which=st.integers(min_value=0))
    def give_up(self, which: int) -> None:
        id = sorted(self.waiting)[which % len(self.waiting)]
        assert decode(self.core.give_up(id)) == Cancel(id)
        self.end(id)

    @rule(chosen=st.sets(st.integers(1, 30)))
    def connection_lost(self, chosen: set[int]) -> None:
        lost = self.core.lose(chosen)
        assert set(lost) == chosen & self.waiting
        for id in lost:
            self.end(id)

    def end(self, id: int) -> None:
        self.waiting.discard(id)
        self.streams.discard(id)
        self.ended[id] += 1

    @invariant()
    def every_call_ends_once_and_strays_are_counted(self) -> None:
        assert set(self.core.pending) == self.waiting - self.streams
        assert set(self.core.streams) == self.streams
        assert all(n == 1 for n in self.ended.values())
        assert self.core.counts["unmatched"] == self.unmatched
        assert self.core.counts["malformed"] == self.malformed


CallerSide.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None
)
test_the_caller_side_ends_every_call_exactly_once = CallerSide.TestCase


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (ErrorCode.EXCEPTION, trizmq.RemoteError),
        (ErrorCode.NO_SUCH_METHOD, trizmq.NoSuchMethod),
        (ErrorCode.BAD_ARGUMENTS, trizmq.BadArguments),
        (ErrorCode.SHUTDOWN, trizmq.ServiceShutdown),
        (ErrorCode.PROTOCOL, trizmq.RemoteError),
        (ErrorCode.DEADLINE, trizmq.CallTimeout),
        ("a-code-from-the-future", trizmq.RemoteError),
    ],
)
def test_each_error_code_is_raised_as_its_documented_exception(code: str, raised: type) -> None:
    core: CallerCore[Any] = CallerCore("compute", "node")
    with pytest.raises(raised) as caught:
        core.outcome(Error(1, code, "pkg.Oops", "it broke", ""), "boot", 5.0, None)
    assert type(caught.value) is raised
    if isinstance(caught.value, trizmq.RemoteError):
        assert (caught.value.type_name, caught.value.message) == ("pkg.Oops", "it broke")
        assert (caught.value.topic, caught.value.host) == ("compute", "node")


def test_an_answer_that_is_neither_reply_nor_error_is_a_protocol_error() -> None:
    core: CallerCore[Any] = CallerCore("compute", "node")
    with pytest.raises(trizmq.ProtocolError):
        core.outcome(Stats(1, {}), "boot", math.inf, None)


def test_a_calls_message_sent_to_a_caller_answers_no_call_and_is_counted_unmatched() -> None:
    core: CallerCore[str] = CallerCore("compute", "node")
    core.pending[1] = "waiter"
    calls = Calls([Call(1, "compute", "boot", {}, {}, None)])
    assert core.answers([[encode(calls)]]) == []
    assert core.pending == {1: "waiter"}
    assert core.counts["unmatched"] == 1


def test_a_casts_message_takes_consecutive_ids() -> None:
    ids = Ids()
    assert [ids.next(), ids.take(3), ids.next()] == [1, 2, 5]


def test_a_deadline_answered_by_the_service_counts_as_a_timeout_not_an_error() -> None:
    core: CallerCore[Any] = CallerCore("compute", "node")
    with pytest.raises(trizmq.CallTimeout):
        core.outcome(
            Error(1, ErrorCode.DEADLINE, "trizmq.CallTimeout", "late", ""), "boot", 1, None
        )
    assert dict(core.counts) == {"timeout": 1}
