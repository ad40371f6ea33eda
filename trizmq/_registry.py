"""Live membership in Redis: services register under a lease, clients watch.

Layout under a prefix (``trizmq`` unless told otherwise), so that several
registries share one Redis without seeing each other:

- ``PREFIX:member:TOPIC:HOST``: one key per member, a JSON object
  ``{"topic", "host", "address", "port"}``, expiring after the lease unless
  its service renews it (three times a lease);
- ``PREFIX:members``: a pub/sub channel where services announce
  ``{"event": "join" | "leave", ...member}``.

Clients load every member at start, then follow the channel and load them all
again once a lease third: an expired key (a service killed) announces
nothing, and keyspace notifications are server configuration a managed Redis
may not allow. Redis going away stops nothing: services keep serving and
retry, clients keep the last members they saw; each logs it once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from ._nursery import open_nursery
from ._ring import tcp_url

# coredis takes longer to import than the rest of trizmq: only a registry's
# users pay for it, on first use.
if TYPE_CHECKING:
    import coredis

logger = logging.getLogger("trizmq.registry")

#: Seconds a member stays registered without renewing (a killed service's leave).
DEFAULT_LEASE = 3.0
#: Seconds one Redis command may take before it counts as a failure.
_COMMAND_TIMEOUT = 1.0
#: Seconds a leaving service keeps serving after announcing it, so that the
#: requests clients sent before they heard it are served, not refused.
LINGER = 0.25
_SCHEMES = ("redis", "rediss", "unix")
#: Seconds a service waits for its process's agent to try its join or leave: more
#: than the agent's own limits (a renewal under way, then its request).
_WAIT = 3 * _COMMAND_TIMEOUT


@attrs.frozen
class Member:
    """A service registered in a `Registry`: one topic of one host.

    Attributes:
        topic: The topic served.
        host: The host serving it (in a ring or not).
        address: The address its port is bound on, as clients connect to it.
        port: The topic's port.
    """

    topic: str
    host: str
    address: str
    port: int

    @property
    def target(self) -> str:
        """``"topic.host"``."""
        return f"{self.topic}.{self.host}"

    @property
    def url(self) -> str:
        """The service's ZeroMQ address, ``tcp://ADDRESS:PORT``."""
        return tcp_url(self.address, self.port)


@attrs.frozen
class Registry:
    """Where live membership is kept: a Redis server and a key prefix.

    Args:
        url: ``redis://[:PASSWORD@]HOST:PORT/DB``, ``rediss://...`` for TLS
            (``?ssl_ca_certs=CA.pem`` to trust a private CA), or
            ``unix:///path/redis.sock``.
        prefix: Prefix of every key and channel: registries with different
            prefixes on one Redis never see each other's members.
        lease: Seconds a member stays registered unless its service renews it,
            which it does three times a lease; clients load the members again
            as often. A killed service leaves within a lease.

    Raises:
        ValueError: The URL, prefix or lease is not valid.
    """

    url: str = attrs.field(repr=False)  # its password, if any, stays out of reprs
    prefix: str = "trizmq"
    lease: float = DEFAULT_LEASE

    def __attrs_post_init__(self) -> None:
        if urlsplit(self.url).scheme not in _SCHEMES:
            raise ValueError(
                f"registry {self.display_url!r}: expected redis://HOST:PORT/DB, "
                "rediss://... (TLS) or unix://PATH"
            )
        if not self.prefix or any(c in self.prefix for c in "*?[]\\ "):
            raise ValueError(
                f"registry prefix {self.prefix!r}: must be non-empty, no *?[]\\ or space"
            )
        if not self.lease > 0:
            raise ValueError(f"registry lease {self.lease:g}: must be more than 0")

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and screens."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))

    @property
    def channel(self) -> str:
        """The pub/sub channel of joins and leaves."""
        return f"{self.prefix}:members"

    def key(self, topic: str, host: str) -> str:
        """The key of one member."""
        return f"{self.prefix}:member:{topic}:{host}"

    @property
    def renew_interval(self) -> float:
        """Seconds between two renewals of a lease, and two loads of the members."""
        return self.lease / 3

    async def members(self) -> list[Member]:
        """Every member registered now, sorted by topic and host.

        Raises:
            coredis.exceptions.RedisError: Redis cannot be reached or refuses us.
            OSError: The same, from the socket.
        """
        async with self._connect() as redis:
            return await _load(self, redis)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[coredis.Redis[str]]:
        import coredis
        import coredis.retry

        redis: coredis.Redis[str] = coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            verify_version=False,
            # Fail fast: the callers retry at their own pace.
            retry_policy=coredis.retry.NoRetryPolicy(),
            connect_timeout=_COMMAND_TIMEOUT,
            stream_timeout=_COMMAND_TIMEOUT,
        )
        try:
            async with redis:
                yield redis
        except BaseExceptionGroup as group:
            # The pool's own task group wraps a lone error: say it as itself.
            leaves = _leaves(group)
            if len(leaves) == 1 and not isinstance(leaves[0], trio.Cancelled):
                raise leaves[0] from None
            raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


