"""The envelope of every trizmq message and its msgpack encoding.

A message is one zmq frame holding a msgpack array:
`[version, kind, *fields]`, the fields of the kind's attrs class in order.
Positional arrays keep envelopes small and fast; the version in front lets a
peer refuse what it does not understand. `docs/protocol.md` is the reference.

This module does no I/O: it turns envelopes into bytes and bytes into
envelopes, and `decode` raises `ProtocolError` and nothing else.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, TypeAlias

import attrs
import msgpack
from cattrs.preconf.msgpack import make_converter

from ._errors import ProtocolError

#: The protocol version this build speaks; a peer with another version is refused.
VERSION: Final = 1
#: Arrays and maps one message may hold: decoding makes each a Python object
#: (some 60 bytes at least), so a message's memory is bounded by this and not
#: only by its size in bytes. msgpack bounds their nesting at 1024 levels.
MAX_CONTAINERS: Final = 1_000_000
#: Largest message, in bytes, a client sends and a service accepts, unless configured.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
#: The most credit a stream may have outstanding: a `STREAM`'s first credit
#: and each `CREDIT` must be within it, and more is not kept.
MAX_CREDIT: Final = 65_536


class Kind(enum.IntEnum):
    """The kind of a message: the second element of every envelope."""

    CALL = 1
    CAST = 2
    FANOUT = 3
    REPLY = 4
    ERROR = 5
    CANCEL = 6
    STATS_SUBSCRIBE = 7
    STATS = 8
    CASTS = 9
    STREAM = 10
    ITEMS = 11
    CREDIT = 12
    REPLIES = 13
    CALLS = 14


@attrs.frozen
class Call:
    """A request that expects a reply or an error.

    `timeout` is the caller's deadline as seconds remaining when the call was
    sent: relative, so peers need no synchronized clocks.
    """

    id: int
    topic: str
    method: str
    args: dict[str, Any]
    context: dict[str, Any]
    timeout: float | None = attrs.field(validator=lambda _, a, v: _check_seconds(a, v))
    namespace: str | None = None
    version: str | None = None


@attrs.frozen
class Stream:
    """A request for a stream of items: a call's fields, then the first credit.

    `credit` is how many items the caller accepts before it grants more
    (`Credit`); the service sends them as `Items`, then a `Reply` (the end)
    or an `Error`.
    """

    id: int
    topic: str
    method: str
    args: dict[str, Any]
    context: dict[str, Any]
    timeout: float | None = attrs.field(validator=lambda _, a, v: _check_seconds(a, v))
    credit: int
    namespace: str | None = None
    version: str | None = None


def _check_seconds(attribute: attrs.Attribute[Any], value: float | None) -> None:
    # NaN or an infinity would make a deadline, lease or schedule that never ends.
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number of seconds, got {value!r}")


@attrs.frozen
class _OneWay:
    """The fields of a request nothing answers."""

    id: int
    topic: str
    method: str
    args: dict[str, Any]
    context: dict[str, Any]
    namespace: str | None = None
    version: str | None = None


@attrs.frozen
class Cast(_OneWay):
    """A one-way request to one host of a topic; nothing is sent back."""


@attrs.frozen
class Casts:
    """Casts of one method to one host, in one message: the `args` of each in `batch`.

    The casts take the ids `id`, `id + 1`, ... in the order of `batch`.
    """

    id: int
    topic: str
    method: str
    batch: list[dict[str, Any]]
    context: dict[str, Any]
    namespace: str | None = None
    version: str | None = None


@attrs.frozen
class Calls:
    """Calls to one service port, in one message: each as the `CALL` it stands for."""

    batch: list[Call]


@attrs.frozen
class Fanout(_OneWay):
    """A one-way request sent to every host of a topic; nothing is sent back."""


@attrs.frozen
class Reply:
    """The result of a call."""

    id: int
    result: Any


@attrs.frozen
class Error:
    """A call failed. `code` says how, `type_name` names the exception."""

    id: int
    code: str
    type_name: str
    message: str
    traceback: str


@attrs.frozen
class Replies:
    """Answers (`Reply` and `Error`) to calls of one caller, in one message."""

    answers: list[Reply | Error]


@attrs.frozen
class Cancel:
    """The caller gave up on call `id`: the service cancels its handler."""

    id: int


@attrs.frozen
class Items:
    """Items of stream `id`, in order: as many as its credit allows, in one message."""

    id: int
    items: list[Any]


@attrs.frozen
class Credit:
    """The caller of stream `id` accepts `n` more items."""

    id: int
    n: int


@attrs.frozen
class StatsSubscribe:
    """Ask for a stats message every `interval` seconds, for `lease` seconds."""

    id: int
    interval: float = attrs.field(validator=lambda _, a, v: _check_seconds(a, v))
    lease: float = attrs.field(validator=lambda _, a, v: _check_seconds(a, v))


@attrs.frozen
class Stats:
    """A snapshot of a service port's counters (see docs/protocol.md)."""

    id: int
    data: dict[str, Any]


