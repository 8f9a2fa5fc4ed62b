"""``FrameAssembler``: ``Frame`` messages from separate ROS 2 colour, depth, camera info,
TF and odometry streams (depth paired with colour by stamp, latest intrinsics and pose)."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.runtime.bridges.ros2.convert import (
    camera_info_to_intrinsics,
    compressed_to_rgb,
    image_to_depth,
    image_to_rgb,
    resize_nearest,
)
from engram.runtime.bridges.ros2.geometry import TransformTree, frame_name, odometry_to_robot_state
from engram.runtime.bridges.ros2.rostypes import ConversionError, header_stamp, ros_type_name
from engram.runtime.messages import (
    Frame,
    RobotState,
)

__all__ = [
    "FrameAssembler",
    "FrameAssemblerConfig",
]


# ---------------------------------------------------------------------------
# assembling frames from separate colour / depth / info / pose streams


@dataclass
class FrameAssemblerConfig:
    """How separate ROS streams are joined into ``Frame`` messages."""

    expect_depth: bool = False  # hold colour images (briefly) for a depth image of the same stamp
    max_pair_dt_s: float = 0.02  # largest |colour stamp - depth stamp| that still pairs
    max_pending: int = 4  # colour images held waiting for depth; beyond, the oldest goes alone
    max_depth_buffer: int = 8  # depth images kept for pairing (newest)
    world_frame: str = ""  # TF frame that poses are given in ("" = the root of the camera's tree)
    camera: str = ""  # Frame.camera ("" = the image's header.frame_id)
    #: (4, 4) camera pose in the odometry child (base) frame, used when TF has no path;
    #: None = identity (the odometry pose is the camera's pose)
    base_from_camera: list[list[float]] | None = None


class FrameAssembler:
    """Pairs depth with colour by stamp and attaches the latest intrinsics and pose.

    Feed it decoded ROS messages; each ``add_*`` returns the ``Frame`` messages that
    became complete (in stamp order). Pose of a frame: the TF chain
    ``world_frame <- header.frame_id`` when TF connects them, else the latest
    odometry pose times ``base_from_camera``, else identity (counted in
    ``counters["no_pose"]``). Frames before any CameraInfo get identity intrinsics
    (counted in ``counters["no_intrinsics"]``). Memory is bounded by
    ``max_pending`` and ``max_depth_buffer``.
    """

    def __init__(self, config: FrameAssemblerConfig | None = None) -> None:
        self.config = config or FrameAssemblerConfig()
        self.tf = TransformTree()
        self.intrinsics: np.ndarray | None = None
        self.world_from_base: np.ndarray | None = None
        base = self.config.base_from_camera
        self._base_from_camera = np.eye(4) if base is None else np.asarray(base, dtype=np.float64)
        if self._base_from_camera.shape != (4, 4):
            raise ConversionError(
                f"FrameAssemblerConfig.base_from_camera must be (4, 4), got "
                f"{self._base_from_camera.shape}"
            )
        self._tol_ns = round(self.config.max_pair_dt_s * 1e9)
        self._pending: collections.deque[tuple[int, np.ndarray, str]] = collections.deque()
        self._depths: collections.deque[tuple[int, np.ndarray]] = collections.deque(
            maxlen=max(1, self.config.max_depth_buffer)
        )
        self.counters = {"frames": 0, "with_depth": 0, "no_intrinsics": 0, "no_pose": 0}

    # ---- side streams ---------------------------------------------------------------
    def add_camera_info(self, msg: Any) -> None:
        self.intrinsics, _ = camera_info_to_intrinsics(msg)

    def add_tf(self, msg: Any) -> None:
        self.tf.update(msg)

    def add_pose(self, world_from_base: np.ndarray) -> None:
        self.world_from_base = np.asarray(world_from_base, dtype=np.float64)

    def add_odometry(self, msg: Any) -> RobotState:
        state = odometry_to_robot_state(msg)
        self.add_pose(state.world_from_base)
        return state

    # ---- images -----------------------------------------------------------------------
    def add_color(self, msg: Any, *, stamp_ns: int) -> list[Frame]:
        """A colour Image / CompressedImage; ``stamp_ns`` is used when the header has none."""
        if ros_type_name(msg).endswith("CompressedImage"):
            rgb = compressed_to_rgb(msg)
        else:
            rgb = image_to_rgb(msg)
        stamp = header_stamp(msg, stamp_ns)
        item = (stamp, rgb, frame_name(msg.header.frame_id))
        depth = self._take_depth(stamp)
        if depth is not None or not self.config.expect_depth:
            return [self._emit(item, depth)]
        self._pending.append(item)
        out = []
        while len(self._pending) > max(0, self.config.max_pending):
            out.append(self._emit(self._pending.popleft(), None))
        return out

    def add_depth(self, msg: Any, *, stamp_ns: int) -> list[Frame]:
        """A depth Image (16UC1 mm / 32FC1 m); pairs it with a held colour image."""
        self._depths.append((header_stamp(msg, stamp_ns), image_to_depth(msg)))
        out = []
        newest = self._depths[-1][0]
        while self._pending:
            stamp = self._pending[0][0]
            depth = self._take_depth(stamp)
            if depth is not None:
                out.append(self._emit(self._pending.popleft(), depth))
            elif stamp < newest - self._tol_ns:  # its depth will not come any more
                out.append(self._emit(self._pending.popleft(), None))
            else:
                break
        return out

    def flush(self) -> list[Frame]:
        """Emit every held colour image (without depth when none paired)."""
        out = []
        while self._pending:
            item = self._pending.popleft()
            out.append(self._emit(item, self._take_depth(item[0])))
        return out

    # ---- internals ----------------------------------------------------------------------
    def _take_depth(self, stamp: int) -> np.ndarray | None:
        best, best_dt = None, None
        for i, (d_stamp, _) in enumerate(self._depths):
            dt = abs(d_stamp - stamp)
            if dt <= self._tol_ns and (best_dt is None or dt < best_dt):
                best, best_dt = i, dt
        if best is None:
            return None
        depth = self._depths[best][1]
        for _ in range(best + 1):  # this one and the older ones are used up
            self._depths.popleft()
        return depth

    def _pose(self, frame_id: str, stamp_ns: int | None = None) -> np.ndarray | None:
        if frame_id and len(self.tf):
            world = self.config.world_frame or self.tf.root(frame_id)
            if world != frame_id:
                # at the image's time (a moving camera), else the latest transforms
                found = self.tf.lookup(world, frame_id, stamp_ns) if stamp_ns else None
                if found is None:
                    found = self.tf.lookup(world, frame_id)
                if found is not None:
                    return found
        if self.world_from_base is not None:
            return self.world_from_base @ self._base_from_camera
        return None

    def _emit(self, item: tuple[int, np.ndarray, str], depth: np.ndarray | None) -> Frame:
        stamp, rgb, frame_id = item
        pose = self._pose(frame_id, stamp)
        self.counters["frames"] += 1
        self.counters["with_depth"] += depth is not None
        self.counters["no_pose"] += pose is None
        self.counters["no_intrinsics"] += self.intrinsics is None
        if depth is not None and depth.shape != rgb.shape[:2]:
            depth = resize_nearest(depth, rgb.shape[:2])
        return Frame(
            stamp_ns=stamp,
            camera=self.config.camera or frame_id or "camera",
            rgb=rgb,
            depth=depth,
            intrinsics=np.eye(3) if self.intrinsics is None else self.intrinsics,
            world_from_camera=np.eye(4) if pose is None else pose,
        )