def as_registry(registry: Registry | str | None) -> Registry | None:
    """A `Registry` from what `serve` and `open_client` accept: one, a URL, or None."""
    return Registry(registry) if isinstance(registry, str) else registry


class _Outage:
    """Logs a registry going away once, and its return once: one per registry and
    side in a process, so that a process serving ten topics says it once too."""

    _shared: ClassVar[dict[tuple[Registry, str], _Outage]] = {}

    @classmethod
    def of(cls, registry: Registry, what: str) -> _Outage:
        key = (registry, what)
        if key not in cls._shared:
            cls._shared[key] = cls(registry, what)
        return cls._shared[key]

    def __init__(self, registry: Registry, what: str) -> None:
        self._registry = registry
        self._what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                "registry %s unreachable (%s): %s; retrying",
                self._registry.display_url,
                describe_failure(exc),
                self._what,
            )

    def ok(self) -> None:
        if self.down:
            self.down = False
            logger.warning("registry %s reachable again", self._registry.display_url)


@functools.cache
def failures() -> tuple[type[Exception], ...]:
    """What a Redis that is down, slow or refusing us raises."""
    import coredis.exceptions

    return (coredis.exceptions.RedisError, OSError, trio.TooSlowError)


def _time_limit(commands: int) -> float:
    """Seconds a pipeline of that many commands may take: a renewal of many
    services' leases is one round trip, but a long one."""
    return _COMMAND_TIMEOUT * (1 + commands / 1000)


def describe_failure(exc: BaseException) -> str:
    """One line on why Redis failed."""
    if isinstance(exc, trio.TooSlowError):
        return f"no answer within {_COMMAND_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _encode(member: Member, event: str | None = None) -> str:
    data: dict[str, Any] = attrs.asdict(member)
    if event is not None:
        data = {"event": event, **data}
    return json.dumps(data, separators=(",", ":"))


def _decode(text: str | None) -> tuple[str | None, Member] | None:
    """`(event, member)` from a key's value or an announcement; None if malformed."""
    if text is None:
        return None
    try:
        data = json.loads(text)
        member = Member(
            topic=str(data["topic"]),
            host=str(data["host"]),
            address=str(data["address"]),
            port=int(data["port"]),
        )
    except (ValueError, TypeError, KeyError):
        return None
    event = data.get("event")
    return (event if isinstance(event, str) else None), member


async def _load(registry: Registry, redis: coredis.Redis[str]) -> list[Member]:
    with trio.fail_after(_COMMAND_TIMEOUT * 2):
        keys = [key async for key in redis.scan_iter(match=registry.key("*", "*"), count=1000)]
        values = await redis.mget(keys) if keys else []
    members = {decoded[1] for decoded in map(_decode, values) if decoded is not None}
    return sorted(members, key=lambda m: (m.topic, m.host))


# -- services -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def keep_registered(
    registry: Registry, member: Member
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Keep `member` registered for the block; yields `leave`, which ends it.

    The first registration is tried before the block starts (a Redis that is
    down is logged, and retried in the background). `leave` deletes the key,
    announces the leave and waits `LINGER` seconds for the clients to hear
    it; leaving the block leaves too, if `leave` was not called. The services
    of a process in one registry share its `_Agent`.
    """
    agent = _Agent.acquire(registry)
    left = False

    async def leave() -> None:
        nonlocal left
        if left:
            return
        left = True
        with trio.CancelScope(shield=True):
            if await agent.leave(member):
                await trio.sleep(LINGER)

    try:
        try:
            await agent.join(member)
            yield leave
        finally:
            with trio.CancelScope(shield=True):
                await leave()
    finally:
        agent.release()


@attrs.define(eq=False)
class _Request:
    """A service's join or leave, until the agent has tried it."""

    member: Member
    done: trio.Event = attrs.field(factory=trio.Event)
    ok: bool = False


