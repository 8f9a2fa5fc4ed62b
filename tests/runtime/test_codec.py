"""Wire codec: property-based round trips of every message type, and hostile input."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engram.runtime import codec
from engram.runtime.codec import DecodeError, EncodeError, decode, encode, pack, unpack
from engram.runtime.messages import (
    MESSAGE_TYPES,
    ActionChunk,
    AudioChunk,
    Frame,
    Heartbeat,
    Instruction,
    MemoryQuery,
    MessageError,
    Percept,
    PlanStep,
    Recall,
    RobotState,
    SoundEvent,
    Transcript,
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------
# strategies: one per message type

stamps = st.integers(0, 2**63 - 1)
seqs = st.integers(0, 2**64 - 1)
texts = st.text(max_size=12)
finite64 = st.floats(-1e6, 1e6, allow_nan=False)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_dicts = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@st.composite
def poses(draw: st.DrawFn) -> np.ndarray:
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)), dtype=np.float64)
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = q / np.linalg.norm(q)
    pose = np.eye(4)
    pose[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    pose[:3, 3] = draw(st.lists(finite64, min_size=3, max_size=3))
    return pose


def arrays(dtype: str, shape: tuple[int, ...], lo: float = -1e3, hi: float = 1e3):  # noqa: ANN201
    kind = np.dtype(dtype).kind
    if kind == "f":
        elements = st.floats(lo, hi, width=np.dtype(dtype).itemsize * 8)
    elif kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return hnp.arrays(dtype, shape, elements=elements)


def optional(strategy):  # noqa: ANN001, ANN201
    return st.none() | strategy


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    k = np.eye(3)
    k[0, 0], k[1, 1] = draw(st.floats(1, 2000)), draw(st.floats(1, 2000))
    depth = draw(optional(arrays("float32", (h, w), 0.0, 50.0)))
    if depth is not None and depth.size and draw(st.booleans()):
        depth.flat[0] = np.nan  # NaN = no measurement, must survive the trip
    return Frame(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        camera=draw(texts),
        rgb=draw(arrays("uint8", (h, w, 3))),
        depth=depth,
        segmentation=draw(optional(arrays("int32", (h, w)))),
        intrinsics=k,
        world_from_camera=draw(poses()),
        labels=draw(st.dictionaries(st.text(max_size=4), texts, max_size=3)),
    )


@st.composite
def audio_chunks(draw: st.DrawFn) -> AudioChunk:
    n, c = draw(st.integers(0, 16)), draw(st.integers(1, 3))
    return AudioChunk(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        source=draw(texts),
        pcm=draw(arrays("float32", (n, c), -1.0, 1.0)),
        sample_rate_hz=draw(st.integers(1, 192000)),
        world_from_mic=draw(optional(poses())),
    )


@st.composite
def robot_states(draw: st.DrawFn) -> RobotState:
    j = draw(st.integers(0, 7))
    return RobotState(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        robot=draw(texts),
        joint_positions=draw(arrays("float64", (j,))),
        joint_velocities=draw(arrays("float64", (j,))),
        world_from_base=draw(poses()),
        world_from_ee=draw(optional(poses())),
        gripper_width_m=draw(st.floats(0, 0.2)),
    )


@st.composite
def percepts(draw: st.DrawFn) -> Percept:
    k, d, n = draw(st.integers(0, 4)), draw(st.integers(1, 6)), draw(st.integers(0, 6))
    points = draw(optional(arrays("float32", (n, 3))))
    point_ids = draw(optional(arrays("int32", (n,)))) if points is not None else None
    return Percept(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        camera=draw(texts),
        frame_seq=draw(st.integers(0, 2**40)),
        keyframe=draw(st.booleans()),
        world_from_camera=draw(poses()),
        embedding=draw(optional(arrays("float32", (d,)))),
        object_ids=draw(arrays("int32", (k,))),
        object_labels=draw(st.lists(texts, min_size=k, max_size=k)),
        object_confidences=draw(arrays("float32", (k,), 0.0, 1.0)),
        object_boxes=draw(arrays("int32", (k, 4))),
        object_centroids=draw(arrays("float32", (k, 3))),
        object_extents=draw(arrays("float32", (k, 3), 0.0, 10.0)),
        object_embeddings=draw(optional(arrays("float32", (k, d)))),
        points=points,
        point_object_ids=point_ids,
        thumbnail=draw(optional(arrays("uint8", (draw(st.integers(0, 4)), 3, 3)))),
    )


@st.composite
def transcripts(draw: st.DrawFn) -> Transcript:
    start = draw(st.integers(0, 2**62))
    return Transcript(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        text=draw(st.text(max_size=40)),
        start_ns=start,
        end_ns=start + draw(st.integers(0, 2**40)),
        language=draw(texts),
        confidence=draw(st.floats(0, 1)),
        speaker=draw(texts),
        embedding=draw(optional(arrays("float32", (draw(st.integers(0, 8)),)))),
        world_from_robot=draw(optional(poses())),
    )


@st.composite
def sound_events(draw: st.DrawFn) -> SoundEvent:
    start = draw(st.integers(0, 2**62))
    return SoundEvent(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        source=draw(texts),
        label=draw(texts),
        start_ns=start,
        end_ns=start + draw(st.integers(0, 2**40)),
        energy_db=draw(finite64),
        peak_hz=draw(st.floats(0, 24000)),
        embedding=draw(optional(arrays("float32", (draw(st.integers(0, 8)),)))),
        world_from_robot=draw(optional(poses())),
    )


instructions = st.builds(
    Instruction, stamp_ns=stamps, seq=seqs, text=texts, task=texts, episode_id=texts
)
plan_steps = st.builds(
    PlanStep,
    stamp_ns=stamps,
    seq=seqs,
    skill=texts,
    args=json_dicts,
    status=st.sampled_from(PlanStep.STATUSES),
    attempt=st.integers(0, 100),
    reason=texts,
    episode_id=texts,
)


@st.composite
def action_chunks(draw: st.DrawFn) -> ActionChunk:
    return ActionChunk(
        stamp_ns=draw(stamps),
        seq=draw(seqs),
        robot=draw(texts),
        action_space=draw(texts),
        actions=draw(arrays("float32", (draw(st.integers(0, 8)), draw(st.integers(0, 7))))),
        dt_s=draw(st.floats(1e-4, 10)),
        plan_step_seq=draw(st.integers(0, 2**40)),
    )


memory_queries = st.builds(
    MemoryQuery,
    stamp_ns=stamps,
    seq=seqs,
    text=texts,
    memories=st.lists(texts, max_size=3),
    top_k=st.integers(1, 100),
    embedding=optional(arrays("float32", (8,))),
    t0_ns=st.integers(0, 2**62),
    t1_ns=st.integers(0, 2**62),
    near=optional(arrays("float32", (3,))),
    radius_m=st.floats(0, 100),
)
recalls = st.builds(
    Recall,
    stamp_ns=stamps,
    seq=seqs,
    query_seq=st.integers(0, 2**62),
    query_text=texts,
    hits=st.lists(json_dicts, max_size=4),
    error=texts,
)
heartbeats = st.builds(
    Heartbeat,
    stamp_ns=stamps,
    seq=seqs,
    node=texts,
    state=st.sampled_from(["starting", "running", "stopping", "error"]),
    uptime_s=st.floats(0, 1e6),
    counters=st.dictionaries(texts, st.integers(0, 2**63), max_size=5),
    latency_ms=st.dictionaries(texts, st.floats(0, 1e4), max_size=3),
    info=json_dicts,
)

STRATEGIES = {
    "Frame": frames(),
    "AudioChunk": audio_chunks(),
    "RobotState": robot_states(),
    "Percept": percepts(),
    "Transcript": transcripts(),
    "SoundEvent": sound_events(),
    "Instruction": instructions,
    "PlanStep": plan_steps,
    "ActionChunk": action_chunks(),
    "MemoryQuery": memory_queries,
    "Recall": recalls,
    "Heartbeat": heartbeats,
}


def test_every_message_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES)


def _as_wire(frames: list) -> list[bytes]:
    """What a socket delivers: independent bytes objects."""
    return [bytes(f) for f in frames]


@pytest.mark.parametrize("type_name", sorted(MESSAGE_TYPES))
def test_round_trip_every_type(type_name: str) -> None:
    @SETTINGS
    @given(STRATEGIES[type_name])
    def check(msg) -> None:  # noqa: ANN001
        assert type(msg).TYPE == type_name
        frames = encode(msg)
        assert decode(frames) == msg
        assert decode(_as_wire(frames)) == msg
        # rebuilt without the constructor (same-user shared memory): the same message,
        # field for field, with the same Python types as the checked rebuild
        fast, checked = decode(_as_wire(frames), validated=True), decode(_as_wire(frames))
        assert fast == msg
        assert {k: type(v) for k, v in vars(fast).items()} == {
            k: type(v) for k, v in vars(checked).items()
        }
        blob = pack(msg)
        assert unpack(blob) == msg
        assert unpack(memoryview(blob)) == msg

    check()


def test_large_frame_round_trip_is_zero_copy() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    depth = rng.random((1080, 1920), dtype=np.float32) * 5
    msg = Frame(rgb=rgb, depth=depth, labels={"3": "mug"})
    frames = encode(msg)
    # encode: the buffers are views of the message's own arrays, not copies
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), msg.rgb)
    assert sum(len(memoryview(f)) for f in frames[1:]) >= rgb.nbytes + depth.nbytes
    wire = [bytearray(f) for f in frames]
    out = decode(wire)
    assert out == msg
    # decode: arrays are views of the received buffers
    wire[1][0] ^= 0xFF
    assert out.rgb.flat[0] == rgb.flat[0] ^ 0xFF
    assert unpack(pack(msg)) == msg


def test_empty_arrays_round_trip() -> None:
    msg = Frame(rgb=np.zeros((0, 0, 3), np.uint8), depth=np.zeros((0, 0), np.float32))
    assert decode(encode(msg)) == msg
    state = RobotState(joint_positions=np.zeros(0), joint_velocities=np.zeros(0))
    assert unpack(pack(state)) == state


def test_non_contiguous_and_big_endian_arrays_are_encoded() -> None:
    base = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    msg = Frame(rgb=base[:, ::2])  # a strided view
    assert not msg.rgb.flags.c_contiguous
    assert decode(_as_wire(encode(msg))) == msg
    state = RobotState(joint_positions=np.arange(3, dtype=">f8"), joint_velocities=np.zeros(3))
    out = decode(_as_wire(encode(state)))
    assert np.array_equal(out.joint_positions, [0.0, 1.0, 2.0])


def test_numpy_scalars_in_plain_fields_become_numbers() -> None:
    recall = Recall(hits=[{"memory": "m", "score": np.float32(0.5), "xyz": np.arange(3)}])
    out = unpack(pack(recall))
    assert out.hits == [{"memory": "m", "score": 0.5, "xyz": [0, 1, 2]}]


def test_unencodable_field_raises_encode_error_naming_the_type() -> None:
    # refused at construction now (issue 18, defect 7) ...
    with pytest.raises(MessageError, match=r"Recall\.hits"):
        Recall(hits=[{"obj": object()}])
    # ... and encode still refuses one that got past it
    recall = Recall()
    recall.hits = [{"obj": object()}]
    with pytest.raises(EncodeError, match="Recall"):
        encode(recall)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Frame(rgb=np.zeros((2, 2, 3), np.uint8), labels={"1": "mug\udc80"}), "surrogate"),
        (lambda: Frame(rgb=np.zeros((2, 2, 3), np.uint8), labels={"1": {1, 2}}), "set"),
        (lambda: Frame(rgb=np.zeros((2, 2, 3), np.uint8), labels={3: "mug"}), "key 3"),
        (lambda: Instruction(text="\ud800"), "Instruction.text"),
        (lambda: Recall(hits=[{"n": 2**70}]), "64 bits"),
    ],
)
def test_values_that_cannot_be_sent_fail_at_construction(make, match) -> None:  # noqa: ANN001
    """Issue 18, defect 7: they were accepted and failed only in encode (publisher thread)."""
    with pytest.raises(MessageError, match=match):
        make()


def test_header_and_field_sizes_are_bounded() -> None:
    """Issue 18, defect 3: a 20 MB text header was decoded."""
    big = _header(f={"text": "x" * (codec.MAX_HEADER_BYTES + 10)})
    with pytest.raises(DecodeError, match="over the limit"):
        decode([big])
    field = _header(f={"text": "x" * (codec.MAX_FIELD_BYTES + 1)})
    with pytest.raises(DecodeError, match="not valid msgpack"):
        decode([field])
    many = _header(f={"text": "hi"}, a=[0] * (codec.MAX_FIELD_ITEMS + 1))
    with pytest.raises(DecodeError):
        decode([many])
    with pytest.raises(EncodeError, match="header limit"):
        encode(Recall(hits=[{"text": "y" * 100_000} for _ in range(50)]))


# ---------------------------------------------------------------------------
# hostile input: only DecodeError, never a crash or a huge allocation


def _header(**overrides) -> bytes:  # noqa: ANN003
    base = {"t": "Instruction", "v": 1, "s": 1, "q": 2, "f": {"text": "hi"}, "a": []}
    base.update(overrides)
    return codec.HEADER_MAGIC + bytes([codec.WIRE_VERSION]) + msgpack.packb(base)


def test_crafted_header_is_valid() -> None:
    assert decode([_header()]) == Instruction(stamp_ns=1, seq=2, text="hi")


RGB_DESC = ["rgb", "|u1", [2, 2, 3]]


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "no frames"),
        ([b""], "bad magic"),
        ([b"EGRM\x07" + msgpack.packb({})], "wire version"),
        ([b"EGRM\x01\xc1"], "not valid msgpack"),
        ([b"EGRM\x01" + msgpack.packb([1, 2])], "must be a map"),
        ([b"EGRM\x01" + b"\x91" * 5000 + b"\xc0"], "msgpack"),
        ([_header(t="Nope")], "unknown message type"),
        ([_header(t=5)], "unknown message type"),
        ([_header(v=99)], "schema version"),
        ([_header(s=-1)], "stamp_ns"),
        ([_header(q="x")], "seq"),
        ([_header(f=[1])], "'f' must be a map"),
        ([_header(f={"nope": 1})], "unknown field"),
        ([_header(f={"text": b"bytes"})], "unsupported value"),
        ([_header(f={"text": "x", "task": {1: 2}})], "msgpack|map key"),
        ([_header(f={"text": 5})], "invalid Instruction"),
        ([_header(a={})], "'a' must be a list"),
        ([_header(a=[[1, 2, 3]]), b"x"], "array descriptor"),
        ([_header(a=[["text", "|u1", [1]]]), b"x"], "unknown array field|sent twice"),
        ([_header(t="Frame", f={}, a=[RGB_DESC])], "1 arrays but 0 array frames"),
        ([_header(t="Frame", f={}, a=[RGB_DESC]), b"x" * 12, b"extra"], "truncated or extra"),
        ([_header(t="Frame", f={}, a=[RGB_DESC]), b"x" * 11], "needs 12 bytes"),
        ([_header(t="Frame", f={}, a=[["rgb", "|O", [1]]]), b"x" * 8], "not a wire dtype"),
        ([_header(t="Frame", f={}, a=[["rgb", "<U4", [1]]]), b"x" * 16], "not a wire dtype"),
        ([_header(t="Frame", f={}, a=[["rgb", "V8", [1]]]), b"x" * 8], "not a wire dtype"),
        ([_header(t="Frame", f={}, a=[["rgb", ">f4", [1]]]), b"x" * 4], "not a wire dtype"),
        ([_header(t="Frame", f={}, a=[["rgb", 3, [1]]]), b"x"], "not a wire dtype"),
        ([_header(t="Frame", f={}, a=[["rgb", "|u1", [-1]]]), b""], "bad shape"),
        ([_header(t="Frame", f={}, a=[["rgb", "|u1", [True]]]), b"x"], "bad shape"),
        ([_header(t="Frame", f={}, a=[["rgb", "|u1", [1] * 40]]), b"x"], "bad shape"),
        # a lying shape: petabytes claimed, nothing allocated
        ([_header(t="Frame", f={}, a=[["rgb", "|u1", [2**40, 2**40, 3]]]), b""], "needs"),
        ([_header(t="Frame", f={}, a=[["rgb", "|u1", [0, 2**62, 2**62]]]), b""], "rgb"),
        ([_header(t="Frame", f={}, a=[["rgb", "|u1", [2, 2, 4]]]), b"x" * 16], "invalid Frame"),
        ([_header(t="Frame", f={}, a=[RGB_DESC, RGB_DESC]), b"x" * 12, b"x" * 12], "twice"),
    ],
)
def test_malformed_input_raises_decode_error(frames: list, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(frames)


def test_msgpack_extension_types_are_refused() -> None:
    body = msgpack.packb(
        {
            "t": "Instruction",
            "v": 1,
            "s": 0,
            "q": 0,
            "f": {"text": msgpack.ExtType(5, b"x")},
            "a": [],
        }
    )
    with pytest.raises(DecodeError, match="extension"):
        decode([b"EGRM\x01" + body])


def test_decode_rejects_non_buffers() -> None:
    with pytest.raises(DecodeError):
        decode([object()])
    with pytest.raises(DecodeError):
        decode(5)  # type: ignore[arg-type]


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_fuzzed_frames_raise_only_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        decode(frames)


@SETTINGS
@given(json_values, st.lists(st.binary(max_size=32), max_size=3))
def test_fuzzed_headers_raise_only_decode_error(header: object, rest: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        decode([b"EGRM\x01" + msgpack.packb(header), *rest])


_VALID = encode(
    Frame(
        rgb=np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3),
        depth=np.ones((4, 5), np.float32),
        labels={"1": "cup"},
    )
)


@SETTINGS
@given(st.data())
def test_mutated_and_truncated_messages_never_escape(data: st.DataObject) -> None:
    frames = [bytearray(f) for f in _VALID]
    action = data.draw(st.sampled_from(["flip", "cut_frame", "drop_frames", "cut_header"]))
    if action == "flip":
        i = data.draw(st.integers(0, len(frames[0]) - 1))
        frames[0][i] = data.draw(st.integers(0, 255))
    elif action == "cut_frame":
        k = data.draw(st.integers(1, len(frames) - 1))
        frames[k] = frames[k][: data.draw(st.integers(0, len(frames[k]) - 1))]
    elif action == "drop_frames":
        frames = frames[: data.draw(st.integers(0, len(frames) - 1))]
    else:
        frames[0] = frames[0][: data.draw(st.integers(0, len(frames[0]) - 1))]
    try:
        out = decode(frames)
    except DecodeError:
        return
    assert isinstance(out, Frame)  # a harmless mutation (e.g. of a digit) may still decode


def test_unpack_rejects_every_truncation_and_trailing_bytes() -> None:
    blob = pack(Instruction(text="pick up the cup"))
    for n in range(len(blob)):
        with pytest.raises(DecodeError):
            unpack(blob[:n])
    with pytest.raises(DecodeError, match="trailing"):
        unpack(blob + b"\0" * 8)
    with pytest.raises(DecodeError, match="magic"):
        unpack(b"XXXX" + blob[4:])
    with pytest.raises(DecodeError, match="frame count"):
        unpack(b"EGRB" + struct.pack("<I", 10**6) + b"\0" * 64)
    with pytest.raises(DecodeError):
        unpack("not bytes")  # type: ignore[arg-type]


def test_pack_aligns_array_frames() -> None:
    msg = RobotState(joint_positions=np.arange(5.0), joint_velocities=np.arange(5.0))
    blob = pack(msg)
    out = unpack(blob)
    assert out == msg
    arr = out.joint_positions
    offset = (
        arr.__array_interface__["data"][0]
        - np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
    )
    assert offset % 8 == 0
