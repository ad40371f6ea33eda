"""The traffic of `trizmq demo`: a plausible cloud, played against the demo's services.

Each `Flow` is one kind of request (a scheduler casting
`build_and_run_instance` to compute, computes calling the conductor, the API
asking the scheduler for destinations, fanouts to every network service...)
sent at random (Poisson) intervals at its own rate. The rates add up to about
fifty requests a second at `--rate 1`, more with the onward messages the
services send each other; `--rate` scales them all. A few per cent of calls
fail remotely (`NoValidHost`, `VolumeQuotaExceeded`) and a slow console now
and then outlasts its caller's short timeout, so errors and timeouts show too.

A `Tally` counts what was sent and how it went, for the demo's one-line
summaries.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import NoReturn

import attrs
import trio

from .._client import Client
from .._errors import CallTimeout, RemoteError
from .._ring import Ring
from .app import Instance, RequestSpec, Volume

__all__ = ["FLOWS", "Flow", "Tally", "flows_for", "nominal_rate", "run_traffic"]

#: Requests the generator keeps in flight at most; past it, requests are skipped.
MAX_IN_FLIGHT = 200
#: Seconds a cast or fanout may wait for room in a peer's queue (a peer that is down).
STALL_AFTER = 2.0
#: Timeout of `get_console_output` calls: short, so a slow console times out.
CONSOLE_TIMEOUT = 0.5
#: Timeout of every other call.
CALL_TIMEOUT = 10.0

_FLAVORS = (
    ("m1.tiny", 1, 512),
    ("m1.small", 1, 2048),
    ("m1.medium", 2, 4096),
    ("m1.large", 4, 8192),
)
_NETWORKS = ("private", "public", "storage")
_VOLUME_TYPES = ("lvm", "ceph", "ssd")


class _Cloud:
    """The state the requests draw on: recent instances, tokens and projects."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.instances: deque[str] = deque(maxlen=500)
        self.tokens: deque[str] = deque(maxlen=100)
        self.projects = [uuid.uuid4().hex for _ in range(8)]

    def new_instance(self) -> Instance:
        flavor, vcpus, memory = random.choice(_FLAVORS)
        instance = Instance(str(uuid.uuid4()), f"vm-{secrets.token_hex(3)}", flavor, vcpus, memory)
        self.instances.append(instance.uuid)
        return instance

    def some_instance(self) -> str:
        return random.choice(self.instances) if self.instances else str(uuid.uuid4())

    # -- the requests, one per flow ----------------------------------------------

    async def build_and_run_instance(self) -> None:
        # The scheduler's cast: round-robin over every compute host of the ring.
        await self.client.cast("compute", "build_and_run_instance", instance=self.new_instance())

    async def terminate_instance(self) -> None:
        await self.client.cast("compute", "terminate_instance", instance_uuid=self.some_instance())

    async def reboot_instance(self) -> None:
        reboot_type = "HARD" if random.random() < 0.2 else "SOFT"
        await self.client.cast(
            "compute",
            "reboot_instance",
            instance_uuid=self.some_instance(),
            reboot_type=reboot_type,
        )

    async def get_console_output(self) -> None:
        await self.client.call(
            "compute",
            "get_console_output",
            timeout=CONSOLE_TIMEOUT,
            instance_uuid=self.some_instance(),
            tail_length=random.choice((10, 20, 50)),
        )

    async def snapshot_instance(self) -> None:
        await self.client.call(
            "compute",
            "snapshot_instance",
            instance_uuid=self.some_instance(),
            image_name=f"snap-{secrets.token_hex(3)}",
        )

    async def instance_update(self) -> None:
        state = random.choice(("active", "stopped", "paused", "building"))
        await self.client.call(
            "conductor",
            "instance_update",
            instance_uuid=self.some_instance(),
            updates={"vm_state": state, "task_state": None},
        )

    async def object_action(self) -> None:
        objname, objmethod = random.choice(
            (("Instance", "save"), ("Instance", "refresh"), ("Migration", "save"))
        )
        await self.client.call(
            "conductor",
            "object_action",
            objname=objname,
            objmethod=objmethod,
            kwargs={"expected_task_state": None},
        )

    async def select_destinations(self) -> None:
        flavor, vcpus, memory = random.choice(_FLAVORS)
        spec = RequestSpec(str(uuid.uuid4()), flavor, vcpus, memory)
        await self.client.call("scheduler", "select_destinations", request_spec=spec)

    async def allocate_for_instance(self) -> None:
        networks = random.sample(_NETWORKS, random.randint(1, 2))
        await self.client.call(
            "network",
            "allocate_for_instance",
            instance_uuid=self.some_instance(),
            networks=networks,
        )

    async def update_port_cache(self) -> None:
        ports = [secrets.token_hex(8) for _ in range(random.randint(1, 3))]
        await self.client.fanout(
            "network", "update_port_cache", instance_uuid=self.some_instance(), ports=ports
        )

    async def refresh_rules(self) -> None:
        await self.client.fanout("network", "refresh_rules", security_group_id=uuid.uuid4().hex)

    async def authorize_console(self) -> None:
        token = secrets.token_urlsafe(16)
        await self.client.call(
            "consoleauth",
            "authorize_console",
            token=token,
            console_type=random.choice(("novnc", "spice-html5")),
            instance_uuid=self.some_instance(),
        )
        self.tokens.append(token)

    async def check_token(self) -> None:
        # Mostly tokens authorized a moment ago; now and then a stale one.
        known = self.tokens and random.random() < 0.85
        token = random.choice(self.tokens) if known else secrets.token_urlsafe(16)
        await self.client.call("consoleauth", "check_token", token=token)

    async def fetch_ca(self) -> None:
        await self.client.call("cert", "fetch_ca", project_id=random.choice(self.projects))

    async def generate_x509_cert(self) -> None:
        await self.client.call(
            "cert",
            "generate_x509_cert",
            user_id=f"user-{random.randint(1, 50)}",
            project_id=random.choice(self.projects),
        )

    async def create_volume(self) -> None:
        volume = Volume(
            str(uuid.uuid4()),
            random.choice((1, 10, 20, 50, 100)),
            random.choice(_VOLUME_TYPES),
            random.choice(self.projects),
        )
        await self.client.call("cinder-scheduler", "create_volume", volume=volume)

    async def initialize_connection(self) -> None:
        await self.client.call(
            "cinder-volume",
            "initialize_connection",
            volume_id=str(uuid.uuid4()),
            connector={"ip": "127.0.0.3", "host": "computenodex", "initiator": "iqn.1993-08"},
        )


