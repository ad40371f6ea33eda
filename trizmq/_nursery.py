"""A nursery for the inside of trizmq's own context managers and runners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """`trio.open_nursery`, but a lone error surfaces as itself.

    The nursery is an implementation detail of `open_client` and `serve`: a
    user's `except trizmq.CallTimeout` around the `async with` block must
    work, not meet an ExceptionGroup of one. Several errors stay grouped.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
