"""The ring: which hosts serve which topic, on which port.

A ring file is a JSON object mapping ``"topic:port"`` to the list of hosts that
run the topic's service, or to an object of named pools of hosts (notification
listeners: each pool gets every notification, one member of it each)::

    {"compute:9501": ["controller", "computenodex"],
     "scheduler:9506": ["controller"],
     "notifications:9700": {"scheduler": ["controller"], "audit": ["computenodex"]}}

`Ring` loads and validates such a file and answers the questions a client and
a service runner ask: the port of a topic, its hosts, the next host in
round-robin order, what a ``topic`` or ``topic.host`` target means, and which
services a host must run. Every problem is a `RingError` whose message names the
source, the key and what is wrong.

`resolve_address`, `lookup` and `parse_resolve` turn ring host names into
addresses (IPv4 or IPv6), with an optional curl-style ``NAME=ADDR`` override,
and `tcp_url` makes the ZeroMQ endpoint of an address and port.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from ._errors import RingError

__all__ = [
    "DEFAULT_POOL",
    "REPLIES_TOPIC",
    "Ring",
    "Service",
    "is_ipv6",
    "load_json",
    "lookup",
    "parse_resolve",
    "resolve_address",
    "tcp_url",
]

REPLIES_TOPIC = "zmq_replies"
"""The seed ring's reply topic. Accepted for compatibility; trizmq serves nothing there."""

DEFAULT_POOL = "default"
"""The name `Ring.pools_of` gives the one pool of a topic whose hosts are a plain list."""

_MAPPING_SOURCE = "<mapping>"
_MIN_PORT = 1
_MAX_PORT = 65535
# Topics and host labels share one alphabet. '.' separates topic and host in
# "topic.host" (a target splits on its first '.'), so a topic has none; a host
# is a domain name, labels joined by '.'. ':' separates topic and port in keys.
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_BAD_NAME_CHAR_RE = re.compile(r"[^A-Za-z0-9_-]")
_ALLOWED = "letters, digits, '_' and '-'"
_BAD_HOST_CHAR_RE = re.compile(r"[^A-Za-z0-9_.-]")
_HOST_ALLOWED = "labels of letters, digits, '_' and '-' joined by '.'"
# RFC 1123: a label is 1 to 63 characters, a whole name at most 253.
_MAX_LABEL = 63
_MAX_HOST = 253


@attrs.frozen
class Service:
    """One service a host must run: a topic bound on its port.

    Attributes:
        host: The ring host name.
        topic: The topic served.
        port: The TCP port the service binds.
    """

    host: str
    topic: str
    port: int

    @property
    def target(self) -> str:
        """The direct target naming this service, ``"topic.host"``."""
        return f"{self.topic}.{self.host}"


@attrs.frozen
class _Entry:
    """One validated ring key: a topic, its port and its hosts in file order.

    ``pools`` is None for a plain list of hosts, else the pools in file
    order, whose hosts are ``hosts`` in that order.
    """

    key: str
    topic: str
    port: int
    hosts: tuple[str, ...]
    pools: tuple[tuple[str, tuple[str, ...]], ...] | None = None


