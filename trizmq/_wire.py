"""The envelope of every trizmq message and its msgpack encoding.

A message is one zmq frame holding a msgpack array:
`[version, kind, *fields]`, the fields of the kind's struct in order.
Positional arrays keep envelopes small and fast; the version in front lets a
peer refuse what it does not understand. `docs/protocol.md` is the reference.

This module does no I/O: it turns envelopes into bytes and bytes into
envelopes, and `decode` raises `ProtocolError` and nothing else.
"""

from __future__ import annotations

import enum
import math
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, NoReturn, TypeAlias

import attrs
import msgpack
import msgspec
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


class Call(msgspec.Struct, frozen=True, array_like=True):
    """A request that expects a reply or an error.

    `timeout` is the caller's deadline as seconds remaining when the call was
    sent: relative, so peers need no synchronized clocks.
    """

    id: int
    topic: str
    method: str
    args: dict[str, Any]
    context: dict[str, Any]
    timeout: float | None
    namespace: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        _check_seconds("timeout", self.timeout)


class Stream(msgspec.Struct, frozen=True, array_like=True):
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
    timeout: float | None
    credit: int
    namespace: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        _check_seconds("timeout", self.timeout)


def _check_seconds(name: str, value: float | None) -> None:
    # NaN or an infinity would make a deadline, lease or schedule that never ends.
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")


class _OneWay(msgspec.Struct, frozen=True, array_like=True):
    """The fields of a request nothing answers."""

    id: int
    topic: str
    method: str
    args: dict[str, Any]
    context: dict[str, Any]
    namespace: str | None = None
    version: str | None = None


class Cast(_OneWay, frozen=True, array_like=True):
    """A one-way request to one host of a topic; nothing is sent back."""


class Casts(msgspec.Struct, frozen=True, array_like=True):
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


class Calls(msgspec.Struct, frozen=True):
    """Calls to one service port, in one message: each as the `CALL` it stands for."""

    batch: list[Call]


class Fanout(_OneWay, frozen=True, array_like=True):
    """A one-way request sent to every host of a topic; nothing is sent back."""


class Reply(msgspec.Struct, frozen=True, array_like=True):
    """The result of a call."""

    id: int
    result: Any


class Error(msgspec.Struct, frozen=True, array_like=True):
    """A call failed. `code` says how, `type_name` names the exception."""

    id: int
    code: str
    type_name: str
    message: str
    traceback: str


class Replies(msgspec.Struct, frozen=True):
    """Answers (`Reply` and `Error`) to calls of one caller, in one message."""

    answers: list[Reply | Error]


class Cancel(msgspec.Struct, frozen=True, array_like=True):
    """The caller gave up on call `id`: the service cancels its handler."""

    id: int


class Items(msgspec.Struct, frozen=True, array_like=True):
    """Items of stream `id`, in order: as many as its credit allows, in one message."""

    id: int
    items: list[Any]


class Credit(msgspec.Struct, frozen=True, array_like=True):
    """The caller of stream `id` accepts `n` more items."""

    id: int
    n: int


class StatsSubscribe(msgspec.Struct, frozen=True, array_like=True):
    """Ask for a stats message every `interval` seconds, for `lease` seconds."""

    id: int
    interval: float
    lease: float

    def __post_init__(self) -> None:
        _check_seconds("interval", self.interval)
        _check_seconds("lease", self.lease)


class Stats(msgspec.Struct, frozen=True, array_like=True):
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
    cls: cls.__struct_fields__ for cls in _KIND_OF
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
#: The parts of each kind's fields typed `Any`, which msgspec encodes and
#: decodes more loosely than the protocol allows (see `_plain`): maps (whose
#: keys and values are checked) and values; None when a request's `args` or
#: `context` is not a dict. `_LOOSE_OF` has every kind whose envelope is its
#: struct's fields: all but `CALLS` and `REPLIES`, which carry envelopes.
_Loose: TypeAlias = tuple[tuple[dict[Any, Any], ...], Collection[Any]] | None


def _request_loose(request: Any) -> _Loose:
    args, context = request.args, request.context
    if type(args) is dict and type(context) is dict:
        return (args, context), ()
    return None


def _casts_loose(casts: Any) -> _Loose:
    # Its batch goes whole: a list of dicts, each counted against the fast
    # paths' few containers.
    if type(casts.context) is dict:
        return (casts.context,), (casts.batch,)
    return None


def _value_loose(value: Any) -> _Loose:
    # A map's or a list's contents are what `_plain` looks at first.
    kind = type(value)
    if kind is dict:
        return (value,), ()
    if kind is list:
        return (), value
    return (), (value,)


