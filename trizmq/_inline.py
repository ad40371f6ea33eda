"""Run a coroutine in the calling task, and learn whether it had to wait.

A service's receive loop runs each handler in its own task, so that nothing
waits for anything but the socket. Yet most handlers return without ever
waiting, and for them a new task is pure cost: a spawn, a trip through Trio's
run loop, and the latency of both. `run_inline` lets the loop run the handler
itself and hand its own job to a new task only at the handler's first wait
(the leader/follower pattern): the cost of a task is paid by the handlers
that need one.

`next_inline` does the same for the next item of an async generator: a
stream's runner sends the items yielded so far just before its generator
waits, and pays for nothing while it does not.

This is sound in Trio because a coroutine that suspends yields a trap that
names the current task, and the current task is the one running the
coroutine: the suspension is the caller's own, exactly as with `await`.
"""

from __future__ import annotations

import types
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from typing import Any, TypeVarTuple

Args = TypeVarTuple("Args")


@types.coroutine
def run_inline(
    coro: Coroutine[Any, Any, None],
    on_suspend: Callable[[*Args], None],
    *args: *Args,
) -> Generator[Any, Any, bool]:
    """Await `coro`, calling `on_suspend(*args)` just before its first wait.

    Arguments rather than a closure: nothing is built for the coroutines that
    never wait, which are most of them.

    Returns:
        Whether `coro` waited (and `on_suspend` was called).
    """
    try:
        trap = coro.send(None)
    except StopIteration:
        return False
    on_suspend(*args)
    yield from _resume(coro, trap)
    return True


@types.coroutine
def next_inline(
    agen: AsyncGenerator[Any, None],
    on_suspend: Callable[[*Args], None],
    *args: *Args,
) -> Generator[Any, Any, Any]:
    """The next item of `agen`, calling `on_suspend(*args)` just before its
    first wait (a stream's burst leaves before its generator waits).

    Raises:
        StopAsyncIteration: `agen` is exhausted.
    """
    step: Any = agen.__anext__()
    try:
        trap = step.send(None)
    except StopIteration as done:
        return done.value
    on_suspend(*args)
    return (yield from _resume(step, trap))


def _resume(coro: Any, trap: Any) -> Generator[Any, Any, Any]:
    """Go on with `coro`, suspended at `trap`, to its end; its value."""
    while True:
        # Trio resumes us with a value or an exception: pass either on.
        try:
            value = yield trap
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as done:
                return done.value