@attrs.frozen
class Ring:
    """A validated ring: topics, their ports and the hosts that serve them.

    Build one with `Ring.load` or `Ring.from_mapping`. A ring never changes
    after loading.

    The seed ring's ``zmq_replies`` topic (`REPLIES_TOPIC`) is accepted and
    answers queries like any other topic, but it is *reserved*: trizmq uses
    ROUTER sockets on service ports and DEALER sockets on callers, so a reply
    travels back on the caller's own connection and nothing is served on the
    reply port. `services` and `services_of` leave it out by default, and
    `resolve_target` refuses it as a target.

    Attributes:
        source: Where the ring came from: the file path, or ``"<mapping>"``.
    """

    source: str
    # Left out of the hash (a dict is unhashable); equal rings still hash alike.
    _entries: Mapping[str, _Entry] = attrs.field(repr=False, hash=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ring:
        """Load and validate a ring file.

        Args:
            path: The JSON ring file.

        Returns:
            The validated ring; its `source` is ``str(path)``.

        Raises:
            RingError: The file cannot be read, is not valid JSON (the message
                gives line and column), is nested too deeply, has a number too
                long for Python, has a key twice, or breaks a ring rule.
        """
        source = os.fspath(path)
        try:
            # utf-8-sig: tolerate a byte order mark left by some editors.
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise RingError(f"{source}: ring file not found") from None
        except UnicodeDecodeError as exc:
            raise RingError(f"{source}: ring file is not UTF-8 text: {exc.reason}") from None
        except OSError as exc:
            raise RingError(f"{source}: cannot read ring file: {exc.strerror or exc}") from None
        data = load_json(text, source, object_pairs_hook=_no_duplicate_keys(source))
        return cls(source, _parse(data, source))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object], source: str = _MAPPING_SOURCE) -> Ring:
        """Build a ring from already-parsed data, with the same rules as `load`.

        Args:
            mapping: ``"topic:port"`` keys mapped to lists of host names, or to
                mappings of pool name to list of host names.
            source: The name used in error messages and `to_json`.

        Returns:
            The validated ring.

        Raises:
            RingError: The mapping breaks a ring rule.
        """
        return cls(source, _parse(mapping, source))

    # -- queries --------------------------------------------------------------

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic of the ring, reserved ones included, sorted."""
        return tuple(sorted(self._entries))

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host named anywhere in the ring, sorted."""
        return tuple(sorted({h for entry in self._entries.values() for h in entry.hosts}))

    def port(self, topic: str) -> int:
        """The port a topic's service binds.

        Args:
            topic: A topic of the ring.

        Returns:
            The topic's TCP port.

        Raises:
            RingError: The topic is not in the ring.
        """
        return self._entry(topic).port

    def hosts_of(self, topic: str) -> tuple[str, ...]:
        """The hosts that serve a topic.

        Args:
            topic: A topic of the ring.

        Returns:
            The topic's hosts, in the order the ring lists them; for a topic
            of pools, every pool's hosts, pool after pool.

        Raises:
            RingError: The topic is not in the ring.
        """
        return self._entry(topic).hosts

    def pools_of(self, topic: str) -> Mapping[str, tuple[str, ...]]:
        """The pools of a topic's hosts: each gets every notification, one member of it each.

        Args:
            topic: A topic of the ring.

        Returns:
            Pool name to its hosts, both in the order the ring lists them. A
            topic whose hosts are a plain list is one pool, named
            ``"default"``.

        Raises:
            RingError: The topic is not in the ring.
        """
        entry = self._entry(topic)
        return dict(entry.pools) if entry.pools is not None else {DEFAULT_POOL: entry.hosts}

    def serves(self, topic: str, host: str) -> bool:
        """Whether a host serves a topic.

        Args:
            topic: A topic name; an unknown topic is served by no host.
            host: A host name.

        Returns:
            True if the ring lists ``host`` for ``topic``.
        """
        entry = self._entries.get(topic)
        return entry is not None and host in entry.hosts

    def resolve_target(self, target: str) -> tuple[str, str | None]:
        """Split and check a call target.

        A target is ``"topic"`` (any host of the topic) or ``"topic.host"``
        (that host only). It is split on the first ``'.'``; names never contain
        one.

        Args:
            target: The target to resolve.

        Returns:
            ``(topic, host)``, with ``host`` None for a plain topic target.

        Raises:
            RingError: The topic is unknown or reserved, or the host does not
                serve the topic. The message names the target.
        """
        topic, dot, host = target.partition(".")
        entry = self._entries.get(topic)
        # The common case first, with no message built: a valid target.
        if entry is not None and not self.is_reserved(topic):
            if not dot:
                return topic, None
            if host in entry.hosts:
                return topic, host
        where = f"{self.source}: target {target!r}"
        if not topic:
            raise RingError(f"{where}: the topic name is empty")
        if entry is None:
            raise RingError(f"{where}: unknown topic {topic!r} (topics: {', '.join(self.topics)})")
        if self.is_reserved(topic):
            raise RingError(
                f"{where}: topic {topic!r} is reserved: trizmq serves nothing there, "
                "replies travel on the caller's own connection"
            )
        if not host:
            raise RingError(f"{where}: the host name after '.' is empty")
        raise RingError(
            f"{where}: host {host!r} does not serve topic {topic!r} "
            f"(its hosts: {', '.join(entry.hosts)})"
        )

    @staticmethod
    def is_reserved(topic: str) -> bool:
        """Whether a topic is reserved, that is served by no trizmq service.

        Only ``zmq_replies`` is: the seed's reply port, unused because replies
        travel back on the caller's own DEALER connection.

        Args:
            topic: A topic name.

        Returns:
            True for `REPLIES_TOPIC`.
        """
        return topic == REPLIES_TOPIC

    def services_of(self, host: str, include_reserved: bool = False) -> tuple[Service, ...]:
        """Every service a host must run.

        Args:
            host: A host of the ring.
            include_reserved: Also list reserved topics (``zmq_replies``),
                which trizmq does not serve.

        Returns:
            The host's services, sorted by port.

        Raises:
            RingError: The host is not in the ring; a misspelt host name would
                otherwise silently run nothing.
        """
        if host not in self.hosts:
            raise RingError(
                f"{self.source}: host {host!r} is not in the ring (hosts: {', '.join(self.hosts)})"
            )
        return tuple(s for s in self.services(include_reserved) if s.host == host)

    def services(self, include_reserved: bool = False) -> tuple[Service, ...]:
        """Every service of the ring, one per (host, topic).

        Args:
            include_reserved: Also list reserved topics (``zmq_replies``),
                which trizmq does not serve.

        Returns:
            The services, sorted by host, then port.
        """
        found = [
            Service(host=host, topic=entry.topic, port=entry.port)
            for entry in self._entries.values()
            if include_reserved or not self.is_reserved(entry.topic)
            for host in entry.hosts
        ]
        return tuple(sorted(found, key=lambda s: (s.host, s.port, s.topic)))

    def to_json(self) -> dict[str, Any]:
        """The ring as plain data, ready for `json.dumps`.

        Returns:
            ``{"source": ..., "topics": [{"topic": ..., "port": ...,
            "hosts": [...]}, ...]}``, topics sorted, hosts in ring order. A
            topic the ring gives as pools also has ``"pools": {name: [...]}``,
            so the ring file can be written back as it was.
        """
        return {
            "source": self.source,
            "topics": [
                _entry_json(e) for e in sorted(self._entries.values(), key=lambda e: e.topic)
            ],
        }

    def _entry(self, topic: str) -> _Entry:
        try:
            return self._entries[topic]
        except KeyError:
            raise RingError(
                f"{self.source}: unknown topic {topic!r} (topics: {', '.join(self.topics)})"
            ) from None


