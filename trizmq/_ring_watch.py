"""Following a ring file: a client loads it again whenever it changes.

The file is polled: its device, inode, size and modification time are
compared every `RING_POLL_INTERVAL` seconds, which sees an edit in place and
a file replaced by a rename alike, with no dependency on inotify. A change
that does not load (a half-written file, a mistake) is logged once and the
ring loaded before stays in use until the file changes again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import NoReturn

import trio

from ._errors import RingError
from ._ring import Ring

logger = logging.getLogger("trizmq.client")

#: Seconds between two looks at a followed ring file.
RING_POLL_INTERVAL = 1.0

_Signature = tuple[int, int, int, int] | None


def _signature(path: str) -> _Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone (mid-rename, say): loading it says why
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class RingFile:
    """A ring file, and what it looked like when last loaded."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._seen: _Signature = None

    def load(self) -> Ring:
        """Load the file, remembering what it looked like just before.

        Raises:
            RingError: As `Ring.load`.
        """
        # Looked at first: a change made while it is read shows at the next look.
        self._seen = _signature(self.path)
        return Ring.load(self.path)

    def changed(self) -> bool:
        """Whether the file changed since it was last loaded (or tried)."""
        return _signature(self.path) != self._seen

    async def follow(
        self, apply: Callable[[Ring], None], interval: float = RING_POLL_INTERVAL
    ) -> NoReturn:
        """Call `apply` with the ring each time the file changes and loads, until cancelled."""
        while True:
            await trio.sleep(interval)
            if not self.changed():
                continue
            try:
                ring = self.load()
            except RingError as exc:
                logger.warning("%s; still routing by the ring loaded before", exc)
                continue
            logger.info("%s: reloaded", self.path)
            apply(ring)
