"""The robot's self-filter: drop the depth pixels that lie on the robot's own body.

A real robot's camera sees its own arm; ROS's ``robot_self_filter`` removes those points
before perception, from the robot's model (URDF meshes, padded) posed by the current
joint states, not from any scene understanding. This is the same in MuJoCo: the robot's
geoms (the bodies ``ArmConfig.part_labels`` / ``BaseConfig.part_labels`` name and
their children) are drawn alone, posed by the current ``qpos``, into a depth image
from the camera's pose. A pixel whose measured depth is within ``padding_m`` of (or
behind) the robot's own surface there is the robot: its depth is set to 0 (no
measurement), the way a self-filtered cloud has no points there. Pixels where an object
stands in front of the robot (a cube held in the gripper) keep their depth.

The scene's segmentation is never read; only the robot's geometry and joint state.
The filter's geoms go to geom group ``SELF_GROUP`` (2, drawn by every other renderer
as before: only groups 3-5 are hidden), and its own renderer draws that group alone.

``self_filter_depth(env, frame)`` is what the sim node's camera mode uses: the env's
filter (made on first use, closed with the env) applied to a ``RenderedFrame``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engram.sim._gl import import_mujoco
from engram.sim.render import RenderConfig, RgbdRenderer
from engram.sim.robots import ROBOT_PART_LABELS

mujoco = import_mujoco()

__all__ = ["SELF_GROUP", "SelfFilter", "SelfFilterConfig", "robot_geoms", "self_filter_depth"]

#: geom group of the robot's own geoms (drawn by the normal renderers, alone by the filter)
SELF_GROUP = 2


@dataclass
class SelfFilterConfig:
    """Settings of ``SelfFilter``."""

    # a pixel within this distance in front of the robot's surface (or behind it) is
    # the robot, metres (robot_self_filter's padding; here the model is exact, so only
    # depth-buffer rounding: more would eat a held object, which touches the fingers)
    padding_m: float = 0.002
    # grow the robot's silhouette by this many pixels (edge pixels mix robot and scene)
    dilate_px: int = 0


def robot_geoms(model, part_labels=ROBOT_PART_LABELS) -> np.ndarray:
    """Geom ids of the robot: the geoms of bodies named in ``part_labels`` and of all
    their descendants (fingers, hand), (G,) int."""
    names = set(part_labels)
    body_robot = np.zeros(model.nbody, bool)
    for b in range(model.nbody):  # parents come before children in MuJoCo's body order
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or ""
        parent = int(model.body_parentid[b])
        body_robot[b] = name in names or (b > 0 and parent != b and body_robot[parent])
    return np.flatnonzero(body_robot[model.geom_bodyid]).astype(np.int64)


class SelfFilter:
    """Depth of the robot's own geometry from a camera, and the mask of pixels on it."""

    def __init__(
        self, model, width_px: int, height_px: int, config: SelfFilterConfig | None = None
    ):
        self.config = config or SelfFilterConfig()
        self.model = model
        self.geoms = robot_geoms(model)
        others = np.setdiff1d(np.flatnonzero(model.geom_group == SELF_GROUP), self.geoms)
        if len(others):
            raise ValueError(
                f"SelfFilter: geom group {SELF_GROUP} is reserved for the robot's geoms, "
                f"but {len(others)} other geoms use it"
            )
        model.geom_group[self.geoms] = SELF_GROUP
        hidden = tuple(g for g in range(6) if g != SELF_GROUP)
        self._renderer = RgbdRenderer(
            model,
            RenderConfig(
                width_px=width_px,
                height_px=height_px,
                segmentation=False,
                hidden_geom_groups=hidden,
            ),
        )

    def robot_depth(self, data, camera: str) -> np.ndarray:
        """(H, W) float32 metres: depth of the robot's own surface, 0 where it is not."""
        frame = self._renderer.render(data, camera)
        assert frame.depth is not None
        return frame.depth

    def mask(self, data, camera: str, depth: np.ndarray) -> np.ndarray:
        """(H, W) bool: pixels of the measured ``depth`` that lie on the robot."""
        robot = self.robot_depth(data, camera)
        on = (robot > 0) & ((depth <= 0) | (depth >= robot - self.config.padding_m))
        if self.config.dilate_px > 0 and on.any():
            from scipy import ndimage

            grown = ndimage.binary_dilation(on, iterations=self.config.dilate_px)
            # grown pixels count only if they are not clearly in front of the robot
            near = (robot > 0) | (depth <= 0)
            on = on | (grown & near)
        return on

    def close(self) -> None:
        self._renderer.close()


def self_filter_depth(env, frame) -> np.ndarray | None:
    """``frame.depth`` (a ``RenderedFrame`` of ``env``) with the robot's own pixels set to
    0. The env keeps its filter (``env._self_filter``; closed by ``env.close()``)."""
    if frame.depth is None:
        return None
    filt = getattr(env, "_self_filter", None)
    h, w = frame.depth.shape
    if filt is None or filt._renderer.config.width_px != w:
        filt = SelfFilter(env.model, w, h)
        env._self_filter = filt
    depth = frame.depth.copy()
    depth[filt.mask(env.data, frame.camera, depth)] = 0.0
    return depth