@attrs.frozen
class Flow:
    """One kind of request the generator sends.

    Attributes:
        topic: The topic it goes to.
        method: The method it runs.
        kind: `"call"`, `"cast"` or `"fanout"`.
        rate: Requests per second at `--rate 1`.
    """

    topic: str
    method: str
    kind: str
    rate: float

    def request(self, cloud: _Cloud) -> Callable[[], Awaitable[None]]:
        """The coroutine function that sends one request of this flow."""
        send: Callable[[], Awaitable[None]] = getattr(cloud, self.method)
        return send


#: Every flow of the demo: about 50 requests a second at `--rate 1`.
FLOWS: tuple[Flow, ...] = (
    Flow("compute", "build_and_run_instance", "cast", 6.0),
    Flow("compute", "terminate_instance", "cast", 2.0),
    Flow("compute", "reboot_instance", "cast", 1.0),
    Flow("compute", "get_console_output", "call", 1.5),
    Flow("compute", "snapshot_instance", "call", 0.3),
    Flow("conductor", "instance_update", "call", 12.0),
    Flow("conductor", "object_action", "call", 12.0),
    Flow("scheduler", "select_destinations", "call", 4.0),
    Flow("network", "allocate_for_instance", "call", 2.0),
    Flow("network", "update_port_cache", "fanout", 2.0),
    Flow("network", "refresh_rules", "fanout", 0.7),
    Flow("consoleauth", "authorize_console", "call", 1.5),
    Flow("consoleauth", "check_token", "call", 3.0),
    Flow("cert", "fetch_ca", "call", 0.5),
    Flow("cert", "generate_x509_cert", "call", 0.5),
    Flow("cinder-scheduler", "create_volume", "call", 2.0),
    Flow("cinder-volume", "initialize_connection", "call", 1.0),
)


def flows_for(ring: Ring) -> tuple[Flow, ...]:
    """The flows whose topic the ring has (all of them for the seed ring)."""
    topics = set(ring.topics)
    return tuple(flow for flow in FLOWS if flow.topic in topics)


def nominal_rate(ring: Ring, scale: float) -> float:
    """Requests per second the generator sends to this ring at `--rate scale`."""
    return scale * sum(flow.rate for flow in flows_for(ring))


@attrs.define
class _Counts:
    sent: Counter[str] = attrs.field(factory=Counter)
    replies: int = 0
    errors: Counter[str] = attrs.field(factory=Counter)
    timeouts: int = 0
    stalled: int = 0
    skipped: int = 0
    latencies: list[float] = attrs.field(factory=list)


