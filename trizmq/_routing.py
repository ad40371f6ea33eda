"""Round-robin over the hosts of a topic (or of a pool), one cursor each, for one client."""

from __future__ import annotations

from collections.abc import Container, Hashable, Sequence


class RoundRobin:
    """The next host of each topic (or pool), in turn, skipping hosts known to be down.

    Each client has its own: two clients of one ring do not move each
    other's cursors.
    """

    def __init__(self) -> None:
        # A topic, or (topic, pool) -> index of the next host to try.
        self._cursors: dict[Hashable, int] = {}

    def next(self, key: Hashable, hosts: Sequence[str], skip: Container[str] | None = None) -> str:
        """The next of `hosts` (the hosts `key` names: a topic's, or a pool's, in ring order).

        `skip` is a preference: if every host would be skipped, the next host
        in turn is returned anyway, since trying a host that may be down beats
        failing without trying.
        """
        start = self._cursors.get(key, 0)
        chosen = start
        if skip is not None:
            for offset in range(len(hosts)):
                if hosts[(start + offset) % len(hosts)] not in skip:
                    chosen = start + offset
                    break
        self._cursors[key] = (chosen + 1) % len(hosts)
        return hosts[chosen % len(hosts)]