class _Agent:
    """Registers every service of a process in one registry, together.

    One Redis connection renews all their leases in one round trip (a
    pipeline) three times a lease, and deletes and announces the members of
    services that stop together in one too: a process of many services
    stopping at once leaves at once, not one connection per service.

    It runs in a system task from its first service's arrival to its last
    one's leave: no service's cancellation or failure stops it or delays
    another's leave (their waits are bounded), and it ends with the Trio run
    at the latest.
    """

    _agents: ClassVar[trio.lowlevel.RunVar[dict[Registry, _Agent]]] = trio.lowlevel.RunVar(
        "trizmq.registry.agents"
    )

    @classmethod
    def acquire(cls, registry: Registry) -> _Agent:
        """The agent of `registry` in this Trio run, started if none; one more user."""
        try:
            agents = cls._agents.get()
        except LookupError:
            agents = {}
            cls._agents.set(agents)
        agent = agents.get(registry)
        if agent is None:
            agent = agents[registry] = cls(registry)
            trio.lowlevel.spawn_system_task(
                agent._run, name=f"trizmq registry agent for {registry.display_url}"
            )
        agent._users += 1
        return agent

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._users = 0
        self._members: dict[str, tuple[Member, str]] = {}  # key: (member, its value)
        self._joins: list[_Request] = []
        self._leaves: list[_Request] = []
        self._wake = trio.Event()
        self._outage = _Outage.of(registry, "its services serve on, unregistered")
        self._lease_ms = max(1, round(registry.lease * 1000))

    def release(self) -> None:
        """One user less: the last one's leaving ends the agent once its work is done."""
        self._users -= 1
        if self._users == 0:
            agents = self._agents.get()
            if agents.get(self.registry) is self:
                del agents[self.registry]  # a service starting from now has a new one
            self._wake.set()

    async def join(self, member: Member) -> None:
        """Keep `member` registered; returns once its first registration was tried."""
        key = self.registry.key(member.topic, member.host)
        self._members[key] = (member, _encode(member))
        await self._ask(self._joins, member)

    async def leave(self, member: Member) -> bool:
        """Delete `member` and announce its leave; whether that was done."""
        self._members.pop(self.registry.key(member.topic, member.host), None)
        return await self._ask(self._leaves, member)

    async def _ask(self, queue: list[_Request], member: Member) -> bool:
        request = _Request(member)
        queue.append(request)
        self._wake.set()
        # The agent answers within its commands' time limits: this is a safety net.
        with trio.move_on_after(_WAIT):
            await request.done.wait()
        return request.ok

    async def _run(self) -> None:
        try:
            while self._users or self._leaves:
                try:
                    async with self.registry._connect() as redis:
                        await self._work(redis)
                except Exception as exc:  # a system task must not fail: say it, retry
                    self._outage.failed(exc)
                    self._not_deregistered([r.member for r in self._leaves], exc)
                    self._answer(self._leaves, len(self._leaves), ok=False)
                    self._answer(self._joins, len(self._joins), ok=False)
                    await trio.sleep(self.registry.renew_interval)
        finally:
            self._answer(self._joins, len(self._joins), ok=False)
            self._answer(self._leaves, len(self._leaves), ok=False)

    async def _work(self, redis: coredis.Redis[str]) -> None:
        renew_at = trio.current_time() + self.registry.renew_interval
        while self._users or self._leaves:
            with trio.move_on_at(renew_at):
                await self._wake.wait()
            # Services stopping together ask in the same tick: one batch for all.
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._wake = trio.Event()
            # Requests stay queued until answered: a failure answers them all.
            if leaving := len(self._leaves):
                members = [request.member for request in self._leaves[:leaving]]
                self._answer(self._leaves, leaving, ok=await self._deregister(redis, members))
            joining = len(self._joins)
            if trio.current_time() >= renew_at:
                renew_at = trio.current_time() + self.registry.renew_interval
                keys = list(self._members)
            else:
                keys = [self.registry.key(r.member.topic, r.member.host) for r in self._joins]
            self._answer(self._joins, joining, ok=await self._register(redis, keys))

    @staticmethod
    def _answer(queue: list[_Request], count: int, *, ok: bool) -> None:
        """Answer the first `count` requests of `queue`, and take them off it."""
        for request in queue[:count]:
            request.ok = ok
            request.done.set()
        del queue[:count]

    async def _register(self, redis: coredis.Redis[str], keys: list[str]) -> bool:
        """Write the members' keys, announcing each that was missing (first,
        after it expired, after Redis lost it); whether that was done."""
        keys = [key for key in keys if key in self._members]  # not left meanwhile
        if not keys:
            return True
        try:
            with trio.fail_after(_time_limit(len(keys))):
                async with redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.set(key, self._members[key][1], px=self._lease_ms, get=True)
                joined = [
                    self._members[key][0]
                    for key, previous in zip(keys, pipe.results or (), strict=True)
                    if previous is None and key in self._members
                ]
                if joined:
                    async with redis.pipeline(transaction=False) as pipe:
                        for member in joined:
                            pipe.publish(self.registry.channel, _encode(member, "join"))
        except failures() as exc:
            self._outage.failed(exc)
            return False
        self._outage.ok()
        for member in joined:
            logger.info("%s registered in %s", member.target, self.registry.display_url)
        return True

    async def _deregister(self, redis: coredis.Redis[str], members: list[Member]) -> bool:
        """Delete the members' keys and announce their leaves; whether that was done."""
        registry = self.registry
        try:
            with trio.fail_after(_time_limit(len(members))):
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.delete([registry.key(m.topic, m.host) for m in members])
                    for member in members:
                        pipe.publish(registry.channel, _encode(member, "leave"))
        except failures() as exc:
            self._not_deregistered(members, exc)
            return False
        for member in members:
            logger.info("%s left %s", member.target, registry.display_url)
        return True

    def _not_deregistered(self, members: list[Member], exc: BaseException) -> None:
        for member in members:
            logger.warning(
                "%s: cannot deregister from %s (%s): it leaves when its lease ends",
                member.target,
                self.registry.display_url,
                describe_failure(exc),
            )