class Tally:
    """What the generator sent and how it went: totals, and a window for summaries."""

    def __init__(self) -> None:
        self.total = _Counts()
        self._window = _Counts()
        self._window_start = trio.current_time()
        self._start = self._window_start

    def sent(self, kind: str) -> None:
        """Count one request sent."""
        self.total.sent[kind] += 1
        self._window.sent[kind] += 1

    def replied(self, seconds: float) -> None:
        """Count one call answered, and how long it took."""
        self.total.replies += 1
        self._window.replies += 1
        self._window.latencies.append(seconds)

    def failed(self, type_name: str) -> None:
        """Count one call answered with a remote error."""
        short = type_name.rpartition(".")[2]
        self.total.errors[short] += 1
        self._window.errors[short] += 1

    def timed_out(self) -> None:
        """Count one call that got no reply in time."""
        self.total.timeouts += 1
        self._window.timeouts += 1

    def stalled(self) -> None:
        """Count one cast or fanout given up: the peer's queue stayed full."""
        self.total.stalled += 1
        self._window.stalled += 1

    def skipped(self) -> None:
        """Count one request not sent: too many were in flight."""
        self.total.skipped += 1
        self._window.skipped += 1

    def summary(self) -> str:
        """One line about the requests since the previous summary; starts a new window."""
        now = trio.current_time()
        counts, elapsed = self._window, max(now - self._window_start, 1e-9)
        self._window, self._window_start = _Counts(), now
        rates = ", ".join(f"{kind} {counts.sent[kind] / elapsed:.1f}" for kind in _KINDS)
        line = f"traffic: {counts.sent.total() / elapsed:6.1f} req/s ({rates})"
        if counts.latencies:
            ordered = sorted(counts.latencies)
            p50 = ordered[len(ordered) // 2]
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            line += f"  call p50 {_ms(p50)} p99 {_ms(p99)}"
        return line + _troubles(counts)

    def final(self) -> str:
        """One line about everything sent since the tally started."""
        counts = self.total
        elapsed = trio.current_time() - self._start
        kinds = ", ".join(f"{kind} {counts.sent[kind]}" for kind in _KINDS)
        return (
            f"traffic: {counts.sent.total()} requests in {elapsed:.1f} s ({kinds}), "
            f"{counts.replies} replies" + _troubles(counts)
        )


_KINDS = ("call", "cast", "fanout")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _troubles(counts: _Counts) -> str:
    parts = []
    if counts.errors:
        names = ", ".join(f"{name} {n}" for name, n in counts.errors.most_common())
        parts.append(f"errors {counts.errors.total()} ({names})")
    for label, n in (
        ("timeouts", counts.timeouts),
        ("stalled", counts.stalled),
        ("skipped", counts.skipped),
    ):
        if n:
            parts.append(f"{label} {n}")
    return "".join(f"  {part}" for part in parts)


async def run_traffic(client: Client, scale: float, tally: Tally) -> NoReturn:
    """Send the demo's traffic through `client` until cancelled.

    Args:
        client: An open client of the demo's ring.
        scale: The `--rate` multiplier of every flow's rate; must be positive.
        tally: Counts what is sent and how it goes.
    """
    cloud = _Cloud(client)
    in_flight = 0

    async def one(flow: Flow) -> None:
        nonlocal in_flight
        tally.sent(flow.kind)
        started = trio.current_time()
        try:
            if flow.kind == "call":
                await flow.request(cloud)()
                tally.replied(trio.current_time() - started)
            else:
                with trio.move_on_after(STALL_AFTER) as scope:
                    await flow.request(cloud)()
                if scope.cancelled_caught:
                    tally.stalled()
        except CallTimeout:
            tally.timed_out()
        except RemoteError as exc:
            tally.failed(exc.type_name)
        finally:
            in_flight -= 1

    async def drive(flow: Flow, requests: trio.Nursery) -> NoReturn:
        nonlocal in_flight
        rate = flow.rate * scale
        while True:
            await trio.sleep(random.expovariate(rate))
            if in_flight >= MAX_IN_FLIGHT:
                tally.skipped()
                continue
            in_flight += 1
            requests.start_soon(one, flow)

    async with trio.open_nursery() as requests:
        for flow in flows_for(client.ring):
            requests.start_soon(drive, flow, requests)
    raise AssertionError("unreachable: the flows run until cancelled")
