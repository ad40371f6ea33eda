"""Which methods of an endpoint are callable, and how their arguments arrive.

No I/O here: `expose` reads an endpoint's methods and type hints once, and
`Method.bind` turns the arguments of one request into the keyword arguments
of the handler, or raises `ArgumentError` naming the argument at fault.
"""

from __future__ import annotations

import inspect
import traceback
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._logs import clip
from ._wire import ErrorCode, converter, describe


class ArgumentError(Exception):
    """The arguments of a request do not fit the handler (sent back as bad_arguments)."""


@attrs.frozen
class _Param:
    name: str
    hint: Any
    structure: Callable[[Any, Any], Any] | None
    required: bool


@attrs.frozen
class Method:
    """One exposed method of an endpoint, ready to be called with wire arguments."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    params: Mapping[str, _Param]
    accepts_any: bool  # the handler takes **kwargs
    is_stream: bool = False  # an async generator: its items are streamed, not returned
    required: frozenset[str] = attrs.field(init=False)

    @required.default
    def _required_params(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params.values() if p.required)

    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Structure wire arguments into the handler's keyword arguments.

        Raises:
            ArgumentError: an argument is missing, unexpected or of the wrong type.
        """
        params = self.params
        bound: dict[str, Any] = {}
        for name, value in args.items():
            param = params.get(name)
            if param is None:
                if not self.accepts_any:
                    raise ArgumentError(f"{self.name}() got an unexpected argument {name!r}")
                bound[name] = value
            elif param.structure is None:
                bound[name] = value
            else:
                try:
                    bound[name] = param.structure(value, param.hint)
                except Exception as exc:
                    raise ArgumentError(
                        f"{self.name}() argument {name!r}: {describe(exc)}"
                    ) from None
        if self.required - bound.keys():
            missing = [p.name for p in params.values() if p.required and p.name not in bound]
            names = ", ".join(repr(n) for n in missing)
            raise ArgumentError(f"{self.name}() missing required argument(s): {names}")
        return bound


def expose(endpoint: object) -> dict[str, Method]:
    """The callable methods of an endpoint: its public functions, by name.

    Only functions defined on the endpoint's class (or its bases other than
    `object`) whose names do not start with `_` are exposed; nothing is found
    with `getattr` on a name that came from the wire.

    Raises:
        TypeError: an exposed method cannot take a Context and keyword arguments.
    """
    methods: dict[str, Method] = {}
    for cls in reversed(type(endpoint).__mro__[:-1]):
        for name, attr in vars(cls).items():
            if name.startswith("_"):
                continue
            func = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
            if inspect.isfunction(func):
                methods[name] = _method(name, getattr(endpoint, name))
    return methods


def _method(name: str, func: Callable[..., Any]) -> Method:
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"exposed method {name}() must take a trizmq.Context as first parameter")
    params: dict[str, _Param] = {}
    accepts_any = False
    for p in parameters[1:]:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise TypeError(f"exposed method {name}(): arguments travel by name, not *{p.name}")
        hint = hints.get(p.name, Any)
        structure = None if hint is Any else converter.get_structure_hook(hint)
        params[p.name] = _Param(p.name, hint, structure, p.default is inspect.Parameter.empty)
    return Method(
        name,
        func,
        inspect.iscoroutinefunction(func),
        params,
        accepts_any,
        inspect.isasyncgenfunction(func),
    )


#: Characters of an error reply's message, and of its traceback when tracebacks
#: are sent: a handler's error must not make a reply of unbounded size.
MAX_ERROR_TEXT = 4096


def error_fields(exc: BaseException, *, with_traceback: bool) -> tuple[str, str, str, str]:
    """The (code, type_name, message, traceback) of an error reply for `exc`.

    The traceback is `""` unless `with_traceback`; both texts are cut to
    `MAX_ERROR_TEXT` characters, the traceback keeping its end, where the
    error was raised.
    """
    cls = type(exc)
    module = "" if cls.__module__ == "builtins" else f"{cls.__module__}."
    message = clip(exc, MAX_ERROR_TEXT)
    trace = ""
    if with_traceback:
        # Each line cut on its own, so that a long message cannot push the
        # stack out of what is kept.
        lines = traceback.format_exception(exc)
        trace = "".join(clip(line.rstrip("\n"), MAX_ERROR_TEXT // 8) + "\n" for line in lines)
        if len(trace) > MAX_ERROR_TEXT:
            trace = (
                f"... ({len(trace)} characters, the last {MAX_ERROR_TEXT})\n"
                + (trace[-MAX_ERROR_TEXT:])
            )
    return ErrorCode.EXCEPTION, f"{module}{cls.__qualname__}", message, trace
