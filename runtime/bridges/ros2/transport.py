"""``RosTransport``: the ROS side of a bridge (typed publishers, callback subscriptions).

Implementations: ``engram.runtime.bridges.ros2.nodes.RclpyTransport`` (rclpy) and
``engram.runtime.bridges.ros2.dds.DdsTransport`` (Cyclone DDS without rclpy).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from engram.runtime.bridges.ros2 import rostypes

__all__ = ["RosTransport"]


class RosTransport(ABC):
    """The ROS side of a bridge: typed publishers and callback subscriptions."""

    #: how messages of this transport are built
    types: rostypes.RosTypes

    @abstractmethod
    def publisher(
        self, topic: str, msgtype: str, *, latched: bool = False
    ) -> Callable[[Any], None]:
        """A function that publishes one message of ``msgtype`` on ``topic``."""

    @abstractmethod
    def subscribe(
        self,
        topic: str,
        msgtype: str,
        callback: Callable[[Any], None],
        *,
        sensor: bool = False,
        latched: bool = False,
    ) -> None:
        """Call ``callback(msg)`` for each message. ``sensor``: best-effort (matches
        camera drivers); ``latched``: transient-local (``/tf_static``)."""

    def now_ns(self) -> int:
        return time.time_ns()

    def start(self) -> None:  # noqa: B027 - optional hook
        """Begin delivering callbacks."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop callbacks and release resources."""
