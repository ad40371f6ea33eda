"""Remote exceptions a client allows to be raised as their own class.

oslo.messaging's `allowed_remote_exmods`, made safe by construction: a type
name from the wire is only ever looked up among the classes the caller
listed, or, for a module the caller listed by name, in that module, which
is imported then and only then. Nothing else is imported or constructed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Final

from ._dispatch import type_name as type_name_of
from ._wire import Error

#: Type names remembered (found or not): a bound, since the names come from the wire.
_MAX_REMEMBERED: Final = 1024


class KnownExceptions:
    """The exception types one client raises as themselves.

    Args:
        allowed: Exception classes, and names of modules (`"nova.exception"`)
            whose exception classes are allowed.

    Raises:
        TypeError: An item is neither an `Exception` subclass nor a module name.
    """

    def __init__(self, allowed: Iterable[type[BaseException] | str]) -> None:
        self._classes: dict[str, type[Exception]] = {}
        modules: list[str] = []
        for item in allowed:
            if isinstance(item, str):
                if not all(part.isidentifier() for part in item.split(".")):
                    raise TypeError(f"allowed_exceptions: {item!r} is not a module name")
                modules.append(item)
            elif isinstance(item, type) and issubclass(item, Exception):
                self._classes[type_name_of(item)] = item
            else:
                raise TypeError(
                    f"allowed_exceptions: {item!r} is neither an Exception subclass"
                    " nor a module name"
                )
        self._modules = tuple(modules)
        self._remembered: dict[str, type[Exception] | None] = {}

    def lookup(self, type_name: str) -> type[Exception] | None:
        """The allowed class the remote `type_name` names, or None."""
        cls = self._classes.get(type_name)
        if cls is not None or not self._modules:
            return cls
        if type_name in self._remembered:
            return self._remembered[type_name]
        cls = self._from_modules(type_name)
        if len(self._remembered) < _MAX_REMEMBERED:
            self._remembered[type_name] = cls
        return cls

    def _from_modules(self, type_name: str) -> type[Exception] | None:
        for module_name in self._modules:
            if type_name.startswith(f"{module_name}."):
                qualname = type_name[len(module_name) + 1 :]
            elif module_name == "builtins" and "." not in type_name:
                qualname = type_name  # builtins are named without their module
            else:
                continue
            try:
                found: object = importlib.import_module(module_name)
                for part in qualname.split("."):
                    found = getattr(found, part)
            except Exception:
                continue
            # The class itself, not a name bound to one from elsewhere.
            if (
                isinstance(found, type)
                and issubclass(found, Exception)
                and found.__module__ == module_name
                and found.__qualname__ == qualname
            ):
                return found
        return None

    def build(self, error: Error, host: str, topic: str) -> Exception | None:
        """The remote `error` as an instance of its allowed class, or None when
        its class is not allowed or cannot be made from the message alone."""
        cls = self.lookup(error.type_name)
        if cls is None:
            return None
        try:
            exc = cls(error.message)
            exc.type_name = error.type_name  # type: ignore[attr-defined]
            exc.message = error.message  # type: ignore[attr-defined]
            exc.remote_traceback = error.traceback  # type: ignore[attr-defined]
            exc.host = host  # type: ignore[attr-defined]
            exc.topic = topic  # type: ignore[attr-defined]
        except Exception:
            return None
        return exc