_NOTHING_LOOSE: Final = ((), ())
_LOOSE_OF: Final[dict[type[Any], Callable[[Any], _Loose]]] = {
    Call: _request_loose,
    Cast: _request_loose,
    Casts: _casts_loose,
    Fanout: _request_loose,
    Reply: lambda reply: _value_loose(reply.result),
    Error: lambda _: _NOTHING_LOOSE,
    Cancel: lambda _: _NOTHING_LOOSE,
    StatsSubscribe: lambda _: _NOTHING_LOOSE,
    Stats: lambda stats: _value_loose(stats.data),
    Stream: _request_loose,
    Items: lambda items: _value_loose(items.items),
    Credit: lambda _: _NOTHING_LOOSE,
}


#: The fast path of `decode` checks the loose parts of an envelope in Python,
#: a container at a time: it takes those holding at most this many arrays and
#: maps (and frames of at most `_FAST_BYTES`). Larger ones go msgpack's way,
#: where this check would cost more than msgspec saves.
_FAST_CONTAINERS: Final = 3
_FAST_BYTES: Final = 512
#: The most values a list or map holding other lists or maps may have in an
#: envelope the fast paths take.
_FAST_VALUES: Final = 16
#: The bytes that start an array or a map (fixmap, fixarray, array 16/32,
#: map 16/32) translated to 0, every other to 1: a frame with few zeros holds
#: few containers. A byte of data may look like one too, which only sends its
#: frame the reference way.
_CONTAINER_HEADS: Final = bytes(
    0 if 0x80 <= byte <= 0x9F or 0xDC <= byte <= 0xDF else 1 for byte in range(256)
)


def _heads(cls: type[Any]) -> tuple[bytes, bytes | None]:
    """The first three bytes of an envelope of `cls` with all its fields, and
    without the optional two (None if it has none): a fixarray header, the
    version and the kind."""
    count = len(_FIELDS_OF[cls]) + 2
    assert count <= 15, "an envelope must fit a fixarray"
    full = bytes((0x90 + count, VERSION, _KIND_OF[cls]))
    short = bytes((0x90 + count - 2, VERSION, _KIND_OF[cls])) if cls in _ADDRESSED else None
    return full, short


# What `encode` needs of each class: the heads of its envelopes, and its loose parts.
_ENCODING: Final[dict[type[Any], tuple[bytes, bytes | None, Callable[[Any], _Loose]]]] = {
    cls: (*_heads(cls), loose_of) for cls, loose_of in _LOOSE_OF.items()
}


def _most_containers(cls: type[Any]) -> int:
    """The most arrays and maps a frame of `cls` the fast path of `decode`
    takes may hold: the envelope's, its fields', and the loose parts'."""
    typed = [f for f in msgspec.structs.fields(cls) if typing.get_origin(f.type) in (dict, list)]
    return 1 + len(typed) + _FAST_CONTAINERS


# What `decode` needs of the first three bytes of a valid envelope: the
# header of the struct's array that replaces them, the struct's decoder, its
# loose parts, and the most containers it takes.
_DECODING: Final[dict[bytes, tuple[bytes, Any, Callable[[Any], _Loose], int]]] = {
    bytes((0x90 + count + 2, VERSION, _KIND_OF[cls])): (
        bytes((0x90 + count,)),
        msgspec.msgpack.Decoder(cls),
        loose_of,
        _most_containers(cls),
    )
    for cls, loose_of in _LOOSE_OF.items()
    for count in _ARITIES[cls]
}


def _schema(cls: type[Any]) -> type[Any]:
    """An attrs class of the fields of `cls` and of its name: the converter
    structures it with the detailed errors that `decode` gives."""
    return attrs.make_class(
        cls.__name__,
        {
            field.name: attrs.field(
                type=field.type, default=attrs.NOTHING if field.required else field.default
            )
            for field in msgspec.structs.fields(cls)
        },
    )


_SCHEMA_OF: Final[dict[type[Any], type[Any]]] = {cls: _schema(cls) for cls in _KIND_OF}


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
_encoder: Final = msgspec.msgpack.Encoder()
#: The map keys the protocol allows.
_KEYS: Final = frozenset({str, bytes})
#: What a list or map the protocol allows may hold.
_CONTENTS: Final = _PLAIN | {dict, list}