def _entry_json(entry: _Entry) -> dict[str, Any]:
    data: dict[str, Any] = {"topic": entry.topic, "port": entry.port, "hosts": list(entry.hosts)}
    if entry.pools is not None:
        data["pools"] = {name: list(hosts) for name, hosts in entry.pools}
    return data


# -- parsing and validation ---------------------------------------------------


def load_json(text: str, where: str, **options: Any) -> Any:
    """Parse JSON text with `json.loads`, turning every refusal into a `RingError`.

    Args:
        text: The JSON text.
        where: What the text is (a file name, an option), to start the message.
        **options: Passed on to `json.loads`.

    Returns:
        The parsed value.

    Raises:
        RingError: The text is not valid JSON (the message gives line and
            column), is nested too deeply, or has an integer too long for Python.
    """
    try:
        return json.loads(text, **options)
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    except RecursionError:
        problem = "invalid JSON: nested too deeply"
    except ValueError:
        # The only other ValueError of json: Python's cap on the digits of an
        # int, which keeps a huge number from costing quadratic time.
        problem = f"invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
    raise RingError(f"{where}: {problem}")


def _no_duplicate_keys(source: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` that refuses a key given twice.

    Plain `json.loads` keeps the last value silently, which would hide a
    copy-paste mistake in a hand-edited ring.
    """

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise RingError(f"{source}: key {key!r}: the key appears twice in the JSON object")
            seen[key] = value
        return seen

    return hook


def _parse(data: object, source: str) -> dict[str, _Entry]:
    """Validate ring data and index it by topic."""
    if not isinstance(data, Mapping):
        raise RingError(
            f"{source}: the ring must be a JSON object mapping 'topic:port' to a list of hosts, "
            f"not {_json_type(data)}"
        )
    if not data:
        raise RingError(f"{source}: the ring has no topics")
    entries: dict[str, _Entry] = {}
    # (host, port) -> the topic that claimed it first, to catch two services
    # that would bind the same port on the same host.
    claimed: dict[tuple[str, int], _Entry] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise RingError(f"{source}: key {key!r}: keys must be strings 'topic:port'")
        topic, port = _parse_key(key, source)
        if isinstance(value, Mapping):
            pools = _parse_pools(key, value, source)
            hosts = tuple(host for _, members in pools for host in members)
            entry = _Entry(key=key, topic=topic, port=port, hosts=hosts, pools=pools)
        else:
            hosts = _parse_hosts(f"{source}: key {key!r}", value, "a topic")
            entry = _Entry(key=key, topic=topic, port=port, hosts=hosts)
        previous = entries.get(topic)
        if previous is not None:
            raise RingError(
                f"{source}: key {key!r}: topic {topic!r} is already listed with port "
                f"{previous.port} (key {previous.key!r}); a topic has exactly one port"
            )
        for host in hosts:
            other = claimed.setdefault((host, port), entry)
            if other is not entry:
                raise RingError(
                    f"{source}: key {key!r}: port {port} on host {host!r} is claimed by both "
                    f"topic {other.topic!r} and topic {topic!r}; two topics may share a port "
                    "only if no host serves both"
                )
        entries[topic] = entry
    return entries


def _parse_key(key: str, source: str) -> tuple[str, int]:
    """Split a ``"topic:port"`` key and check both halves."""
    where = f"{source}: key {key!r}"
    # The last ':' separates the port, so "a:b:9501" is reported as a bad
    # character in the topic rather than as a strange port.
    topic, colon, port_text = key.rpartition(":")
    if not colon:
        raise RingError(f"{where}: no port; keys are 'topic:port', for example 'compute:9501'")
    if not topic:
        raise RingError(f"{where}: the topic name before ':' is empty")
    problem = _name_problem("topic", topic)
    if problem:
        raise RingError(f"{where}: {problem}")
    if not port_text:
        raise RingError(f"{where}: the port after ':' is empty")
    # Strict: ASCII digits only, so no sign, space, decimal point or exponent.
    if not (port_text.isascii() and port_text.isdigit()):
        raise RingError(f"{where}: port {port_text!r} is not a number: use digits only")
    # "09501" and "9501" would otherwise be two keys for one port.
    if len(port_text) > 1 and port_text.startswith("0"):
        raise RingError(f"{where}: port {port_text!r} has a leading zero")
    port = int(port_text)
    if not _MIN_PORT <= port <= _MAX_PORT:
        raise RingError(f"{where}: port {port} is out of range {_MIN_PORT}-{_MAX_PORT}")
    return topic, port


def _parse_pools(
    key: str, value: Mapping[object, object], source: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Check a key's pools: named, non-empty host lists, no host in two of them."""
    where = f"{source}: key {key!r}"
    if not value:
        raise RingError(f"{where}: the pool object is empty; a topic needs at least one pool")
    pools: list[tuple[str, tuple[str, ...]]] = []
    pool_of: dict[str, str] = {}  # host -> the pool that lists it
    for name, members in value.items():
        if not isinstance(name, str):
            raise RingError(f"{where}: pool name {name!r} is {_json_type(name)}, not a string")
        if not name:
            raise RingError(f"{where}: a pool name is an empty string")
        problem = _name_problem("pool", name)
        if problem:
            raise RingError(f"{where}: {problem}")
        hosts = _parse_hosts(f"{where}: pool {name!r}", members, "a pool")
        for host in hosts:
            other = pool_of.setdefault(host, name)
            if other != name:
                raise RingError(
                    f"{where}: host {host!r} is in both pool {other!r} and pool {name!r}; "
                    "a host serves a topic on one port, so it belongs to one pool"
                )
        pools.append((name, hosts))
    return tuple(pools)


def _parse_hosts(where: str, value: object, owner: str) -> tuple[str, ...]:
    """Check a host list (of `owner`, a topic or a pool): a non-empty list of
    distinct, valid names."""
    # A string is a sequence too; "controller" must not become 10 hosts.
    if not isinstance(value, list | tuple):
        pools = " or an object of pools" if owner == "a topic" else ""
        raise RingError(
            f"{where}: hosts must be a list of host names{pools}, not {_json_type(value)}"
        )
    if not value:
        raise RingError(f"{where}: the host list is empty; {owner} needs at least one host")
    hosts: list[str] = []
    for index, host in enumerate(value):
        if not isinstance(host, str):
            raise RingError(
                f"{where}: host at index {index} is {_json_type(host)} {host!r}, not a string"
            )
        if not host:
            raise RingError(f"{where}: host at index {index} is an empty string")
        problem = _host_problem(host)
        if problem:
            raise RingError(f"{where}: {problem}")
        if host in hosts:
            raise RingError(f"{where}: host {host!r} is listed twice")
        hosts.append(host)
    return tuple(hosts)


def _name_problem(kind: str, name: str) -> str | None:
    """Describe what is wrong with a topic or host name, or None if it is fine."""
    if _NAME_RE.fullmatch(name):
        return None
    bad = _BAD_NAME_CHAR_RE.search(name)
    assert bad is not None  # name is non-empty and did not fully match
    return f"{kind} {name!r} contains {bad.group()!r}; names use only {_ALLOWED}"


def _host_problem(host: str) -> str | None:
    """Describe what is wrong with a host name, or None if it is a valid domain name.

    RFC 1123 host names (``node1``, ``node1.example.com``), plus ``'_'``
    which trizmq has always allowed in names.
    """
    bad = _BAD_HOST_CHAR_RE.search(host)
    if bad is not None:
        return f"host {host!r} contains {bad.group()!r}; host names are {_HOST_ALLOWED}"
    if len(host) > _MAX_HOST:
        return f"host {host[:20]!r}... is {len(host)} characters, over {_MAX_HOST}"
    for label in host.split("."):
        if not label:
            return f"host {host!r} has an empty label: '.' at its start or end, or '..'"
        if len(label) > _MAX_LABEL:
            return f"host {host!r} has a label of {len(label)} characters, over {_MAX_LABEL}"
        if label.startswith("-") or label.endswith("-"):
            return f"host {host!r} has a label {label!r} that starts or ends with '-'"
    return None


def _json_type(value: object) -> str:
    """Name a value's type the way the JSON file spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


# -- host resolution ----------------------------------------------------------


def resolve_address(host: str, resolve: Mapping[str, str] | None) -> str:
    """The address to use for a ring host, looked up now, blocking.

    Synchronous: meant for start-up, before Trio runs. Inside Trio, `lookup`
    asks the system resolver from a worker thread instead.

    Args:
        host: A ring host name.
        resolve: Explicit ``name -> address`` overrides (see `parse_resolve`),
            or None.

    Returns:
        The override for ``host`` if there is one, else what the system
        resolver answers (its first IPv4 address, else its first IPv6 one).

    Raises:
        RingError: The system resolver cannot resolve ``host``.
    """
    if resolve is not None and host in resolve:
        return resolve[host]
    try:
        return _pick(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as exc:
        raise _unresolved(host, exc) from None


async def lookup(host: str, resolve: Mapping[str, str] | None) -> str:
    """`resolve_address` for a running Trio task: the system resolver runs in a
    worker thread (`trio.socket.getaddrinfo`, or the resolver installed with
    `trio.socket.set_custom_hostname_resolver`), never on the Trio thread.

    Raises:
        RingError: The system resolver cannot resolve ``host``.
    """
    if resolve is not None and host in resolve:
        await trio.lowlevel.checkpoint()
        return resolve[host]
    try:
        return _pick(await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError) as exc:
        raise _unresolved(host, exc) from None


def _pick(answers: list[tuple[Any, ...]]) -> str:
    """The first IPv4 address of getaddrinfo's answers, else the first IPv6 one.

    IPv4 first, as `socket.gethostbyname` did before IPv6 was supported: a name
    with both keeps the address it always had.
    """
    addresses = [str(sockaddr[0]) for *_, sockaddr in answers]
    if not addresses:
        raise OSError("the resolver gave no address")
    return next((a for a in addresses if not is_ipv6(a)), addresses[0])


def _unresolved(host: str, exc: BaseException) -> RingError:
    return RingError(
        f"cannot resolve host {host!r}: {exc}; use --resolve {host}=ADDR to give its address"
    )


def is_ipv6(address: str) -> bool:
    """Whether an address (as `parse_resolve` or the resolver gives it) is IPv6."""
    return ":" in address


def tcp_url(address: str, port: int) -> str:
    """The ZeroMQ TCP endpoint of an address and port: ``tcp://127.0.0.2:9501``,
    or ``tcp://[::1]:9501`` for an IPv6 address."""
    if is_ipv6(address):
        return f"tcp://[{address}]:{port}"
    return f"tcp://{address}:{port}"


def parse_resolve(items: Iterable[str]) -> dict[str, str]:
    """Parse curl-style ``NAME=ADDR`` host overrides.

    Args:
        items: Strings such as ``"controller=127.0.0.2"``,
            ``"node1.example.com=10.0.0.5"`` or ``"node6=::1"`` (also
            ``"node6=[::1]"``). NAME is a ring host name; ADDR an IPv4 or IPv6
            address.

    Returns:
        ``{NAME: ADDR}``, each address in its normal form (IPv6 without
        brackets). Giving one name twice with the same address is allowed.

    Raises:
        RingError: An item is malformed, or names one host with two addresses.
    """
    result: dict[str, str] = {}
    for item in items:
        name, equals, addr = item.partition("=")
        where = f"--resolve {item!r}"
        if not equals:
            raise RingError(f"{where}: expected NAME=ADDR, for example controller=127.0.0.2")
        if not name:
            raise RingError(f"{where}: the host name before '=' is empty")
        problem = _host_problem(name)
        if problem:
            raise RingError(f"{where}: {problem}")
        text = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            raise RingError(
                f"{where}: {addr!r} is not an IPv4 or IPv6 address "
                "(for example 127.0.0.2, ::1 or [::1])"
            ) from None
        if result.setdefault(name, address) != address:
            raise RingError(f"{where}: host {name!r} is already resolved to {result[name]}")
    return result
