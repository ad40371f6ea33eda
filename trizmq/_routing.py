"""Round-robin over the hosts of a topic, one cursor per topic, for one client."""

from __future__ import annotations

from collections.abc import Container, Sequence


class RoundRobin:
    """The next host of each topic, in turn, skipping hosts known to be down.

    Each client has its own: two clients of one ring do not move each
    other's cursors.
    """

    def __init__(self) -> None:
        self._cursors: dict[str, int] = {}  # topic -> index of the next host to try

    def next(self, topic: str, hosts: Sequence[str], skip: Container[str] | None = None) -> str:
        """The next of `hosts` (the hosts of `topic`, in ring order).

        `skip` is a preference: if every host would be skipped, the next host
        in turn is returned anyway, since trying a host that may be down beats
        failing without trying.
        """
        start = self._cursors.get(topic, 0)
        chosen = start
        if skip is not None:
            for offset in range(len(hosts)):
                if hosts[(start + offset) % len(hosts)] not in skip:
                    chosen = start + offset
                    break
        self._cursors[topic] = (chosen + 1) % len(hosts)
        return hosts[chosen % len(hosts)]
