"""Object crops rendered in MuJoCo, paired with the words people use for them: the
training and held-out data of the simulation's image-text encoder (``engram train-encoder``).

``render_crops(frames=N, seed=S)`` places a random subset of the tabletop scene's
objects at random spots and yaws on the table, moves the camera to a random viewpoint
looking at the table (distance, elevation, azimuth), scales the lights, renders RGB +
segmentation, and cuts one square crop per visible object (its segmentation mask's
box, grown by a random margin and jittered). Each crop's class is the object's
*kind* (``OBJECT_CLASSES``): identical cups are one class, and the yellow cube is a
"yellow cube" whatever a task calls it internally.

Returns a ``CropSet``: ``images`` (N, S, S, 3) uint8, ``labels`` (N,) int64 indices
into ``classes``, and ``captions[c]``: the descriptions of class c (name, colour,
synonyms) that training pairs with its crops. Held-out sets use another seed, so
their poses, views, lights and clutter are new.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engram.sim._gl import import_mujoco
from engram.sim.object_kinds import OBJECT_CLASSES

mujoco = import_mujoco()

__all__ = ["OBJECT_CLASSES", "CropSet", "class_prompts", "render_crops"]

_TABLE_TOP_Z_M = 0.40  # table surface height in tabletop.xml
_TABLE_HALF_M = (0.45, 0.40)  # usable half extents of the table top (x, y)
_PARK_M = np.array([20.0, 20.0, -5.0])  # where objects not in a frame wait (out of view)


def class_prompts(classes: list[str]) -> list[str]:
    """The text each class is scored against for zero-shot labels: 'a photo of <first
    description>' (the descriptions above start with an article)."""
    return [f"a photo of {OBJECT_CLASSES[c][1][0]}" for c in classes]


