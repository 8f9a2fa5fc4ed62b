"""ROS 2 bags written with rosbags (sqlite3 and MCAP), read and replayed onto a real bus."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from engram.runtime.bridges.ros2 import convert as cv
from engram.runtime.bridges.ros2 import geometry, rostypes
from engram.runtime.bridges.ros2.bag import (
    BagError,
    BagTopicMap,
    bag_topics,
    read_bag,
    replay_bag,
    resolve_topic_map,
)
from engram.runtime.bus import InProcBus
from engram.runtime.messages import AudioChunk, Frame, Instruction, RobotState

SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def ts():
    return rostypes.register_audio_types(get_typestore(Stores.ROS2_JAZZY))


class BagBuilder:
    """Writes messages (rosbags objects) to a bag, one connection per topic."""

    def __init__(self, ts, path: Path, plugin: StoragePlugin) -> None:
        self.ts = ts
        self.types = rostypes.RosbagsTypes(ts)
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.connections = {}

    def write(self, topic: str, msg, log_time_ns: int) -> None:
        name = msg.__msgtype__
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, name, typestore=self.ts)
        self.writer.write(
            self.connections[topic], log_time_ns, bytes(self.ts.serialize_cdr(msg, name))
        )

    def close(self) -> None:
        self.writer.close()


def pose(x, y, yaw):
    m = np.eye(4)
    m[:3, :3] = geometry.quaternion_to_matrix(0, 0, np.sin(yaw / 2), np.cos(yaw / 2))
    m[:3, 3] = [x, y, 0.0]
    return m


def synthetic_bag(ts, path: Path, plugin: StoragePlugin) -> dict:
    """3 colour + 3 depth frames (depth written before and after its colour), camera info,
    odometry, Float32 and audio_common audio, one instruction."""
    bag = BagBuilder(ts, path, plugin)
    types = bag.types
    rng = np.random.default_rng(0)
    truth = {"rgb": [], "depth": [], "odom": [], "stamps": []}
    info = cv.intrinsics_to_camera_info(
        types, K, width=8, height=6, stamp_ns=T0, frame_id="cam_optical"
    )
    bag.write("/camera/color/camera_info", info, T0)
    bag.write("/camera/depth/camera_info", info, T0)
    for i in range(3):
        stamp = T0 + i * 100_000_000  # 10 Hz
        odom_pose = pose(0.5 * i, 0.1 * i, 0.2 * i)
        state = RobotState(stamp_ns=stamp, world_from_base=odom_pose)
        bag.write("/odom", geometry.robot_state_to_odometry(types, state), stamp)
        rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        depth = rng.integers(300, 5000, (6, 8)).astype(np.float32) / 1000.0
        color_msg = cv.frame_to_image(
            types, Frame(stamp_ns=stamp, camera="cam_optical", rgb=rgb), encoding="bgr8"
        )
        depth_msg = cv.depth_to_image(
            types, depth, stamp_ns=stamp + 3_000_000, frame_id="cam_optical", encoding="16UC1"
        )
        if i == 1:  # depth first
            bag.write("/camera/depth/image_rect_raw", depth_msg, stamp + 1_000_000)
            bag.write("/camera/color/image_raw", color_msg, stamp + 2_000_000)
        else:
            bag.write("/camera/color/image_raw", color_msg, stamp + 1_000_000)
            bag.write("/camera/depth/image_rect_raw", depth_msg, stamp + 2_000_000)
        truth["rgb"].append(rgb)
        truth["depth"].append(depth)
        truth["odom"].append(odom_pose)
        truth["stamps"].append(stamp)
    pcm = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)[:, None]
    chunk = AudioChunk(stamp_ns=T0, pcm=pcm, sample_rate_hz=16000)
    bag.write("/audio", cv.audio_chunk_to_ros(types, chunk), T0 + 50_000_000)
    bag.write(
        "/mic/audio",
        cv.audio_chunk_to_ros(types, chunk, msgtype="audio_common_msgs/msg/AudioDataStamped"),
        T0 + 60_000_000,
    )
    bag.write(
        "/instruction", types.new("std_msgs/msg/String", data="find the keys"), T0 + 70_000_000
    )
    bag.write("/chatter", types.new("std_msgs/msg/String", data="not for engram"), T0 + 80_000_000)
    bag.close()
    truth["pcm"] = pcm
    return truth


@pytest.mark.parametrize(
    "plugin", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"]
)
def test_replay_synthetic_bag_onto_bus(ts, tmp_path, plugin):
    path = tmp_path / f"bag_{plugin.name.lower()}"
    truth = synthetic_bag(ts, path, plugin)
    topics = bag_topics(path)
    roles = resolve_topic_map(topics)
    assert roles["rgb"] == ["/camera/color/image_raw"]
    assert roles["depth"] == ["/camera/depth/image_rect_raw"]
    assert roles["camera_info"] == ["/camera/color/camera_info"]
    assert roles["audio"] == ["/audio"]  # first of the audio topics
    assert "/chatter" not in {t for ts_ in roles.values() for t in ts_}

    bus = InProcBus("bag")
    subs = {
        t: bus.subscribe(t, "queue(32)")
        for t in ("/frames", "/robot_state", "/audio", "/instruction")
    }
    n = replay_bag(path, bus, rate=0)
    got = {t: s.drain() for t, s in subs.items()}
    assert n == sum(len(v) for v in got.values()) == 3 + 3 + 1 + 1

    frames = got["/frames"]
    assert [f.stamp_ns for f in frames] == truth["stamps"]
    for frame, rgb, depth, odom_pose in zip(frames, truth["rgb"], truth["depth"], truth["odom"]):
        assert isinstance(frame, Frame) and frame.camera == "cam_optical"
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_allclose(frame.depth, depth, atol=1e-6)
        np.testing.assert_array_equal(frame.intrinsics, K)
        np.testing.assert_allclose(frame.world_from_camera, odom_pose, atol=1e-9)
    states = got["/robot_state"]
    assert all(isinstance(s, RobotState) for s in states)
    np.testing.assert_allclose(states[2].world_from_base, truth["odom"][2], atol=1e-9)
    (audio,) = got["/audio"]
    assert audio.stamp_ns == T0 + 50_000_000 and audio.sample_rate_hz == 16000
    np.testing.assert_array_equal(audio.pcm, truth["pcm"])
    (instruction,) = got["/instruction"]
    assert isinstance(instruction, Instruction) and instruction.text == "find the keys"

    # the audio_common topic instead, by topic map (string form); frames switched off
    items = list(read_bag(path, topic_map="audio=/mic/audio,rgb=,depth="))
    audio = [m for t, m in items if t == "/audio"]
    assert not [m for t, m in items if t == "/frames"]
    assert len(audio) == 1 and audio[0].stamp_ns == T0  # header stamp of AudioDataStamped
    np.testing.assert_allclose(audio[0].pcm, truth["pcm"], atol=1 / 32767)


def test_topic_map_errors_name_the_topic(ts, tmp_path):
    path = tmp_path / "bag"
    synthetic_bag(ts, path, StoragePlugin.SQLITE3)
    with pytest.raises(
        BagError, match=r"/nope is not in the bag; topics: .*/camera/color/image_raw"
    ):
        list(read_bag(path, topic_map={"rgb": "/nope"}))
    with pytest.raises(BagError, match="has type nav_msgs/msg/Odometry"):
        list(read_bag(path, topic_map={"rgb": "/odom"}))
    with pytest.raises(BagError, match="unknown role"):
        BagTopicMap.parse({"colour": "/x"})
    with pytest.raises(BagError, match="neither side is a role"):
        list(read_bag(path, topic_map={"/camera/color/image_raw": "/somewhere"}))


def test_topic_map_forms_of_engram_replay(ts, tmp_path):
    """engram replay passes --topic-map OLD=NEW pairs: ROS topic -> role, Engram topic -> topic."""
    path = tmp_path / "bag"
    truth = synthetic_bag(ts, path, StoragePlugin.MCAP)
    bus = InProcBus("remap")
    moved = bus.subscribe("/camera/frames", "queue(8)")
    default = bus.subscribe("/frames", "queue(8)")
    topic_map = {"/camera/color/image_raw": "rgb", "depth": "", "/frames": "/camera/frames"}
    assert replay_bag(path, bus, topic_map=topic_map, rate=None) == 3 + 3 + 1 + 1
    frames = moved.drain()
    assert not default.drain() and len(frames) == 3
    assert all(f.depth is None for f in frames)
    np.testing.assert_array_equal(frames[1].rgb, truth["rgb"][1])
    with pytest.raises(BagError, match="does not exist"):
        list(read_bag(tmp_path / "missing"))


def test_replay_paces_by_bag_time(ts, tmp_path):
    path = tmp_path / "paced"
    bag = BagBuilder(ts, path, StoragePlugin.MCAP)
    for i in range(5):
        bag.write(
            "/instruction", bag.types.new("std_msgs/msg/String", data=str(i)), T0 + i * 100_000_000
        )
    bag.close()
    bus = InProcBus("paced")
    sub = bus.subscribe("/instruction", "queue(8)")
    start = time.monotonic()
    assert replay_bag(path, bus, rate=2.0) == 5
    assert time.monotonic() - start >= 0.19  # 0.4 s of bag at twice real time
    assert [m.text for m in sub.drain()] == ["0", "1", "2", "3", "4"]


def test_real_rgbd_frames_with_tf_poses(ts, tmp_path, rgbd_sample_dir):
    """Open3D's real RGB-D sample as a bag: JPEG colour, 16UC1 depth, TF poses from trajectory.log."""
    import cv2

    lines = (rgbd_sample_dir / "trajectory.log").read_text().split("\n")
    poses = [
        np.array([[float(v) for v in lines[5 * i + r].split()] for r in range(1, 5)])
        for i in range(2)
    ]
    path = tmp_path / "real"
    bag = BagBuilder(ts, path, StoragePlugin.MCAP)
    types = bag.types
    static = geometry.poses_to_tf(types, [("map", "odom", 0, np.eye(4))])
    bag.write("/tf_static", static, T0)
    bag.write(
        "/camera/rgb/camera_info",
        cv.intrinsics_to_camera_info(
            types, K, width=640, height=480, stamp_ns=T0, frame_id="camera_rgb_optical_frame"
        ),
        T0,
    )
    truth = []
    for i in range(2):
        stamp = T0 + (i + 1) * SEC // 30
        odom_from_cam = poses[i]
        bag.write(
            "/tf",
            geometry.poses_to_tf(
                types, [("odom", "camera_rgb_optical_frame", stamp, odom_from_cam)]
            ),
            stamp,
        )
        jpeg = (rgbd_sample_dir / "color" / f"{i:05d}.jpg").read_bytes()
        header = rostypes.make_header(types, stamp, "camera_rgb_optical_frame")
        bag.write(
            "/camera/rgb/image_color/compressed",
            types.new(
                "sensor_msgs/msg/CompressedImage",
                header=header,
                format="jpeg",
                data=np.frombuffer(jpeg, np.uint8),
            ),
            stamp,
        )
        depth_mm = cv2.imread(str(rgbd_sample_dir / "depth" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert depth_mm.dtype == np.uint16
        depth_msg = types.new(
            "sensor_msgs/msg/Image",
            header=header,
            height=480,
            width=640,
            encoding="16UC1",
            is_bigendian=0,
            step=1280,
            data=np.frombuffer(depth_mm.astype("<u2").tobytes(), np.uint8),
        )
        bag.write("/camera/depth_registered/image_raw", depth_msg, stamp + 1000)
        rgb = cv2.imread(str(rgbd_sample_dir / "color" / f"{i:05d}.jpg"))[:, :, ::-1]
        truth.append((stamp, rgb, depth_mm, odom_from_cam))
    bag.close()

    frames = [m for t, m in read_bag(path) if t == "/frames"]
    assert len(frames) == 2
    for frame, (stamp, rgb, depth_mm, odom_from_cam) in zip(frames, truth):
        assert frame.stamp_ns == stamp and frame.camera == "camera_rgb_optical_frame"
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_allclose(frame.depth, depth_mm.astype(np.float32) / 1000.0, rtol=1e-6)
        assert float(np.count_nonzero(frame.depth)) > 0.5 * frame.depth.size
        np.testing.assert_allclose(frame.world_from_camera, odom_from_cam, atol=1e-6)  # map = odom
        np.testing.assert_array_equal(frame.intrinsics, K)


@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_garbage_or_incomplete_bag_is_a_clean_cli_error(ts, tmp_path, capsys, damage):
    """Issue 18, defect 7: these ended in an uncaught BagError traceback (exit 1)."""
    from engram.runtime.apps.cli import main as engram

    path = tmp_path / "bag"
    synthetic_bag(ts, path, StoragePlugin.MCAP)
    (data,) = [p for p in path.iterdir() if p.suffix == ".mcap"]
    blob = data.read_bytes()
    if damage == "garbage":
        data.write_bytes(np.random.default_rng(0).bytes(len(blob)))
    else:
        data.write_bytes(blob[: len(blob) // 2])  # a recorder killed half-way
    argv = ["replay", str(path), "--bus", "inproc://bag-damage", "--start-delay-s", "0"]
    argv.append("--as-fast-as-possible")
    assert engram(argv) == 2
    err = capsys.readouterr().err
    assert "engram replay:" in err and "ROS 2 bag" in err and str(path) in err
    assert "Traceback" not in err
    with pytest.raises(BagError):
        list(read_bag(path))
