"""Real arms through LeRobot: a node driving any LeRobot ``Robot`` (SO-100/101, Koch,
LeKiwi, ...) from Engram's ``ActionChunk``s, publishing its ``RobotState`` and its cameras
as Engram ``Frame``s.

LeRobot's ``Robot`` interface (``lerobot.robots.Robot``, lerobot 0.4) is what this node
uses, written down here as ``LeRobotRobot`` so that the node needs no lerobot import (the
package pins torch/rerun versions the core install cannot take; see
/work/shared/DEPENDENCIES.md: install it in its own environment or as an extra)::

    robot.connect(calibrate=True)           robot.disconnect()
    robot.is_connected -> bool              robot.name -> str
    robot.observation_features -> {"shoulder_pan.pos": float, ..., "front": (480, 640, 3)}
    robot.action_features -> {"shoulder_pan.pos": float, ...}
    robot.get_observation() -> {"shoulder_pan.pos": 12.5, ..., "front": HxWx3 uint8}
    robot.send_action({"shoulder_pan.pos": 10.0, ...}) -> the action actually sent

Mapping:

- ``RobotState`` (output ``state``, topic ``/robot_state``): ``joint_positions`` in the order
  of ``action_features`` (the robot's units: degrees or -100..100 for SO-100 motors, 0..100
  for the gripper), ``gripper_width_m`` from ``gripper.pos`` scaled by
  ``gripper_open_width_m / 100``; ``world_from_base`` from the config (a fixed arm).
- ``Frame`` (output ``frames``, topic ``/frames``): one per camera feature (an (H, W, 3)
  shape in ``observation_features``), ``camera`` = the feature's name, ``intrinsics`` from
  ``camera_intrinsics`` (per camera, else a 60-degree pinhole guess),
  ``world_from_camera`` from ``world_from_cameras``.
- ``ActionChunk`` (input ``actions``, action_space ``joint_positions``): each row is a
  target for every action feature, in order; row i is sent ``i * dt_s`` after the chunk
  arrives (a newer chunk replaces what is left of the older one). A chunk of another
  action space or width is refused and counted (``rejected_chunks``).

The robot is made by ``robot`` (``"module:attr"``: a class or factory called with
``robot_kwargs``), e.g. ``engram.runtime.drivers.lerobot:make_lerobot_robot`` with
``{"type": "so101_follower", "port": "/dev/ttyACM0", "id": "arm"}``, which builds it
through lerobot's own ``make_robot_from_config``. Launch graph: ``launch/lerobot.yaml``.
Registered as node type ``lerobot``.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engram.runtime.messages import ActionChunk, Frame, RobotState
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = ["LeRobotConfig", "LeRobotDriver", "LeRobotRobot", "make_lerobot_robot"]

log = logging.getLogger(__name__)

ACTION_SPACE = "joint_positions"


@runtime_checkable
class LeRobotRobot(Protocol):
    """The part of LeRobot's ``Robot`` interface this driver uses (see the module docstring)."""

    name: str

    @property
    def observation_features(self) -> dict[str, Any]: ...

    @property
    def action_features(self) -> dict[str, Any]: ...

    @property
    def is_connected(self) -> bool: ...

    def connect(self, calibrate: bool = True) -> None: ...

    def get_observation(self) -> dict[str, Any]: ...

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]: ...

    def disconnect(self) -> None: ...


def make_lerobot_robot(type: str, **config: Any) -> Any:  # noqa: A002 - lerobot's own key
    """A real LeRobot robot: ``type`` is a lerobot robot type (``so101_follower``,
    ``koch_follower``, ``lekiwi_client``, ...), ``config`` its config fields (``port``,
    ``id``, ``cameras``, ...). Needs the ``lerobot`` package."""
    try:
        from lerobot.robots import RobotConfig, make_robot_from_config  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError(
            "the lerobot package is not installed (pip install lerobot, in an environment "
            "whose torch it accepts)"
        ) from exc
    cfg_cls = RobotConfig.get_choice_class(type)
    return make_robot_from_config(cfg_cls(**config))


def _default_intrinsics(h: int, w: int) -> np.ndarray:
    f = 0.5 * w / math.tan(math.radians(60.0) / 2)  # a 60-degree horizontal field of view
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


@dataclass
class LeRobotConfig(NodeConfig):
    """Settings of ``LeRobotDriver``."""

    #: "module:attr" of a class or factory that makes the robot
    robot: str = "engram.runtime.drivers.lerobot:make_lerobot_robot"
    #: its keyword arguments (lerobot: type, port, id, cameras, ...)
    robot_kwargs: dict[str, Any] = field(default_factory=dict)
    robot_name: str = ""  # RobotState.robot; "" = the robot's own name
    rate_hz: float = 30.0  # observations read (and actions sent) per second
    calibrate: bool = True  # connect(calibrate=...): run the robot's calibration if it has none
    gripper_feature: str = "gripper.pos"  # action/observation key of the gripper ("" = none)
    gripper_open_width_m: float = 0.08  # finger opening at gripper.pos = 100, metres
    #: 4x4 pose of the arm's base in the world (metres), fixed
    world_from_base: list[list[float]] = field(default_factory=lambda: np.eye(4).tolist())
    #: camera name -> 3x3 intrinsics (pixels); missing cameras get a 60-degree guess
    camera_intrinsics: dict[str, list[list[float]]] = field(default_factory=dict)
    #: camera name -> 4x4 world_from_camera (OpenCV axes); missing: identity
    world_from_cameras: dict[str, list[list[float]]] = field(default_factory=dict)
    max_chunk_rows: int = 256  # longer chunks are refused (bounded memory)


