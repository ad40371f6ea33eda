"""Exceptions a versioned service raises, which callers may allow by class or module."""

from __future__ import annotations


class NoValidHost(Exception):
    """No host can take the instance (nova's classic)."""


class QuotaExceeded(Exception):
    """Over quota."""


class NeedsTwoArguments(Exception):
    """Cannot be made from a message alone."""

    def __init__(self, resource: str, limit: int) -> None:
        super().__init__(f"{resource} over {limit}")


class Interrupt(BaseException):
    """Not an Exception: never raised by a caller as itself."""


def helper() -> None:
    """Not an exception class at all."""
