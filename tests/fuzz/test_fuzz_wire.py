"""Fuzz: the codec and every message type's validation (issue 18).

Whatever bytes arrive, ``decode``/``unpack`` raise only ``DecodeError``; whatever values a
message is built from, it either raises ``MessageError`` (a ``ValueError`` naming the field)
or is a message that encodes and decodes back equal. Nothing else escapes."""

from __future__ import annotations

import dataclasses
import typing

import msgpack
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engram.runtime import codec
from engram.runtime.codec import DecodeError, EncodeError, decode, pack, unpack
from engram.runtime.messages import MESSAGE_TYPES, MessageError
from tests.fuzz._budget import budget

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(scalars, inner, max_size=3),
    max_leaves=10,
)
dtypes = st.sampled_from(["uint8", "int32", "int64", "float32", "float64", "bool", "complex64"])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    dtype = np.dtype(draw(dtypes))
    arr = np.zeros(shape, dtype)
    if arr.size and dtype.kind in "iuf":
        arr.flat[0] = draw(st.integers(0, 5))
    return arr


field_values = values | arrays() | st.just(np.eye(4)) | st.just(np.eye(3))


@st.composite
def message_kwargs(draw: st.DrawFn) -> tuple[type, dict]:
    cls = draw(st.sampled_from(sorted(MESSAGE_TYPES.values(), key=lambda c: c.TYPE)))
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if _required(f)]
    names = [f.name for f in fields]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    return cls, {name: draw(field_values) for name in {*required, *chosen}}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@given(message_kwargs())
@budget(4)
def test_every_message_type_validates_or_round_trips(case: tuple[type, dict]) -> None:
    cls, kwargs = case
    try:
        msg = cls(**kwargs)
    except MessageError:
        return  # refused, naming the field
    # built: it must travel (no value accepted here fails later in encode)
    back = unpack(pack(msg))
    assert type(back) is cls and back == msg


headers = st.fixed_dictionaries(
    {},
    optional={
        "t": st.sampled_from([*MESSAGE_TYPES, "Nope", ""]) | values,
        "v": st.integers(-2, 3) | values,
        "s": st.integers(-5, 2**64) | values,
        "q": st.integers(-5, 2**64) | values,
        "f": st.dictionaries(st.text(max_size=12), values, max_size=5) | values,
        "a": st.lists(st.lists(values, max_size=4), max_size=3) | values,
    },
)


@given(headers, st.lists(st.binary(max_size=64), max_size=4))
@budget(4)
def test_crafted_headers_and_frames_raise_only_decode_error(header: dict, rest: list) -> None:
    try:
        body = typing.cast(bytes, msgpack.packb(header, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return
    frames = [codec.HEADER_MAGIC + bytes([codec.WIRE_VERSION]) + body, *rest]
    try:
        decode(frames)
    except DecodeError:
        pass


@given(st.binary(max_size=512))
@budget(2)
def test_random_blobs_raise_only_decode_error(blob: bytes) -> None:
    for data in (blob, b"EGRB" + blob):
        try:
            unpack(data)
        except DecodeError:
            pass
        try:
            decode([data])
        except DecodeError:
            pass


@given(st.integers(codec.MAX_FIELD_BYTES - 64, codec.MAX_FIELD_BYTES + 64))
@budget(0.3)
def test_field_and_header_limits_hold_on_both_sides(size: int) -> None:
    from engram.runtime.messages import Instruction

    msg = Instruction(text="x" * size)
    try:
        frames = codec.encode(msg)
    except EncodeError:
        return
    try:
        assert decode(frames) == msg
    except DecodeError as exc:
        assert size > codec.MAX_FIELD_BYTES - 64, exc