# -- clients --------------------------------------------------------------------


class Watcher(Protocol):
    """What a watch tells: the whole membership, or one join or leave."""

    def replace(self, members: list[Member]) -> None:
        """The members are exactly these now."""

    def join(self, member: Member) -> None:
        """A member joined (or moved)."""

    def leave(self, member: Member) -> None:
        """A member left."""


async def watch(
    registry: Registry,
    watcher: Watcher,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Tell `watcher` the registry's members, then every change, until cancelled.

    Started once the first load was tried (a Redis that is down is logged
    once, and the watcher keeps what it had).
    """
    outage = _Outage.of(registry, "routing on the last members seen (the ring's until the first)")
    announced = 0  # announcements applied: a load that saw some arrive is not applied

    def on_message(text: str) -> None:
        nonlocal announced
        decoded = _decode(text)
        if decoded is None:
            return
        announced += 1
        event, member = decoded
        if event == "join":
            watcher.join(member)
        elif event == "leave":
            watcher.leave(member)

    async with registry._connect() as redis, open_nursery() as nursery:
        nursery.start_soon(_listen, registry, redis, on_message)
        while True:
            before = announced
            try:
                members = await _load(registry, redis)
            except failures() as exc:
                outage.failed(exc)
            else:
                outage.ok()
                if announced == before:
                    watcher.replace(members)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(registry.renew_interval)
    raise AssertionError("unreachable")  # pragma: no cover


async def _listen(
    registry: Registry, redis: coredis.Redis[str], on_message: Callable[[str], None]
) -> NoReturn:
    """Follow the channel, resubscribing after Redis comes back (the loads say
    when it is away, so this says nothing)."""
    import anyio
    import coredis.exceptions
    import coredis.retry

    # Redis went away; or, cancelled, coredis fails its unsubscribing on the
    # connection the cancellation closed: nothing to tell either way.
    ignored: tuple[type[Exception], ...] = (anyio.ClosedResourceError, *failures())
    while True:
        try:
            async with redis.pubsub(
                channels=[registry.channel],
                ignore_subscribe_messages=True,
                retry_policy=coredis.retry.ExponentialBackoffRetryPolicy(
                    (coredis.exceptions.ConnectionError,),
                    retries=None,
                    base_delay=0.05,
                    max_delay=registry.renew_interval,
                ),
            ) as pubsub:
                async for message in pubsub:
                    if message["type"] == "message" and isinstance(message["data"], str):
                        on_message(message["data"])
        except* ignored:
            pass
        await trio.sleep(registry.renew_interval)
