"""The ROS 2 bridge: an Engram node that joins an Engram bus and ROS 2 topics.

``RosBridgeNode`` is an ordinary Engram ``Node`` (launch graphs name it
``ros2_bridge``); its ROS side goes through a ``RosTransport``:

- ``rclpy`` (``RclpyTransport``): a real ROS 2 node, for robots with ROS 2
  installed (``ros2 launch engram engram.launch.py`` runs ``main`` below);
- ``dds`` (``engram.runtime.bridges.ros2.dds.DdsTransport``): Cyclone DDS directly, speaking
  ROS 2's topic and type names, for machines without ROS (see that module for
  which ROS 2 set-ups it reaches).

ROS 2 -> Engram (a topic set to ``""`` is not read):

===================== ==================================== ===================================
ROS 2 topic (config)  type                                 Engram port (default topic)
===================== ==================================== ===================================
rgb_topic             sensor_msgs/Image or CompressedImage ``frames`` (/frames) Frame, paired
depth_topic           sensor_msgs/Image 16UC1 / 32FC1      with depth, camera info and pose
camera_info_topic     sensor_msgs/CameraInfo
/tf, /tf_static       tf2_msgs/TFMessage                   camera pose (world <- frame_id)
odom_topic            nav_msgs/Odometry                    ``robot_state`` (/robot_state)
audio_topic           Float32MultiArray / AudioData ...    ``audio`` (/audio) AudioChunk
instruction_topic     std_msgs/String                      ``instruction`` (/instruction)
question_topic        std_msgs/String (text or JSON)       request on ``memory_service``
===================== ==================================== ===================================

Engram -> ROS 2: ``actions`` (/actions, ActionChunk): ``base_velocity`` chunks
are played row by row as geometry_msgs/Twist on ``cmd_vel_topic`` at
``cmd_rate_hz`` (one row per ``dt_s``), then a zero Twist (stop) when the chunk
runs out; other action spaces go out whole as trajectory_msgs/JointTrajectory
on ``trajectory_topic``. Answers to questions go out as std_msgs/String JSON
(``Recall``) on ``answer_topic``.

Conversions are in ``runtime/bridges/ros2/convert.py``. rclpy is imported only when an
rclpy transport is made; nothing here needs ROS to be installed otherwise.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from engram.runtime.bridges.ros2 import assembler, rostypes
from engram.runtime.bridges.ros2 import convert as cv
from engram.runtime.bridges.ros2.transport import RosTransport
from engram.runtime.messages import ActionChunk, MemoryQuery, Recall
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = [
    "BridgeConfig",
    "ChunkPlayer",
    "RclpyTransport",
    "RosBridgeNode",
    "main",
]

log = logging.getLogger(__name__)

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_STRING = "std_msgs/msg/String"


@dataclass
class BridgeConfig(NodeConfig):
    """ROS 2 side of the bridge. A topic set to "" is switched off."""

    transport: str = "rclpy"  # "rclpy" (ROS 2 installed) or "dds" (Cyclone DDS, no ROS)
    node_name: str = "engram_bridge"  # ROS 2 node name (rclpy transport)
    domain_id: int = -1  # DDS domain (dds transport); -1 = $ROS_DOMAIN_ID or 0
    rgb_topic: str = "/camera/color/image_raw"  # colour images in
    rgb_compressed: bool = False  # rgb_topic carries sensor_msgs/CompressedImage
    depth_topic: str = ""  # depth images in (16UC1 mm / 32FC1 m), registered to colour
    camera_info_topic: str = "/camera/color/camera_info"  # intrinsics of the colour camera
    tf_enabled: bool = True  # read /tf and /tf_static for camera poses
    world_frame: str = ""  # TF frame used as Engram's world ("" = root of the camera's tree)
    odom_topic: str = "/odom"  # nav_msgs/Odometry in -> RobotState, and pose fallback
    audio_topic: str = ""  # audio in (see engram.runtime.bridges.ros2.convert)
    audio_type: str = "std_msgs/msg/Float32MultiArray"  # message type of audio_topic
    audio_sample_rate_hz: int = 16000  # rate of layouts that do not carry it
    audio_channels: int = 1  # channels of the S16LE byte layouts
    instruction_topic: str = "/engram/instruction"  # std_msgs/String in -> Instruction
    question_topic: str = "/engram/question"  # std_msgs/String in -> MemoryQuery
    answer_topic: str = "/engram/answer"  # std_msgs/String out: Recall as JSON
    cmd_vel_topic: str = "/cmd_vel"  # geometry_msgs/Twist out (base_velocity chunks)
    trajectory_topic: str = "/engram/trajectory"  # JointTrajectory out (other chunks)
    joint_names: str = ""  # comma-separated names of the trajectory's action dimensions
    cmd_rate_hz: float = 20.0  # Twist publish rate while a chunk plays
    max_pair_dt_s: float = 0.02  # largest colour/depth stamp difference that pairs
    camera: str = ""  # Frame.camera ("" = the image's frame_id)
    robot: str = "robot"  # RobotState.robot
    memory_service: str = "/memory/query"  # Engram request topic answering MemoryQuery
    query_timeout_s: float = 5.0  # how long a question waits for the memory's Recall
    max_pending_questions: int = 4  # questions queued while one is answered; more are refused


class ChunkPlayer:
    """Plays a ``base_velocity`` chunk one row per ``dt_s``; a zero row once it runs out.

    ``step(now_s)`` -> the (3,) row due now, zeros once after the end (stop), then None.
    Loading a new chunk replaces the one playing.
    """

    def __init__(self) -> None:
        self._rows: np.ndarray | None = None
        self._start_s = 0.0
        self._dt_s = 0.1
        self._lock = threading.Lock()

    def load(self, chunk: ActionChunk, now_s: float) -> None:
        with self._lock:
            self._rows = chunk.actions.astype(np.float64)
            self._start_s = now_s
            self._dt_s = chunk.dt_s

    def step(self, now_s: float) -> np.ndarray | None:
        with self._lock:
            if self._rows is None:
                return None
            index = int((now_s - self._start_s) / self._dt_s)
            if 0 <= index < len(self._rows):
                return self._rows[index]
            self._rows = None
            return np.zeros(3)


class RosBridgeNode(Node[BridgeConfig]):
    """Bridges Engram topics and ROS 2 topics (see the module docstring)."""

    Config = BridgeConfig
    OUTPUTS = {
        "frames": Output("Frame"),
        "audio": Output("AudioChunk"),
        "robot_state": Output("RobotState"),
        "instruction": Output("Instruction"),
    }
    INPUTS = {"actions": Input("ActionChunk", policy="queue(4)")}

    def __init__(
        self,
        config: BridgeConfig | dict | None = None,
        *,
        transport: RosTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.transport = transport
        self._own_transport = transport is None
        self._frames_lock = threading.Lock()
        self._player = ChunkPlayer()
        self._questions: queue.Queue[MemoryQuery | None] = queue.Queue(
            maxsize=max(1, self.config.max_pending_questions)
        )
        self._worker: threading.Thread | None = None
        self._pub: dict[str, Callable[[Any], None]] = {}
        self.assembler = assembler.FrameAssembler(
            assembler.FrameAssemblerConfig(
                expect_depth=bool(self.config.depth_topic),
                max_pair_dt_s=self.config.max_pair_dt_s,
                world_frame=self.config.world_frame,
                camera=self.config.camera,
            )
        )

    def inputs(self) -> dict[str, Input]:
        if not (self.config.cmd_vel_topic or self.config.trajectory_topic):
            return {}
        return dict(self.INPUTS)

    # ---- lifecycle ------------------------------------------------------------------
    def on_configure(self) -> None:
        cfg = self.config
        if self.transport is None:
            self.transport = _make_transport(cfg)
        tr = self.transport
        if cfg.cmd_vel_topic:
            self._pub["cmd_vel"] = tr.publisher(cfg.cmd_vel_topic, "geometry_msgs/msg/Twist")
            self.add_timer(cfg.cmd_rate_hz, self._play_tick)
        if cfg.trajectory_topic:
            self._pub["trajectory"] = tr.publisher(
                cfg.trajectory_topic, "trajectory_msgs/msg/JointTrajectory"
            )
        if cfg.question_topic and cfg.answer_topic:
            self._pub["answer"] = tr.publisher(cfg.answer_topic, _STRING)
        if cfg.rgb_topic:
            kind = _COMPRESSED if cfg.rgb_compressed else _IMAGE
            tr.subscribe(cfg.rgb_topic, kind, self._guard(self._on_rgb), sensor=True)
        if cfg.depth_topic:
            tr.subscribe(cfg.depth_topic, _IMAGE, self._guard(self._on_depth), sensor=True)
        if cfg.camera_info_topic:
            tr.subscribe(
                cfg.camera_info_topic,
                "sensor_msgs/msg/CameraInfo",
                self._guard(self._on_camera_info),
                sensor=True,
            )
        if cfg.tf_enabled:
            tr.subscribe("/tf", "tf2_msgs/msg/TFMessage", self._guard(self._on_tf))
            tr.subscribe(
                "/tf_static", "tf2_msgs/msg/TFMessage", self._guard(self._on_tf), latched=True
            )
        if cfg.odom_topic:
            tr.subscribe(
                cfg.odom_topic, "nav_msgs/msg/Odometry", self._guard(self._on_odom), sensor=True
            )
        if cfg.audio_topic:
            tr.subscribe(cfg.audio_topic, cfg.audio_type, self._guard(self._on_audio), sensor=True)
        if cfg.instruction_topic:
            tr.subscribe(cfg.instruction_topic, _STRING, self._guard(self._on_instruction))
        if cfg.question_topic:
            tr.subscribe(cfg.question_topic, _STRING, self._guard(self._on_question))

    def on_start(self) -> None:
        self._worker = threading.Thread(
            target=self._answer_loop, name=f"{self.name}:questions", daemon=True
        )
        self._worker.start()
        assert self.transport is not None
        self.transport.start()

    def on_stop(self) -> None:
        try:
            self._questions.put_nowait(None)
        except queue.Full:
            pass
        if self._worker is not None:
            self._worker.join(timeout=self.config.query_timeout_s + 1.0)
        if self.transport is not None and self._own_transport:
            self.transport.close()

    def health(self) -> dict[str, Any]:
        return {"info": {"frames": dict(self.assembler.counters)}}

    # ---- ROS 2 -> Engram ---------------------------------------------------------------
    def _guard(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """A ROS callback that counts and logs bad messages instead of raising."""

        def callback(msg: Any) -> None:
            self.count("ros_received")
            try:
                fn(msg)
            except (rostypes.ConversionError, ValueError) as exc:
                self.count("conversion_errors")
                log.warning("%s: %s: %s", self.name, fn.__name__.lstrip("_"), exc)
            except Exception:
                self.count("handler_errors")
                log.exception("%s: error in %s", self.name, fn.__name__)

        return callback

    def _now(self) -> int:
        assert self.transport is not None
        return self.transport.now_ns()

    def _publish_frames(self, frames: list) -> None:
        for frame in frames:
            self.publish("frames", frame)

    def _on_rgb(self, msg: Any) -> None:
        with self._frames_lock:
            frames = self.assembler.add_color(msg, stamp_ns=self._now())
        self._publish_frames(frames)

    def _on_depth(self, msg: Any) -> None:
        with self._frames_lock:
            frames = self.assembler.add_depth(msg, stamp_ns=self._now())
        self._publish_frames(frames)

    def _on_camera_info(self, msg: Any) -> None:
        with self._frames_lock:
            self.assembler.add_camera_info(msg)

    def _on_tf(self, msg: Any) -> None:
        with self._frames_lock:
            self.assembler.add_tf(msg)

    def _on_odom(self, msg: Any) -> None:
        with self._frames_lock:
            state = self.assembler.add_odometry(msg)
        stamp = state.stamp_ns or self._now()
        self.publish("robot_state", state.replace(robot=self.config.robot, stamp_ns=stamp))

    def _on_audio(self, msg: Any) -> None:
        cfg = self.config
        chunk = cv.ros_audio_to_chunk(
            msg,
            stamp_ns=self._now(),
            sample_rate_hz=cfg.audio_sample_rate_hz,
            channels=cfg.audio_channels,
        )
        self.publish("audio", chunk)

    def _on_instruction(self, msg: Any) -> None:
        self.publish("instruction", cv.string_to_instruction(msg, stamp_ns=self._now()))

    def _on_question(self, msg: Any) -> None:
        try:
            query = cv.string_to_memory_query(msg, stamp_ns=self._now())
        except rostypes.ConversionError as exc:
            self._answer(Recall(query_text=str(msg.data), error=str(exc)))
            raise
        try:
            self._questions.put_nowait(query)
        except queue.Full:
            self.count("questions_refused")
            self._answer(Recall(query_text=query.text, error="busy: too many pending questions"))

    def _answer_loop(self) -> None:
        while True:
            query = self._questions.get()
            if query is None or not self.running:
                return
            try:
                reply = self.bus.request(
                    self.config.memory_service, query, timeout_s=self.config.query_timeout_s
                )
                if not isinstance(reply, Recall):
                    raise TypeError(f"memory replied with {type(reply).__name__}, not Recall")
            except Exception as exc:  # noqa: BLE001 - the asker gets the error as the answer
                self.count("question_errors")
                reply = Recall(query_seq=query.seq, query_text=query.text, error=str(exc))
            self._answer(reply)

    def _answer(self, recall: Recall) -> None:
        publish = self._pub.get("answer")
        if publish is not None and self.transport is not None:
            publish(cv.recall_to_string(self.transport.types, recall))
            self.count("answers")

    # ---- Engram -> ROS 2 ---------------------------------------------------------------
    def on_actions(self, chunk: ActionChunk) -> None:
        assert self.transport is not None
        if chunk.action_space == "base_velocity" and "cmd_vel" in self._pub:
            if chunk.actions.shape[1] != 3:
                raise rostypes.ConversionError(
                    f"base_velocity rows are [vx, vy, yaw_rate], got shape {chunk.actions.shape}"
                )
            self._player.load(chunk, time.monotonic())
            self._play_tick()
        elif "trajectory" in self._pub:
            names = [n.strip() for n in self.config.joint_names.split(",") if n.strip()]
            msg = cv.action_chunk_to_joint_trajectory(
                self.transport.types, chunk, joint_names=names or None
            )
            self._pub["trajectory"](msg)
            self.count("trajectories")
        else:
            self.count("actions_unrouted")

    def _play_tick(self) -> None:
        row = self._player.step(time.monotonic())
        if row is None or self.transport is None:
            return
        self._pub["cmd_vel"](cv.velocity_to_twist(self.transport.types, *row))
        self.count("twists")


# ---------------------------------------------------------------------------
# rclpy transport


class RclpyTransport(RosTransport):
    """ROS 2 through rclpy. Pass an existing rclpy node, or let it create (and spin) one."""

    def __init__(self, node: Any = None, *, node_name: str = "engram_bridge") -> None:
        import rclpy

        self._rclpy = rclpy
        self.types = rostypes.RclpyTypes()
        self._own = node is None
        if node is None:
            if not rclpy.ok():
                rclpy.init()
            from rclpy.node import Node as RclpyNode

            node = RclpyNode(node_name)
        self.node = node
        self._executor: Any = None
        self._thread: threading.Thread | None = None
        self._subs: list[Any] = []

    def _qos(self, *, sensor: bool, latched: bool) -> Any:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=100 if latched else (5 if sensor else 10),
            reliability=ReliabilityPolicy.BEST_EFFORT if sensor else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def publisher(
        self, topic: str, msgtype: str, *, latched: bool = False
    ) -> Callable[[Any], None]:
        pub = self.node.create_publisher(
            self.types.cls(msgtype), topic, self._qos(sensor=False, latched=latched)
        )
        return pub.publish

    def subscribe(
        self,
        topic: str,
        msgtype: str,
        callback: Callable[[Any], None],
        *,
        sensor: bool = False,
        latched: bool = False,
    ) -> None:
        sub = self.node.create_subscription(
            self.types.cls(msgtype), topic, callback, self._qos(sensor=sensor, latched=latched)
        )
        self._subs.append(sub)

    def now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    def start(self) -> None:
        if not self._own or self._thread is not None:
            return  # the owner of the node spins it
        from rclpy.executors import SingleThreadedExecutor

        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, name="rclpy-spin", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._own:
            self.node.destroy_node()


def _make_transport(config: BridgeConfig) -> RosTransport:
    if config.transport == "rclpy":
        try:
            return RclpyTransport(node_name=config.node_name)
        except ImportError as exc:
            raise RuntimeError(
                "ros2_bridge transport 'rclpy' needs ROS 2 (source /opt/ros/jazzy/setup.bash); "
                "without ROS use transport: dds"
            ) from exc
    if config.transport == "dds":
        from engram.runtime.bridges.ros2.dds import DdsTransport

        return DdsTransport(domain_id=None if config.domain_id < 0 else config.domain_id)
    raise ValueError(f"BridgeConfig.transport must be 'rclpy' or 'dds', got {config.transport!r}")


# ---------------------------------------------------------------------------
# console script (ros2 run engram bridge)


def _config_from_parameters(node: Any) -> tuple[BridgeConfig, str]:
    """Declare every ``BridgeConfig`` field (and ``bus_url``) as a ROS parameter."""
    values: dict[str, Any] = {}
    for f in fields(BridgeConfig):
        if f.name in ("transport", "domain_id", "node_name"):
            continue
        default = getattr(BridgeConfig, f.name)
        values[f.name] = node.declare_parameter(f.name, default).value
    default_bus = os.environ.get("ENGRAM_BUS", "tcp://127.0.0.1:5555")
    bus_url = node.declare_parameter("bus_url", default_bus).value
    return BridgeConfig(**values), str(bus_url)


def main(argv: list[str] | None = None) -> int:
    """``ros2 run engram bridge``: the bridge as a ROS 2 node; parameters = BridgeConfig fields
    plus ``bus_url`` (the Engram graph's bus, default ``$ENGRAM_BUS``)."""
    import rclpy
    from rclpy.node import Node as RclpyNode

    from engram.runtime.bus import make_bus

    rclpy.init(args=argv)
    ros_node = RclpyNode("engram_bridge")
    bridge = None
    try:
        config, bus_url = _config_from_parameters(ros_node)
        bus = make_bus(bus_url)
        bridge = RosBridgeNode(
            config, transport=RclpyTransport(ros_node), bus=bus, name="ros2_bridge"
        )
        bridge.start()
        ros_node.get_logger().info(f"engram bridge on bus {bus_url}")
        rclpy.spin(ros_node)
    except KeyboardInterrupt:
        pass
    finally:
        if bridge is not None:
            bridge.stop()
            bridge.bus.close()
        ros_node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