def _plain(loose: _Loose, budget: int) -> bool:
    """Whether the loose parts of an envelope are made of msgpack's own types
    only, in at most `budget` arrays and maps: None, bool, int, float, str,
    bytes, lists, and dicts whose keys are str or bytes.

    msgspec encodes more (a `datetime` as a timestamp, a set as an array,
    dataclasses as maps...) and decodes more (timestamps, extension types, any
    key) than the protocol allows: the fast paths of `encode` and `decode`
    stand aside for anything else, and msgpack's reference path says what it
    makes of it.
    """
    if loose is None:
        return False
    maps, values = loose
    for map_ in maps:
        if not _PLAIN.issuperset(map(type, map_.values())):
            budget = _nested(map_.values(), budget) if budget else -1
            if budget < 0:
                return False
        if not _KEYS.issuperset(map(type, map_)):
            return False
    return _PLAIN.issuperset(map(type, values)) or (budget > 0 and _nested(values, budget) >= 0)


def _nested(values: Collection[Any], budget: int) -> int:
    """What is left of `budget` after counting the containers in `values`, or
    -1 if they are more or hold anything else than `_plain` allows."""
    # Counted before they are checked, so that many containers cost little.
    if len(values) > _FAST_VALUES:
        return -1
    kinds = [*map(type, values)]
    budget -= kinds.count(dict) + kinds.count(list)
    if budget < 0 or not _CONTENTS.issuperset(kinds):
        return -1
    for value in values:
        kind = type(value)
        if kind is dict:
            if not _KEYS.issuperset(map(type, value)):
                return -1
            if not _PLAIN.issuperset(map(type, value.values())):
                budget = _nested(value.values(), budget)
        elif kind is list and not _PLAIN.issuperset(map(type, value)):
            budget = _nested(value, budget)
        if budget < 0:
            return -1
    return budget


def encode(envelope: Envelope) -> bytes:
    """Encode an envelope as one frame.

    Raises:
        TypeError: a payload value msgpack cannot encode.
    """
    if type(envelope) is Replies:
        return encode_replies([encode(answer) for answer in envelope.answers])
    if type(envelope) is Calls:
        batch = [_call_fields(call) for call in envelope.batch]
        calls: bytes = msgpack.packb([VERSION, Kind.CALLS, batch], **_packer_options)
        return calls
    cls = type(envelope)
    full, short, loose_of = _ENCODING[cls]
    # Flat payloads only: msgpack packs nested ones about as fast as they
    # would be checked.
    if _plain(loose_of(envelope), 0):
        # msgspec writes the struct as the array of its fields; the envelope
        # puts the version and kind in front, and leaves out a request's two
        # trailing nils (each one byte, c0).
        try:
            fields = _encoder.encode(envelope)
        except Exception:
            pass  # msgpack's path raises its own error, or encodes what msgspec would not
        else:
            # A slice of a small frame costs less than a view of it.
            body = fields if len(fields) <= _FAST_BYTES else memoryview(fields)
            if short is not None and envelope.namespace is None and envelope.version is None:  # type: ignore[union-attr]
                return short + body[1:-2]
            return full + body[1:]
    return _encode_msgpack(envelope)


def _call_fields(call: Call) -> tuple[Any, ...]:
    fields = msgspec.structs.astuple(call)
    return fields[:-2] if fields[-1] is None and fields[-2] is None else fields


def _encode_msgpack(envelope: Envelope) -> bytes:
    """The reference encoding, msgpack's, which msgspec's matches byte for byte."""
    fields = msgspec.structs.astuple(envelope)
    if type(envelope) in _ADDRESSED and fields[-1] is None and fields[-2] is None:
        fields = fields[:-2]
    data: bytes = msgpack.packb([VERSION, _KIND_OF[type(envelope)], *fields], **_packer_options)
    return data


#: The largest `REPLIES` message, in bytes (a service with a lower message
#: size limit keeps to its own): every caller accepts one this large,
#: whatever its own limit, so batching small answers never makes a message
#: too large for a caller that would take each of them alone.
MAX_REPLIES_SIZE: Final = 64 * 1024
#: The bytes a `REPLIES` message adds to the answers it carries, at most.
REPLIES_OVERHEAD: Final = 8
_REPLIES_HEAD: Final = bytes((0x93, VERSION, Kind.REPLIES))
_CALLS_HEAD: Final = bytes((0x93, VERSION, Kind.CALLS))


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
    envelope = _fast(frame)
    return _decode_msgpack(frame) if envelope is None else envelope


