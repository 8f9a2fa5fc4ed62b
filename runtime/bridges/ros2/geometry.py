"""Poses between ROS 2 and Engram: quaternions (ROS order x, y, z, w) and (4, 4)
matrices, ``geometry_msgs`` poses and transforms, ``nav_msgs/Odometry`` <->
``RobotState``, ``tf2_msgs/TFMessage`` and the ``TransformTree`` that chains it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from engram.runtime.bridges.ros2.rostypes import (
    ConversionError,
    RosTypes,
    header_stamp,
    make_header,
    stamp_to_ns,
)
from engram.runtime.messages import (
    RobotState,
)

__all__ = [
    "TransformTree",
    "frame_name",
    "matrix_to_pose",
    "matrix_to_quaternion",
    "matrix_to_transform",
    "odometry_to_robot_state",
    "pose_to_matrix",
    "poses_to_tf",
    "quaternion_to_matrix",
    "robot_state_to_odometry",
    "tf_to_transforms",
    "transform_to_matrix",
]


# ---------------------------------------------------------------------------
# poses


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation. Normalises; zero norm is an error."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ConversionError(f"quaternion {q.tolist()} has zero or non-finite norm")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)[:3, :3]
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x, y, z = (
            0.25 * s,
            (m[2, 1] - m[1, 2]) / s,
            (m[0, 2] - m[2, 0]) / s,
            (m[1, 0] - m[0, 1]) / s,
        )
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (
            (m[2, 1] - m[1, 2]) / s,
            0.25 * s,
            (m[0, 1] + m[1, 0]) / s,
            (m[0, 2] + m[2, 0]) / s,
        )
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (
            (m[0, 2] - m[2, 0]) / s,
            (m[0, 1] + m[1, 0]) / s,
            0.25 * s,
            (m[1, 2] + m[2, 1]) / s,
        )
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (
            (m[1, 0] - m[0, 1]) / s,
            (m[0, 2] + m[2, 0]) / s,
            (m[1, 2] + m[2, 1]) / s,
            0.25 * s,
        )
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def _rigid(rotation: np.ndarray, translation: Iterable[float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(list(translation), dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ConversionError(f"pose has non-finite values: {out.tolist()}")
    return out


def pose_to_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose (position, orientation) -> (4, 4) float64."""
    p, q = pose.position, pose.orientation
    return _rigid(quaternion_to_matrix(q.x, q.y, q.z, q.w), (p.x, p.y, p.z))


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform (translation, rotation) -> (4, 4) float64."""
    t, q = transform.translation, transform.rotation
    return _rigid(quaternion_to_matrix(q.x, q.y, q.z, q.w), (t.x, t.y, t.z))


def _quat(types: RosTypes, matrix: np.ndarray) -> Any:
    x, y, z, w = matrix_to_quaternion(matrix[:3, :3])
    return types.new("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def matrix_to_pose(types: RosTypes, matrix: np.ndarray) -> Any:
    """(4, 4) -> geometry_msgs/Pose."""
    m = np.asarray(matrix, dtype=np.float64)
    t = m[:3, 3]
    return types.new(
        "geometry_msgs/msg/Pose",
        position=types.new("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=_quat(types, m),
    )


def matrix_to_transform(types: RosTypes, matrix: np.ndarray) -> Any:
    """(4, 4) -> geometry_msgs/Transform."""
    m = np.asarray(matrix, dtype=np.float64)
    t = m[:3, 3]
    return types.new(
        "geometry_msgs/msg/Transform",
        translation=types.new(
            "geometry_msgs/msg/Vector3", x=float(t[0]), y=float(t[1]), z=float(t[2])
        ),
        rotation=_quat(types, m),
    )


def odometry_to_robot_state(
    msg: Any, *, robot: str = "robot", stamp_ns: int | None = None
) -> RobotState:
    """nav_msgs/Odometry -> ``RobotState`` with ``world_from_base`` = the odometry pose
    (``header.frame_id`` is the world, ``child_frame_id`` the base)."""
    return RobotState(
        stamp_ns=header_stamp(msg, stamp_ns),
        robot=robot,
        world_from_base=pose_to_matrix(msg.pose.pose),
    )


def robot_state_to_odometry(
    types: RosTypes,
    state: RobotState,
    *,
    frame_id: str = "odom",
    child_frame_id: str = "base_link",
) -> Any:
    """``RobotState.world_from_base`` -> nav_msgs/Odometry (zero twist, zero covariance)."""
    zero3 = {"x": 0.0, "y": 0.0, "z": 0.0}
    return types.new(
        "nav_msgs/msg/Odometry",
        header=make_header(types, state.stamp_ns, frame_id),
        child_frame_id=child_frame_id,
        pose=types.new(
            "geometry_msgs/msg/PoseWithCovariance",
            pose=matrix_to_pose(types, state.world_from_base),
            covariance=types.fixed(np.zeros(36), "float64"),
        ),
        twist=types.new(
            "geometry_msgs/msg/TwistWithCovariance",
            twist=types.new(
                "geometry_msgs/msg/Twist",
                linear=types.new("geometry_msgs/msg/Vector3", **zero3),
                angular=types.new("geometry_msgs/msg/Vector3", **zero3),
            ),
            covariance=types.fixed(np.zeros(36), "float64"),
        ),
    )


def frame_name(name: str) -> str:
    return str(name).lstrip("/")


def tf_to_transforms(msg: Any) -> list[tuple[str, str, int, np.ndarray]]:
    """tf2_msgs/TFMessage -> ``[(parent_frame, child_frame, stamp_ns, parent_from_child)]``."""
    out = []
    for ts in msg.transforms:
        out.append(
            (
                frame_name(ts.header.frame_id),
                frame_name(ts.child_frame_id),
                stamp_to_ns(ts.header.stamp),
                transform_to_matrix(ts.transform),
            )
        )
    return out


def poses_to_tf(types: RosTypes, transforms: Iterable[tuple[str, str, int, np.ndarray]]) -> Any:
    """``[(parent_frame, child_frame, stamp_ns, parent_from_child)]`` -> tf2_msgs/TFMessage."""
    items = [
        types.new(
            "geometry_msgs/msg/TransformStamped",
            header=make_header(types, stamp_ns, parent),
            child_frame_id=child,
            transform=matrix_to_transform(types, matrix),
        )
        for parent, child, stamp_ns, matrix in transforms
    ]
    return types.new("tf2_msgs/msg/TFMessage", transforms=items)


class TransformTree:
    """The latest transform per child frame from /tf and /tf_static, and chain look-ups.

    No interpolation in time: ``lookup`` composes the most recent transforms.
    ``max_frames`` bounds the number of frames held.
    """

    def __init__(self, *, max_frames: int = 1024) -> None:
        self._parent: dict[str, tuple[str, np.ndarray, int]] = {}
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self._parent)

    def set(
        self, parent: str, child: str, parent_from_child: np.ndarray, stamp_ns: int = 0
    ) -> None:
        parent, child = frame_name(parent), frame_name(child)
        if parent == child:
            raise ConversionError(f"transform from frame {child!r} to itself")
        if child not in self._parent and len(self._parent) >= self.max_frames:
            raise ConversionError(f"TransformTree holds {self.max_frames} frames already")
        self._parent[child] = (parent, np.asarray(parent_from_child, dtype=np.float64), stamp_ns)

    def update(self, msg: Any) -> int:
        """Add every transform of a tf2_msgs/TFMessage; returns how many."""
        items = tf_to_transforms(msg)
        for parent, child, stamp_ns, matrix in items:
            self.set(parent, child, matrix, stamp_ns)
        return len(items)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            nxt = self._parent[chain[-1]][0]
            if nxt in chain:
                raise ConversionError(f"transform cycle through frame {nxt!r}")
            chain.append(nxt)
        return chain

    def root(self, frame: str) -> str:
        """The top of ``frame``'s chain (e.g. ``map`` or ``odom``)."""
        return self._chain(frame_name(frame))[-1]

    def _to_ancestor(self, frame: str, ancestor: str) -> np.ndarray:
        out = np.eye(4)
        while frame != ancestor:
            parent, matrix, _ = self._parent[frame]
            out = matrix @ out
            frame = parent
        return out

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """``target_from_source`` (4, 4), or None when the frames are not connected."""
        target, source = frame_name(target), frame_name(source)
        up_source = self._chain(source)
        up_target = self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            return None
        common_from_source = self._to_ancestor(source, common)
        common_from_target = self._to_ancestor(target, common)
        return np.linalg.inv(common_from_target) @ common_from_source
