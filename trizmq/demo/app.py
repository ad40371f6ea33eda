"""The endpoints of `trizmq demo`: a toy cloud behind the seed ring's topics.

Each class plays one service of the seed ring (nova-compute, nova-conductor,
cinder-volume, ...) closely enough for the traffic to look like a cloud in
`trizmq-monitor`: plausible methods and arguments, handler times from a
millisecond to a couple of seconds, and the odd error a real cloud raises
(`NoValidHost`, `VolumeQuotaExceeded`). Nothing is stored except a bounded
table of console tokens.

`trizmq demo` serves them with
``trizmq serve RING --host H --app trizmq.demo.app:SERVICES --topic T``, one
process per (host, topic). Two handlers pass work on to another service, as
the real ones do: compute's `build_and_run_instance` reports back to the
conductor, and the cinder scheduler casts `create_volume` to cinder-volume.
For that the process needs the ring and the host addresses, which the demo
gives in the environment (`RING_ENV`, `RESOLVE_ENV`); without them (the module
served by hand) those onward messages are simply not sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import attrs
import trio

from .._client import Client, open_client
from .._context import Context
from .._curve import Curve
from .._errors import TrizmqError
from .._ring import Ring, parse_resolve

__all__ = [
    "RESOLVE_ENV",
    "RING_ENV",
    "SERVICES",
    "CinderScheduler",
    "CinderVolume",
    "Compute",
    "Conductor",
    "Consoleauth",
    "Cert",
    "Destination",
    "Instance",
    "Network",
    "NoValidHost",
    "RequestSpec",
    "Scheduler",
    "Volume",
    "VolumeQuotaExceeded",
]

logger = logging.getLogger("trizmq.demo")

#: The environment variable naming the ring file onward messages are routed by.
RING_ENV = "TRIZMQ_DEMO_RING"
#: The environment variable with the host addresses, as ``NAME=ADDR,NAME=ADDR``.
RESOLVE_ENV = "TRIZMQ_DEMO_RESOLVE"
#: With `trizmq demo --curve`: the folder of the run's keys, for onward calls.
KEYS_ENV = "TRIZMQ_DEMO_KEYS"

#: How often the handlers that can fail do (a few per cent, as the demo promises).
NO_VALID_HOST_RATE = 0.03
QUOTA_EXCEEDED_RATE = 0.04
#: How often `Compute.get_console_output` is slow: the demo's source of timeouts.
SLOW_CONSOLE_RATE = 0.06

#: Seconds an onward message may take before it is given up.
_ONWARD_TIMEOUT = 5.0
_CONSOLE_TOKENS = 1000


class NoValidHost(Exception):
    """The scheduler found no compute host with room for the request."""


class VolumeQuotaExceeded(Exception):
    """The project has no volume quota left for the request."""


@attrs.define
class Instance:
    """A virtual machine, as compute is asked to build it.

    Attributes:
        uuid: The instance's id.
        name: Its display name.
        flavor: The flavor name (`m1.small`...).
        vcpus: Virtual CPUs.
        memory_mb: Memory in MiB.
    """

    uuid: str
    name: str
    flavor: str
    vcpus: int
    memory_mb: int


@attrs.define
class RequestSpec:
    """What the scheduler must place.

    Attributes:
        instance_uuid: The instance to place.
        flavor: Its flavor name.
        vcpus: Virtual CPUs it needs.
        memory_mb: Memory it needs, in MiB.
        availability_zone: The zone asked for, if any.
    """

    instance_uuid: str
    flavor: str
    vcpus: int
    memory_mb: int
    availability_zone: str | None = None


@attrs.define
class Destination:
    """One host the scheduler chose.

    Attributes:
        host: The compute host.
        nodename: The hypervisor node on it.
        limits: Resource limits the claim must respect.
    """

    host: str
    nodename: str
    limits: dict[str, int] = attrs.field(factory=dict)


@attrs.define
class Volume:
    """A block storage volume, as cinder is asked to create it.

    Attributes:
        id: The volume's id.
        size_gb: Its size in GiB.
        volume_type: The backend type asked for.
        project_id: The project it is charged to.
    """

    id: str
    size_gb: int
    volume_type: str
    project_id: str


async def _work(low: float, high: float) -> None:
    """Pretend to work for between `low` and `high` seconds."""
    await trio.sleep(random.uniform(low, high))


# -- onward messages ----------------------------------------------------------


class _Onward:
    """The client one service process uses to reach other services.

    Opened on first use and kept for the life of the process, in a Trio
    *system* task: a handler's own nursery ends with the handler, and `trizmq
    serve` gives the app no nursery of its own. The system task is cancelled
    when `trio.run` ends, which closes the client.
    """

    def __init__(self) -> None:
        self._ready: trio.Event | None = None
        self._client: Client | None = None
        self._ring: Ring | None = None
        self._loaded = False

    def ring(self) -> Ring | None:
        """The ring named by `RING_ENV`, or None when the demo did not set it."""
        if not self._loaded:
            self._loaded = True
            path = os.environ.get(RING_ENV)
            if path:
                try:
                    self._ring = Ring.load(path)
                except TrizmqError as exc:
                    logger.warning("%s: %s; onward messages are off", RING_ENV, exc)
        return self._ring

    async def client(self) -> Client | None:
        """The shared client, or None when onward messages are off."""
        if self.ring() is None:
            return None
        if self._ready is None:
            self._ready = trio.Event()
            trio.lowlevel.spawn_system_task(self._hold, name="trizmq demo onward client")
        await self._ready.wait()
        return self._client

    async def _hold(self) -> None:
        ring = self.ring()
        assert ring is not None and self._ready is not None
        try:
            resolve = parse_resolve(filter(None, os.environ.get(RESOLVE_ENV, "").split(",")))
            keys = os.environ.get(KEYS_ENV)
            curve = None
            if keys:
                secret = Path(keys) / "clients" / "demo.key_secret"
                curve = Curve.client(secret, Path(keys) / "server.key")
            async with open_client(
                ring, resolve=resolve, timeout=_ONWARD_TIMEOUT, name="demo-onward", curve=curve
            ) as client:
                self._client = client
                self._ready.set()
                await trio.sleep_forever()
        except Exception as exc:  # a system task must not raise: it would end the process
            logger.warning("onward client failed: %s", exc)
        finally:
            self._client = None
            self._ready.set()


_onward = _Onward()


async def _call_onward(target: str, method: str, **args: Any) -> Any:
    """Call another service; None when onward messages are off or the call failed."""
    client = await _onward.client()
    if client is None:
        return None
    try:
        return await client.call(target, method, **args)
    except TrizmqError:
        return None  # the other service is down or stopping: not this handler's problem


async def _cast_onward(target: str, method: str, **args: Any) -> None:
    """Cast to another service, giving up after `_ONWARD_TIMEOUT` if it is unreachable."""
    client = await _onward.client()
    if client is None:
        return
    # A cast to a service that is down waits at the high-water mark: bound it.
    with trio.move_on_after(_ONWARD_TIMEOUT):
        with contextlib.suppress(TrizmqError):
            await client.cast(target, method, **args)


# -- the services -------------------------------------------------------------


class Compute:
    """nova-compute: builds, reboots, snapshots and deletes instances."""

    async def build_and_run_instance(
        self, ctx: Context, instance: Instance, node: str | None = None
    ) -> None:
        """Spawn an instance (sent as a cast), then tell the conductor it is active."""
        await _work(0.02, 0.15)
        await _call_onward(
            "conductor",
            "instance_update",
            instance_uuid=instance.uuid,
            updates={"vm_state": "active", "host": ctx.host, "node": node or ctx.host},
        )

    async def terminate_instance(self, ctx: Context, instance_uuid: str) -> None:
        """Delete an instance (a cast)."""
        await _work(0.005, 0.03)

    async def reboot_instance(
        self, ctx: Context, instance_uuid: str, reboot_type: str = "SOFT"
    ) -> None:
        """Reboot an instance (a cast); a hard reboot takes longer."""
        await _work(0.02, 0.08 if reboot_type == "SOFT" else 0.2)

    async def get_console_output(
        self, ctx: Context, instance_uuid: str, tail_length: int = 20
    ) -> str:
        """The last lines of an instance's console; now and then the hypervisor is slow."""
        if random.random() < SLOW_CONSOLE_RATE:
            await _work(1.0, 2.0)
        else:
            await _work(0.002, 0.02)
        return "\n".join(f"[{n:5d}.000000] {instance_uuid[:8]} login:" for n in range(tail_length))

    async def snapshot_instance(
        self, ctx: Context, instance_uuid: str, image_name: str
    ) -> dict[str, str]:
        """Snapshot an instance to an image: the demo's slow method (0.5 to 2 s)."""
        await _work(0.5, 2.0)
        return {"image_id": secrets.token_hex(16), "name": image_name, "host": ctx.host}


class Conductor:
    """nova-conductor: the database proxy every compute talks to."""

    async def instance_update(
        self, ctx: Context, instance_uuid: str, updates: dict[str, Any]
    ) -> dict[str, Any]:
        """Update an instance's record and return it."""
        await _work(0.001, 0.004)
        return {"uuid": instance_uuid, **updates, "updated_at": time.time()}

    async def object_action(
        self,
        ctx: Context,
        objname: str,
        objmethod: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run a method of a versioned object on the database side."""
        await _work(0.001, 0.006)
        return {"objname": objname, "objmethod": objmethod, "changes": len(kwargs or {})}


class Scheduler:
    """nova-scheduler: chooses a compute host for each new instance."""

    async def select_destinations(
        self, ctx: Context, request_spec: RequestSpec, num_instances: int = 1
    ) -> list[Destination]:
        """Choose `num_instances` hosts; raises `NoValidHost` a few per cent of the time."""
        await _work(0.005, 0.025)
        if random.random() < NO_VALID_HOST_RATE:
            raise NoValidHost(
                f"No valid host was found. There are not enough hosts available "
                f"for {request_spec.flavor} ({request_spec.vcpus} vCPU, "
                f"{request_spec.memory_mb} MiB)"
            )
        ring = _onward.ring()
        hosts = ring.hosts_of("compute") if ring is not None and "compute" in ring.topics else ()
        hosts = hosts or ("controller", "computenodex")
        return [
            Destination(host, host, {"vcpu": 64, "memory_mb": 262144})
            for host in random.choices(hosts, k=num_instances)
        ]


class Network:
    """nova-network: ports, caches and security group rules, on every node."""

    async def allocate_for_instance(
        self, ctx: Context, instance_uuid: str, networks: list[str]
    ) -> list[dict[str, str]]:
        """Create a port on each network for an instance."""
        await _work(0.01, 0.04)
        return [
            {"network": net, "port_id": secrets.token_hex(8), "mac": _mac()} for net in networks
        ]

    async def update_port_cache(self, ctx: Context, instance_uuid: str, ports: list[str]) -> None:
        """Refresh the cached ports of an instance (a fanout)."""
        await _work(0.001, 0.005)

    async def refresh_rules(self, ctx: Context, security_group_id: str) -> None:
        """Re-apply a security group's rules (a fanout)."""
        await _work(0.005, 0.02)


def _mac() -> str:
    return "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


class Consoleauth:
    """nova-consoleauth: issues and checks console tokens."""

    def __init__(self) -> None:
        self._tokens: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def authorize_console(
        self, ctx: Context, token: str, console_type: str, instance_uuid: str
    ) -> None:
        """Remember a console token for ten minutes."""
        await _work(0.001, 0.003)
        self._tokens[token] = {
            "console_type": console_type,
            "instance_uuid": instance_uuid,
            "expires": time.time() + 600,
        }
        while len(self._tokens) > _CONSOLE_TOKENS:
            self._tokens.popitem(last=False)

    async def check_token(self, ctx: Context, token: str) -> dict[str, Any] | None:
        """The console a token opens, or None for an unknown or expired token."""
        await _work(0.0005, 0.002)
        info = self._tokens.get(token)
        if info is None or info["expires"] < time.time():
            return None
        return info


class Cert:
    """nova-cert: the cloud's certificate authority."""

    async def fetch_ca(self, ctx: Context, project_id: str | None = None) -> str:
        """The CA certificate, PEM encoded."""
        await _work(0.001, 0.003)
        return "-----BEGIN CERTIFICATE-----\nMIIDemoCA\n-----END CERTIFICATE-----\n"

    async def generate_x509_cert(
        self, ctx: Context, user_id: str, project_id: str
    ) -> dict[str, str]:
        """A new key and certificate for a user (key generation takes a while)."""
        await _work(0.03, 0.12)
        return {
            "private_key": f"-----BEGIN RSA PRIVATE KEY-----\n{secrets.token_hex(24)}\n",
            "certificate": f"-----BEGIN CERTIFICATE-----\nCN={user_id}/{project_id}\n",
        }


class CinderScheduler:
    """cinder-scheduler: checks quota and picks a backend for new volumes."""

    async def create_volume(self, ctx: Context, volume: Volume) -> dict[str, str]:
        """Place a volume and cast its creation to cinder-volume.

        Raises:
            VolumeQuotaExceeded: A few per cent of the time, as projects run out.
        """
        await _work(0.003, 0.01)
        if random.random() < QUOTA_EXCEEDED_RATE:
            raise VolumeQuotaExceeded(
                f"Requested volume or snapshot exceeds allowed gigabytes quota. "
                f"Requested {volume.size_gb}G, quota is 1000G and 998G has been consumed."
            )
        backend = f"{ctx.host}@lvm#{volume.volume_type}"
        await _cast_onward("cinder-volume", "create_volume", volume=volume, backend=backend)
        return {"volume_id": volume.id, "backend": backend}


class CinderVolume:
    """cinder-volume: creates volumes and attaches them to instances."""

    async def create_volume(self, ctx: Context, volume: Volume, backend: str) -> None:
        """Create a logical volume (a cast from the cinder scheduler)."""
        await _work(0.05, 0.3)

    async def initialize_connection(
        self, ctx: Context, volume_id: str, connector: dict[str, str]
    ) -> dict[str, Any]:
        """The connection information a compute host needs to attach a volume."""
        await _work(0.005, 0.02)
        return {
            "driver_volume_type": "iscsi",
            "data": {
                "target_iqn": f"iqn.2010-10.org.openstack:volume-{volume_id}",
                "target_portal": f"{connector.get('ip', '127.0.0.1')}:3260",
                "target_lun": 1,
            },
        }


#: The demo's endpoints, one per topic of the seed ring (``zmq_replies`` is reserved).
SERVICES: dict[str, type] = {
    "compute": Compute,
    "conductor": Conductor,
    "scheduler": Scheduler,
    "network": Network,
    "consoleauth": Consoleauth,
    "cert": Cert,
    "cinder-scheduler": CinderScheduler,
    "cinder-volume": CinderVolume,
}
