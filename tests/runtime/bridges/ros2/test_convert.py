"""ROS 2 <-> Engram conversions, checked through rosbags' CDR serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from engram.runtime.bridges.ros2 import assembler, geometry, rostypes
from engram.runtime.bridges.ros2 import convert as cv
from engram.runtime.bridges.ros2.rostypes import ConversionError, RosbagsTypes
from engram.runtime.messages import ActionChunk, AudioChunk, Frame, Instruction, Recall, RobotState


@pytest.fixture(scope="module")
def ts():
    return rostypes.register_audio_types(get_typestore(Stores.ROS2_JAZZY))


@pytest.fixture(scope="module")
def types(ts):
    return RosbagsTypes(ts)


def cdr(ts, msg):
    """Serialise to CDR bytes and back: what a ROS 2 node would receive."""
    name = msg.__msgtype__
    return ts.deserialize_cdr(bytes(ts.serialize_cdr(msg, name)), name)


def rng_image(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_image(ts, *, height, width, encoding, step, data, bigendian=0, stamp_ns=0, frame_id="cam"):
    types = RosbagsTypes(ts)
    return types.new(
        "sensor_msgs/msg/Image",
        header=rostypes.make_header(types, stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian,
        step=step,
        data=np.frombuffer(bytes(data), np.uint8),
    )


# ---------------------------------------------------------------------------
# images


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_frame_image_round_trip_through_cdr(ts, types, encoding):
    frame = Frame(stamp_ns=1_700_000_000_123_456_789, camera="front_optical", rgb=rng_image())
    msg = cdr(ts, cv.frame_to_image(types, frame, encoding=encoding))
    assert msg.encoding == encoding and msg.header.frame_id == "front_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    back = cv.image_to_frame(msg)
    assert back.stamp_ns == frame.stamp_ns
    assert back.camera == "front_optical"
    np.testing.assert_array_equal(back.rgb, frame.rgb)


def test_bgr8_with_row_padding_and_mono8(ts):
    rgb = rng_image(3, 4, seed=1)
    bgr = rgb[:, :, ::-1]
    step = 4 * 3 + 5  # 5 padding bytes per row
    rows = [bytes(bgr[r].tobytes()) + b"\xee" * 5 for r in range(3)]
    msg = raw_image(ts, height=3, width=4, encoding="bgr8", step=step, data=b"".join(rows))
    np.testing.assert_array_equal(cv.image_to_rgb(cdr(ts, msg)), rgb)

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    mono = raw_image(ts, height=3, width=4, encoding="mono8", step=4, data=gray.tobytes())
    out = cv.image_to_rgb(mono)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[:, :, 1], gray)


def test_depth_16uc1_millimetres_little_and_big_endian(ts, types):
    mm = np.array([[0, 1000, 2500], [65535, 1, 1234]], dtype=np.uint16)
    little = raw_image(
        ts, height=2, width=3, encoding="16UC1", step=6, data=mm.astype("<u2").tobytes()
    )
    big = raw_image(
        ts,
        height=2,
        width=3,
        encoding="16UC1",
        step=6,
        data=mm.astype(">u2").tobytes(),
        bigendian=1,
    )
    for msg in (little, big):
        depth = cv.image_to_depth(cdr(ts, msg))
        assert depth.dtype == np.float32 and depth.shape == (2, 3)
        np.testing.assert_allclose(depth, mm.astype(np.float32) / 1000.0, rtol=1e-6)
    # and back: metres -> 16UC1 -> metres, 0 for NaN
    metres = np.array([[0.5, np.nan], [1.234, 3.0]], dtype=np.float32)
    msg = cdr(ts, cv.depth_to_image(types, metres, stamp_ns=5, frame_id="d", encoding="16UC1"))
    np.testing.assert_allclose(cv.image_to_depth(msg), [[0.5, 0.0], [1.234, 3.0]], atol=1e-6)


def test_depth_32fc1_keeps_nan_and_clears_inf_and_negative(ts, types):
    metres = np.array([[1.5, np.nan, np.inf], [-1.0, 0.0, 7.25]], dtype=np.float32)
    msg = cdr(ts, cv.depth_to_image(types, metres, stamp_ns=9, frame_id="depth"))
    assert msg.encoding == "32FC1" and msg.step == 12
    depth = cv.image_to_depth(msg)
    assert math.isnan(depth[0, 1])
    np.testing.assert_array_equal(depth[0, [0, 2]], [1.5, 0.0])
    np.testing.assert_array_equal(depth[1], [0.0, 0.0, 7.25])


def test_bad_images_raise_clear_errors(ts):
    yuv = raw_image(ts, height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
    with pytest.raises(ConversionError, match="yuv422"):
        cv.image_to_array(yuv)
    short = raw_image(ts, height=4, width=4, encoding="rgb8", step=12, data=bytes(20))
    with pytest.raises(ConversionError, match="needs step\\*height = 48"):
        cv.image_to_rgb(short)
    depth = raw_image(ts, height=1, width=1, encoding="32FC1", step=4, data=bytes(4))
    with pytest.raises(ConversionError, match="expected a colour image"):
        cv.image_to_rgb(depth)


def test_compressed_png_exact_and_jpeg_close(ts, types):
    frame = Frame(stamp_ns=42, camera="cam", rgb=rng_image(32, 48, seed=3))
    png = cdr(ts, cv.frame_to_compressed(types, frame, image_format="png"))
    assert png.format == "png"
    np.testing.assert_array_equal(cv.compressed_to_rgb(png), frame.rgb)
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :, 0] = np.linspace(0, 255, 48, dtype=np.uint8)
    smooth[:, :, 2] = 200
    jpeg = cdr(ts, cv.frame_to_compressed(types, Frame(stamp_ns=1, rgb=smooth), jpeg_quality=95))
    back = cv.image_to_frame(jpeg)
    assert back.rgb.shape == (32, 48, 3)
    assert np.abs(back.rgb.astype(int) - smooth.astype(int)).mean() < 4
    broken = types.new(
        "sensor_msgs/msg/CompressedImage",
        header=rostypes.make_header(types, 0, "c"),
        format="jpeg",
        data=np.frombuffer(b"not a jpeg", np.uint8),
    )
    with pytest.raises(ConversionError, match="could not be decoded"):
        cv.compressed_to_rgb(broken)


def test_camera_info_round_trip(ts, types):
    K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    msg = cdr(
        ts, cv.intrinsics_to_camera_info(types, K, width=640, height=480, stamp_ns=7, frame_id="c")
    )
    K2, size = cv.camera_info_to_intrinsics(msg)
    np.testing.assert_array_equal(K2, K)
    assert size == (640, 480)
    assert list(msg.p[:3]) == [525.0, 0.0, 319.5]


# ---------------------------------------------------------------------------
# audio


def test_audio_float32_layout_carries_rate_and_channels(ts, types):
    pcm = np.random.default_rng(0).uniform(-1, 1, (160, 2)).astype(np.float32)
    chunk = AudioChunk(stamp_ns=11, pcm=pcm, sample_rate_hz=48000)
    msg = cdr(ts, cv.audio_chunk_to_ros(types, chunk))
    assert [d.label for d in msg.layout.dim] == ["samples@48000hz", "channels"]
    back = cv.ros_audio_to_chunk(msg, stamp_ns=11, sample_rate_hz=16000)
    assert back.sample_rate_hz == 48000 and back.channels == 2
    np.testing.assert_array_equal(back.pcm, pcm)
    assert back == chunk.replace(seq=back.seq)


@pytest.mark.parametrize(
    "msgtype",
    [
        "std_msgs/msg/UInt8MultiArray",
        "audio_common_msgs/msg/AudioData",
        "audio_common_msgs/msg/AudioDataStamped",
    ],
)
def test_audio_s16le_layouts(ts, types, msgtype):
    pcm = np.sin(np.linspace(0, 20, 320, dtype=np.float32))[:, None] * 0.5
    chunk = AudioChunk(stamp_ns=2_000_000_000, source="mic0", pcm=pcm, sample_rate_hz=16000)
    msg = cdr(ts, cv.audio_chunk_to_ros(types, chunk, msgtype=msgtype))
    back = cv.ros_audio_to_chunk(msg, stamp_ns=5, sample_rate_hz=16000, channels=1)
    np.testing.assert_allclose(back.pcm, pcm, atol=1.0 / 32767)
    expected_stamp = 2_000_000_000 if msgtype.endswith("Stamped") else 5
    assert back.stamp_ns == expected_stamp


def test_audio_bad_layout_is_reported(types):
    msg = types.new(
        "audio_common_msgs/msg/AudioData", data=np.zeros(5, np.uint8)
    )  # 5 bytes: not whole 16-bit samples
    with pytest.raises(ConversionError, match="not a whole number"):
        cv.ros_audio_to_chunk(msg, stamp_ns=0)


# ---------------------------------------------------------------------------
# poses


def random_rotation(rng):
    q = rng.normal(size=4)
    return geometry.quaternion_to_matrix(*q)


def test_quaternion_matrix_round_trip_and_known_values():
    rng = np.random.default_rng(5)
    for _ in range(200):
        R = random_rotation(rng)
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
        np.testing.assert_allclose(
            geometry.quaternion_to_matrix(*geometry.matrix_to_quaternion(R)), R, atol=1e-12
        )
    s = math.sqrt(0.5)
    yaw90 = geometry.quaternion_to_matrix(0.0, 0.0, s, s)
    np.testing.assert_allclose(yaw90, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(
        geometry.matrix_to_quaternion(np.diag([1.0, -1.0, -1.0])), (1, 0, 0, 0), atol=1e-12
    )
    with pytest.raises(ConversionError, match="zero"):
        geometry.quaternion_to_matrix(0, 0, 0, 0)


def test_odometry_round_trip(ts, types):
    rng = np.random.default_rng(1)
    pose = np.eye(4)
    pose[:3, :3] = random_rotation(rng)
    pose[:3, 3] = [1.5, -2.0, 0.25]
    state = RobotState(stamp_ns=123_000_000_456, robot="base", world_from_base=pose)
    msg = cdr(
        ts,
        geometry.robot_state_to_odometry(types, state, frame_id="map", child_frame_id="base_link"),
    )
    assert msg.header.frame_id == "map" and msg.child_frame_id == "base_link"
    back = geometry.odometry_to_robot_state(msg, robot="base")
    assert back.stamp_ns == state.stamp_ns
    np.testing.assert_allclose(back.world_from_base, pose, atol=1e-12)


def test_tf_round_trip_and_chain_lookup(ts, types):
    map_from_odom = np.eye(4)
    map_from_odom[:3, 3] = [10.0, 0, 0]
    odom_from_base = np.eye(4)
    odom_from_base[:3, :3] = geometry.quaternion_to_matrix(0, 0, math.sin(0.3), math.cos(0.3))
    odom_from_base[:3, 3] = [1.0, 2.0, 0.0]
    base_from_cam = np.eye(4)
    base_from_cam[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # optical frame on a base
    base_from_cam[:3, 3] = [0.2, 0.0, 1.1]
    msg = cdr(
        ts,
        geometry.poses_to_tf(
            types,
            [
                ("map", "odom", 1, map_from_odom),
                ("odom", "base_link", 2, odom_from_base),
                ("/base_link", "camera_optical", 3, base_from_cam),
            ],
        ),
    )
    items = geometry.tf_to_transforms(msg)
    assert [(p, c, s) for p, c, s, _ in items] == [
        ("map", "odom", 1),
        ("odom", "base_link", 2),
        ("base_link", "camera_optical", 3),
    ]
    tree = geometry.TransformTree()
    assert tree.update(msg) == 3
    expected = map_from_odom @ odom_from_base @ base_from_cam
    np.testing.assert_allclose(tree.lookup("map", "camera_optical"), expected, atol=1e-12)
    np.testing.assert_allclose(
        tree.lookup("camera_optical", "odom"),
        np.linalg.inv(odom_from_base @ base_from_cam),
        atol=1e-12,
    )
    assert tree.root("camera_optical") == "map"
    assert tree.lookup("map", "elsewhere") is None


# ---------------------------------------------------------------------------
# commands


def test_base_velocity_chunk_to_twists_and_back(ts, types):
    actions = np.array([[0.5, 0.0, 0.1], [0.4, -0.1, 0.0], [0.0, 0.0, -0.3]], np.float32)
    chunk = ActionChunk(stamp_ns=9, action_space="base_velocity", actions=actions, dt_s=0.2)
    twists = [cdr(ts, t) for t in cv.action_chunk_to_twists(types, chunk)]
    assert len(twists) == 3
    rows = [cv.twist_to_action_chunk(t, stamp_ns=9, dt_s=0.2).actions[0] for t in twists]
    np.testing.assert_allclose(np.stack(rows), actions, atol=1e-7)
    back = cv.twist_to_action_chunk(twists[0], stamp_ns=9)
    assert back.action_space == "base_velocity" and back.actions.shape == (1, 3)
    with pytest.raises(ConversionError, match="base_velocity"):
        cv.action_chunk_to_twists(types, chunk.replace(action_space="arm_ee_delta"))


def test_action_chunk_joint_trajectory_round_trip(ts, types):
    actions = np.random.default_rng(2).normal(size=(8, 7)).astype(np.float32)
    chunk = ActionChunk(
        stamp_ns=5_000_000_001,
        robot="panda",
        action_space="arm_ee_delta",
        actions=actions,
        dt_s=0.05,
    )
    names = [f"j{i}" for i in range(7)]
    msg = cdr(
        ts,
        cv.action_chunk_to_joint_trajectory(
            types, chunk, joint_names=names, start_on_receipt=False
        ),
    )
    assert list(msg.joint_names) == names and len(msg.points) == 8
    assert (msg.points[-1].time_from_start.sec, msg.points[-1].time_from_start.nanosec) == (
        0,
        400_000_000,
    )
    back = cv.joint_trajectory_to_action_chunk(msg, action_space="arm_ee_delta", robot="panda")
    assert back == chunk.replace(seq=back.seq)
    now = cdr(ts, cv.action_chunk_to_joint_trajectory(types, chunk))
    assert now.header.stamp.sec == 0 and now.joint_names[0] == "arm_ee_delta_0"
    with pytest.raises(ConversionError, match="3 names"):
        cv.action_chunk_to_joint_trajectory(types, chunk, joint_names=["a", "b", "c"])


# ---------------------------------------------------------------------------
# language and memory


def test_instruction_and_memory_question_and_recall(ts, types):
    ins = Instruction(stamp_ns=3, text="bring me the red mug")
    msg = cdr(ts, cv.instruction_to_string(types, ins))
    assert cv.string_to_instruction(msg, stamp_ns=3) == ins.replace(seq=0)

    plain = types.new("std_msgs/msg/String", data="where did I leave the mug?")
    q = cv.string_to_memory_query(cdr(ts, plain), stamp_ns=10)
    assert q.text == "where did I leave the mug?" and q.top_k == 5
    rich = types.new(
        "std_msgs/msg/String",
        data=json.dumps(
            {"text": "keys", "top_k": 3, "memories": ["spatial"], "near": [1, 2, 3], "radius_m": 2}
        ),
    )
    q = cv.string_to_memory_query(rich, stamp_ns=10)
    assert (q.text, q.top_k, q.memories, q.radius_m) == ("keys", 3, ["spatial"], 2.0)
    np.testing.assert_array_equal(q.near, np.array([1, 2, 3], np.float32))
    with pytest.raises(ConversionError, match="unknown keys"):
        cv.string_to_memory_query(types.new("std_msgs/msg/String", data='{"txt": 1}'), stamp_ns=1)
    with pytest.raises(ConversionError, match="top_k"):
        cv.string_to_memory_query(types.new("std_msgs/msg/String", data='{"top_k": 0}'), stamp_ns=1)

    recall = Recall(
        stamp_ns=77,
        query_seq=4,
        query_text="mug",
        hits=[
            {
                "memory": "spatial",
                "score": np.float32(0.9),
                "text": "mug",
                "stamp_ns": 5,
                "position": np.array([1.0, 2.0, 0.5]),
            }
        ],
    )
    answer = cdr(ts, cv.recall_to_string(types, recall))
    body = json.loads(answer.data)
    assert body["hits"][0]["position"] == [1.0, 2.0, 0.5]
    back = cv.string_to_recall(answer)
    assert back.query_seq == 4 and back.hits[0]["memory"] == "spatial"
    assert back.hits[0]["score"] == pytest.approx(0.9)


# ---------------------------------------------------------------------------
# frame assembly


def _color(ts, stamp_ns, value, frame_id="cam_optical"):
    rgb = np.full((4, 6, 3), value, np.uint8)
    return cv.frame_to_image(RosbagsTypes(ts), Frame(stamp_ns=stamp_ns, camera=frame_id, rgb=rgb))


def _depth(ts, stamp_ns, metres):
    d = np.full((4, 6), metres, np.float32)
    return cv.depth_to_image(RosbagsTypes(ts), d, stamp_ns=stamp_ns, frame_id="cam_optical")


def test_frame_assembler_pairs_depth_either_order(ts, types):
    asm = assembler.FrameAssembler(
        assembler.FrameAssemblerConfig(expect_depth=True, max_pair_dt_s=0.01)
    )
    K = np.array([[100.0, 0, 3], [0, 100.0, 2], [0, 0, 1]])
    asm.add_camera_info(
        cv.intrinsics_to_camera_info(types, K, width=6, height=4, stamp_ns=0, frame_id="c")
    )
    # depth first, then colour 5 ms later: pairs at once
    assert asm.add_depth(_depth(ts, 1_000_000_000, 1.0), stamp_ns=0) == []
    out = asm.add_color(_color(ts, 1_005_000_000, 10), stamp_ns=0)
    assert len(out) == 1 and float(out[0].depth[0, 0]) == 1.0
    np.testing.assert_array_equal(out[0].intrinsics, K)
    # colour first: held until its depth arrives
    assert asm.add_color(_color(ts, 2_000_000_000, 20), stamp_ns=0) == []
    assert asm.add_color(_color(ts, 2_100_000_000, 30), stamp_ns=0) == []
    out = asm.add_depth(_depth(ts, 2_000_000_000, 2.0), stamp_ns=0)
    assert [(f.stamp_ns, float(f.depth[0, 0])) for f in out] == [(2_000_000_000, 2.0)]
    # a later depth releases the colour frame whose depth never came
    out = asm.add_depth(_depth(ts, 2_300_000_000, 3.0), stamp_ns=0)
    assert [(f.stamp_ns, f.depth) for f in out] == [(2_100_000_000, None)]
    assert asm.counters["frames"] == 3 and asm.counters["with_depth"] == 2


def test_frame_assembler_bounds_pending_and_flushes(ts):
    asm = assembler.FrameAssembler(assembler.FrameAssemblerConfig(expect_depth=True, max_pending=2))
    out = []
    for i in range(5):
        out += asm.add_color(_color(ts, (i + 1) * 10**9, i), stamp_ns=0)
    assert [f.stamp_ns for f in out] == [10**9, 2 * 10**9, 3 * 10**9]
    assert [f.stamp_ns for f in asm.flush()] == [4 * 10**9, 5 * 10**9]
    assert asm.counters["no_intrinsics"] == 5 and asm.counters["no_pose"] == 5


def test_frame_assembler_pose_from_tf_else_odometry(ts, types):
    base_from_cam = np.eye(4)
    base_from_cam[:3, 3] = [0.0, 0.0, 1.0]
    odom_pose = np.eye(4)
    odom_pose[:3, 3] = [3.0, 4.0, 0.0]
    asm = assembler.FrameAssembler(
        assembler.FrameAssemblerConfig(base_from_camera=base_from_cam.tolist())
    )
    asm.add_odometry(
        geometry.robot_state_to_odometry(types, RobotState(stamp_ns=1, world_from_base=odom_pose))
    )
    (frame,) = asm.add_color(_color(ts, 5, 1), stamp_ns=0)
    np.testing.assert_allclose(frame.world_from_camera[:3, 3], [3.0, 4.0, 1.0])
    # TF connecting world -> camera wins over odometry
    world_from_cam = np.eye(4)
    world_from_cam[:3, 3] = [7.0, 8.0, 9.0]
    asm.add_tf(geometry.poses_to_tf(types, [("world", "cam_optical", 4, world_from_cam)]))
    (frame,) = asm.add_color(_color(ts, 6, 1), stamp_ns=0)
    np.testing.assert_allclose(frame.world_from_camera, world_from_cam)
    assert frame.camera == "cam_optical"
