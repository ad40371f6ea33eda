"""Each rule of docs/protocol.md that a service applies, one test each, on the
protocol core alone: frames in, answers out, no sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

import trizmq
from trizmq._dispatch import Endpoints
from trizmq._protocol.service import MAX_BURST, Job, Limits, ServiceCore
from trizmq._stats import MAX_SUBSCRIBERS, ServiceStats
from trizmq._wire import Envelope, Error, Items, Kind, Reply, decode

TOPIC = "compute"


class Endpoint:
    async def work(self, ctx: trizmq.Context, n: int) -> int:
        return n

    async def numbers(self, ctx: trizmq.Context) -> AsyncIterator[int]:
        yield 1


def pack(*fields: Any) -> bytes:
    frame: bytes = msgpack.packb([1, *fields], use_bin_type=True)
    return frame


def call(
    id: int, *, topic: str = TOPIC, method: str = "work", timeout: Any = 30.0, **args: Any
) -> bytes:
    return pack(Kind.CALL, id, topic, method, args or {"n": id}, {}, timeout)


def stream(id: int, credit: int, *, method: str = "numbers", timeout: Any = 30.0) -> bytes:
    return pack(Kind.STREAM, id, TOPIC, method, {}, {}, timeout, credit)


class Port:
    """A service port's core, with what it sent and cancelled recorded."""

    def __init__(self, **limits: Any) -> None:
        self.sent: list[tuple[bytes, Envelope]] = []
        self.cancelled: list[Job] = []
        self.granted: list[Job] = []
        self.core = ServiceCore(
            TOPIC,
            "node",
            Endpoints([Endpoint()]),
            ServiceStats("node", TOPIC, 9601, ["work"]),
            Limits(
                **{
                    "max_concurrency": 100,
                    "max_in_flight_per_caller": 10,
                    "max_held_bytes": 1_000_000,
                    "max_message_size": 1_000,
                    **limits,
                }
            ),
            send=lambda identity, frame, *counts: self.sent.append((identity, decode(frame))),
            cancel=self.cancelled.append,
            wake=lambda: None,
            subscribed=lambda: None,
            clock=lambda: 0.0,
            granted=self.granted.append,
        )

    def send(self, *frames: bytes, caller: bytes = b"alice") -> list[Job]:
        """Receive `frames` from `caller`; the jobs started for them."""
        self.core.receive([[caller, frame] for frame in frames])
        jobs = []
        while self.core.ready:
            job = self.core.take()
            if job is not None:  # its handler waits: the runner gives it a task
                self.core.waiting(job, object())
                jobs.append(job)
        return jobs

    def answers(self) -> list[Envelope]:
        return [envelope for _, envelope in self.sent]

    def error(self) -> Error:
        [error] = self.answers()
        assert isinstance(error, Error)
        return error


@pytest.fixture
def port() -> Port:
    return Port()


def test_a_call_is_answered_under_its_own_id(port: Port) -> None:
    [job] = port.send(call(7))
    port.core.succeeded(job, 7)
    assert port.answers() == [Reply(7, 7)]


@pytest.mark.parametrize("id", [0, -1, -(2**63)])
def test_a_call_with_an_id_below_1_is_refused_under_id_0(port: Port, id: int) -> None:
    assert port.send(call(id, n=1)) == []
    error = port.error()
    assert (error.id, error.code, error.type_name) == (0, "protocol", "trizmq.ProtocolError")
    assert error.message == f"id {id} is not between 1 and 2**64 - 1"


def test_the_largest_id_is_valid(port: Port) -> None:
    [job] = port.send(call(2**64 - 1, n=1))
    port.core.succeeded(job, 1)
    assert port.answers() == [Reply(2**64 - 1, 1)]


def test_a_call_for_another_topic_is_refused_under_its_id(port: Port) -> None:
    assert port.send(call(3, topic="network")) == []
    error = port.error()
    assert (error.id, error.code) == (3, "protocol")
    assert error.message == "this port serves topic 'compute', not 'network'"


def test_a_call_reusing_an_id_in_flight_is_refused_and_the_first_goes_on(port: Port) -> None:
    [first] = port.send(call(4))
    assert port.send(call(4)) == []
    assert port.error().message == "id 4 is already in flight on this connection"
    port.core.succeeded(first, 4)
    assert port.answers()[-1] == Reply(4, 4)


def test_an_id_may_be_used_again_once_answered(port: Port) -> None:
    [first] = port.send(call(4))
    port.core.succeeded(first, 4)
    [again] = port.send(call(4))
    port.core.succeeded(again, 4)
    assert port.answers() == [Reply(4, 4), Reply(4, 4)]


def test_two_callers_may_use_the_same_id(port: Port) -> None:
    assert len(port.send(call(1), caller=b"alice") + port.send(call(1), caller=b"bob")) == 2


