"""Codec per-class plans (issue 20): the header built from parts and the fast array paths
carry exactly what a plain ``msgpack.packb`` of the header map and numpy's own views would,
for every message type, and bad input is still refused with an error naming it."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
from hypothesis import given

from engram.runtime import codec
from engram.runtime.codec import DecodeError, EncodeError, decode, encode
from engram.runtime.messages import MESSAGE_TYPES, Frame, Instruction, RobotState
from tests.runtime.test_codec import SETTINGS, STRATEGIES

WIRE = sorted(codec._WIRE_DTYPES)


def _header(frames: list) -> dict:
    return msgpack.unpackb(bytes(frames[0])[5:], raw=False)


@pytest.mark.parametrize("type_name", sorted(MESSAGE_TYPES))
def test_header_is_the_map_of_every_field(type_name: str) -> None:
    @SETTINGS
    @given(STRATEGIES[type_name])
    def check(msg) -> None:  # noqa: ANN001
        frames = encode(msg)
        header = _header(frames)
        assert list(header) == ["t", "v", "s", "q", "f", "a"]
        assert (header["t"], header["v"]) == (type_name, type(msg).SCHEMA)
        assert (header["s"], header["q"]) == (msg.stamp_ns, msg.seq)
        names = [f.name for f in dataclasses.fields(msg) if f.name not in ("stamp_ns", "seq")]
        arrays = [n for n in names if isinstance(getattr(msg, n), np.ndarray)]
        assert [d[0] for d in header["a"]] == arrays
        assert list(header["f"]) == [n for n in names if n not in arrays]
        for (name, dtype, shape), frame in zip(header["a"], frames[1:], strict=True):
            value = getattr(msg, name)
            assert shape == list(value.shape)
            want = np.ascontiguousarray(value, dtype=np.dtype(dtype))
            assert bytes(frame) == want.tobytes()
            assert np.array_equal(want, value, equal_nan=want.dtype.kind == "f")

    check()


@pytest.mark.parametrize(
    "make",
    [
        *(lambda t=t: np.arange(6).astype(t).reshape(2, 3) for t in WIRE),
        lambda: np.arange(6, dtype=np.longlong).reshape(2, 3),  # format "q", not "l"
        lambda: np.arange(6, dtype=np.intc).reshape(2, 3),
        lambda: np.arange(6, dtype=">f8").reshape(2, 3),  # big-endian: converted
        lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)),  # not C order: copied
        lambda: np.arange(12, dtype=np.uint8).reshape(2, 6)[:, ::2],  # strided: copied
        lambda: np.zeros((0, 3), np.float32),  # empty: no bytes
        lambda: np.array(7.0),  # 0-d
    ],
)
def test_array_frames_hold_the_array_in_c_order_and_its_wire_dtype(make) -> None:  # noqa: ANN001
    value = make()
    frame, desc = codec._array_frame(Frame, "depth", value)
    name, dtype, shape = msgpack.unpackb(desc)
    assert name == "depth" and dtype in codec._WIRE_DTYPES and shape == list(value.shape)
    assert np.dtype(dtype) == value.dtype.newbyteorder("<")
    assert bytes(frame) == np.ascontiguousarray(value, dtype=np.dtype(dtype)).tobytes()


def test_an_array_that_is_not_a_wire_dtype_is_refused_by_name() -> None:
    msg = Frame(rgb=np.zeros((2, 2, 3), np.uint8))
    msg.depth = np.zeros((2, 2), "M8[s]")  # (set after the constructor's checks)
    with pytest.raises(EncodeError, match=r"Frame\.depth: dtype datetime64"):
        encode(msg)
    msg.depth = np.zeros((2, 2), np.complex64)
    with pytest.raises(EncodeError, match=r"Frame\.depth: dtype complex64"):
        encode(msg)


def test_descriptors_are_remembered_per_shape_and_bounded() -> None:
    shapes = [(1 + i % 40, 1 + i // 40, 3) for i in range(codec._MAX_DESCRIPTORS + 200)]
    for shape in shapes:
        rgb = np.full(shape, 7, np.uint8)
        out = decode(encode(Frame(rgb=rgb)))
        assert out.rgb.shape == shape and np.array_equal(out.rgb, rgb)
        assert len(codec._DESCRIPTORS) <= codec._MAX_DESCRIPTORS


def test_stamps_and_seqs_off_the_u64_path_behave_as_before() -> None:
    msg = Instruction(text="hi")
    for stamp in (0, 1, 2**64 - 1):
        msg.stamp_ns, msg.seq = stamp, stamp
        out = decode(encode(msg))
        assert (out.stamp_ns, out.seq) == (stamp, stamp)
    msg.stamp_ns, msg.seq = np.int64(5), np.uint64(6)  # numpy ints: sent as numbers
    out = decode(encode(msg))
    assert (out.stamp_ns, out.seq) == (5, 6) and type(out.stamp_ns) is int
    msg.seq = 1
    for bad, match in ((True, "stamp_ns"), (-3, "stamp_ns"), (1.5, "stamp_ns")):
        msg.stamp_ns = bad
        with pytest.raises(DecodeError, match=match):
            decode(encode(msg))
    msg.stamp_ns = 2**64
    with pytest.raises(EncodeError, match="Instruction"):
        encode(msg)


def _frames(**header) -> list:  # noqa: ANN003
    base = {"t": "Frame", "v": 1, "s": 1, "q": 2, "f": {}, "a": []}
    base.update(header)
    return [codec.HEADER_MAGIC + bytes([codec.WIRE_VERSION]) + msgpack.packb(base)]


RGB = ["rgb", "|u1", [2, 2, 3]]


@pytest.mark.parametrize("validated", [False, True])
@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([*_frames(a=[["rgb", "|u1", [2.0, 2, 3]]]), b"x" * 12], r"Frame\.rgb: bad shape"),
        ([*_frames(a=[["rgb", "|u1", [2, None, 3]]]), b"x" * 12], r"Frame\.rgb: bad shape"),
        ([*_frames(a=[["rgb", "|u1", "abc"]]), b"x" * 3], r"Frame\.rgb: bad shape"),
        ([*_frames(a=[["rgb", "<f8", [2, 2, 3]]]), b"x" * 12], r"Frame\.rgb: .* needs 96 bytes"),
        ([*_frames(a=[["rgb", ["|u1"], [1]]]), b"x"], r"Frame\.rgb: dtype .* not a wire dtype"),
        ([*_frames(a=[["rgb", "|u1"]]), b"x"], "bad array descriptor"),
        ([*_frames(a=[[b"rgb", "|u1", [1]]]), b"x"], "bad array descriptor"),
        ([*_frames(a=[["nope", "|u1", [1]]]), b"x"], "unknown array field 'nope'"),
        ([*_frames(f={"rgb": None}, a=[RGB]), b"x" * 12], r"Frame\.rgb: sent twice"),
        ([*_frames(a=[["rgb", "|u1", [2, 2, 4]]]), b"x" * 16], r"invalid Frame.*rgb"),
        ([*_frames(a=[["rgb", "<f4", [2, 2, 3]]]), b"x" * 48], r"invalid Frame.*rgb"),
        (_frames(t=["Frame"]), "unknown message type"),
        (_frames(v=True), "schema version"),
        (_frames(s=2**64 - 1, q=True), r"Frame\.seq"),
        (_frames(f={"camera": 1, "nope": 2}), "unknown field 'nope'"),
    ],
)
def test_wrong_shapes_dtypes_and_fields_are_refused_on_every_path(
    frames: list, match: str, validated: bool
) -> None:
    """Also on the same-user shared-memory path (``validated``), which skips only the
    constructor's checks of a message that sends every field."""
    with pytest.raises(DecodeError, match=match):
        decode(frames, validated=validated)
    with pytest.raises(DecodeError, match=match):
        decode([memoryview(f) for f in frames], trusted=True, validated=validated)


def test_frames_of_any_buffer_shape_decode_the_same() -> None:
    state = RobotState(joint_positions=np.arange(4.0), joint_velocities=np.ones(4))
    frames = encode(state)
    as_words = [frames[0], *(np.frombuffer(f, np.float64) for f in frames[1:])]
    out = decode([memoryview(f) for f in as_words])  # float64 buffers: cast to bytes
    assert out == state
    readonly = decode([bytes(f) for f in frames], validated=True)
    assert readonly == state and not readonly.joint_positions.flags.writeable
    writable = decode([bytearray(f) for f in frames])
    assert writable.joint_positions.flags.writeable
    for strided in (np.zeros((4, 2))[:, :1], memoryview(bytes(64))[::2]):
        with pytest.raises(DecodeError, match="contiguous"):
            decode([frames[0], strided, *frames[2:]])
