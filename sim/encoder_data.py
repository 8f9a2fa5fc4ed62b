"""Object crops rendered in MuJoCo, paired with the words people use for them: the
training and held-out data of the simulation's image-text encoder (``engram train-encoder``).

``render_crops(frames=N, seed=S)`` places a random subset of the tabletop scene's
objects at random spots and yaws on the table (a third of the buttons' lamps lit), moves the camera to a random viewpoint
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
from engram.sim.object_kinds import APARTMENT_KINDS, BACKGROUND, OBJECT_CLASSES
from engram.sim.tasks._tabletop import BUTTON_COLOURS

mujoco = import_mujoco()

__all__ = ["OBJECT_CLASSES", "CropSet", "class_prompts", "render_crops"]

_TABLE_TOP_Z_M = 0.40  # table surface height in tabletop.xml
_TABLE_HALF_M = (0.45, 0.40)  # usable half extents of the table top (x, y)
_PARK_M = np.array([20.0, 20.0, -5.0])  # where objects not in a frame wait (out of view)


def class_prompts(classes: list[str]) -> list[str]:
    """The text each class is scored against for zero-shot labels: 'a photo of <first
    description>' (the descriptions above start with an article)."""
    return [f"a photo of {_DESCRIPTIONS[c][0]}" for c in classes]


#: every class's descriptions: the object kinds and the background (no object)
_DESCRIPTIONS = {**{k: d for k, (_, d) in OBJECT_CLASSES.items()}, BACKGROUND[0]: BACKGROUND[1]}


@dataclass
class CropSet:
    """Rendered object crops: images (N, S, S, 3) uint8, labels (N,) int64 class indices."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=lambda: [*OBJECT_CLASSES, BACKGROUND[0]])
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
    """One scene (tabletop or apartment) with handles to move its objects of ``kinds``,
    the camera and the lights. Class indices are positions in ``OBJECT_CLASSES``."""

    def __init__(self, name: str, kinds: list[str], width_px: int, height_px: int) -> None:
        from engram.sim.render import RenderConfig, RgbdRenderer
        from engram.sim.scene import load_scene

        self.name = name
        self.model = load_scene(name)
        self.data = mujoco.MjData(self.model)
        self.renderer = RgbdRenderer(
            self.model, RenderConfig(width_px=width_px, height_px=height_px, depth=False)
        )
        cam = "scene" if name == "tabletop" else "head"
        self.cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam)
        self.cam_body = int(self.model.cam_bodyid[self.cam])
        self.base_diffuse = self.model.light_diffuse.copy()
        self.base_head = np.array(self.model.vis.headlight.diffuse)
        self.body_class: dict[int, int] = {}
        self.bodies: list[str] = []
        all_kinds = list(OBJECT_CLASSES)
        for kind in kinds:
            for body in OBJECT_CLASSES[kind][0]:
                bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body)
                if bid < 0:
                    raise ValueError(f"{name} scene has no body {body!r}")
                self.body_class[bid] = all_kinds.index(kind)
                self.bodies.append(body)
        # segmentation ids are body ids; a button's cap is a child body of the button
        self.top_body = np.arange(self.model.nbody)
        for b in range(1, self.model.nbody):
            parent = b
            while self.model.body_parentid[parent] != 0:
                parent = self.model.body_parentid[parent]
            self.top_body[b] = parent
        self.lamps: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        for colour, rgba in BUTTON_COLOURS.items():  # tabletop: the buttons' lamps
            gid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, f"button_{colour}_light")
            if gid >= 0:
                self.lamps[gid] = rgba
        self.slots = [  # apartment: where things stand (furniture tops)
            self.model.site_pos[i].copy()
            for i in range(self.model.nsite)
            if (mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_SITE, i) or "").startswith(
                "slot_"
            )
        ]

    def place(self, name: str, xy: np.ndarray, yaw: float, *, park: bool = False) -> None:
        """Tabletop: stand body ``name`` on the table at ``xy`` (or park it out of view)."""
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

    def place_at(self, name: str, pos: np.ndarray, yaw: float) -> None:
        """Apartment: put mocap body ``name``'s frame at ``pos`` (x, y, z)."""
        m, d = self.model, self.data
        mid = m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)]
        d.mocap_pos[mid] = pos
        d.mocap_quat[mid] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]

    def set_camera(self, eye: np.ndarray, target: np.ndarray, fovy_deg: float) -> None:
        """Point the camera from ``eye`` (world) at ``target``: the apartment's head camera
        sits on the base body, so its pose is written in that body's frame."""
        m, d = self.model, self.data
        quat = _look_at_quat(eye, target)
        if self.cam_body == 0:
            m.cam_pos[self.cam] = eye
            m.cam_quat[self.cam] = quat
        else:
            mujoco.mj_forward(m, d)
            rot = d.xmat[self.cam_body].reshape(3, 3)
            m.cam_pos[self.cam] = rot.T @ (eye - d.xpos[self.cam_body])
            body_q = np.zeros(4)
            mujoco.mju_negQuat(body_q, d.xquat[self.cam_body])
            local = np.zeros(4)
            mujoco.mju_mulQuat(local, body_q, quat)
            m.cam_quat[self.cam] = local
        m.cam_fovy[self.cam] = fovy_deg

    def light(self, rng: np.random.Generator) -> None:
        self.model.light_diffuse[:] = self.base_diffuse * rng.uniform(0.5, 1.4)
        self.model.vis.headlight.diffuse[:] = self.base_head * rng.uniform(0.6, 1.3)


