"""The rclpy bridge node, driven through a fake rclpy (the one place a mock is allowed)
against a real in-process bus."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from engram.runtime.bridges.ros2 import convert as cv
from engram.runtime.bridges.ros2 import geometry, rostypes
from engram.runtime.bridges.ros2.nodes import (
    BridgeConfig,
    ChunkPlayer,
    RclpyTransport,
    RosBridgeNode,
    main,
)
from engram.runtime.bus import InProcBus
from engram.runtime.messages import ActionChunk, AudioChunk, Frame, Instruction, Recall, RobotState

from . import fake_rclpy


@pytest.fixture
def ros(monkeypatch):
    return fake_rclpy.install(monkeypatch)


def make_bridge(ros, bus, **overrides):
    node = ros.Node("engram_bridge")
    config = BridgeConfig(heartbeat_hz=0, **overrides)
    bridge = RosBridgeNode(config, transport=RclpyTransport(node), bus=bus, name="bridge")
    return node, bridge


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_ros_messages_become_engram_messages(ros):
    bus = InProcBus("ros-in")
    subs = {
        t: bus.subscribe(t, "queue(8)")
        for t in ("/frames", "/robot_state", "/audio", "/instruction")
    }
    node, bridge = make_bridge(
        ros,
        bus,
        depth_topic="/camera/depth/image_raw",
        audio_topic="/audio_in",
        world_frame="map",
    )
    types = rostypes.RclpyTypes()  # rclpy-style payloads: array.array fields
    with bridge:
        # declared QoS: camera topics best effort, /tf_static latched
        rel = fake_rclpy.ReliabilityPolicy
        assert node.subscriptions["/camera/color/image_raw"].qos.reliability is rel.BEST_EFFORT
        assert (
            node.subscriptions["/tf_static"].qos.durability
            is fake_rclpy.DurabilityPolicy.TRANSIENT_LOCAL
        )
        assert node.subscriptions["/engram/instruction"].qos.reliability is rel.RELIABLE

        K = np.array([[50.0, 0, 4], [0, 50.0, 3], [0, 0, 1]])
        node.deliver(
            "/camera/color/camera_info",
            cv.intrinsics_to_camera_info(types, K, width=8, height=6, stamp_ns=1, frame_id="cam"),
        )
        map_from_cam = np.eye(4)
        map_from_cam[:3, 3] = [1.0, 2.0, 1.5]
        node.deliver("/tf_static", geometry.poses_to_tf(types, [("map", "cam", 0, map_from_cam)]))
        odom_pose = np.eye(4)
        odom_pose[:3, 3] = [0.5, 0.0, 0.0]
        node.deliver(
            "/odom",
            geometry.robot_state_to_odometry(
                types, RobotState(stamp_ns=10, world_from_base=odom_pose)
            ),
        )
        rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
        stamp = 1_700_000_000_000_000_000
        node.deliver(
            "/camera/color/image_raw",
            cv.frame_to_image(types, Frame(stamp_ns=stamp, camera="cam", rgb=rgb)),
        )
        assert subs["/frames"].get(0.05) is None  # waits for its depth
        depth = np.full((6, 8), 1.25, np.float32)
        node.deliver(
            "/camera/depth/image_raw",
            cv.depth_to_image(
                types, depth, stamp_ns=stamp + 1_000_000, frame_id="cam", encoding="16UC1"
            ),
        )
        pcm = np.linspace(-0.25, 0.25, 320, dtype=np.float32)[:, None]
        node.deliver(
            "/audio_in",
            cv.audio_chunk_to_ros(types, AudioChunk(stamp_ns=1, pcm=pcm, sample_rate_hz=8000)),
        )
        node.deliver("/engram/instruction", types.new("std_msgs/msg/String", data="tidy the table"))
        # a broken image is counted, not fatal
        bad = types.new(
            "sensor_msgs/msg/Image",
            header=rostypes.make_header(types, 5, "cam"),
            height=2,
            width=2,
            encoding="yuv422",
            is_bigendian=0,
            step=4,
            data=types.seq(np.zeros(8), "uint8"),
        )
        node.deliver("/camera/color/image_raw", bad)

        frame = subs["/frames"].get(1.0)
        assert isinstance(frame, Frame) and frame.stamp_ns == stamp and frame.camera == "cam"
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_allclose(frame.depth, depth)
        np.testing.assert_array_equal(frame.intrinsics, K)
        np.testing.assert_allclose(frame.world_from_camera, map_from_cam)  # TF wins over odometry
        state = subs["/robot_state"].get(1.0)
        assert isinstance(state, RobotState) and state.stamp_ns == 10
        np.testing.assert_allclose(state.world_from_base, odom_pose)
        audio = subs["/audio"].get(1.0)
        assert isinstance(audio, AudioChunk) and audio.sample_rate_hz == 8000
        np.testing.assert_array_equal(audio.pcm, pcm)
        instruction = subs["/instruction"].get(1.0)
        assert isinstance(instruction, Instruction) and instruction.text == "tidy the table"
        assert bridge.counters["conversion_errors"] == 1
        assert bridge.running


def test_action_chunks_become_twists_and_trajectories(ros):
    bus = InProcBus("ros-out")
    node, bridge = make_bridge(ros, bus, cmd_rate_hz=100.0, joint_names="j1,j2,j3,j4")
    with bridge:
        rows = np.array([[0.2, 0.0, 0.1], [0.4, 0.1, 0.0]], np.float32)
        bus.publish("/actions", ActionChunk(action_space="base_velocity", actions=rows, dt_s=0.05))
        twists = node.publishers["/cmd_vel"].messages
        assert wait_for(lambda: any(t.linear.x == 0 and t.angular.z == 0 for t in twists))
        seen = [[t.linear.x, t.linear.y, t.angular.z] for t in twists]
        assert seen[0] == pytest.approx([0.2, 0.0, 0.1])
        assert [0.4, 0.1, 0.0] in [pytest.approx(s) for s in seen]
        assert seen[-1] == [0.0, 0.0, 0.0]  # stop once the chunk has run out
        n = len(twists)
        time.sleep(0.05)
        assert len(twists) == n  # and nothing after the stop

        arm = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        bus.publish("/actions", ActionChunk(action_space="joint_delta", actions=arm, dt_s=0.1))
        trajectories = node.publishers["/engram/trajectory"].messages
        assert wait_for(lambda: len(trajectories) == 1)
        traj = trajectories[0]
        assert list(traj.joint_names) == ["j1", "j2", "j3", "j4"] and len(traj.points) == 5
        back = cv.joint_trajectory_to_action_chunk(traj, stamp_ns=1)
        np.testing.assert_allclose(back.actions, arm, rtol=1e-6)
        assert back.dt_s == pytest.approx(0.1)


def test_memory_questions_are_answered_as_json(ros):
    bus = InProcBus("ros-q")
    asked = []

    def answer(query):
        asked.append(query)
        return Recall(
            query_seq=query.seq,
            query_text=query.text,
            hits=[
                {
                    "memory": "spatial",
                    "score": 0.8,
                    "text": "mug on the shelf",
                    "position": [1.0, 2.0, 0.9],
                }
            ],
        )

    bus.serve("/memory/query", answer)
    node, bridge = make_bridge(ros, bus, query_timeout_s=0.5)
    with bridge:
        question = rostypes.RclpyTypes().new(
            "std_msgs/msg/String", data="where did I leave the mug?"
        )
        node.deliver("/engram/question", question)
        answers = node.publishers["/engram/answer"].messages
        assert wait_for(lambda: len(answers) == 1)
        body = json.loads(answers[0].data)
        assert body["query_text"] == "where did I leave the mug?" and body["error"] == ""
        assert body["hits"][0]["position"] == [1.0, 2.0, 0.9]
        assert asked[0].text == "where did I leave the mug?"
        node.deliver(
            "/engram/question", rostypes.RclpyTypes().new("std_msgs/msg/String", data="{not json")
        )
        assert wait_for(lambda: len(answers) == 2)
        assert "not" in json.loads(answers[1].data)["error"]


def test_question_without_memory_server_gets_an_error_answer(ros):
    bus = InProcBus("ros-noq")
    node, bridge = make_bridge(ros, bus, query_timeout_s=0.1)
    with bridge:
        node.deliver(
            "/engram/question", rostypes.RclpyTypes().new("std_msgs/msg/String", data="keys?")
        )
        answers = node.publishers["/engram/answer"].messages
        assert wait_for(lambda: len(answers) == 1)
        assert "no reply" in json.loads(answers[0].data)["error"]


def test_chunk_player_plays_rows_then_stops_once():
    player = ChunkPlayer()
    assert player.step(0.0) is None
    chunk = ActionChunk(
        action_space="base_velocity", actions=np.array([[1, 0, 0], [2, 0, 0]], np.float32), dt_s=0.5
    )
    player.load(chunk, 10.0)
    assert player.step(10.1)[0] == 1 and player.step(10.6)[0] == 2
    assert player.step(11.2).tolist() == [0.0, 0.0, 0.0]
    assert player.step(11.3) is None


def test_console_script_main_reads_parameters_and_spins(ros):
    ros.Node.PARAMETER_OVERRIDES = {
        "bus_url": "inproc://from-params",
        "rgb_topic": "/front/image",
        "camera_info_topic": "",
        "odom_topic": "",
    }
    assert main([]) == 0
    (node,) = ros.Node.instances
    assert ros.state.spun == [node] and node.destroyed and not ros.state.initialised
    assert "/front/image" in node.subscriptions and "/odom" not in node.subscriptions
    assert node.parameters["bus_url"] == "inproc://from-params"
    assert set(node.parameters) >= {"rgb_topic", "depth_topic", "cmd_vel_topic", "memory_service"}


def test_rclpy_transport_is_chosen_by_config_and_fails_clearly_without_ros(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rclpy", None)  # as on a machine without ROS 2
    bridge = RosBridgeNode(BridgeConfig(heartbeat_hz=0), bus=InProcBus("no-ros"))
    with pytest.raises(RuntimeError, match="needs ROS 2"):
        bridge.configure()


def test_importing_the_bridge_bag_and_viz_loads_no_heavy_package():
    import subprocess
    import sys

    code = (
        "import sys, engram.runtime.bridges.ros2.nodes, engram.runtime.bridges.ros2.bag, engram.runtime.bridges.ros2.convert, engram.runtime.bridges.rerun;"
        "print(sorted(m for m in ('rclpy', 'cyclonedds', 'cv2', 'rosbags', 'rerun', 'torch')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