@pytest.mark.parametrize("timeout", [0.0, -5.0])
def test_a_call_past_its_deadline_on_arrival_is_refused_without_running(
    port: Port, timeout: float
) -> None:
    assert port.send(call(2, timeout=timeout)) == []
    error = port.error()
    assert (error.id, error.code, error.type_name) == (2, "deadline", "trizmq.CallTimeout")


def test_a_call_without_a_timeout_has_no_deadline(port: Port) -> None:
    [job] = port.send(call(2, timeout=None))
    assert job.ctx.deadline == float("inf")


def test_a_method_that_is_not_exposed_is_refused(port: Port) -> None:
    port.send(call(5, method="_secret"))
    error = port.error()
    assert (error.code, error.type_name) == ("no_such_method", "trizmq.NoSuchMethod")


def test_arguments_that_do_not_fit_are_refused_naming_them(port: Port) -> None:
    port.send(call(5, n="five"))
    error = port.error()
    assert (error.code, error.type_name) == ("bad_arguments", "trizmq.BadArguments")
    assert "n" in error.message


def test_a_request_of_more_than_one_frame_is_refused_under_id_0(port: Port) -> None:
    port.core.receive([[b"alice", call(1), b"extra"]])
    assert port.core.take() is None
    assert (port.error().id, port.error().message) == (0, "a request is one frame, got 2")


def test_a_request_over_the_size_limit_is_refused_as_too_large(port: Port) -> None:
    port.send(call(1, n=1, padding="x" * 2_000))
    error = port.error()
    assert (error.id, error.code, error.type_name) == (0, "protocol", "trizmq.MessageTooLarge")


def test_a_result_over_the_size_limit_is_answered_with_message_too_large(port: Port) -> None:
    [job] = port.send(call(1))
    port.core.succeeded(job, "x" * 2_000)
    error = port.error()
    assert (error.id, error.code, error.type_name) == (1, "exception", "trizmq.MessageTooLarge")


def test_a_result_msgpack_cannot_carry_is_answered_with_a_type_error(port: Port) -> None:
    [job] = port.send(call(1))
    port.core.succeeded(job, object())
    assert port.error().type_name == "TypeError"


def test_a_cancel_stops_the_handler_and_nothing_answers_the_call(port: Port) -> None:
    [job] = port.send(call(6))
    port.send(pack(Kind.CANCEL, 6))
    assert port.cancelled == [job]
    port.core.stopped(job)
    assert port.answers() == []


@pytest.mark.parametrize("id", [99, 0, -3])
def test_a_cancel_of_an_id_not_in_flight_does_nothing(port: Port, id: int) -> None:
    port.send(pack(Kind.CANCEL, id))
    assert (port.cancelled, port.answers()) == ([], [])


def test_a_kind_a_service_does_not_take_is_refused_under_its_id(port: Port) -> None:
    port.send(pack(Kind.REPLY, 8, "hello"))
    error = port.error()
    assert (error.id, error.code) == (8, "protocol")
    assert error.message == "a service does not accept Reply messages"


def test_a_casts_message_runs_each_cast_under_consecutive_ids(port: Port) -> None:
    jobs = port.send(pack(Kind.CASTS, 10, TOPIC, "work", [{"n": 1}, {"n": "bad"}, {"n": 3}], {}))
    assert [job.request.id for job in jobs] == [10, 12]
    assert port.core.stats.rejected["bad_arguments"] == 1
    assert port.answers() == []  # nothing answers a cast


def test_a_call_arriving_while_the_service_stops_gets_service_shutdown(port: Port) -> None:
    port.core.stop()
    port.send(call(1))
    error = port.error()
    assert (error.code, error.type_name) == ("shutdown", "trizmq.ServiceShutdown")


def test_a_handler_stopped_by_shutdown_answers_service_shutdown(port: Port) -> None:
    [job] = port.send(call(1))
    port.core.stop()
    port.core.stopped(job)
    assert port.error().type_name == "trizmq.ServiceShutdown"


def test_a_handler_stopped_by_its_deadline_answers_call_timeout(port: Port) -> None:
    [job] = port.send(call(1))
    port.core.stopped(job)
    assert (port.error().code, port.error().type_name) == ("deadline", "trizmq.CallTimeout")


def test_a_stats_subscriber_past_the_cap_is_refused_under_its_id(port: Port) -> None:
    for n in range(MAX_SUBSCRIBERS):
        port.send(pack(Kind.STATS_SUBSCRIBE, 1, 1.0, 10.0), caller=b"s%d" % n)
    port.send(pack(Kind.STATS_SUBSCRIBE, 5, 1.0, 10.0), caller=b"one-too-many")
    error = port.error()
    assert (error.id, error.code, error.message) == (
        5,
        "protocol",
        "too many stats subscribers (64)",
    )


def test_requests_of_a_caller_at_its_limit_wait_and_run_in_order() -> None:
    port = Port(max_in_flight_per_caller=2)
    running = port.send(*(call(id) for id in range(1, 6)))
    assert [job.request.id for job in running] == [1, 2]
    for _ in range(3):
        port.core.succeeded(running.pop(0), 0)
        running += port.send()  # let in: the next in line
    assert [job.request.id for job in running] == [4, 5]