@dataclass
class CropSet:
    """Rendered object crops: images (N, S, S, 3) uint8, labels (N,) int64 class indices."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=lambda: list(OBJECT_CLASSES))
    captions: list[tuple[str, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _look_at_quat(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z) at ``eye`` looking at ``target`` (world z up).
    A MuJoCo camera looks along its -z axis with +y up."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= max(np.linalg.norm(right), 1e-9)
    up = np.cross(right, forward)
    mat = np.stack([right, up, -forward], axis=1)  # columns: camera x, y, z in world
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


class _Scene:
    """The tabletop scene with handles to move objects, the camera and the lights."""

    def __init__(self, width_px: int, height_px: int) -> None:
        from engram.sim.render import RenderConfig, RgbdRenderer
        from engram.sim.scene import load_scene

        self.model = load_scene("tabletop")
        self.data = mujoco.MjData(self.model)
        self.renderer = RgbdRenderer(
            self.model, RenderConfig(width_px=width_px, height_px=height_px, depth=False)
        )
        self.cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, "scene")
        self.base_diffuse = self.model.light_diffuse.copy()
        self.base_head = np.array(self.model.vis.headlight.diffuse)
        self.body_class: dict[int, int] = {}
        self.bodies: list[str] = []
        for c, (names, _) in enumerate(OBJECT_CLASSES.values()):
            for name in names:
                bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
                if bid < 0:
                    raise ValueError(f"tabletop scene has no body {name!r}")
                self.body_class[bid] = c
                self.bodies.append(name)
        # segmentation ids are body ids; a button's cap is a child body of the button
        self.top_body = np.arange(self.model.nbody)
        for b in range(1, self.model.nbody):
            parent = b
            while self.model.body_parentid[parent] != 0:
                parent = self.model.body_parentid[parent]
            self.top_body[b] = parent

    def place(self, name: str, xy: np.ndarray, yaw: float, *, park: bool = False) -> None:
        m, d = self.model, self.data
        bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)
        pos = _PARK_M.copy() if park else np.array([xy[0], xy[1], 0.0])
        quat = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
        jnt = m.body_jntadr[bid]
        if jnt >= 0 and m.jnt_type[jnt] == mujoco.mjtJoint.mjJNT_FREE:
            adr = m.jnt_qposadr[jnt]
            if not park:  # rest the body's frame where the scene file puts it above the table
                pos[2] = m.body_pos[bid][2]
            d.qpos[adr : adr + 3] = pos
            d.qpos[adr + 3 : adr + 7] = quat
        elif m.body_mocapid[bid] >= 0:
            mid = m.body_mocapid[bid]
            d.mocap_pos[mid] = pos if park else [xy[0], xy[1], _TABLE_TOP_Z_M + 0.02]
            d.mocap_quat[mid] = quat
        else:  # fixed bodies (buttons): move the body in the model
            if not park:
                pos[2] = _TABLE_TOP_Z_M
            m.body_pos[bid] = pos
            m.body_quat[bid] = quat


def render_crops(
    *,
    frames: int,
    seed: int,
    size_px: int = 64,
    width_px: int = 320,
    height_px: int = 240,
    min_pixels: int = 60,
    progress: Callable[[int], None] | None = None,
) -> CropSet:
    """Render ``frames`` random views and return every visible object's crop.

    ``min_pixels``: objects showing fewer mask pixels (far away, occluded) are skipped.
    ``progress(k)`` is called after each frame. Needs offscreen OpenGL (MUJOCO_GL=egl).
    """
    import cv2

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if size_px < 8:
        raise ValueError(f"size_px must be >= 8, got {size_px}")
    rng = np.random.default_rng(seed)
    scene = _Scene(width_px, height_px)
    m, d = scene.model, scene.data
    images: list[np.ndarray] = []
    labels: list[int] = []
    try:
        for _ in range(frames):
            chosen = rng.random(len(scene.bodies)) < rng.uniform(0.3, 0.8)
            spots = _spread_spots(rng, int(chosen.sum()))
            k = 0
            for name, keep in zip(scene.bodies, chosen, strict=True):
                if keep:
                    scene.place(name, spots[k], rng.uniform(-math.pi, math.pi))
                    k += 1
                else:
                    scene.place(name, np.zeros(2), 0.0, park=True)
            target = np.array([*rng.uniform(-0.2, 0.2, 2), _TABLE_TOP_Z_M])
            dist = rng.uniform(0.45, 1.3)
            elev = math.radians(rng.uniform(25.0, 75.0))
            azim = rng.uniform(-math.pi, math.pi)
            eye = target + dist * np.array(
                [math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)]
            )
            m.cam_pos[scene.cam] = eye
            m.cam_quat[scene.cam] = _look_at_quat(eye, target)
            m.cam_fovy[scene.cam] = rng.uniform(45.0, 65.0)
            m.light_diffuse[:] = scene.base_diffuse * rng.uniform(0.5, 1.4)
            m.vis.headlight.diffuse[:] = scene.base_head * rng.uniform(0.6, 1.3)
            mujoco.mj_forward(m, d)
            frame = scene.renderer.render(d, scene.cam)
            seg = frame.segmentation
            top = np.where(seg >= 0, scene.top_body[np.clip(seg, 0, None)], -1)
            for bid, cls in scene.body_class.items():
                ys, xs = np.nonzero(top == bid)
                if len(xs) < min_pixels:
                    continue
                crop = _square_crop(frame.rgb, xs, ys, rng, size_px, cv2)
                images.append(crop)
                labels.append(cls)
            if progress is not None:
                progress(1)
    finally:
        scene.renderer.close()
    return CropSet(
        images=np.stack(images) if images else np.zeros((0, size_px, size_px, 3), np.uint8),
        labels=np.asarray(labels, np.int64),
        classes=list(OBJECT_CLASSES),
        captions=[descs for _, descs in OBJECT_CLASSES.values()],
    )


def _spread_spots(rng: np.random.Generator, n: int, *, min_gap_m: float = 0.11) -> np.ndarray:
    """(n, 2) table positions at least ``min_gap_m`` apart where possible."""
    spots: list[np.ndarray] = []
    for _ in range(n):
        for _attempt in range(30):
            p = rng.uniform(-1.0, 1.0, 2) * _TABLE_HALF_M
            if all(np.linalg.norm(p - q) >= min_gap_m for q in spots):
                break
        spots.append(p)
    return np.asarray(spots).reshape(n, 2)


def _square_crop(rgb, xs, ys, rng, size_px: int, cv2) -> np.ndarray:
    """A square around the mask's box, grown 10-40% and shifted a little, resized to S."""
    h, w = rgb.shape[:2]
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0) * rng.uniform(1.1, 1.4)
    cx = (x0 + x1) / 2 + rng.uniform(-0.08, 0.08) * side
    cy = (y0 + y1) / 2 + rng.uniform(-0.08, 0.08) * side
    half = max(side / 2, 4.0)
    X0, Y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    X1, Y1 = int(min(cx + half, w)), int(min(cy + half, h))
    patch = rgb[Y0:Y1, X0:X1]
    return cv2.resize(np.ascontiguousarray(patch), (size_px, size_px), interpolation=cv2.INTER_AREA)