def _tabletop_view(scene: _Scene, rng: np.random.Generator) -> None:
    """Random objects at random spots and yaws on the table; a camera 0.45-1.3 m away."""
    chosen = rng.random(len(scene.bodies)) < rng.uniform(0.3, 0.8)
    spots = _spread_spots(rng, int(chosen.sum()))
    k = 0
    for name, keep in zip(scene.bodies, chosen, strict=True):
        if keep:
            scene.place(name, spots[k], rng.uniform(-math.pi, math.pi))
            k += 1
        else:
            scene.place(name, np.zeros(2), 0.0, park=True)
    for geom, (dark, lit) in scene.lamps.items():  # a lit button is still a button
        scene.model.geom_rgba[geom] = lit if rng.random() < 0.35 else dark
    target = np.array([*rng.uniform(-0.2, 0.2, 2), _TABLE_TOP_Z_M])
    dist = rng.uniform(0.45, 1.3)
    elev = math.radians(rng.uniform(25.0, 75.0))
    azim = rng.uniform(-math.pi, math.pi)
    eye = target + dist * np.array(
        [math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)]
    )
    scene.set_camera(eye, target, rng.uniform(45.0, 65.0))
    scene.light(rng)


def _apartment_view(scene: _Scene, rng: np.random.Generator) -> None:
    """One to three of the apartment's things on the furniture tops of one room (jittered,
    random yaw), the others elsewhere or parked; the camera at a robot's head height
    (0.8-1.5 m), 0.5-3 m from one of them, in that room, looking near it."""
    room_centre = np.array([rng.choice([-2.0, 2.0]), rng.choice([-2.0, 2.0])])
    in_room = [i for i, p in enumerate(scene.slots) if np.all(np.abs(p[:2] - room_centre) < 2)]
    elsewhere = [i for i in range(len(scene.slots)) if i not in in_room]
    order = rng.permutation(len(scene.bodies))
    n_here = int(rng.integers(1, len(in_room) + 1))
    here_slots = rng.permutation(in_room)
    other_slots = rng.permutation(elsewhere)
    shown: list[np.ndarray] = []
    for rank, k in enumerate(order):
        name = scene.bodies[k]
        if rank < n_here:
            pos = scene.slots[here_slots[rank]].copy()
        elif rank - n_here < len(other_slots) and rng.random() < 0.5:
            pos = scene.slots[other_slots[rank - n_here]].copy()
        else:
            scene.place_at(name, _PARK_M, 0.0)
            continue
        pos[:2] += rng.uniform(-0.12, 0.12, 2)
        scene.place_at(name, pos, rng.uniform(-math.pi, math.pi))
        if rank < n_here:
            shown.append(pos)
    target = shown[int(rng.integers(len(shown)))] + np.array([0.0, 0.0, 0.08])
    for _attempt in range(20):
        azim = rng.uniform(-math.pi, math.pi)
        eye_xy = target[:2] + rng.uniform(0.5, 3.0) * np.array([math.cos(azim), math.sin(azim)])
        if np.all(np.abs(eye_xy - room_centre) < 1.7):
            break
    eye_xy = room_centre + np.clip(eye_xy - room_centre, -1.7, 1.7)
    eye = np.array([*eye_xy, rng.uniform(0.8, 1.5)])
    look = target + np.array([*rng.uniform(-0.25, 0.25, 2), rng.uniform(-0.15, 0.1)])
    scene.set_camera(eye, look, rng.uniform(50.0, 70.0))
    scene.light(rng)


