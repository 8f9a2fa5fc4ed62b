"""Offscreen RGB, metric depth and per-object segmentation from MuJoCo cameras.

``RgbdRenderer(model, RenderConfig(...)).render(data, "scene")`` returns a
``RenderedFrame`` with

- ``rgb`` (H, W, 3) uint8,
- ``depth`` (H, W) float32 metres along the camera's optical axis (z-depth),
  0 where nothing was hit,
- ``segmentation`` (H, W) int32 object ids: the MuJoCo body id of the geom seen,
  -1 for the world body (floor, table, walls, furniture) and for background,
- ``intrinsics`` K (3, 3) (pinhole from the camera's ``fovy``; pixel centres at
  integer coordinates, so cx = (W - 1) / 2),
- ``world_from_camera`` (4, 4) in the OpenCV convention (+x right, +y down,
  +z forward): MuJoCo's camera frame looks down -z with +y up, so
  ``world_from_cv = world_from_gl @ diag(1, -1, -1, 1)``,
- ``labels``: str(object id) -> body name.

Combined path: one ``mjv_updateScene``, one lit render read as RGB, and one
segmentation render (flat id colours) read together with its depth buffer, i.e.
two GL renders instead of the three a naive ``mujoco.Renderer`` loop needs
(rgb, depth, segmentation). Shadows and reflections are off unless configured
(shadows cost about 5x on a software GL).

The GL context is created on the first ``render`` in the calling thread; use one
renderer from one thread. ``close()`` frees it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from engram.sim._gl import RenderingUnavailable, import_mujoco, require_rendering
from engram.sim.scene import body_labels, object_ids

mujoco = import_mujoco()

__all__ = [
    "RenderConfig",
    "RenderedFrame",
    "RgbdRenderer",
    "camera_id",
    "camera_intrinsics",
    "world_from_camera",
]

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class RenderConfig:
    """Settings of ``RgbdRenderer``."""

    width_px: int = 640  # image width
    height_px: int = 480  # image height
    shadows: bool = False  # shadow mapping (about 5x slower on software GL)
    reflections: bool = False  # mirror reflections of reflective materials
    depth: bool = True  # produce metric depth
    segmentation: bool = True  # produce object-id segmentation
    max_geoms: int = 2000  # capacity of the abstract scene
    hidden_geom_groups: tuple[int, ...] = (3, 4, 5)  # geom/site groups not drawn


@dataclass
class RenderedFrame:
    """One camera's images and geometry. Shapes in the module docstring."""

    camera: str
    rgb: np.ndarray
    depth: np.ndarray | None
    segmentation: np.ndarray | None
    intrinsics: np.ndarray
    world_from_camera: np.ndarray
    labels: dict[str, str] = field(default_factory=dict)


def camera_id(model, camera: str | int) -> int:
    """Camera index for a name or index; ``ValueError`` lists the model's cameras."""
    if isinstance(camera, (int, np.integer)):
        cam = int(camera)
    else:
        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if not 0 <= cam < model.ncam:
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        raise ValueError(f"camera {camera!r} not in model; cameras: {names}")
    return cam


