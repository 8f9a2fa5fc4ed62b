"""The LeRobot driver against a fake robot implementing LeRobot's ``Robot`` interface,
driven through launch/lerobot.yaml: ActionChunks reach send_action row by row, the
robot's joints come back as RobotState and its camera as Frames."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from engram.runtime.drivers.lerobot import LeRobotDriver, LeRobotRobot
from engram.runtime.graph import load_graph
from engram.runtime.launcher import Launch
from engram.runtime.messages import ActionChunk, Frame, RobotState

MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
SENT: list[dict[str, float]] = []  # what the fake robot was told, across instances


class FakeSO101:
    """LeRobot's Robot interface (lerobot 0.4 ``Robot``), as an SO-101 follower with one
    camera would present it; motors follow their targets at once."""

    def __init__(
        self,
        id: str = "fake",  # noqa: A002 - lerobot's name
        camera_hw: tuple[int, int] = (48, 64),
        **config: Any,  # type, port, ...: what a real robot's config would hold
    ) -> None:
        self.config = config
        self.name = "so101_follower"
        self.id = id
        self._hw = tuple(camera_hw)
        self._connected = False
        self.calibrated_with: bool | None = None
        self.positions = {m: 0.0 for m in MOTORS}
        self._lock = threading.Lock()

    @property
    def observation_features(self) -> dict[str, Any]:
        return {**{f"{m}.pos": float for m in MOTORS}, "front": (*self._hw, 3)}

    @property
    def action_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in MOTORS}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected, self.calibrated_with = True, calibrate

    def get_observation(self) -> dict[str, Any]:
        assert self._connected, "get_observation before connect"
        with self._lock:
            obs: dict[str, Any] = {f"{m}.pos": v for m, v in self.positions.items()}
        frame = np.zeros((*self._hw, 3), np.uint8)
        frame[..., 0] = int(obs["shoulder_pan.pos"]) % 256  # the camera sees the arm move
        obs["front"] = frame
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        assert self._connected, "send_action before connect"
        assert set(action) == set(self.action_features), action
        with self._lock:
            for key, value in action.items():
                self.positions[key.removesuffix(".pos")] = float(value)
        SENT.append(dict(action))
        return action

    def disconnect(self) -> None:
        self._connected = False


def _wait(pred, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_fake_robot_has_the_interface_the_driver_expects():
    assert isinstance(FakeSO101(), LeRobotRobot)
    assert not isinstance(object(), LeRobotRobot)


def test_launch_graph_drives_the_robot_end_to_end():
    SENT.clear()
    data = load_graph(
        "launch/lerobot.yaml",
        params={
            "robot": {
                "robot": "tests.runtime.drivers.test_lerobot:FakeSO101",
                "robot_kwargs": {"id": "test_arm"},
                "rate_hz": 50.0,
                "camera_intrinsics": {"front": [[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]},
            }
        },
        drop=["perception", "memory"],  # the driver's part of the graph
    )
    launch = Launch(data, source="launch/lerobot.yaml", status=None)
    launch.start()
    try:
        bus = launch.bus
        states = bus.subscribe("/robot_state", "queue(512)")
        frames = bus.subscribe("/frames", "queue(512)")
        driver = launch.nodes["robot"]
        assert isinstance(driver, LeRobotDriver)
        assert driver.robot.is_connected and driver.robot.calibrated_with is True
        assert driver.robot.id == "test_arm" and driver.robot.config["port"] == "/dev/ttyACM0"
        assert driver.joint_names == [f"{m}.pos" for m in MOTORS]
        targets = np.array([[10.0 * (i + 1)] * 5 + [50.0] for i in range(3)], np.float32)
        bus.publish(
            "/actions", ActionChunk(action_space="joint_positions", actions=targets, dt_s=0.05)
        )
        assert _wait(lambda: len(SENT) >= 3), SENT
        assert [a["shoulder_pan.pos"] for a in SENT[:3]] == [10.0, 20.0, 30.0]  # in order
        got_state: list[RobotState] = []
        assert _wait(
            lambda: any(
                s.joint_positions[0] == 30.0
                for s in (got_state.extend(states.drain()) or got_state)
            )
        )
        last = [s for s in got_state if s.joint_positions[0] == 30.0][-1]
        assert last.robot == "so101_follower" and last.joint_positions.shape == (6,)
        assert last.gripper_width_m == pytest.approx(0.04)  # gripper.pos 50 of 100
        got_frames: list[Frame] = []
        assert _wait(lambda: bool(got_frames.extend(frames.drain()) or got_frames))
        frame = got_frames[-1]
        assert frame.camera == "front" and frame.rgb.shape == (48, 64, 3)
        assert frame.intrinsics[0, 0] == 50.0
        # a chunk of the wrong width is refused and counted, not sent
        n = len(SENT)
        bus.publish(
            "/actions",
            ActionChunk(action_space="joint_positions", actions=np.zeros((2, 3), np.float32)),
        )
        bus.publish(
            "/actions",
            ActionChunk(action_space="base_velocity", actions=np.zeros((1, 6), np.float32)),
        )
        assert _wait(lambda: driver.counters.get("rejected_chunks", 0) == 2)
        time.sleep(0.1)
        assert len(SENT) == n
    finally:
        launch.stop()
    assert not driver.robot.is_connected  # disconnected on stop


def test_real_robot_factory_says_what_is_missing():
    import importlib.util

    from engram.runtime.drivers.lerobot import make_lerobot_robot

    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("lerobot is installed here: the factory would open a real port")
    with pytest.raises(RuntimeError, match="lerobot package is not installed"):
        make_lerobot_robot("so101_follower", port="/dev/null")
