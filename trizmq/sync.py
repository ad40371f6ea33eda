"""A blocking client, for code that is not Trio: threads, scripts, asyncio through a thread.

```python
import trizmq
import trizmq.sync

ring = trizmq.Ring.load("seed_ring.json")
with trizmq.sync.open_client(ring, resolve={"controller": "127.0.0.2"}) as client:
    print(client.call("compute.controller", "ping", x=1))
```

`open_client` starts one thread of its own running a Trio loop, where a
`trizmq.Client` does the work: every blocking call hands its request to that
thread and waits for the outcome. Any number of threads may call at once.
Results, timeouts and errors are exactly those of the async client (the same
exception classes, raised as they are, not wrapped).

Leaving the `with` block (or `Client.close`, from any thread) closes the client:
calls still waiting are cancelled (the services are told, as for a cancelled
async call) and raise `RuntimeError`, calls made after raise `RuntimeError`,
and the thread is gone when the block is left. A blocking call made from inside
a Trio run (where it would block the run, or deadlock in the client's own
thread) raises `RuntimeError` instead: Trio code uses `trizmq.open_client`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import outcome
import trio

from . import _client
from ._nursery import open_nursery
from ._ring import Ring

__all__ = ["BoundTarget", "Client", "open_client"]

T = TypeVar("T")
P = ParamSpec("P")


def _refuse_in_trio() -> None:
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "trizmq.sync blocks its caller: call it from a thread outside any Trio run"
            " (Trio code uses trizmq.open_client)"
        )


def _closed() -> RuntimeError:
    return RuntimeError("the client is closed")


class _Loop:
    """One Trio run in a thread of its own, running what other threads hand it.

    Each piece of work runs as a task of that run, in a cancel scope that
    closing cancels; the thread ends once they all have.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()  # set once opened, or once the run ended
        self._ended: outcome.Outcome[None] | None = None
        self.closed = False  # no new work: set by `close`, read by any thread
        # Touched only in the loop's thread:
        self._closing = False
        self._stop = trio.Event()
        self._scopes: set[trio.CancelScope] = set()
        self._drained = trio.Event()
        self._nursery: trio.Nursery | None = None

    def start(self, resource: AbstractAsyncContextManager[T]) -> T:
        """Start the thread and enter `resource` there; return what it yields.

        Raises:
            Exception: What entering `resource` raised (the thread is gone then).
        """
        _refuse_in_trio()
        entered: list[T] = []
        self._thread = threading.Thread(
            target=self._run_thread, args=(resource, entered), name="trizmq.sync", daemon=False
        )
        self._thread.start()
        self._ready.wait()
        if not entered:
            self.closed = True
            self._thread.join()
            self._raise_ending()
        return entered[0]

    def _run_thread(self, resource: AbstractAsyncContextManager[T], entered: list[T]) -> None:
        try:
            self._ended = outcome.capture(trio.run, self._main, resource, entered)
        finally:
            self._ready.set()

    async def _main(self, resource: AbstractAsyncContextManager[T], entered: list[T]) -> None:
        async with resource as value, open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._nursery = nursery
            entered.append(value)
            self._ready.set()
            await self._stop.wait()
            # Work still running needs `resource` open until it is cancelled.
            for scope in self._scopes:
                scope.cancel()
            if self._scopes:
                await self._drained.wait()
            nursery.cancel_scope.cancel()

    def _raise_ending(self) -> None:
        """Raise the error the run ended with, if any (once)."""
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.unwrap()

    def run(self, afn: Callable[[], Awaitable[T]]) -> T:
        """Run `afn()` in the loop; return what it returns or raise what it raises."""
        token = self._open_token()
        try:
            return trio.from_thread.run(self._guarded, afn, trio_token=token)
        except trio.RunFinishedError:
            raise _closed() from None

    def run_sync(self, fn: Callable[[], T]) -> T:
        """Run `fn()` in the loop, as `run`."""
        token = self._open_token()
        try:
            return trio.from_thread.run_sync(self._guarded_sync, fn, trio_token=token)
        except trio.RunFinishedError:
            raise _closed() from None

    def soon(self, fn: Callable[[], object]) -> None:
        """Have the loop run `fn()` soon, if it still runs; never blocks (nor raises)."""
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(fn)

    def start_task(self, task: Callable[..., Awaitable[object]]) -> None:
        """`nursery.start(task)` in the loop: returns once `task` called `task_status.started()`."""

        async def start() -> None:
            assert self._nursery is not None
            await self._nursery.start(task)

        self.run(start)

    def _open_token(self) -> trio.lowlevel.TrioToken:
        _refuse_in_trio()
        if self.closed or self._token is None:
            raise _closed()
        return self._token

    async def _guarded(self, afn: Callable[[], Awaitable[T]]) -> T:
        if self._closing:
            raise _closed()
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                return await afn()
            finally:
                self._scopes.discard(scope)
                if self._closing and not self._scopes:
                    self._drained.set()
        raise RuntimeError("the client was closed while the call was waiting")

    def _guarded_sync(self, fn: Callable[[], T]) -> T:
        if self._closing:
            raise _closed()
        return fn()

    def close(self) -> None:
        """Cancel the work still running, end the run and wait for its thread to end.

        Raises:
            Exception: An error the run ended with, if any.
        """
        _refuse_in_trio()
        self.closed = True
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._shut, trio_token=self._token)
        if self._thread is not None:
            self._thread.join()
        self._raise_ending()

    def _shut(self) -> None:
        self._closing = True
        self._stop.set()