#: The envelopes that carry an id: every kind but `CALLS` and `REPLIES`.
Message: TypeAlias = (
    Call
    | Cast
    | Casts
    | Fanout
    | Reply
    | Error
    | Cancel
    | StatsSubscribe
    | Stats
    | Stream
    | Items
    | Credit
)
Envelope: TypeAlias = Message | Calls | Replies

_KIND_OF: Final[dict[type[Any], Kind]] = {
    Call: Kind.CALL,
    Cast: Kind.CAST,
    Fanout: Kind.FANOUT,
    Reply: Kind.REPLY,
    Error: Kind.ERROR,
    Cancel: Kind.CANCEL,
    StatsSubscribe: Kind.STATS_SUBSCRIBE,
    Stats: Kind.STATS,
    Casts: Kind.CASTS,
    Stream: Kind.STREAM,
    Items: Kind.ITEMS,
    Credit: Kind.CREDIT,
    Replies: Kind.REPLIES,
    Calls: Kind.CALLS,
}
_CLASS_OF: Final[dict[int, type[Any]]] = {kind: cls for cls, kind in _KIND_OF.items()}
_FIELDS_OF: Final[dict[type[Any], tuple[str, ...]]] = {
    cls: tuple(a.name for a in attrs.fields(cls)) for cls in _KIND_OF
}
#: The requests, whose last two fields (`namespace`, `version`) are optional:
#: left out when both are nil, so a request that names neither is the same
#: bytes as before they existed.
_ADDRESSED: Final = frozenset({Call, Cast, Casts, Fanout, Stream})
#: The numbers of fields a message of each kind may have.
_ARITIES: Final[dict[type[Any], frozenset[int]]] = {
    cls: frozenset({len(names), len(names) - 2} if cls in _ADDRESSED else {len(names)})
    for cls, names in _FIELDS_OF.items()
}


def _fields_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:  # attrgetter of one name returns the value, not a tuple
        name = names[0]
        return lambda envelope: (getattr(envelope, name),)
    return operator.attrgetter(*names)


# What `encode` needs of each class: its kind, a getter of its fields (a
# tuple), and whether the last two may be left out.
_ENCODING: Final[dict[type[Any], tuple[Kind, Callable[[Any], tuple[Any, ...]], bool]]] = {
    cls: (kind, _fields_getter(_FIELDS_OF[cls]), cls in _ADDRESSED)
    for cls, kind in _KIND_OF.items()
}


def _call_fields(call: Call) -> tuple[Any, ...]:
    fields: tuple[Any, ...] = _ENCODING[Call][1](call)
    return fields[:-2] if fields[-1] is None and fields[-2] is None else fields


_ENCODING[Calls] = (Kind.CALLS, lambda calls: ([_call_fields(c) for c in calls.batch],), False)


class ErrorCode:
    """The values of `Error.code`, which tell the caller which exception to raise."""

    EXCEPTION: Final = "exception"
    NO_SUCH_METHOD: Final = "no_such_method"
    BAD_ARGUMENTS: Final = "bad_arguments"
    PROTOCOL: Final = "protocol"
    DEADLINE: Final = "deadline"
    SHUTDOWN: Final = "shutdown"
    UNSUPPORTED_VERSION: Final = "unsupported_version"