def render_crops(
    *,
    frames: int,
    seed: int,
    size_px: int = 64,
    width_px: int = 320,
    height_px: int = 240,
    min_pixels: int = 60,
    apartment_share: float = 0.45,
    background: bool = True,
    progress: Callable[[int], None] | None = None,
) -> CropSet:
    """Render ``frames`` random views and return every visible object's crop.

    ``apartment_share``: the share of views rendered in the apartment (its six things,
    seen from a robot's head height); the rest are tabletop views.
    ``min_pixels``: objects showing fewer mask pixels (far away, occluded) are skipped.
    ``background``: one crop per view of wall, floor or furniture (no object), class
    ``BACKGROUND`` (the last class), so perception can tell a proposal is no object.
    ``progress(k)`` is called after each frame. Needs offscreen OpenGL (MUJOCO_GL=egl).
    """
    import cv2

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if size_px < 8:
        raise ValueError(f"size_px must be >= 8, got {size_px}")
    if not 0.0 <= apartment_share <= 1.0:
        raise ValueError(f"apartment_share must be in [0, 1], got {apartment_share}")
    rng = np.random.default_rng(seed)
    n_apartment = round(frames * apartment_share)
    kinds = list(OBJECT_CLASSES)
    plan = [("tabletop", [k for k in kinds if k not in APARTMENT_KINDS], frames - n_apartment)]
    plan.append(("apartment", list(APARTMENT_KINDS), n_apartment))
    images: list[np.ndarray] = []
    labels: list[int] = []
    for scene_name, scene_kinds, n in plan:
        if n == 0:
            continue
        scene = _Scene(scene_name, scene_kinds, width_px, height_px)
        view = _tabletop_view if scene_name == "tabletop" else _apartment_view
        try:
            for _ in range(n):
                view(scene, rng)
                mujoco.mj_forward(scene.model, scene.data)
                frame = scene.renderer.render(scene.data, scene.cam)
                seg = frame.segmentation
                top = np.where(seg >= 0, scene.top_body[np.clip(seg, 0, None)], -1)
                for bid, cls in scene.body_class.items():
                    ys, xs = np.nonzero(top == bid)
                    if len(xs) < min_pixels:
                        continue
                    images.append(
                        _square_crop(frame.rgb, xs, ys, rng, size_px, cv2, mask=top == bid)
                    )
                    labels.append(cls)
                if background:  # a patch of wall, floor or furniture: what is no object
                    patch = _background_crop(frame.rgb, top, scene.body_class, rng, size_px, cv2)
                    if patch is not None:
                        images.append(patch)
                        labels.append(len(kinds))
                if progress is not None:
                    progress(1)
        finally:
            scene.renderer.close()
    return CropSet(
        images=np.stack(images) if images else np.zeros((0, size_px, size_px, 3), np.uint8),
        labels=np.asarray(labels, np.int64),
        classes=[*kinds, BACKGROUND[0]],
        captions=[*(descs for _, descs in OBJECT_CLASSES.values()), BACKGROUND[1]],
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


def _background_crop(rgb, top, body_class, rng, size_px: int, cv2) -> np.ndarray | None:
    """A random square 10-80 px across with under 5% of any object's pixels (walls,
    floor, furniture, table legs), resized to S; None when 20 tries find none."""
    h, w = rgb.shape[:2]
    objects = np.isin(top, list(body_class))
    for _ in range(20):
        side = int(rng.integers(10, min(80, h, w) + 1))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        if objects[y0 : y0 + side, x0 : x0 + side].mean() < 0.05:
            patch = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])
            return cv2.resize(patch, (size_px, size_px), interpolation=cv2.INTER_AREA)
    return None


_MASK_FILL = np.array([123, 117, 104], np.float32)  # CLIP's mean colour: what perception
# fills a region's crop with outside its mask (``ObjectsConfig.mask_regions``)


def _square_crop(rgb, xs, ys, rng, size_px: int, cv2, mask=None) -> np.ndarray:
    """A square around the mask's box, grown 10-40% and shifted a little, resized to S.

    Half the crops have the pixels outside the object's ``mask`` (H, W) bool filled with
    the mean colour, as perception embeds a proposal; half are cut from the frame as is.
    Half are first shrunk to 6-32 px across and enlarged again: a far object in a small
    camera frame (the apartment's 128 px wide head camera sees a mug 5 px wide)."""
    h, w = rgb.shape[:2]
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0) * rng.uniform(1.1, 1.4)
    cx = (x0 + x1) / 2 + rng.uniform(-0.08, 0.08) * side
    cy = (y0 + y1) / 2 + rng.uniform(-0.08, 0.08) * side
    half = max(side / 2, 4.0)
    X0, Y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    X1, Y1 = int(min(cx + half, w)), int(min(cy + half, h))
    patch = np.ascontiguousarray(rgb[Y0:Y1, X0:X1])
    if mask is not None and rng.random() < 0.5:
        keep = mask[Y0:Y1, X0:X1].astype(np.float32)[..., None]
        patch = (patch * keep + _MASK_FILL * (1.0 - keep)).round().astype(np.uint8)
    out = cv2.resize(patch, (size_px, size_px), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        small = int(rng.integers(6, 33))
        if small < size_px:
            out = cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA)
            out = cv2.resize(out, (size_px, size_px), interpolation=cv2.INTER_LINEAR)
    return out