class Client:
    """The client for code that is not Trio: the same calls, blocking.

    Create one with `trizmq.sync.open_client`. Any thread may use it, any
    number at once; each call blocks its thread until done. Every method
    takes, returns and raises what the method of the same name of
    [`trizmq.Client`][trizmq.Client] does. Calls made after `close`, and calls
    `close` interrupts, raise `RuntimeError`.
    """

    def __init__(self, loop: _Loop, client: _client.Client) -> None:
        self._loop = loop
        self._async = client

    @property
    def ring(self) -> Ring:
        """The ring the client routes by."""
        return self._async.ring

    @property
    def identity(self) -> str:
        """The name services see as `Context.caller`.

        As [`trizmq.Client.identity`][trizmq.Client.identity].
        """
        return self._async.identity

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
        """A target with its own defaults: timeout, context, version, namespace, cap.

        As [`trizmq.Client.prepare`][trizmq.Client.prepare], blocking.

        Raises:
            RingError: The target is not in the ring.
            ValueError: A version is not `"MAJOR.MINOR"`.
            VersionCapError: `version` is above `version_cap`.
        """
        bound = self._loop.run_sync(
            lambda: self._async.prepare(
                target,
                timeout=timeout,
                context=context,
                version=version,
                namespace=namespace,
                version_cap=version_cap,
                wait_for_ready=wait_for_ready,
            )
        )
        return BoundTarget(self, bound)

    @overload
    def call(
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
    def call(
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

    def call(
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

        As [`trizmq.Client.call`][trizmq.Client.call], blocking.

        Raises:
            RemoteError: The handler raised (`NoSuchMethod`, `BadArguments`...).
            CallTimeout: No reply before the timeout.
            RingError: The target is not in the ring.
            RuntimeError: The client is closed, or was closed during the call.
        """
        return self._loop.run(
            lambda: self._async.call(
                target,
                method,
                timeout=timeout,
                returns=returns,
                context=context,
                wait_for_ready=wait_for_ready,
                **args,
            )
        )

    def cast(
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

        As [`trizmq.Client.cast`][trizmq.Client.cast], blocking.
        """
        self._loop.run(
            lambda: self._async.cast(
                target, method, context=context, wait_for_ready=wait_for_ready, **args
            )
        )

    def cast_many(
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

        As [`trizmq.Client.cast_many`][trizmq.Client.cast_many], blocking;
        `calls` is read whole in the calling thread first.

        Returns:
            The number of casts sent.
        """
        batch = list(calls)
        return self._loop.run(
            lambda: self._async.cast_many(
                target, method, batch, context=context, wait_for_ready=wait_for_ready
            )
        )

    def fanout(
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

        As [`trizmq.Client.fanout`][trizmq.Client.fanout], blocking.
        """
        self._loop.run(
            lambda: self._async.fanout(
                target, method, context=context, wait_for_ready=wait_for_ready, **args
            )
        )

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
    ) -> _BlockingStream[T]: ...

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
    ) -> _BlockingStream[Any]: ...

    def stream(
        self,
        target: str,
        method: str,
        /,
        *,
        timeout: float | None = None,
        returns: type[Any] | None = None,
        context: Mapping[str, Any] | None = None,
        window: int = _client.DEFAULT_WINDOW,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> _BlockingStream[Any]:
        """A stream of the items an async-generator method yields, as an iterator:
        `with client.stream(...) as items: for item in items: ...`.

        As [`trizmq.Client.stream`][trizmq.Client.stream], blocking: each
        `next()` pulls one item; leaving the `with` block early stops the
        generator on the service.
        """
        return _BlockingStream(
            self._loop,
            lambda: self._async.stream(
                target,
                method,
                timeout=timeout,
                returns=returns,
                context=context,
                window=window,
                wait_for_ready=wait_for_ready,
                **args,
            ),
        )

    def connected(self, target: str) -> bool:
        """Whether the connection to the service `"topic.host"` is up.

        As [`trizmq.Client.connected`][trizmq.Client.connected], blocking.
        """
        return self._loop.run_sync(lambda: self._async.connected(target))

    def url(self, target: str) -> str:
        """The address the client connects to for the service `"topic.host"`."""
        return self._loop.run_sync(lambda: self._async.url(target))

    def stats(self) -> dict[str, dict[str, int]]:
        """The client's side, per `topic.host`, as [`trizmq.Client.stats`][trizmq.Client.stats]."""
        return self._loop.run_sync(self._async.stats)

    def close(self) -> None:
        """Close the client, from any thread but its own; leaving the `with` block does.

        Calls still waiting raise `RuntimeError` (their services are told to
        stop their handlers); returns once the client's thread has ended.
        Closing again does nothing.
        """
        self._loop.close()


class BoundTarget:
    """A target prepared with `Client.prepare`: the same calls, fewer arguments.

    As [`trizmq.BoundTarget`][trizmq.BoundTarget], blocking.
    """

    def __init__(self, client: Client, bound: _client.BoundTarget) -> None:
        self.client = client
        self._bound = bound

    @property
    def target(self) -> str:
        """`"topic"` or `"topic.host"`."""
        return self._bound.target

    @property
    def timeout(self) -> float | None:
        """The default timeout of its calls (`None`: the client's)."""
        return self._bound.timeout

    @property
    def context(self) -> dict[str, Any]:
        """The default context of its messages, merged over the client's."""
        return self._bound.context

    @property
    def namespace(self) -> str | None:
        """The namespace its requests name, or None."""
        return self._bound.namespace

    @property
    def version(self) -> str | None:
        """The version its requests need, or None."""
        return self._bound.version

    @property
    def version_cap(self) -> str | None:
        """The highest version it may send, or None."""
        return self._bound.version_cap

    @property
    def wait_for_ready(self) -> bool | None:
        """The default `wait_for_ready` of its messages (`None`: the client's)."""
        return self._bound.wait_for_ready

    def can_send_version(self, version: str | None = None) -> bool:
        """Whether this target may send `version` (its own when None).

        As [`trizmq.BoundTarget.can_send_version`][trizmq.BoundTarget.can_send_version].
        """
        return self._bound.can_send_version(version)

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
        """A copy of this target with some defaults changed.

        As [`trizmq.BoundTarget.prepare`][trizmq.BoundTarget.prepare].
        """
        bound = self.client._loop.run_sync(
            lambda: self._bound.prepare(
                host=host,
                timeout=timeout,
                context=context,
                version=version,
                namespace=namespace,
                version_cap=version_cap,
                wait_for_ready=wait_for_ready,
            )
        )
        return BoundTarget(self.client, bound)

    def call(
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
        """`Client.call` on this target, with its defaults.

        As [`trizmq.BoundTarget.call`][trizmq.BoundTarget.call], blocking.
        """
        return self.client._loop.run(
            lambda: self._bound.call(
                method,
                timeout=timeout,
                returns=returns,
                context=context,
                wait_for_ready=wait_for_ready,
                **args,
            )
        )

    def stream(
        self,
        method: str,
        /,
        *,
        timeout: float | None = None,
        returns: type[Any] | None = None,
        context: Mapping[str, Any] | None = None,
        window: int = _client.DEFAULT_WINDOW,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> _BlockingStream[Any]:
        """`Client.stream` on this target, with its defaults, as an iterator."""
        return _BlockingStream(
            self.client._loop,
            lambda: self._bound.stream(
                method,
                timeout=timeout,
                returns=returns,
                context=context,
                window=window,
                wait_for_ready=wait_for_ready,
                **args,
            ),
        )

    def cast(
        self,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> None:
        """`Client.cast` on this target, with its default context."""
        self.client._loop.run(
            lambda: self._bound.cast(method, context=context, wait_for_ready=wait_for_ready, **args)
        )

    def cast_many(
        self,
        method: str,
        calls: Iterable[Mapping[str, Any]],
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
    ) -> int:
        """`Client.cast_many` on this target, with its defaults; `calls` is read
        whole in the calling thread first."""
        batch = list(calls)
        return self.client._loop.run(
            lambda: self._bound.cast_many(
                method, batch, context=context, wait_for_ready=wait_for_ready
            )
        )

    def fanout(
        self,
        method: str,
        /,
        *,
        context: Mapping[str, Any] | None = None,
        wait_for_ready: bool | None = None,
        **args: Any,
    ) -> None:
        """`Client.fanout` on this target, with its default context."""
        self.client._loop.run(
            lambda: self._bound.fanout(
                method, context=context, wait_for_ready=wait_for_ready, **args
            )
        )


def _arguments_of(f: Callable[P, object]) -> Callable[[Callable[..., T]], Callable[P, T]]:
    """Type the decorated function as taking the arguments of `f`, which it passes on."""

    def typed(g: Callable[..., T]) -> Callable[P, T]:
        return g

    return typed


@_arguments_of(_client.open_client)
@contextmanager
def open_client(ring: Ring, **options: Any) -> Iterator[Client]:
    """Open a blocking client of the ring's services, for the `with` block.

    Takes the arguments of [`trizmq.open_client`][trizmq.open_client]. Starts
    a thread that runs a Trio loop holding a [`trizmq.Client`][trizmq.Client];
    leaving the block closes the client and waits for the thread to end.

    Raises:
        RuntimeError: Called from inside a Trio run.
        Exception: What [`trizmq.open_client`][trizmq.open_client] raises, in the calling thread.
    """
    resource = _client.open_client(ring, **options)  # a wrong argument raises here
    loop = _Loop()
    client = Client(loop, loop.start(resource))
    try:
        yield client
    finally:
        client.close()


class _StreamTask(Generic[T]):
    """The Trio side of a `_BlockingStream`: one task enters the async context
    manager, pulls the items asked for, and exits it (Trio wants one task to
    enter and exit a context that may hold cancel scopes or nurseries)."""

    def __init__(
        self, open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]]
    ) -> None:
        self._open = open_stream
        self._pulls_in, self._pulls = trio.open_memory_channel[None](0)
        self._items_in, self._items = trio.open_memory_channel[outcome.Outcome[T] | None](0)
        self.iterating = trio.CancelScope()  # cancelled: exit the context
        self._done = trio.Event()
        self._exit_error: Exception | None = None

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opened = False
        try:
            async with self._open() as items:
                task_status.started()
                opened = True
                with self.iterating:
                    async for _ in self._pulls:
                        item = await self._next(items)
                        await self._items_in.send(item)
                        if not isinstance(item, outcome.Value):
                            break
        except Exception as exc:
            if not opened:
                raise  # to the opener, through `nursery.start`
            self._exit_error = exc
        finally:
            self._pulls.close()
            self._items_in.close()
            self._done.set()

    @staticmethod
    async def _next(items: AsyncIterator[T]) -> outcome.Outcome[T] | None:
        """The next item, its error, or None at the end."""
        try:
            return outcome.Value(await anext(items))
        except StopAsyncIteration:
            return None
        except Exception as exc:
            return outcome.Error(exc)

    async def pull(self) -> outcome.Outcome[T] | None:
        """Ask for the next item and wait for it; None once the stream ended or was closed."""
        try:
            await self._pulls_in.send(None)
            return await self._items.receive()
        except (trio.BrokenResourceError, trio.EndOfChannel):
            return None

    async def aclose(self) -> None:
        """Exit the context (cancelling a pull in progress); raise what exiting raised."""
        self.iterating.cancel()
        await self._done.wait()
        if self._exit_error is not None:
            raise self._exit_error


class _BlockingStream(Generic[T]):
    """An async context manager yielding an async iterator, as a blocking
    context manager yielding a plain iterator: `Client.stream`'s bridge.

    `with _BlockingStream(loop, open_stream) as items:` enters
    `open_stream()` in the loop; each `next(items)` pulls one item through
    it. Leaving the block exits the async context (and raises what exiting
    raised); so does the stream's end or error, and, without waiting, the
    iterator being collected as garbage.
    """

    def __init__(
        self,
        loop: _Loop,
        open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
    ) -> None:
        self._loop = loop
        self._task = _StreamTask(open_stream)
        self._lock = threading.Lock()  # one pull at a time, so each gets its own item
        self._ended = False
        self._finalizer: weakref.finalize[[Callable[[], object]], _BlockingStream[T]] | None = None

    def __enter__(self) -> Self:
        self._loop.start_task(self._task.serve)
        # Holds no reference to `self`: the task is told to exit when `self` is garbage.
        self._finalizer = weakref.finalize(self, self._loop.soon, self._task.iterating.cancel)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        with self._lock:
            if self._ended:
                raise StopIteration
            item = self._loop.run(self._task.pull)
            if not isinstance(item, outcome.Value):
                self._ended = True
            if item is None:
                raise StopIteration
            return item.unwrap()

    def close(self) -> None:
        """Exit the async context, once; a pull in progress in another thread ends."""
        if self._finalizer is None or self._finalizer.detach() is None:
            return  # never entered, or closed already
        if not self._loop.closed:  # else closing the loop closed the stream
            self._loop.run(self._task.aclose)