#: The converter of trizmq payloads, built once: attrs classes and dataclasses
#: in handler signatures are structured and unstructured through it.
converter = make_converter()


def _strict(kind: type[Any], accepts: tuple[type[Any], ...]) -> None:
    # cattrs would coerce "5" into 5; a wrong type must be an error instead.
    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, accepts) and not (kind is not bool and isinstance(value, bool)):
            return kind(value)
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    converter.register_structure_hook(kind, structure)


_strict(int, (int,))
_strict(float, (int, float))
_strict(str, (str,))
_strict(bytes, (bytes,))
_strict(bool, (bool,))

_PLAIN: Final = frozenset({int, float, str, bytes, bool, type(None)})


def unstructure(value: Any) -> Any:
    """A payload value as plain data for msgpack (attrs classes, dataclasses... as maps)."""
    # Most arguments and results are already plain: skip the converter's dispatch.
    return value if type(value) in _PLAIN else converter.unstructure(value)


_packer_options: Final = {"use_bin_type": True, "datetime": False}


def encode(envelope: Envelope) -> bytes:
    """Encode an envelope as one frame.

    Raises:
        TypeError: a payload value msgpack cannot encode.
    """
    if type(envelope) is Replies:
        return encode_replies([encode(answer) for answer in envelope.answers])
    kind, fields_of, addressed = _ENCODING[type(envelope)]
    fields = fields_of(envelope)
    if addressed and fields[-1] is None and fields[-2] is None:
        fields = fields[:-2]
    data: bytes = msgpack.packb([VERSION, kind, *fields], **_packer_options)
    return data


#: The largest `REPLIES` message, in bytes (a service with a lower message
#: size limit keeps to its own): every caller accepts one this large,
#: whatever its own limit, so batching small answers never makes a message
#: too large for a caller that would take each of them alone.
MAX_REPLIES_SIZE: Final = 64 * 1024
#: The bytes a `REPLIES` message adds to the answers it carries, at most.
REPLIES_OVERHEAD: Final = 8
_REPLIES_HEAD: Final = bytes((0x93, VERSION, Kind.REPLIES))


def encode_replies(answers: list[bytes]) -> bytes:
    """A `REPLIES` message carrying `answers`, each an encoded `REPLY` or `ERROR`.

    A REPLIES's answers are whole envelopes, so the encoded ones go in as they
    are: nothing is encoded twice.
    """
    count = len(answers)
    if count < 16:
        head = _REPLIES_HEAD + bytes((0x90 | count,))
    elif count < 2**16:
        head = _REPLIES_HEAD + b"\xdc" + count.to_bytes(2, "big")
    else:
        head = _REPLIES_HEAD + b"\xdd" + count.to_bytes(4, "big")
    return b"".join([head, *answers])


#: The head of an encoded `CALL`: a fixarray of its fields plus two, version, kind.
_CALL_HEADS: Final = frozenset(bytes([0x90 | (n + 2), VERSION, Kind.CALL]) for n in (6, 8))


def join_calls(frames: Sequence[bytes]) -> bytes:
    """The `CALLS` frame carrying the `CALL` frames `frames` (from `encode`), in order.

    Byte for byte what `encode(Calls(...))` makes of their calls, without
    encoding them again: each `CALL`'s fields, as an array, are its frame
    with the version and kind taken out (a frame whose head is not the
    short one `encode` makes is unpacked and packed again).
    """
    count = len(frames)
    if count < 16:
        head = bytes([0x90 | count])
    elif count < 2**16:
        head = b"\xdc" + count.to_bytes(2, "big")
    else:
        head = b"\xdd" + count.to_bytes(4, "big")
    parts = [b"\x93\x01\x0e", head]
    for frame in frames:
        if frame[:3] in _CALL_HEADS:
            parts.append(bytes([frame[0] - 2]))
            parts.append(frame[3:])
        else:
            parts.append(msgpack.packb(msgpack.unpackb(frame)[2:], **_packer_options))
    return b"".join(parts)


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


