"""Notifications, as oslo.messaging's: a `Notifier` sends them, a
`NotificationListener` serves them.

A notification is a cast to a topic (``notifications`` by default) whose
method is its priority and whose arguments are ``publisher_id``,
``event_type``, ``payload`` and ``metadata``. It goes to one host of each pool
of the topic (`Ring.pools_of`), with the delivery of a cast.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from ._client import Client
from ._context import Context
from ._errors import RingError

__all__ = ["PRIORITIES", "NotificationListener", "Notifier"]

PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")
"""The priorities of notifications, oslo.messaging's: each is a method of the listener."""


class Notifier:
    """Sends notifications, as oslo.messaging's ``Notifier``.

    Each notification goes, for each of its topics, to one host of every
    pool of the topic (`Ring.pools_of`): round-robin within a pool, passing
    over hosts the client knows are down, as `Client.cast` does. It is a cast
    whose method is the priority, and its delivery is a cast's: at most
    once, queued by ZeroMQ while the host is down, never acknowledged.

    Args:
        client: The client that sends the notifications.
        publisher_id: Who publishes, e.g. ``"compute.controller"``.
        topics: The topics to notify, each a topic of the ring (not
            ``"topic.host"``); a string is one topic.
        context: Default context dict of the notifications, under each one's
            own `ctx` (the client's default context under both).

    Raises:
        RingError: A topic is not in the ring, is reserved, or names a host.
        ValueError: `topics` is empty.
    """

    def __init__(
        self,
        client: Client,
        publisher_id: str,
        *,
        topics: Sequence[str] = ("notifications",),
        context: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        if not topics:
            raise ValueError("a notifier needs at least one topic")
        for topic in topics:
            _check_topic(client, topic)
        self.client = client
        self.publisher_id = publisher_id
        self.topics = tuple(topics)
        self.context = dict(context or {})

    def prepare(self, publisher_id: str | None = None) -> Notifier:
        """A notifier like this one with another publisher id, as oslo's ``prepare``.

        Args:
            publisher_id: The new publisher id; this one's when None.
        """
        return Notifier(
            self.client,
            self.publisher_id if publisher_id is None else publisher_id,
            topics=self.topics,
            context=self.context,
        )

    async def notify(
        self, priority: str, ctx: Mapping[str, Any] | None, event_type: str, payload: Any
    ) -> str:
        """Send a notification of `priority`.

        Args:
            priority: ``"audit"``, ``"debug"``, ``"info"``, ``"warn"``,
                ``"error"``, ``"critical"`` or ``"sample"``, in any case
                (``"INFO"`` is ``"info"``).
            ctx: A dict the listeners' endpoints see as `Context.values`
                (oslo's ``ctxt``), merged over the notifier's context; or None.
            event_type: What happened, e.g. ``"compute.instance.create.end"``.
            payload: The notification's data: plain data (a dict, as oslo),
                or anything the client can send as an argument.

        Returns:
            The notification's ``message_id`` (its ``metadata``'s).

        Raises:
            ValueError: The priority is not one of those.
            MessageTooLarge: The notification is over the client's message size limit.
            AuthenticationFailed: A host refused this client's CURVE keys (the
                pools before it have the notification).
        """
        method = priority.lower()
        if method not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}; priorities: {', '.join(PRIORITIES)}")
        message_id = uuid.uuid4().hex
        args = {
            "publisher_id": self.publisher_id,
            "event_type": event_type,
            "payload": payload,
            "metadata": {
                "message_id": message_id,
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
            },
        }
        context = {**self.context, **(ctx or {})}
        for topic in self.topics:
            await self.client._cast_to_pools(topic, method, args, context)
        return message_id

    async def audit(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``audit``."""
        return await self.notify("audit", ctx, event_type, payload)

    async def debug(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``debug``."""
        return await self.notify("debug", ctx, event_type, payload)

    async def info(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``info``."""
        return await self.notify("info", ctx, event_type, payload)

    async def warn(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``warn``."""
        return await self.notify("warn", ctx, event_type, payload)

    #: `warn`, by the name oslo's ``Notifier`` also gives it.
    warning = warn

    async def error(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``error``."""
        return await self.notify("error", ctx, event_type, payload)

    async def critical(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``critical``."""
        return await self.notify("critical", ctx, event_type, payload)

    async def sample(self, ctx: Mapping[str, Any] | None, event_type: str, payload: Any) -> str:
        """`notify` with priority ``sample``."""
        return await self.notify("sample", ctx, event_type, payload)


def _check_topic(client: Client, topic: str) -> None:
    ring = client.ring
    if "." in topic:
        head, _, tail = topic.partition(".")
        hint = (
            f"; the priority travels as the method: give topics=[{head!r}]"
            if tail in PRIORITIES
            else ""
        )
        raise RingError(
            f"{ring.source}: notification topic {topic!r} names a host: a notification "
            f"goes to one host of each pool of a topic{hint}"
        )
    ring.resolve_target(topic)  # unknown or reserved


# An endpoint's method for one priority, and whether it is async.
_Handler = tuple[Callable[..., Any], bool]


def _priority_method(priority: str) -> Callable[..., Awaitable[None]]:
    """`NotificationListener`'s method for `priority`: the function `serve`
    exposes under that name, handing a notification to the endpoints having it."""

    async def deliver(
        self: NotificationListener,
        ctx: Context,
        publisher_id: str,
        event_type: str,
        payload: Any,
        metadata: dict[str, Any],
    ) -> None:
        await self._deliver(priority, ctx, publisher_id, event_type, payload, metadata)

    deliver.__name__ = deliver.__qualname__ = priority
    deliver.__doc__ = f"Hand a ``{priority}`` notification to the endpoints having ``{priority}``."
    return deliver


class NotificationListener:
    """Serves notifications: the endpoint of a notification topic.

    Give it to `serve`, or map the topic to it in a `trizmq serve --app`
    module. Its methods are the seven priorities (``audit``, ``debug``,
    ``info``, ``warn``, ``error``, ``critical``, ``sample``), and each hands
    the notification to every one of `endpoints` that has a method of that
    name, in the order given, as oslo.messaging's notification dispatcher
    does. An endpoint's method looks like oslo's, with the request's
    `Context` first (its ``values`` are the sender's context):

    ```python
    def info(self, ctx, publisher_id, event_type, payload, metadata): ...
    ```

    It may be async, or not (then it runs in a Trio worker thread).

    A priority none of the endpoints handles is accepted and dropped
    silently, but counted (`counts`), so a publisher never causes refused
    casts. An endpoint that raises is logged and counted as a failed cast
    handler is (`trizmq stats`' errors), and the other endpoints still get
    the notification.

    Args:
        *endpoints: The objects that handle notifications.

    Raises:
        ValueError: No endpoint given.
        TypeError: An endpoint has no method named for a priority.
    """

    def __init__(self, *endpoints: object) -> None:
        if not endpoints:
            raise ValueError("a notification listener needs at least one endpoint")
        self._handlers: dict[str, list[_Handler]] = {priority: [] for priority in PRIORITIES}
        for endpoint in endpoints:
            methods = [
                (priority, method)
                for priority in PRIORITIES
                if callable(method := getattr(endpoint, priority, None))
            ]
            if not methods:
                raise TypeError(
                    f"notification endpoint {endpoint!r} has no method named for a priority "
                    f"({', '.join(PRIORITIES)})"
                )
            for priority, method in methods:
                self._handlers[priority].append((method, inspect.iscoroutinefunction(method)))
        self._counts: dict[str, Counter[str]] = {
            "handled": Counter(),
            "dropped": Counter(),
            "failed": Counter(),
        }

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Notifications received, by what became of them, then by priority.

        ``"handled"``: handed to the endpoints having the priority's method;
        ``"dropped"``: none has it; ``"failed"``: endpoints that raised (one
        notification counts once for each).
        """
        return {kind: dict(counts) for kind, counts in self._counts.items()}

    async def _deliver(
        self,
        priority: str,
        ctx: Context,
        publisher_id: str,
        event_type: str,
        payload: Any,
        metadata: dict[str, Any],
    ) -> None:
        handlers = self._handlers[priority]
        if not handlers:
            self._counts["dropped"][priority] += 1
            return
        self._counts["handled"][priority] += 1
        failures: list[Exception] = []
        for method, is_async in handlers:
            try:
                if is_async:
                    await method(ctx, publisher_id, event_type, payload, metadata)
                else:
                    call = functools.partial(
                        method, ctx, publisher_id, event_type, payload, metadata
                    )
                    await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            except Exception as exc:
                self._counts["failed"][priority] += 1
                failures.append(exc)
        # Raised once every endpoint had it, for the service to log and count.
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise ExceptionGroup(
                f"{len(failures)} notification endpoints failed on {priority}", failures
            )

    # The seven priorities, each an exposed method handing its notification on.
    audit = _priority_method("audit")
    debug = _priority_method("debug")
    info = _priority_method("info")
    warn = _priority_method("warn")
    error = _priority_method("error")
    critical = _priority_method("critical")
    sample = _priority_method("sample")
