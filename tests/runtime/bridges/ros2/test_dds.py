"""ROS 2 over Cyclone DDS without rclpy: wire layouts, and real traffic between OS processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from engram.runtime.bridges.ros2 import convert as cv
from engram.runtime.bridges.ros2 import dds, geometry, rostypes
from engram.runtime.bridges.ros2.nodes import BridgeConfig, RosBridgeNode
from engram.runtime.bus import InProcBus
from engram.runtime.messages import ActionChunk, AudioChunk, Frame, Instruction, Recall, RobotState

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def isolated_domain() -> int:
    """A random DDS domain so that parallel test runs do not see each other."""
    return random.SystemRandom().randint(100, 230)


def unique_ns() -> str:
    return "/t" + uuid.uuid4().hex[:10]


def test_dds_types_have_ros2_names():
    assert dds.dds_type_name("sensor_msgs/msg/Image") == "sensor_msgs::msg::dds_::Image_"
    assert dds.TYPES["sensor_msgs/msg/Image"].__idl_typename__ == "sensor_msgs::msg::dds_::Image_"
    assert dds.TYPES["std_msgs/msg/String"].__idl_typename__ == "std_msgs::msg::dds_::String_"
    assert dds.dds_topic_name("/camera/image") == "rt/camera/image"
    assert dds.dds_topic_name("chatter") == "rt/chatter"


def test_dds_layouts_serialise_exactly_like_ros2_cdr():
    """Each DDS struct's CDR bytes equal rosbags' ROS 2 CDR of the same message, both ways."""
    ts = rostypes.register_audio_types(get_typestore(Stores.ROS2_JAZZY))
    rb, dt = rostypes.RosbagsTypes(ts), dds.DdsTypes()
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    frame = Frame(stamp_ns=123_456_789_012, camera="cam", rgb=rgb)
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    builders = [
        lambda T: cv.frame_to_image(T, frame),
        lambda T: cv.depth_to_image(T, np.ones((2, 2), np.float32), stamp_ns=5, frame_id="d"),
        lambda T: cv.frame_to_compressed(T, frame, image_format="png"),
        lambda T: cv.intrinsics_to_camera_info(
            T, np.diag([5.0, 5.0, 1.0]), width=3, height=2, stamp_ns=1, frame_id="x"
        ),
        lambda T: geometry.robot_state_to_odometry(T, RobotState(stamp_ns=3, world_from_base=pose)),
        lambda T: geometry.poses_to_tf(T, [("a", "b", 5, pose), ("b", "c", 6, np.eye(4))]),
        lambda T: cv.action_chunk_to_joint_trajectory(
            T, ActionChunk(stamp_ns=1, actions=np.ones((2, 3), np.float32))
        ),
        lambda T: cv.audio_chunk_to_ros(
            T, AudioChunk(stamp_ns=1, pcm=np.zeros((4, 2), np.float32))
        ),
        lambda T: cv.audio_chunk_to_ros(
            T,
            AudioChunk(stamp_ns=7, pcm=np.zeros((4, 1), np.float32)),
            msgtype="audio_common_msgs/msg/AudioDataStamped",
        ),
        lambda T: cv.recall_to_string(T, Recall(stamp_ns=1, hits=[{"memory": "m", "score": 1.0}])),
        lambda T: cv.instruction_to_string(T, Instruction(stamp_ns=1, text="go")),
        lambda T: cv.action_chunk_to_twists(
            T,
            ActionChunk(
                stamp_ns=1, action_space="base_velocity", actions=np.ones((1, 3), np.float32)
            ),
        )[0],
    ]
    for build in builders:
        ros_msg, dds_msg = build(rb), build(dt)
        name = ros_msg.__msgtype__
        ros_bytes = bytes(ts.serialize_cdr(ros_msg, name))
        assert dds_msg.serialize(use_version_2=False) == ros_bytes, name
        back = type(dds_msg).deserialize(ros_bytes)
        assert back == dds_msg, name
    img = dds.TYPES["sensor_msgs/msg/Image"].deserialize(
        bytes(ts.serialize_cdr(cv.frame_to_image(rb, frame), "sensor_msgs/msg/Image"))
    )
    np.testing.assert_array_equal(cv.image_to_frame(img).rgb, rgb)
    assert isinstance(img.data, bytes)  # uint8 sequences decode as bytes (no per-element loop)


def _python(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_image_and_string_between_two_processes():
    """This process publishes; a second process (python -m engram.runtime.bridges.ros2.dds echo) subscribes."""
    domain, ns = isolated_domain(), unique_ns()
    image_topic, text_topic = f"{ns}/camera/image", f"{ns}/chatter"
    sub = _python(
        "-m",
        "engram.runtime.bridges.ros2.dds",
        "--domain",
        str(domain),
        "echo",
        f"{image_topic}:sensor_msgs/msg/Image",
        f"{text_topic}:std_msgs/msg/String",
        "--count",
        "1",
        "--timeout-s",
        "20",
    )
    rgb = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame = Frame(stamp_ns=1_700_000_000_250_000_000, camera="cam_optical", rgb=rgb)
    transport = dds.DdsTransport(domain_id=domain)
    try:
        write_image = transport.publisher(image_topic, "sensor_msgs/msg/Image")
        write_text = transport.publisher(text_topic, "std_msgs/msg/String")
        deadline = time.monotonic() + 25
        while sub.poll() is None and time.monotonic() < deadline:
            write_image(cv.frame_to_image(transport.types, frame, encoding="bgr8"))
            write_text(transport.types.new("std_msgs/msg/String", data="hello from engram"))
            time.sleep(0.1)
        out, err = sub.communicate(timeout=5)
    finally:
        transport.close()
        if sub.poll() is None:
            sub.kill()
    assert sub.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"ready": True, "domain": domain}
    image = next(m for m in lines[1:] if m["topic"] == image_topic)
    assert image["type"] == "sensor_msgs/msg/Image"
    assert image["stamp_ns"] == frame.stamp_ns and image["frame_id"] == "cam_optical"
    assert image["shape"] == [48, 64, 3]
    assert image["rgb_sum"] == int(rgb.astype(np.int64).sum())
    assert image["rgb_first"] == rgb[0, 0].tolist()
    text = next(m for m in lines[1:] if m["topic"] == text_topic)
    assert text["data"] == "hello from engram"


_ROBOT_SIDE = textwrap.dedent(
    """
    # A stand-in for a ROS 2 robot speaking Cyclone DDS: publishes a camera and an
    # instruction, prints the Twist commands it receives.
    import json, sys, time
    import numpy as np
    from engram.runtime.messages import Frame
    from engram.runtime.bridges.ros2 import convert as cv
    from engram.runtime.bridges.ros2 import geometry, rostypes
    from engram.runtime.bridges.ros2.dds import DdsTransport

    domain, ns = int(sys.argv[1]), sys.argv[2]
    tr = DdsTransport(domain_id=domain)
    twists = []
    tr.subscribe(ns + "/cmd_vel", "geometry_msgs/msg/Twist", twists.append)
    tr.start()
    image = tr.publisher(ns + "/camera/color/image_raw", "sensor_msgs/msg/Image")
    info = tr.publisher(ns + "/camera/color/camera_info", "sensor_msgs/msg/CameraInfo")
    text = tr.publisher(ns + "/instruction", "std_msgs/msg/String")
    rgb = np.random.default_rng(7).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and not any(t.linear.x > 0 for t in twists):
        stamp = time.time_ns()
        info(cv.intrinsics_to_camera_info(tr.types, K, width=32, height=24, stamp_ns=stamp, frame_id="cam"))
        image(cv.frame_to_image(tr.types, Frame(stamp_ns=stamp, camera="cam", rgb=rgb)))
        text(tr.types.new("std_msgs/msg/String", data="go to the kitchen"))
        time.sleep(0.1)
    print(json.dumps([[t.linear.x, t.linear.y, t.angular.z] for t in twists]), flush=True)
    tr.close()
    """
)


def test_bridge_node_over_dds_with_a_robot_process():
    """RosBridgeNode (transport dds) here; a 'robot' process on the same DDS domain."""
    domain, ns = isolated_domain(), unique_ns()
    bus = InProcBus("dds-bridge")
    frames = bus.subscribe("/frames", "queue(4)")
    instructions = bus.subscribe("/instruction", "queue(4)")
    config = BridgeConfig(
        transport="dds",
        domain_id=domain,
        rgb_topic=f"{ns}/camera/color/image_raw",
        camera_info_topic=f"{ns}/camera/color/camera_info",
        instruction_topic=f"{ns}/instruction",
        question_topic="",
        cmd_vel_topic=f"{ns}/cmd_vel",
        trajectory_topic="",
        odom_topic="",
        tf_enabled=False,
        cmd_rate_hz=50.0,
        heartbeat_hz=0,
    )
    bridge = RosBridgeNode(config, bus=bus, name="bridge")
    robot = _python("-c", _ROBOT_SIDE, str(domain), ns)
    try:
        bridge.start()
        frame = None
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            frame = frames.get(0.2)
            if frame is not None and frame.intrinsics[0, 0] == 30.0:
                break
        assert isinstance(frame, Frame), (
            robot.stderr.read() if robot.poll() is not None else "no frame"
        )
        expected = np.random.default_rng(7).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        np.testing.assert_array_equal(frame.rgb, expected)
        assert frame.camera == "cam"
        instruction = instructions.get(10.0)
        assert isinstance(instruction, Instruction) and instruction.text == "go to the kitchen"
        # Engram -> ROS: a base_velocity chunk becomes Twist commands on the robot's cmd_vel
        chunk = ActionChunk(
            action_space="base_velocity",
            actions=np.array([[0.3, 0.0, 0.2], [0.3, 0.0, 0.2]], np.float32),
            dt_s=0.5,
        )
        out = ""
        deadline = time.monotonic() + 20
        while robot.poll() is None and time.monotonic() < deadline:
            bus.publish("/actions", chunk)
            time.sleep(0.3)
        out, err = robot.communicate(timeout=10)
    finally:
        bridge.stop()
        if robot.poll() is None:
            robot.kill()
    assert robot.returncode == 0, err
    twists = json.loads(out.strip().splitlines()[-1])
    assert [0.3, 0.0, 0.2] in [[round(v, 6) for v in t] for t in twists]


@pytest.mark.parametrize("bad", ["nav_msgs/msg/Path", "sensor_msgs/Image"])
def test_unknown_dds_type_is_a_clear_error(bad):
    with pytest.raises(rostypes.ConversionError, match="no DDS type"):
        dds.DdsTypes().cls(bad)