class _TooManyContainers(Exception):
    def __str__(self) -> str:
        return f"more than {MAX_CONTAINERS} arrays and maps"


def _unpack(frame: bytes, max_ext_len: int) -> Any:
    """msgpack's decoding of `frame`, within `MAX_CONTAINERS`."""
    if len(frame) <= MAX_CONTAINERS:
        # Each array or map takes a byte at least: this frame cannot hold too many.
        return msgpack.unpackb(
            frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext, max_ext_len=max_ext_len
        )
    left = MAX_CONTAINERS

    def count(container: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise _TooManyContainers()
        return container

    return msgpack.unpackb(
        frame,
        raw=False,
        strict_map_key=True,
        ext_hook=_refuse_ext,
        max_ext_len=max_ext_len,
        list_hook=count,
        object_hook=count,
    )


def _unpack_problem(frame: bytes) -> str:
    """Why `decode` could not unpack a frame."""
    try:
        # Again without max_ext_len: the hook names any other extension type,
        # so a frame that unpacks now was refused for a timestamp.
        _unpack(frame, max_ext_len=2**31 - 1)
        _refuse_ext(-1, b"")
    except Exception as exc:
        return str(exc)


def decode(frame: bytes) -> Envelope:
    """Decode one frame into an envelope.

    Raises:
        ProtocolError: the frame is not a valid envelope of this version; the
            message says what was wrong. Nothing else is ever raised.
    """
    try:
        # msgpack decodes a timestamp (extension type -1) itself, never calling
        # ext_hook: max_ext_len=0 refuses it, and any extension with data, at no
        # cost. One without data reaches ext_hook, or msgpack's timestamp check.
        # (Keywords spelt out: `**options` would cost more than the limit.)
        data = (
            msgpack.unpackb(
                frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext, max_ext_len=0
            )
            if len(frame) <= MAX_CONTAINERS
            else _unpack(frame, max_ext_len=0)
        )
    except _TooManyContainers as exc:  # counting them all again would cost as much
        raise ProtocolError(f"not a msgpack message: {exc}") from None
    except Exception:
        raise ProtocolError(f"not a msgpack message: {_unpack_problem(frame)}") from None
    return _envelope(data)


def _envelope(data: Any) -> Envelope:
    """The envelope of a decoded msgpack array (see `decode`)."""
    if not isinstance(data, list) or len(data) < 2:
        raise ProtocolError("an envelope is a msgpack array [version, kind, ...fields]")
    version, kind, *fields = data
    if type(version) is not int or version != VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r} (this peer speaks {VERSION})"
        )
    cls = _CLASS_OF.get(kind) if type(kind) is int else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    if len(fields) not in _ARITIES[cls]:
        count = " or ".join(map(str, sorted(_ARITIES[cls])))
        raise ProtocolError(f"a {cls.__name__} message has {count} fields, got {len(fields)}")
    if cls is Replies:
        return _replies(fields[0])
    if cls is Calls:
        return _calls(fields[0])
    envelope: Envelope = _build(cls, fields)
    return envelope


def _build(cls: type[Any], fields: list[Any]) -> Any:
    """The envelope of class `cls` with `fields` (as many as it takes), or ProtocolError."""
    # Without namespace and version, the checks of those two are left over.
    for check, value in zip(_CHECKS[cls], fields, strict=False):
        if not check(value):
            break
    else:
        try:
            return cls(*fields)
        except Exception:
            pass  # the converter below says what is wrong
    try:
        return converter.structure(dict(zip(_FIELDS_OF[cls], fields, strict=False)), cls)
    except Exception as exc:
        problems = describe(exc)
        raise ProtocolError(f"invalid {cls.__name__} message: {problems}") from None


