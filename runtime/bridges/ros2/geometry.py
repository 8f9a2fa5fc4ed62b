"""Poses between ROS 2 and Engram: quaternions (ROS order x, y, z, w) and (4, 4)
matrices, ``geometry_msgs`` poses and transforms, ``nav_msgs/Odometry`` <->
``RobotState``, ``tf2_msgs/TFMessage`` and the ``TransformBuffer`` that chains it, with
interpolation in time. Quaternions go through scipy's ``Rotation``."""

from __future__ import annotations

import bisect
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
    "TransformBuffer",
    "TransformTree",
    "frame_name",
    "interpolate_pose",
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
    from scipy.spatial.transform import Rotation

    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ConversionError(f"quaternion {q.tolist()} has zero or non-finite norm")
    return Rotation.from_quat(q / norm).as_matrix()


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)[:3, :3]).as_quat()
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


class TransformBuffer:
    """Transforms from /tf and /tf_static over time, and chain look-ups at a time.

    Per child frame it keeps a time-ordered history (``cache_s`` of it, at most
    ``max_history`` entries); ``set_static`` (``/tf_static``) holds one transform valid at
    all times. ``lookup(target, source, stamp_ns)`` composes the chain between the frames,
    each link interpolated at ``stamp_ns``: rotations by spherical linear interpolation
    (scipy ``Slerp``), translations linearly, as ROS 2's tf2 does; a time outside a link's
    history (extrapolation) gives None. ``stamp_ns=None`` uses the latest of each link.
    ``max_frames`` bounds the number of frames held.
    """

    def __init__(
        self, *, max_frames: int = 1024, cache_s: float = 10.0, max_history: int = 1000
    ) -> None:
        self._parent: dict[str, str] = {}
        self._history: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._static: set[str] = set()
        self.max_frames = max_frames
        self.cache_ns = int(cache_s * 1e9)
        self.max_history = max_history

    def __len__(self) -> int:
        return len(self._parent)

    def set(
        self,
        parent: str,
        child: str,
        parent_from_child: np.ndarray,
        stamp_ns: int = 0,
        *,
        static: bool = False,
    ) -> None:
        parent, child = frame_name(parent), frame_name(child)
        if parent == child:
            raise ConversionError(f"transform from frame {child!r} to itself")
        if child not in self._parent and len(self._parent) >= self.max_frames:
            raise ConversionError(f"TransformBuffer holds {self.max_frames} frames already")
        matrix = np.asarray(parent_from_child, dtype=np.float64)
        if self._parent.get(child) != parent or static or child in self._static:
            self._history[child] = []  # re-parented or static: the old history is void
        self._parent[child] = parent
        if static:
            self._static.add(child)
        else:
            self._static.discard(child)
        history = self._history[child]
        entry = (int(stamp_ns), matrix)
        if not history or stamp_ns > history[-1][0]:
            history.append(entry)
        else:  # out of order (or a repeat): keep the history sorted
            i = bisect.bisect_left([t for t, _ in history], stamp_ns)
            if i < len(history) and history[i][0] == stamp_ns:
                history[i] = entry
            else:
                history.insert(i, entry)
        newest = history[-1][0]
        while len(history) > self.max_history or (
            len(history) > 1 and history[0][0] < newest - self.cache_ns
        ):
            history.pop(0)

    def set_static(self, parent: str, child: str, parent_from_child: np.ndarray) -> None:
        """A transform valid at all times (``/tf_static``)."""
        self.set(parent, child, parent_from_child, 0, static=True)

    def update(self, msg: Any, *, static: bool = False) -> int:
        """Add every transform of a tf2_msgs/TFMessage; returns how many."""
        items = tf_to_transforms(msg)
        for parent, child, stamp_ns, matrix in items:
            self.set(parent, child, matrix, stamp_ns, static=static)
        return len(items)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            nxt = self._parent[chain[-1]]
            if nxt in chain:
                raise ConversionError(f"transform cycle through frame {nxt!r}")
            chain.append(nxt)
        return chain

    def root(self, frame: str) -> str:
        """The top of ``frame``'s chain (e.g. ``map`` or ``odom``)."""
        return self._chain(frame_name(frame))[-1]

    def _link(self, child: str, stamp_ns: int | None) -> np.ndarray | None:
        """parent_from_child at ``stamp_ns`` (interpolated), None when extrapolating."""
        history = self._history[child]
        if child in self._static or stamp_ns is None or history[-1][0] == 0:
            return history[-1][1]  # static, the latest asked for, or never stamped
        times = [t for t, _ in history]
        if stamp_ns < times[0] or stamp_ns > times[-1]:
            return None
        i = bisect.bisect_left(times, stamp_ns)
        if times[i] == stamp_ns:
            return history[i][1]
        (t0, m0), (t1, m1) = history[i - 1], history[i]
        return interpolate_pose(m0, m1, (stamp_ns - t0) / (t1 - t0))

    def _to_ancestor(self, frame: str, ancestor: str, stamp_ns: int | None) -> np.ndarray | None:
        out = np.eye(4)
        while frame != ancestor:
            link = self._link(frame, stamp_ns)
            if link is None:
                return None
            out = link @ out
            frame = self._parent[frame]
        return out

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray | None:
        """``target_from_source`` (4, 4) at ``stamp_ns`` (None: the latest), or None when the
        frames are not connected or the time is outside a link's history."""
        target, source = frame_name(target), frame_name(source)
        up_source = self._chain(source)
        up_target = set(self._chain(target))
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            return None
        common_from_source = self._to_ancestor(source, common, stamp_ns)
        common_from_target = self._to_ancestor(target, common, stamp_ns)
        if common_from_source is None or common_from_target is None:
            return None
        return np.linalg.inv(common_from_target) @ common_from_source


#: the earlier name (latest-only look-ups); ``TransformBuffer`` does both
TransformTree = TransformBuffer


def interpolate_pose(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """The rigid pose ``fraction`` of the way from ``a`` to ``b`` (4, 4): slerp of the
    rotations (scipy ``Slerp``), linear interpolation of the translations."""
    from scipy.spatial.transform import Rotation, Slerp

    rotations = Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]]))
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], rotations)([fraction]).as_matrix()[0]
    out[:3, 3] = (1.0 - fraction) * a[:3, 3] + fraction * b[:3, 3]
    return out