def camera_intrinsics(model, camera: str | int, width_px: int, height_px: int) -> np.ndarray:
    """(3, 3) pinhole K of a MuJoCo camera rendered at width_px x height_px."""
    cam = camera_id(model, camera)
    fovy = np.deg2rad(model.cam_fovy[cam])
    f = 0.5 * height_px / np.tan(0.5 * fovy)
    return np.array(
        [[f, 0.0, (width_px - 1) / 2.0], [0.0, f, (height_px - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def world_from_camera(model, data, camera: str | int) -> np.ndarray:
    """(4, 4) camera pose in the OpenCV convention (needs ``mj_forward``/``mj_step`` done)."""
    cam = camera_id(model, camera)
    world_from_gl = np.eye(4)
    world_from_gl[:3, :3] = data.cam_xmat[cam].reshape(3, 3)
    world_from_gl[:3, 3] = data.cam_xpos[cam]
    return world_from_gl @ _GL_TO_CV


class RgbdRenderer:
    """Renders RGB + depth + segmentation of a model's named cameras. See module doc."""

    def __init__(self, model, config: RenderConfig | None = None) -> None:
        self.model = model
        self.config = cfg = config or RenderConfig()
        if cfg.width_px < 1 or cfg.height_px < 1:
            raise ValueError(f"image size must be positive, got {cfg.width_px}x{cfg.height_px}")
        self._gl = None
        self._con = None
        self._scene = None
        self._option = None
        self._rect = None
        self._ids = object_ids(model)
        # geom id -> object id (body id, or -1 for the world body)
        self._geom_obj = self._ids[model.geom_bodyid] if model.ngeom else np.zeros(0, np.int32)
        self._labels = body_labels(model)
        self.renders = 0  # GL render passes done (for benchmarks)

    # ---- GL setup -----------------------------------------------------------
    def _ensure_context(self) -> None:
        if self._con is not None:
            self._gl.make_current()
            return
        mj = require_rendering()
        cfg = self.config
        m = self.model
        # the offscreen buffer must hold the image
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, cfg.width_px)
        m.vis.global_.offheight = max(m.vis.global_.offheight, cfg.height_px)
        try:
            self._gl = mj.GLContext(m.vis.global_.offwidth, m.vis.global_.offheight)
            self._gl.make_current()
            self._con = mj.MjrContext(m, mj.mjtFontScale.mjFONTSCALE_100.value)
        except Exception as exc:  # GL stack present but not working
            self._gl = None
            backend = os.environ.get("MUJOCO_GL", "")
            hint = (
                " (mujoco was imported before sim could choose a GL backend: import sim "
                "first or set MUJOCO_GL)"
                if not backend
                else ""
            )
            raise RenderingUnavailable(
                f"cannot create an offscreen GL context (MUJOCO_GL={backend!r}){hint}: {exc}. "
                "Try MUJOCO_GL=egl (apt libegl1 libgl1-mesa-dri) or MUJOCO_GL=osmesa "
                "(apt libosmesa6) in a fresh process."
            ) from exc
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN.value, self._con)
        self._con.readDepthMap = mj.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mj.MjvScene(m, maxgeom=cfg.max_geoms)
        self._scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = cfg.shadows
        self._scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = cfg.reflections
        self._option = mj.MjvOption()
        for g in cfg.hidden_geom_groups:
            self._option.geomgroup[g] = 0
            self._option.sitegroup[g] = 0
        self._rect = mj.MjrRect(0, 0, cfg.width_px, cfg.height_px)
        self._cam = mj.MjvCamera()
        self._cam.type = mj.mjtCamera.mjCAMERA_FIXED
        h, w = cfg.height_px, cfg.width_px
        self._rgb_buf = np.empty((h, w, 3), np.uint8)
        self._seg_buf = np.empty((h, w, 3), np.uint8)
        self._depth_buf = np.empty((h, w), np.float32)

    # ---- rendering ----------------------------------------------------------
    def render(self, data, camera: str | int) -> RenderedFrame:
        """RGB (+ depth + segmentation per config) of ``camera`` for the state in ``data``."""
        cam = camera_id(self.model, camera)
        self._ensure_context()
        cfg = self.config
        m, scn, con = self.model, self._scene, self._con
        self._cam.fixedcamid = cam
        mujoco.mjv_updateScene(
            m, data, self._option, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL.value, scn
        )
        # pass 1: lit colour image
        mujoco.mjr_render(self._rect, scn, con)
        mujoco.mjr_readPixels(self._rgb_buf, None, self._rect, con)
        self.renders += 1
        rgb = np.flipud(self._rgb_buf).copy()
        depth = seg = None
        if cfg.depth or cfg.segmentation:
            # pass 2: flat id colours; its depth buffer is the metric depth
            flags = scn.flags
            saved = (flags[mujoco.mjtRndFlag.mjRND_SEGMENT], flags[mujoco.mjtRndFlag.mjRND_IDCOLOR])
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
            try:
                mujoco.mjr_render(self._rect, scn, con)
                mujoco.mjr_readPixels(
                    self._seg_buf, self._depth_buf if cfg.depth else None, self._rect, con
                )
                self.renders += 1
            finally:
                flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = saved[0]
                flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = saved[1]
            segid = self._decode_segid()
            hit = segid > 0
            if cfg.segmentation:
                seg = self._segid_to_object(segid)
            if cfg.depth:
                depth = self._linear_depth(np.flipud(self._depth_buf))
                depth[~hit] = 0.0
        return RenderedFrame(
            camera=camera if isinstance(camera, str) else str(camera),
            rgb=rgb,
            depth=depth,
            segmentation=seg,
            intrinsics=camera_intrinsics(m, cam, cfg.width_px, cfg.height_px),
            world_from_camera=world_from_camera(m, data, cam),
            labels=dict(self._labels),
        )

    def _decode_segid(self) -> np.ndarray:
        """(H, W) int32 scene-geom index + 1 per pixel (0 = background)."""
        buf = np.flipud(self._seg_buf).astype(np.int32)
        return buf[..., 0] | (buf[..., 1] << 8) | (buf[..., 2] << 16)

    def _segid_to_object(self, segid: np.ndarray) -> np.ndarray:
        scn = self._scene
        lut = np.full(scn.ngeom + 2, -1, np.int32)
        geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        for i in range(scn.ngeom):
            g = scn.geoms[i]
            if g.segid >= 0 and g.objtype == geom_type and 0 <= g.objid < len(self._geom_obj):
                lut[g.segid + 1] = self._geom_obj[g.objid]
        return lut[np.clip(segid, 0, len(lut) - 1)]

    def _linear_depth(self, zbuf: np.ndarray) -> np.ndarray:
        """Reverse-Z buffer values (H, W) -> metres along the optical axis (as mujoco.Renderer)."""
        m = self.model
        extent = m.stat.extent
        znear = np.float32(m.vis.map.znear * extent)
        zfar = np.float32(m.vis.map.zfar * extent)
        c_coef = -(zfar + znear) / (zfar - znear)
        d_coef = -(np.float32(2) * zfar * znear) / (zfar - znear)
        c_coef = np.float32(-0.5) * c_coef - np.float32(0.5)
        d_coef = np.float32(-0.5) * d_coef
        return (d_coef / (zbuf.astype(np.float64) + c_coef)).astype(np.float32)

    def close(self) -> None:
        """Free the GL resources (call from the thread that rendered)."""
        if self._con is not None:
            try:
                self._gl.make_current()
                self._con.free()
            finally:
                self._con = None
                self._gl.free()
                self._gl = None

    def __enter__(self) -> RgbdRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; explicit close() is preferred
        try:
            self.close()
        except Exception:
            pass