def _fast(frame: bytes) -> Envelope | None:
    """`decode`'s fast path: msgspec decodes the fields straight into the
    kind's struct; None for a frame it does not take, which goes the
    reference way (that bounds the containers and words the refusals).

    A valid envelope starts with three bytes that say its length, version and
    kind (a fixarray, 01, the kind); msgspec reads the fields as the struct's
    own array, its header in place of those three bytes.
    """
    head = frame[:3]
    fast = _DECODING.get(head)
    if fast is not None:
        return _struct(fast, frame)
    if head == _REPLIES_HEAD:
        return _fast_replies(frame)
    if head == _CALLS_HEAD:
        return _fast_calls(frame)
    return None


def _struct(fast: tuple[bytes, Any, Callable[[Any], _Loose], int], frame: bytes) -> Envelope | None:
    """The struct msgspec decodes from `frame` with `fast` (from `_DECODING`):
    the frame's array with `fast`'s header in place of its first three bytes,
    or with none (b"") when `frame` is already the array of the fields.
    None if the fast path does not take it."""
    head, decoder, loose_of, most = fast
    if len(frame) > _FAST_BYTES or frame.translate(_CONTAINER_HEADS).count(0) > most:
        return None
    try:
        struct: Envelope = decoder.decode(head + frame[3:] if head else frame)
    except Exception:
        return None
    return struct if _plain(loose_of(struct), _FAST_CONTAINERS) else None


class _Batch(msgspec.Struct, array_like=True):
    """A `CALLS` or `REPLIES` frame, its elements left undecoded."""

    version: int
    kind: int
    elements: list[msgspec.Raw]


_batch_decoder: Final = msgspec.msgpack.Decoder(_Batch)


def _elements(frame: bytes) -> list[bytes] | None:
    # An element takes a byte at least, and an object to hold it: a frame
    # within the size of the largest REPLIES bounds their memory too.
    if len(frame) > MAX_REPLIES_SIZE:
        return None
    try:
        return [bytes(element) for element in _batch_decoder.decode(frame).elements]
    except Exception:
        return None


#: What `decode` needs of the heads of the envelopes a `REPLIES` carries.
_ANSWERS_FAST: Final = {
    head: fast for head, fast in _DECODING.items() if head[2] in (Kind.REPLY, Kind.ERROR)
}


def _fast_replies(frame: bytes) -> Replies | None:
    answers: list[Any] = []
    for element in _elements(frame) or ():
        fast = _ANSWERS_FAST.get(element[:3])
        answer = None if fast is None else _struct(fast, element)
        if answer is None:
            return None
        answers.append(answer)
    return Replies(answers) if answers else None


#: What `decode` needs of the fields of a `CALL` as a `CALLS` carries them, by
#: the first byte: their array, of 6 or 8.
_CALL_FIELDS_FAST: Final = {
    head[0] - 2: (b"", *fast[1:]) for head, fast in _DECODING.items() if head[2] == Kind.CALL
}


def _fast_calls(frame: bytes) -> Calls | None:
    elements = _elements(frame)
    if elements is None:
        return None
    calls: list[Any] = []
    for element in elements:
        fast = _CALL_FIELDS_FAST.get(element[0]) if element else None
        call = None if fast is None else _struct(fast, element)
        if call is None:
            return None
        calls.append(call)
    return Calls(calls)


def _decode_msgpack(frame: bytes) -> Envelope:
    """`decode` the reference way: msgpack, the checks in Python, and the
    converter to say what is wrong."""
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
        checked = converter.structure(
            dict(zip(_FIELDS_OF[cls], fields, strict=False)), _SCHEMA_OF[cls]
        )
        return cls(*attrs.astuple(checked, recurse=False))
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


#: The checks of a cast's and a fanout's fields: the same fields (see `_OneWay`).
_ONE_WAY_CHECKS: Final = (
    *(_is_int, _is_str, _is_str, _is_str_dict, _is_str_dict),
    *(_is_optional_str, _is_optional_str),
)

# The fast path of `decode`: the types the strict converter accepts, checked
# directly. A message that fails them goes through the converter, whose
# detailed errors say what is wrong.
_CHECKS: Final[dict[type[Any], tuple[Callable[[object], bool], ...]]] = {
    Call: (
        *(_is_int, _is_str, _is_str, _is_str_dict, _is_str_dict, _is_optional_number),
        *(_is_optional_str, _is_optional_str),
    ),
    Cast: _ONE_WAY_CHECKS,
    Casts: (
        *(_is_int, _is_str, _is_str, _is_list_of_str_dicts, _is_str_dict),
        *(_is_optional_str, _is_optional_str),
    ),
    Fanout: _ONE_WAY_CHECKS,
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
