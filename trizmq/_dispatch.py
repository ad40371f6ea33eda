"""Which methods of an endpoint are callable, and how their arguments arrive.

No I/O here: `expose` reads an endpoint's methods and type hints once,
`Endpoints` finds the method a request reaches among a port's endpoints (by
namespace and version), and `Method.bind` turns the arguments of one request
into the keyword arguments of the handler, or raises `ArgumentError` naming
the argument at fault.
"""

from __future__ import annotations

import inspect
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._logs import clip
from ._versions import Target, parse_version
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


def expose(endpoint: object, prefix: str = "") -> dict[str, Method]:
    """The callable methods of an endpoint: its public functions, by name.

    Only functions defined on the endpoint's class (or its bases other than
    `object`) whose names do not start with `_` are exposed; nothing is found
    with `getattr` on a name that came from the wire. Each `Method` is named
    `prefix` + its name (the name its stats are kept under).

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
                methods[name] = _method(prefix + name, getattr(endpoint, name))
    return methods


def target_of(endpoint: object) -> Target:
    """The endpoint's `target` attribute, or the default `Target()`.

    Raises:
        TypeError: the endpoint has a `target` that is not a `trizmq.Target`.
    """
    target = getattr(endpoint, "target", None)
    if target is None:
        return Target()
    if not isinstance(target, Target):
        raise TypeError(f"{type(endpoint).__name__}.target must be a trizmq.Target, not {target!r}")
    return target


class Refused(Exception):
    """A request reaches no method: the error to answer it with."""

    def __init__(self, code: str, type_name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.type_name = type_name
        self.message = message


@attrs.frozen
class _Exposed:
    """One endpoint of a port: its version and methods."""

    version: str
    major: int
    minor: int
    methods: dict[str, Method]


class Endpoints:
    """The endpoints of one port, and the method each request reaches.

    The rules are oslo.messaging's dispatcher's: among the endpoints of the
    request's namespace whose version is compatible with the one asked for
    (any, if none is), the first, in the order given, that has the method.

    Attributes:
        default: What a request naming neither namespace nor version reaches,
            by method name: computed once, so that such a request costs one
            dict lookup, as with a single endpoint.
        methods: Every method, by the name its stats are kept under: its own
            in the default namespace, `"namespace.method"` in another.
    """

    def __init__(self, endpoints: Sequence[object]) -> None:
        if not endpoints:
            raise ValueError("a service needs at least one endpoint")
        self._namespaces: dict[str | None, list[_Exposed]] = {}
        self.methods: dict[str, Method] = {}
        for endpoint in endpoints:
            target = target_of(endpoint)
            methods = expose(endpoint, "" if target.namespace is None else f"{target.namespace}.")
            major, minor = parse_version(target.version)
            exposed = _Exposed(target.version, major, minor, methods)
            self._namespaces.setdefault(target.namespace, []).append(exposed)
            for method in methods.values():
                self.methods.setdefault(method.name, method)
        self.default: dict[str, Method] = {}
        for exposed in self._namespaces.get(None, ()):
            for name, method in exposed.methods.items():
                self.default.setdefault(name, method)

    def find(self, topic: str, name: str, namespace: str | None, version: str | None) -> Method:
        """The method a request for `name` of `namespace` at `version` reaches.

        Raises:
            Refused: with code `no_such_method` when no endpoint of the namespace
                has the method and one of them is compatible with the version;
                `unsupported_version` when endpoints of the namespace have the
                method but none of a compatible version, or none at all is
                compatible; `protocol` for a version that is not `MAJOR.MINOR`.
        """
        where = topic if namespace is None else f"{topic} (namespace {clip(namespace)!r})"
        exposed = self._namespaces.get(namespace)
        if exposed is None:
            if namespace is None:
                raise _no_such_method(where, name)
            raise Refused(
                ErrorCode.NO_SUCH_METHOD,
                "trizmq.NoSuchMethod",
                f"{topic} has no namespace {clip(namespace)!r}",
            )
        if version is None:
            for endpoint in exposed:
                method = endpoint.methods.get(name)
                if method is not None:
                    return method
            raise _no_such_method(where, name)
        try:
            major, minor = parse_version(version)
        except ValueError as exc:
            raise Refused(ErrorCode.PROTOCOL, "trizmq.ProtocolError", str(exc)) from None
        any_compatible = False
        for endpoint in exposed:
            if endpoint.major == major and endpoint.minor >= minor:
                method = endpoint.methods.get(name)
                if method is not None:
                    return method
                any_compatible = True
        have = [e.version for e in exposed if name in e.methods]
        if any_compatible and not have:
            raise _no_such_method(where, name)
        versions = ", ".join(have or (e.version for e in exposed))
        raise Refused(
            ErrorCode.UNSUPPORTED_VERSION,
            "trizmq.UnsupportedVersion",
            f"{where} has no endpoint compatible with version {version} for {clip(name)!r}"
            f" (it has {versions})",
        )


def _no_such_method(where: str, name: str) -> Refused:
    return Refused(
        ErrorCode.NO_SUCH_METHOD, "trizmq.NoSuchMethod", f"{where} has no method {clip(name)!r}"
    )


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
    return ErrorCode.EXCEPTION, type_name(type(exc)), message, trace


def type_name(cls: type[BaseException]) -> str:
    """The name of an exception type on the wire: `ValueError` for a builtin,
    `package.module.QualName` otherwise."""
    module = "" if cls.__module__ == "builtins" else f"{cls.__module__}."
    return f"{module}{cls.__qualname__}"