# -- what the stats say, per method ----------------------------------------------


def test_each_exposed_method_has_its_own_counts(port: Port) -> None:
    [ok, failing] = port.send(call(1), call(2))
    port.core.succeeded(ok, 1)
    port.core.failed(failing, ValueError("no disk"))
    work = port.core.stats.snapshot()["methods"]["work"]
    assert work["received"] == {"call": 2, "cast": 0, "fanout": 0}
    assert work["errors"] == {"ValueError": 1}
    assert (work["in_flight"], work["latency_ms"]["count"]) == (0, 2)


def test_a_method_that_is_not_exposed_gets_no_counts_of_its_own(port: Port) -> None:
    port.send(call(1, method="no_such_thing"))
    assert set(port.core.stats.snapshot()["methods"]) == {"work"}


def test_the_last_errors_say_which_method_failed_how_and_where(port: Port) -> None:
    [job] = port.send(call(1))
    try:
        raise ValueError("no disk")
    except ValueError as exc:
        port.core.failed(job, exc)
    [last] = port.core.stats.snapshot()["last_errors"]
    assert (last["method"], last["type"], last["message"]) == ("work", "ValueError", "no disk")
    assert last["traceback"][-1] == "ValueError: no disk"


# -- streams ----------------------------------------------------------------------


def test_a_stream_sends_its_items_once_its_credit_is_used_then_waits_for_more(
    port: Port,
) -> None:
    [job] = port.send(stream(5, 3))
    for item in range(3):
        port.core.yielded(job, item)
    assert port.answers() == [Items(5, [0, 1, 2])]
    assert (job.credit, port.core.parked) == (0, 1)
    port.send(pack(Kind.CREDIT, 5, 2))
    assert (job.credit, port.core.parked, port.granted) == (2, 0, [job])


def test_a_burst_goes_before_the_generator_waits_and_before_the_end(port: Port) -> None:
    [job] = port.send(stream(6, 10))
    port.core.yielded(job, "a")
    port.core.flush(job)  # the generator waits: what it yielded leaves now
    port.core.yielded(job, "b")
    port.core.succeeded(job, None)
    assert port.answers() == [Items(6, ["a"]), Items(6, ["b"]), Reply(6, None)]


def test_a_burst_holds_at_most_max_burst_items(port: Port) -> None:
    [job] = port.send(stream(6, 1000))
    for item in range(MAX_BURST + 1):
        port.core.yielded(job, item)
    port.core.flush(job)
    assert port.answers() == [Items(6, list(range(MAX_BURST))), Items(6, [MAX_BURST])]


def test_an_item_over_the_size_limit_ends_the_stream_after_the_items_before_it(
    port: Port,
) -> None:
    [job] = port.send(stream(7, 10))
    for item in ["a", "b", "x" * 2000, "c"]:
        port.core.yielded(job, item)
    port.core.flush(job)
    port.core.succeeded(job, None)  # the runner stops pulling, and ends the stream
    *items, error = port.answers()
    assert items == [Items(7, ["a", "b"])]
    assert isinstance(error, Error)
    assert (error.id, error.code, error.type_name) == (7, "exception", "trizmq.MessageTooLarge")
    assert error.message.startswith("an item is ")


def test_credit_is_never_held_behind_a_callers_waiting_requests() -> None:
    port = Port(max_in_flight_per_caller=1)
    [job] = port.send(stream(1, 1))
    port.core.yielded(job, 0)  # out of credit; its caller at its limit
    assert port.send(call(2)) == []  # held
    port.send(pack(Kind.CREDIT, 1, 4))
    assert (job.credit, port.granted) == (4, [job])


def test_credit_past_the_bound_is_not_kept(port: Port) -> None:
    [job] = port.send(stream(1, 65_536))
    port.send(pack(Kind.CREDIT, 1, 10))
    assert job.credit == 65_536


@pytest.mark.parametrize("kind", [Kind.CAST, Kind.FANOUT])
def test_a_cast_to_a_stream_method_is_refused_and_counted(port: Port, kind: Kind) -> None:
    assert port.send(pack(kind, 1, TOPIC, "numbers", {}, {})) == []
    assert port.answers() == []
    assert port.core.stats.rejected["no_such_method"] == 1


def test_a_stream_is_counted_as_a_request_of_its_method_with_its_items(port: Port) -> None:
    [job] = port.send(stream(1, 10))
    for item in range(3):
        port.core.yielded(job, item)
    port.core.succeeded(job, None)
    snapshot = port.core.stats.snapshot()
    numbers = snapshot["methods"]["numbers"]
    assert snapshot["received"]["stream"] == numbers["received"]["stream"] == 1
    assert (numbers["items"], numbers["in_flight"], numbers["latency_ms"]["count"]) == (3, 0, 1)
