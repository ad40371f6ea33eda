"""API versions and namespaces, as oslo.messaging's `Target` has them.

An endpoint declares what it implements with a `target` class attribute; a
caller says what it needs with `Client.prepare(..., version=, namespace=)`.
A version is `"MAJOR.MINOR"`: an endpoint of version `5.3` serves callers
asking for `5.0` to `5.3`, and no caller of another major version.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

import attrs

#: The version of an endpoint that declares none (oslo's default too).
DEFAULT_VERSION: Final = "1.0"

_FORMAT: Final = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


@functools.lru_cache(maxsize=256)
def parse_version(version: str) -> tuple[int, int]:
    """`"5.3"` as `(5, 3)`.

    Raises:
        ValueError: `version` is not `"MAJOR.MINOR"` (decimal numbers, without
            signs, spaces or leading zeros, of at most nine digits each).
    """
    match = _FORMAT.fullmatch(version) if type(version) is str else None
    if match is None:
        shown = version[:40] if type(version) is str else version
        raise ValueError(f"a version is 'MAJOR.MINOR' (like '5.3'), not {shown!r}")
    return int(match[1]), int(match[2])


def is_compatible(have: str, want: str) -> bool:
    """Whether what implements (or allows) `have` serves a request of version `want`:
    the same major version, and a minor at least `want`'s."""
    have_major, have_minor = parse_version(have)
    want_major, want_minor = parse_version(want)
    return have_major == want_major and have_minor >= want_minor


def check_namespace(namespace: str | None) -> None:
    """Raise `ValueError` unless `namespace` is None or a non-empty str."""
    if namespace is not None and (type(namespace) is not str or not namespace):
        raise ValueError(f"a namespace is a non-empty str or None, not {namespace!r}")


def _check_version(_: Any, __: Any, version: str) -> None:
    parse_version(version)


def _check_namespace(_: Any, __: Any, namespace: str | None) -> None:
    check_namespace(namespace)


@attrs.frozen
class Target:
    """What an endpoint implements: its namespace and API version.

    Set it as a class attribute of the endpoint, as with oslo.messaging:

    ```python
    class ComputeManager:
        target = trizmq.Target(version="5.3")
    ```

    An endpoint without one implements version `"1.0"` of the default
    namespace. A call that names no version reaches any endpoint of its
    namespace; one that names `"5.1"` only an endpoint of the same major
    version, 5, and a minor of at least 1.

    Attributes:
        namespace: The namespace of the endpoint's methods, or None for the
            default one (the topic's main API).
        version: `"MAJOR.MINOR"`.

    Raises:
        ValueError: The version is not `"MAJOR.MINOR"`, or the namespace is
            neither None nor a non-empty str.
    """

    namespace: str | None = attrs.field(default=None, validator=_check_namespace)
    version: str = attrs.field(default=DEFAULT_VERSION, validator=_check_version)