class LeRobotDriver(Node[LeRobotConfig]):
    """Drives a LeRobot ``Robot``: actions in, state and camera frames out."""

    Config = LeRobotConfig
    INPUTS = {"actions": Input("ActionChunk", policy="queue(4)")}
    OUTPUTS = {"state": Output("RobotState", topic="/robot_state"), "frames": Output("Frame")}

    def __init__(self, config: LeRobotConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        if not cfg.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {cfg.rate_hz}")
        self.robot: Any = None
        self.joint_names: list[str] = []
        self.cameras: list[str] = []
        self._pending: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._lock = threading.Lock()
        self._seq = 0
        for name in (
            "observations",
            "frames_out",
            "actions_sent",
            "rejected_chunks",
            "robot_errors",
        ):
            self.counters[name] = 0

    # ---- lifecycle ------------------------------------------------------------------
    def on_configure(self) -> None:
        from engram.runtime.registry import load

        cfg = self.config
        robot = load(cfg.robot)(**cfg.robot_kwargs)
        if not isinstance(robot, LeRobotRobot):
            raise TypeError(f"{cfg.robot} made a {type(robot).__name__}, not a LeRobot Robot")
        self.robot = robot
        self.joint_names = [k for k, v in robot.action_features.items() if v is float]
        self.cameras = [
            k for k, v in robot.observation_features.items() if isinstance(v, tuple) and len(v) == 3
        ]
        robot.connect(calibrate=cfg.calibrate)
        log.info(
            "lerobot: %s connected, joints %s, cameras %s",
            getattr(robot, "name", "robot"),
            self.joint_names,
            self.cameras,
        )
        self.add_timer(cfg.rate_hz, self._tick)

    def on_stop(self) -> None:
        robot = self.robot
        if robot is not None and robot.is_connected:
            robot.disconnect()

    def health(self) -> dict[str, Any]:
        return {
            "info": {
                "robot": getattr(self.robot, "name", ""),
                "joints": list(self.joint_names),
                "cameras": list(self.cameras),
                "pending_actions": len(self._pending),
            }
        }

    # ---- actions in -----------------------------------------------------------------
    def on_actions(self, chunk: ActionChunk) -> None:
        cfg = self.config
        actions = np.asarray(chunk.actions, np.float64)
        problem = ""
        if chunk.action_space != ACTION_SPACE:
            problem = f"action_space {chunk.action_space!r}, this driver takes {ACTION_SPACE!r}"
        elif actions.ndim != 2 or actions.shape[1] != len(self.joint_names):
            problem = (
                f"actions of shape {actions.shape}, the robot has {len(self.joint_names)} joints"
            )
        elif len(actions) > cfg.max_chunk_rows:
            problem = f"{len(actions)} rows, more than max_chunk_rows {cfg.max_chunk_rows}"
        elif not np.isfinite(actions).all():
            problem = "non-finite actions"
        if problem:
            self.count("rejected_chunks")
            log.warning("lerobot: chunk refused: %s", problem)
            return
        now = time.monotonic()
        with self._lock:  # a newer chunk replaces what is left of the older one
            self._pending = collections.deque(
                (now + i * chunk.dt_s, row) for i, row in enumerate(actions)
            )

    def _due_action(self) -> np.ndarray | None:
        now = time.monotonic()
        row = None
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                row = self._pending.popleft()[1]  # late rows are skipped: the latest due wins
        return row

    # ---- the control tick -----------------------------------------------------------
    def _tick(self) -> None:
        robot = self.robot
        row = self._due_action()
        try:
            if row is not None:
                robot.send_action({k: float(v) for k, v in zip(self.joint_names, row)})
                self.count("actions_sent")
            obs = robot.get_observation()
        except Exception as exc:  # noqa: BLE001 - a bus glitch costs one tick, counted
            self.count("robot_errors")
            log.warning("lerobot: %s", exc)
            return
        self.count("observations")
        self._seq += 1
        stamp = time.time_ns()
        self._publish_state(obs, stamp)
        for cam in self.cameras:
            image = obs.get(cam)
            if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
                self._publish_frame(cam, image, stamp)

    def _publish_state(self, obs: dict[str, Any], stamp: int) -> None:
        cfg = self.config
        joints = np.array([float(obs.get(k, np.nan)) for k in self.joint_names], np.float64)
        gripper = obs.get(cfg.gripper_feature) if cfg.gripper_feature else None
        width = 0.0
        if gripper is not None and math.isfinite(float(gripper)):
            width = max(0.0, float(gripper)) / 100.0 * cfg.gripper_open_width_m
        name = cfg.robot_name or getattr(self.robot, "name", "robot")
        self.publish(
            "state",
            RobotState(
                stamp_ns=stamp,
                seq=self._seq,
                robot=name,
                joint_positions=np.nan_to_num(joints),
                world_from_base=np.asarray(cfg.world_from_base, np.float64),
                gripper_width_m=width,
            ),
        )

    def _publish_frame(self, cam: str, image: np.ndarray, stamp: int) -> None:
        cfg = self.config
        h, w = image.shape[:2]
        k = cfg.camera_intrinsics.get(cam)
        pose = cfg.world_from_cameras.get(cam)
        self.publish(
            "frames",
            Frame(
                stamp_ns=stamp,
                seq=self._seq,
                camera=cam,
                rgb=np.ascontiguousarray(image, dtype=np.uint8),
                intrinsics=np.asarray(k, np.float64) if k else _default_intrinsics(h, w),
                world_from_camera=np.asarray(pose, np.float64) if pose else np.eye(4),
            ),
        )
        self.count("frames_out")