def _calls(batch: Any) -> Calls:
    """A `CALLS` whose `batch` is an array of `CALL` field arrays, or ProtocolError."""
    if type(batch) is not list:
        raise ProtocolError("invalid Calls message: batch is not an array")
    calls = []
    arities = _ARITIES[Call]
    for n, fields in enumerate(batch):
        if type(fields) is not list or len(fields) not in arities:
            raise ProtocolError(f"invalid Calls message: call {n} is not an array of 6 or 8 fields")
        try:
            calls.append(_build(Call, fields))
        except ProtocolError as exc:
            raise ProtocolError(f"invalid Calls message: call {n}: {exc}") from None
    return Calls(calls)


_ANSWER_KINDS: Final = (Kind.REPLY, Kind.ERROR)


def _replies(answers: Any) -> Replies:
    if type(answers) is not list or not answers:
        raise ProtocolError("invalid Replies message: answers must be a non-empty array")
    decoded: list[Reply | Error] = []
    for index, data in enumerate(answers):
        # The kind first: a REPLIES in a REPLIES is refused before it is read.
        if type(data) is list and len(data) >= 2 and data[1] not in _ANSWER_KINDS:
            message = f"answer {index} is of kind {data[1]!r}, not a REPLY or an ERROR"
            raise ProtocolError(f"invalid Replies message: {message}")
        try:
            decoded.append(_envelope(data))  # type: ignore[arg-type]
        except ProtocolError as exc:
            raise ProtocolError(f"invalid Replies message: answer {index}: {exc}") from None
    return Replies(decoded)


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_str(value: object) -> bool:
    return type(value) is str


def _is_optional_str(value: object) -> bool:
    return value is None or type(value) is str


def _is_number(value: object) -> bool:
    return type(value) is float or type(value) is int


def _is_optional_number(value: object) -> bool:
    return value is None or type(value) is float or type(value) is int


def _is_str_dict(value: object) -> bool:
    return type(value) is dict and (not value or all(map(_is_str, value)))


def _is_list_of_str_dicts(value: object) -> bool:
    return type(value) is list and all(map(_is_str_dict, value))


def _is_list(value: object) -> bool:
    return type(value) is list


def _is_any(value: object) -> bool:
    return True


# The fast path of `decode`: the types the strict converter accepts, checked
# directly. A message that fails them goes through the converter, whose
# detailed errors say what is wrong.
_CHECKS: Final[dict[type[Any], tuple[Callable[[object], bool], ...]]] = {
    Call: (
        *(_is_int, _is_str, _is_str, _is_str_dict, _is_str_dict, _is_optional_number),
        *(_is_optional_str, _is_optional_str),
    ),
    Cast: (
        _is_int,
        _is_str,
        _is_str,
        _is_str_dict,
        _is_str_dict,
        _is_optional_str,
        _is_optional_str,
    ),
    Casts: (
        *(_is_int, _is_str, _is_str, _is_list_of_str_dicts, _is_str_dict),
        *(_is_optional_str, _is_optional_str),
    ),
    Fanout: (
        _is_int,
        _is_str,
        _is_str,
        _is_str_dict,
        _is_str_dict,
        _is_optional_str,
        _is_optional_str,
    ),
    Reply: (_is_int, _is_any),
    Error: (_is_int, _is_str, _is_str, _is_str, _is_str),
    Cancel: (_is_int,),
    StatsSubscribe: (_is_int, _is_number, _is_number),
    Stats: (_is_int, _is_str_dict),
    Stream: (
        *(_is_int, _is_str, _is_str, _is_str_dict, _is_str_dict, _is_optional_number, _is_int),
        *(_is_optional_str, _is_optional_str),
    ),
    Items: (_is_int, _is_list),
    Credit: (_is_int, _is_int),
    Replies: (_is_any,),  # see `_replies`
}


def describe(exc: BaseException) -> str:
    """A converter error in one line: each failure, after where it happened."""
    # cattrs groups nested failures, each with a note saying where it happened.
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(sub) for sub in exc.exceptions)
    where = "; ".join(n for n in getattr(exc, "__notes__", []) if n)
    return f"{where}: {exc}" if where else str(exc)
