"""What a client routes over: the ring's hosts, or the live members of a registry."""

from __future__ import annotations

from typing import Protocol

from ._errors import RingError
from ._registry import Member, Registry
from ._ring import Ring


class Members(Protocol):
    """Who serves what, as a client routes."""

    def resolve_target(self, target: str) -> tuple[str, str | None]:
        """`Ring.resolve_target`, for the hosts routed over."""
        ...

    def hosts_of(self, topic: str) -> tuple[str, ...]:
        """The hosts a `"topic"` target round-robins over, in order."""
        ...

    def member(self, topic: str, host: str) -> Member | None:
        """The registered member, whose address wins over the ring's, or None."""
        ...

    def with_ring(self, ring: Ring) -> Members:
        """The same view routing by another ring (a ring file was reloaded)."""
        ...


class RingMembers:
    """The ring alone: a topic's hosts are the ring's, at the ring's port.

    The ring's own methods, bound: routing without a registry costs what it did.
    """

    def __init__(self, ring: Ring) -> None:
        self.resolve_target = ring.resolve_target
        self.hosts_of = ring.hosts_of

    def member(self, topic: str, host: str) -> Member | None:
        return None

    def with_ring(self, ring: Ring) -> Members:
        return RingMembers(ring)


class LiveMembers:
    """The members registered now, as a registry watch reports them.

    A topic's hosts are its live members (the ring's first, in ring order,
    then the others by name), and a registered host the ring does not list
    is a valid ``topic.host`` target. Until the first load succeeds (Redis
    down at start), the ring's hosts stand in.
    """

    def __init__(self, ring: Ring, registry: Registry) -> None:
        self.ring = ring
        self.registry = registry
        self.loaded = False
        self._members: dict[str, dict[str, Member]] = {}  # topic -> host -> member
        self._hosts: dict[str, tuple[str, ...]] = {}

    def resolve_target(self, target: str) -> tuple[str, str | None]:
        topic, dot, host = target.partition(".")
        if dot and host in self._members.get(topic, ()):
            return topic, host
        return self.ring.resolve_target(target)

    def hosts_of(self, topic: str) -> tuple[str, ...]:
        hosts = self._hosts.get(topic)
        if hosts is not None:
            return hosts
        if not self.loaded:
            return self.ring.hosts_of(topic)
        self.ring.port(topic)  # an unknown topic says so
        raise RingError(
            f"registry {self.registry.display_url} (prefix {self.registry.prefix!r}): "
            f"no live member of topic {topic!r}"
        )

    def member(self, topic: str, host: str) -> Member | None:
        return self._members.get(topic, {}).get(host)

    def with_ring(self, ring: Ring) -> Members:
        # The ring names the topics and orders the hosts: sort the members anew.
        members = [m for hosts in self._members.values() for m in hosts.values()]
        self.ring = ring
        if self.loaded:
            self.replace(members)
        return self

    # -- what the watch tells -------------------------------------------------

    def replace(self, members: list[Member]) -> None:
        self.loaded = True
        self._members, self._hosts = {}, {}
        for member in members:
            if self._routed(member.topic):
                self._members.setdefault(member.topic, {})[member.host] = member
        # Each topic ordered once, not once per member: a load of 1,000 members
        # is reordered every third of a lease, on the client's Trio thread.
        for topic in list(self._members):
            self._reorder(topic)

    def join(self, member: Member) -> None:
        if self._routed(member.topic):
            self._members.setdefault(member.topic, {})[member.host] = member
            self._reorder(member.topic)

    def _routed(self, topic: str) -> bool:
        # The ring names the topics and their ports: a member of another is ignored.
        return topic in self.ring.topics and not self.ring.is_reserved(topic)

    def leave(self, member: Member) -> None:
        if self._members.get(member.topic, {}).pop(member.host, None) is not None:
            self._reorder(member.topic)

    def _reorder(self, topic: str) -> None:
        live = self._members.get(topic)
        if not live:
            self._members.pop(topic, None)
            self._hosts.pop(topic, None)
            return
        listed = self.ring.hosts_of(topic)
        in_ring = set(listed)
        others = sorted(h for h in live if h not in in_ring)
        self._hosts[topic] = (*(h for h in listed if h in live), *others)
