"""The envelope and its msgpack encoding, without sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import re
import uuid
from typing import Any

import msgpack
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trizmq import ProtocolError
from trizmq._wire import (
    MAX_CONTAINERS,
    VERSION,
    Call,
    Calls,
    Cancel,
    Cast,
    Casts,
    Credit,
    Envelope,
    Error,
    Fanout,
    Items,
    Kind,
    Replies,
    Reply,
    Stats,
    StatsSubscribe,
    Stream,
    _decode_msgpack,
    decode,
    encode,
    join_calls,
)

names = st.text(min_size=1, max_size=20)
ids = st.integers(min_value=0, max_value=2**63)
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary()
payload = st.recursive(
    leaves | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
args = st.dictionaries(st.text(max_size=10), payload, max_size=5)
timeouts = st.none() | st.floats(min_value=0, max_value=1e6)

namespaces = st.none() | names
versions = st.none() | st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)
calls = st.builds(Call, ids, names, names, args, args, timeouts, namespaces, versions)


def envelopes_of(
    args: st.SearchStrategy[dict[str, Any]], payload: st.SearchStrategy[Any]
) -> st.SearchStrategy[Envelope]:
    """Envelopes of every kind, with these arguments and payload values."""
    requests = st.builds(Call, ids, names, names, args, args, timeouts, namespaces, versions)
    answers = st.builds(Reply, ids, payload) | st.builds(Error, ids, names, names, names, names)
    return st.one_of(
        requests,
        st.builds(Calls, st.lists(requests, max_size=4)),
        st.builds(Replies, st.lists(answers, min_size=1, max_size=4)),
        st.builds(Cast, ids, names, names, args, args, namespaces, versions),
        st.builds(Casts, ids, names, names, st.lists(args, max_size=4), args, namespaces, versions),
        st.builds(Fanout, ids, names, names, args, args, namespaces, versions),
        st.builds(Reply, ids, payload),
        st.builds(Error, ids, names, names, st.text(), st.text()),
        st.builds(Cancel, ids),
        st.builds(StatsSubscribe, ids, st.floats(0, 60), st.floats(0, 600)),
        st.builds(Stats, ids, args),
        st.builds(Stream, ids, names, names, args, args, timeouts, ids, namespaces, versions),
        st.builds(Items, ids, st.lists(payload, max_size=5)),
        st.builds(Credit, ids, ids),
    )


envelopes = envelopes_of(args, payload)
# Envelopes of few arrays and maps, as most messages are.
small_envelopes = envelopes_of(
    st.dictionaries(st.text(max_size=10), leaves | st.floats(allow_nan=False), max_size=5),
    leaves | st.floats(allow_nan=False),
)


@given(envelopes)
def test_every_envelope_survives_encode_then_decode(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@given(st.lists(calls, max_size=20))
def test_joined_call_frames_are_the_calls_message_of_those_calls(batch: list[Call]) -> None:
    assert join_calls([encode(call) for call in batch]) == encode(Calls(batch))


def test_joined_call_frames_may_have_any_array_head() -> None:
    call = Call(1, "compute", "boot", {"x": 1}, {}, 2.0)
    fields = msgpack.unpackb(encode(call))
    long_head = b"\xdc\x00\x08" + encode(call)[1:]  # the same array, as an array 16
    assert msgpack.unpackb(long_head) == fields
    assert join_calls([long_head, encode(call)]) == encode(Calls([call, call]))


@given(st.binary(max_size=200))
def test_random_bytes_decode_to_an_envelope_or_a_protocol_error(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(frame)


@given(envelopes, st.data())
def test_truncated_envelopes_are_protocol_errors(envelope: Envelope, data: st.DataObject) -> None:
    frame = encode(envelope)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(ProtocolError):
        decode(frame[:cut])


@given(st.lists(payload, max_size=8))
def test_arrays_of_any_shape_decode_to_an_envelope_or_a_protocol_error(fields: list[Any]) -> None:
    with contextlib.suppress(ProtocolError):
        decode(msgpack.packb(fields))


def test_the_envelope_is_a_versioned_positional_array() -> None:
    frame = encode(Cast(7, "compute", "ping", {"x": 1}, {"user": "u"}))
    assert msgpack.unpackb(frame) == [
        VERSION,
        Kind.CAST,
        7,
        "compute",
        "ping",
        {"x": 1},
        {"user": "u"},
    ]


# Each request as it was encoded before namespaces and versions existed.
REQUESTS_OF_BEFORE = [
    (
        Call(1, "compute", "boot", {"x": 1}, {"u": 1}, 2.5),
        [Kind.CALL, 1, "compute", "boot", {"x": 1}, {"u": 1}, 2.5],
    ),
    (Cast(2, "compute", "boot", {}, {}), [Kind.CAST, 2, "compute", "boot", {}, {}]),
    (
        Casts(3, "compute", "boot", [{}, {"x": 2}], {}),
        [Kind.CASTS, 3, "compute", "boot", [{}, {"x": 2}], {}],
    ),
    (Fanout(4, "compute", "boot", {}, {}), [Kind.FANOUT, 4, "compute", "boot", {}, {}]),
]


@pytest.mark.parametrize(("envelope", "fields"), REQUESTS_OF_BEFORE)
def test_a_request_naming_neither_namespace_nor_version_is_the_same_bytes_as_before(
    envelope: Envelope, fields: list[Any]
) -> None:
    old = msgpack.packb([VERSION, *fields], use_bin_type=True)
    assert encode(envelope) == old
    assert decode(old) == envelope


@pytest.mark.parametrize(("envelope", "fields"), REQUESTS_OF_BEFORE)
def test_a_request_naming_a_namespace_or_a_version_carries_both_after_its_fields(
    envelope: Envelope, fields: list[Any]
) -> None:
    versioned = msgspec.structs.replace(envelope, version="5.3")
    assert msgpack.unpackb(encode(versioned))[1:] == [*fields, None, "5.3"]
    namespaced = msgspec.structs.replace(envelope, namespace="baseapi")
    assert msgpack.unpackb(encode(namespaced))[1:] == [*fields, "baseapi", None]
    assert decode(encode(namespaced)) == namespaced


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ([VERSION, Kind.CALL, 1, "t", "m", {}, {}, None, "ns"], "has 6 or 8 fields, got 7"),
        ([VERSION, Kind.CAST, 1, "t", "m", {}, {}, 5, None], "namespace"),
        ([VERSION, Kind.FANOUT, 1, "t", "m", {}, {}, None, 5.3], "version"),
        ([VERSION, Kind.CASTS, 1, "t", "m", [], {}, None, None, None], "has 5 or 7 fields, got 8"),
    ],
)
def test_a_namespace_or_version_that_is_not_a_str_or_nil_is_refused(
    fields: Any, problem: str
) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode(msgpack.packb(fields))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ([VERSION + 1, Kind.CALL], "unsupported protocol version"),
        (["1", Kind.CALL], "unsupported protocol version"),
        ([VERSION, 99], "unknown message kind 99"),
        ([VERSION, Kind.CANCEL, 1, 2], "has 1 fields, got 2"),
        ([VERSION, Kind.CANCEL, "one"], "expected int"),
        ([VERSION, Kind.CALL, 1, "t", "m", {}, {}, float("inf")], "finite"),
        ([VERSION, Kind.CAST, 1, "t", 5, {}, {}], "method"),
        ([VERSION], "array [version, kind"),
        ({"version": 1}, "array [version, kind"),
    ],
)
def test_invalid_envelopes_say_what_is_wrong(fields: Any, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem.replace("[", r"\[")):
        decode(msgpack.packb(fields))


def test_msgpack_extension_types_are_refused() -> None:
    frame = msgpack.packb([VERSION, Kind.REPLY, 1, msgpack.ExtType(5, b"x")])
    with pytest.raises(ProtocolError, match="extension type 5"):
        decode(frame)


@pytest.mark.parametrize(
    ("interval", "lease"),
    [(float("nan"), 30.0), (float("inf"), 30.0), (1.0, float("nan")), (1.0, float("-inf"))],
)
def test_a_stats_subscription_with_a_non_finite_interval_or_lease_is_refused(
    interval: float, lease: float
) -> None:
    frame = msgpack.packb([VERSION, Kind.STATS_SUBSCRIBE, 1, interval, lease])
    with pytest.raises(ProtocolError, match="must be a finite number of seconds"):
        decode(frame)


# Seconds and nanoseconds that msgpack packs as a 32-, 64- and 96-bit timestamp.
@pytest.mark.parametrize("timestamp", [(1, 0), (1, 5), (2**34, 0)])
def test_a_msgpack_timestamp_in_the_arguments_is_refused(timestamp: tuple[int, int]) -> None:
    when = msgpack.Timestamp(*timestamp)
    frame = msgpack.packb([VERSION, Kind.CALL, 1, "t", "m", {"when": when}, {}, None])
    with pytest.raises(ProtocolError, match="extension type -1 "):
        decode(frame)


def test_a_message_of_more_than_a_million_arrays_is_refused_before_they_take_memory() -> None:
    count = MAX_CONTAINERS + 1
    frame = b"\x94\x01\x04\x01\xdd" + count.to_bytes(4, "big") + b"\x90" * count
    with pytest.raises(ProtocolError, match="more than 1000000 arrays and maps"):
        decode(frame)


def test_a_large_message_of_fewer_arrays_than_the_bound_is_decoded() -> None:
    rows = [[n] for n in range(MAX_CONTAINERS // 2)]
    frame = encode(Reply(1, rows))
    assert len(frame) > MAX_CONTAINERS
    assert decode(frame) == Reply(1, rows)


def test_arrays_nested_more_than_1024_deep_are_refused() -> None:
    frame = b"\x94\x01\x04\x01" + b"\x91" * 1025 + b"\x00"
    with pytest.raises(ProtocolError, match="not a msgpack message"):
        decode(frame)


def fields_of(envelope: Envelope) -> list[Any]:
    """The fields of an envelope as docs/protocol.md spells them: a request's
    trailing namespace and version left out when both are nil."""
    if isinstance(envelope, Calls):
        return [[fields_of(call) for call in envelope.batch]]
    if isinstance(envelope, Replies):
        return [[array_of(answer) for answer in envelope.answers]]
    fields = list(msgspec.structs.astuple(envelope))
    if isinstance(envelope, Call | Cast | Casts | Fanout | Stream) and fields[-2:] == [None, None]:
        del fields[-2:]
    return fields


def array_of(envelope: Envelope) -> list[Any]:
    kind = Kind[re.sub(r"(?<!^)(?=[A-Z])", "_", type(envelope).__name__).upper()]
    return [VERSION, kind, *fields_of(envelope)]


def msgpack_encoding(envelope: Envelope) -> bytes:
    """The envelope packed by msgpack."""
    frame: bytes = msgpack.packb(array_of(envelope), use_bin_type=True)
    return frame


@given(small_envelopes | envelopes)
def test_every_envelope_is_the_bytes_msgpack_makes_of_it(envelope: Envelope) -> None:
    assert encode(envelope) == msgpack_encoding(envelope)


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({1}),
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        datetime.date(2026, 1, 1),
        datetime.timedelta(seconds=1),
        uuid.UUID(int=1),
        decimal.Decimal("1.5"),
        dataclasses.make_dataclass("Point", ["x"])(1),
        {uuid.UUID(int=1): 1},
        {"deep": [{datetime.date(2026, 1, 1): 1}]},
    ],
    ids=repr,
)
def test_a_value_msgpack_cannot_encode_is_refused_with_its_error(value: Any) -> None:
    with pytest.raises(Exception) as expected:
        msgpack.packb(value, use_bin_type=True, datetime=False)
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        encode(Call(1, "t", "m", {"x": value}, {}, None))


def typed(value: Any) -> Any:
    """`value` with the type of every part spelt out (1, 1.0 and True differ)."""
    if type(value) is dict:
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if type(value) is list:
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


# Payload values a peer may send, including what the protocol refuses:
# timestamps, extension types, keys that are not str or bytes.
wild = st.recursive(
    leaves
    | st.floats(allow_nan=False)
    | st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999))
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=3) | st.binary(max_size=3) | st.integers(-(2**63), 2**63 - 1),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """An envelope's frame, often with one of its fields replaced by anything,
    or one of the fields of a call or an answer it carries."""
    fields = msgpack.unpackb(encode(draw(small_envelopes | envelopes)))
    if fields[1] in (Kind.CALLS, Kind.REPLIES) and fields[2] and draw(st.booleans()):
        element = fields[2][draw(st.integers(0, len(fields[2]) - 1))]
        element[draw(st.integers(0, len(element) - 1))] = draw(wild | ids | names)
    elif draw(st.booleans()):
        fields[draw(st.integers(2, len(fields) - 1))] = draw(wild | ids | names)
    frame: bytes = msgpack.packb(fields, use_bin_type=True)
    return frame


@given(frames())
def test_decode_agrees_with_msgpack_and_the_converter_on_every_frame(frame: bytes) -> None:
    try:
        expected = _decode_msgpack(frame)
    except ProtocolError as refusal:
        with pytest.raises(ProtocolError, match=re.escape(str(refusal))):
            decode(frame)
        return
    envelope = decode(frame)
    assert type(envelope) is type(expected)
    assert envelope == expected
    for name in envelope.__struct_fields__:
        if name not in {"timeout", "interval", "lease"}:  # numbers: 5 may come as 5.0
            assert typed(getattr(envelope, name)) == typed(getattr(expected, name)), name
