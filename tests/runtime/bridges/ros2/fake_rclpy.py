"""A small stand-in for rclpy (not installable here), injected into ``sys.modules``.

It records publishers, subscriptions, parameters and QoS so tests can drive the
bridge's ROS callbacks and inspect what it published. Message classes come from
the rosbags type store (the same field layouts as ROS 2 Jazzy's generated classes).
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

from rosbags.typesys import Stores, get_typestore

from engram.runtime.bridges.ros2.rostypes import register_audio_types

_PACKAGES = (
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "tf2_msgs",
    "trajectory_msgs",
    "audio_common_msgs",
)


class ReliabilityPolicy(enum.Enum):
    RELIABLE = 1
    BEST_EFFORT = 2


class DurabilityPolicy(enum.Enum):
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


class HistoryPolicy(enum.Enum):
    KEEP_LAST = 1


@dataclass
class QoSProfile:
    history: HistoryPolicy = HistoryPolicy.KEEP_LAST
    depth: int = 10
    reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE
    durability: DurabilityPolicy = DurabilityPolicy.VOLATILE


@dataclass
class Publisher:
    msg_type: type
    topic: str
    qos: QoSProfile
    messages: list = field(default_factory=list)

    def publish(self, msg: Any) -> None:
        if not isinstance(msg, self.msg_type):
            raise TypeError(
                f"{self.topic}: expected {self.msg_type.__name__}, got {type(msg).__name__}"
            )
        self.messages.append(msg)


@dataclass
class Subscription:
    msg_type: type
    topic: str
    callback: Any
    qos: QoSProfile


class _Param:
    def __init__(self, value: Any) -> None:
        self.value = value


class _Time:
    def __init__(self, ns: int) -> None:
        self.nanoseconds = ns


class _Clock:
    def now(self) -> _Time:
        return _Time(time.time_ns())


class Node:
    """Records what the bridge creates. ``PARAMETER_OVERRIDES`` plays the role of a
    ROS parameter file."""

    PARAMETER_OVERRIDES: dict[str, Any] = {}
    instances: list[Node] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self.publishers: dict[str, Publisher] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.parameters: dict[str, Any] = {}
        self.destroyed = False
        Node.instances.append(self)

    def create_publisher(self, msg_type: type, topic: str, qos: QoSProfile) -> Publisher:
        pub = self.publishers[topic] = Publisher(msg_type, topic, qos)
        return pub

    def create_subscription(
        self, msg_type: type, topic: str, callback: Any, qos: QoSProfile
    ) -> Subscription:
        sub = self.subscriptions[topic] = Subscription(msg_type, topic, callback, qos)
        return sub

    def declare_parameter(self, name: str, value: Any) -> _Param:
        if name in self.parameters:
            raise RuntimeError(f"parameter {name!r} declared twice")
        value = self.PARAMETER_OVERRIDES.get(name, value)
        self.parameters[name] = value
        return _Param(value)

    def get_clock(self) -> _Clock:
        return _Clock()

    def get_logger(self) -> logging.Logger:
        return logging.getLogger(f"fake_rclpy.{self.name}")

    def destroy_node(self) -> None:
        self.destroyed = True

    def deliver(self, topic: str, msg: Any) -> None:
        """What the executor does when a message arrives on ``topic``."""
        sub = self.subscriptions[topic]
        if not isinstance(msg, sub.msg_type):
            raise TypeError(
                f"{topic}: subscribed {sub.msg_type.__name__}, got {type(msg).__name__}"
            )
        sub.callback(msg)


class SingleThreadedExecutor:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._stop = threading.Event()

    def add_node(self, node: Node) -> None:
        self.nodes.append(node)

    def spin(self) -> None:
        self._stop.wait()

    def shutdown(self) -> None:
        self._stop.set()


class _State:
    initialised = False
    spun: list[Node] = []
    spin_raises: type[BaseException] | None = KeyboardInterrupt


def install(monkeypatch: Any) -> types.SimpleNamespace:
    """Put fake ``rclpy`` and message packages into ``sys.modules`` (undone by monkeypatch)."""
    ts = register_audio_types(get_typestore(Stores.ROS2_JAZZY))
    Node.instances = []
    Node.PARAMETER_OVERRIDES = {}
    state = _State()
    state.spun = []

    rclpy = types.ModuleType("rclpy")

    def init(args: Any = None) -> None:
        state.initialised = True

    def ok() -> bool:
        return state.initialised

    def shutdown() -> None:
        state.initialised = False

    def spin(node: Node) -> None:
        state.spun.append(node)
        if state.spin_raises is not None:
            raise state.spin_raises()

    rclpy.init, rclpy.ok, rclpy.shutdown, rclpy.spin = init, ok, shutdown, spin
    node_mod = types.ModuleType("rclpy.node")
    node_mod.Node = Node
    qos_mod = types.ModuleType("rclpy.qos")
    qos_mod.QoSProfile = QoSProfile
    qos_mod.ReliabilityPolicy = ReliabilityPolicy
    qos_mod.DurabilityPolicy = DurabilityPolicy
    qos_mod.HistoryPolicy = HistoryPolicy
    exec_mod = types.ModuleType("rclpy.executors")
    exec_mod.SingleThreadedExecutor = SingleThreadedExecutor
    rclpy.node, rclpy.qos, rclpy.executors = node_mod, qos_mod, exec_mod
    for name, mod in {
        "rclpy": rclpy,
        "rclpy.node": node_mod,
        "rclpy.qos": qos_mod,
        "rclpy.executors": exec_mod,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    for pkg in _PACKAGES:
        top = types.ModuleType(pkg)
        msg = types.ModuleType(f"{pkg}.msg")
        for full, cls in ts.types.items():
            if full.startswith(f"{pkg}/msg/"):
                setattr(msg, full.rsplit("/", 1)[1], cls)
        top.msg = msg
        monkeypatch.setitem(sys.modules, pkg, top)
        monkeypatch.setitem(sys.modules, f"{pkg}.msg", msg)
    return types.SimpleNamespace(state=state, Node=Node, typestore=ts)
