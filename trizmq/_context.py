"""What a handler knows about the request it serves."""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio


@attrs.frozen
class Context:
    """The request a handler is serving: its first parameter after `self`.

    Attributes:
        id: The message id, unique per caller connection.
        kind: `"call"`, `"cast"`, `"fanout"` or `"stream"`.
        topic: The topic the request was sent to.
        method: The method called.
        host: The ring host this service runs as.
        caller: The caller's name, as `name/pid/nonce`.
        deadline: The Trio clock time at which the call's (or the whole
            stream's) deadline passes, or `math.inf` when there is none
            (casts and fanouts).
        values: The caller's context dict (`context=` on the client side).
    """

    id: int
    kind: str
    topic: str
    method: str
    host: str
    caller: str
    deadline: float
    values: dict[str, Any] = attrs.field(factory=dict)

    def time_remaining(self) -> float:
        """Seconds left before the deadline (`math.inf` without one)."""
        if self.deadline == math.inf:
            return math.inf
        return max(0.0, self.deadline - trio.current_time())
