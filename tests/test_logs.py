"""What a service logs about bad input: bounded in lines and in size, whatever the input."""

from __future__ import annotations

import logging

import pytest

from trizmq._dispatch import MAX_ERROR_TEXT, error_fields
from trizmq._logs import LOG_WINDOW, MAX_LINES_PER_WINDOW, ThrottledLog, clip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(clock: Clock) -> ThrottledLog:
    return ThrottledLog(logging.getLogger("trizmq.test_logs"), clock=clock)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trizmq.test_logs"]


def test_a_flood_of_one_kind_from_one_caller_logs_one_line_per_window(
    log: ThrottledLog, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(100_000):
        log.warning(("refused", b"alice"), "refused %d", n)
    assert messages(caplog) == ["refused 0"]


def test_the_next_line_after_the_window_says_how_many_were_left_out(
    log: ThrottledLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(500):
        log.warning("refused", "refused")
    clock.now += LOG_WINDOW
    log.warning("refused", "refused")
    assert messages(caplog)[-1] == "refused (and 499 more like it since the last such line)"


def test_each_caller_and_kind_has_its_own_line(
    log: ThrottledLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.warning(("refused", b"alice"), "alice")
    log.warning(("refused", b"bob"), "bob")
    log.warning(("failed", b"alice"), "alice failed")
    assert messages(caplog) == ["alice", "bob", "alice failed"]


def test_many_callers_at_once_are_capped_and_the_rest_summarised(
    log: ThrottledLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(5 * MAX_LINES_PER_WINDOW):
        log.warning(("refused", n), "caller %d", n)
    assert len(messages(caplog)) == MAX_LINES_PER_WINDOW
    clock.now += LOG_WINDOW
    log.warning("again", "again")
    assert messages(caplog)[-2:] == [
        f"{4 * MAX_LINES_PER_WINDOW} more log lines left out in the last 10 s"
        " (too many callers at once)",
        "again",
    ]


def test_a_logged_value_is_cut_to_a_bounded_size() -> None:
    text = clip("x" * 1_000_000)
    assert len(text) < 300
    assert text.endswith("... (1000000 characters)")


def test_an_error_reply_carries_no_traceback_unless_asked() -> None:
    try:
        raise ValueError("bad disk")
    except ValueError as exc:
        assert error_fields(exc, with_traceback=False) == (
            "exception",
            "ValueError",
            "bad disk",
            "",
        )
        assert 'raise ValueError("bad disk")' in error_fields(exc, with_traceback=True)[3]


def test_an_error_reply_is_bounded_in_size_whatever_the_exception() -> None:
    def recurse(depth: int) -> None:
        if depth:
            recurse(depth - 1)
        raise ValueError("x" * 1_000_000)

    try:
        recurse(500)
    except ValueError as exc:
        _, _, message, trace = error_fields(exc, with_traceback=True)
    assert len(message) < MAX_ERROR_TEXT + 100
    assert len(trace) < MAX_ERROR_TEXT + 100
    assert "raise ValueError" in trace  # the end, where it was raised, is kept
