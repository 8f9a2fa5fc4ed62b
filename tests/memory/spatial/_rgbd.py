"""RGB-D sequences of static scenes and the TSDF reference surface they are judged by.

Shared by the spatial tests and ``bench/spatial.py`` (issue 16):

- ``real_sequence(dir)``: the real 640x480 frames of tests/data/rgbd-sample with poses.
- ``mujoco_sequence(n, ...)``: a furnished MuJoCo room rendered by a camera walking a
  loop around it (a static scene), with a structured-light sensor's noise added: axial
  noise sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 m (Khoshelham & Elberink's Kinect model),
  millimetre quantisation, dropout beyond 6 m, and a slowly drifting pose error
  (random walk, about 1 cm and 0.3 degrees) as a visual odometry would have.
- ``tsdf_surface(frames, K, voxel_m)``: open3d's ``t.geometry.VoxelBlockGrid`` TSDF of
  the same frames (1 cm voxels), its surface points binned into ``voxel_m`` voxels.
- ``surface_agreement(occupied_centres, surface_codes, voxel_m)``: strict (same voxel)
  and within-one-voxel recall of the TSDF surface by an occupied set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

K_SAMPLE = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])

Frame = tuple[np.ndarray, np.ndarray]  # depth (H, W) float32 metres, world_from_camera (4, 4)

_ROOM = {  # name: (type, centre, half size)
    "floor": ("box", (0, 0, -0.05), (2.6, 2.1, 0.05)),
    "ceiling": ("box", (0, 0, 2.65), (2.6, 2.1, 0.05)),
    "wall_n": ("box", (0, 2.05, 1.3), (2.6, 0.05, 1.3)),
    "wall_s": ("box", (0, -2.05, 1.3), (2.6, 0.05, 1.3)),
    "wall_e": ("box", (2.55, 0, 1.3), (0.05, 2.1, 1.3)),
    "wall_w": ("box", (-2.55, 0, 1.3), (0.05, 2.1, 1.3)),
    "table": ("box", (1.2, 1.0, 0.375), (0.5, 0.35, 0.375)),
    "sofa": ("box", (-1.6, 1.4, 0.35), (0.8, 0.4, 0.35)),
    "cabinet": ("box", (2.2, -1.4, 0.6), (0.25, 0.5, 0.6)),
    "lamp": ("cylinder", (-2.1, -1.6, 0.8), (0.12, 0.8, 0)),
    "ball": ("sphere", (0.3, -1.2, 0.25), (0.25, 0, 0)),
    "bin": ("cylinder", (-0.6, 1.7, 0.3), (0.2, 0.3, 0)),
}


def real_sequence(sample_dir: Path) -> list[Frame]:
    """The real frames of ``sample_dir`` (Redwood log poses, depth in mm)."""
    import cv2

    lines = [ln for ln in (sample_dir / "trajectory.log").read_text().splitlines() if ln.strip()]
    out = []
    for i in range(len(lines) // 5):
        pose = np.array([[float(v) for v in lines[i * 5 + r].split()] for r in range(1, 5)])
        raw = cv2.imread(str(sample_dir / "depth" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        out.append((raw.astype(np.float32) / 1000.0, pose))
    return out


def _mjcf(width: int, height: int) -> str:
    geoms = []
    for name, (kind, c, s) in _ROOM.items():
        size = " ".join(str(v) for v in s if v) if kind != "box" else f"{s[0]} {s[1]} {s[2]}"
        geoms.append(
            f'<geom name="{name}" type="{kind}" pos="{c[0]} {c[1]} {c[2]}" size="{size}"/>'
        )
    return (
        f'<mujoco><visual><global offwidth="{width}" offheight="{height}"/>'
        '<map znear="0.01" zfar="50"/></visual><worldbody>'
        '<light pos="0 0 2.4" dir="0 0 -1"/>' + "".join(geoms) + '<camera name="cam" pos="0 0 1.4"'
        ' fovy="58"/></worldbody></mujoco>'
    )


def _loop_pose(i: int, n: int) -> np.ndarray:
    """world_from_camera (OpenCV) of frame i of n: a loop around the room's centre,
    looking outwards and slightly down, with a gentle bob."""
    a = 2 * math.pi * i / n
    eye = np.array([0.9 * math.cos(a), 0.6 * math.sin(a), 1.35 + 0.1 * math.sin(3 * a)])
    look = a + 0.9 + 0.5 * math.sin(2 * a)
    fwd = np.array([math.cos(look), math.sin(look), -0.35 + 0.15 * math.cos(a)])
    z = fwd / np.linalg.norm(fwd)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, eye
    return pose


def _rot(axis_angle: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(axis_angle))
    if th < 1e-12:
        return np.eye(3)
    k = axis_angle / th
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * kx @ kx


def mujoco_sequence(
    n: int,
    *,
    width: int = 640,
    height: int = 480,
    noise: bool = True,
    seed: int = 0,
) -> tuple[list[Frame], np.ndarray, list[np.ndarray]]:
    """n frames of the static MuJoCo room -> (frames with the *estimated* poses, K,
    true poses). With ``noise`` the depth has sensor noise and the estimated poses drift."""
    from engram.sim._gl import import_mujoco

    mujoco = import_mujoco()
    model = mujoco.MjModel.from_xml_string(_mjcf(width, height))
    data = mujoco.MjData(model)
    cam = model.camera("cam").id
    f = (height / 2) / math.tan(math.radians(float(model.cam_fovy[cam])) / 2)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    rng = np.random.default_rng(seed)
    frames: list[Frame] = []
    truth: list[np.ndarray] = []
    drift_t = np.zeros(3)
    drift_r = np.zeros(3)
    flip = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes -> MuJoCo's (OpenGL) ones
    with mujoco.Renderer(model, height, width) as renderer:
        renderer.enable_depth_rendering()
        for i in range(n):
            pose = _loop_pose(i, n)
            model.cam_pos[cam] = pose[:3, 3]
            quat = np.zeros(4)
            mujoco.mju_mat2Quat(quat, (pose[:3, :3] @ flip).ravel())
            model.cam_quat[cam] = quat
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=cam)
            depth = renderer.render().astype(np.float32).copy()
            est = pose.copy()
            if noise:
                z = depth
                sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
                depth = z + rng.normal(size=z.shape).astype(np.float32) * sigma
                depth = np.round(depth * 1000.0) / 1000.0  # mm quantisation
                depth[(z > 6.0) | (depth <= 0)] = 0.0
                drift_t = 0.9 * drift_t + rng.normal(scale=0.004, size=3)
                drift_r = 0.9 * drift_r + rng.normal(scale=0.0012, size=3)
                est[:3, :3] = _rot(drift_r) @ pose[:3, :3]
                est[:3, 3] = pose[:3, 3] + drift_t
            frames.append((depth.astype(np.float32), est))
            truth.append(pose)
    return frames, K, truth


def depth_to_points(depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    z = depth.astype(np.float64)
    ok = np.isfinite(z) & (z > 0)
    cam = np.stack(
        [(u[ok] - K[0, 2]) / K[0, 0] * z[ok], (v[ok] - K[1, 2]) / K[1, 1] * z[ok], z[ok]], 1
    )
    return cam @ pose[:3, :3].T + pose[:3, 3]


def tsdf_surface(
    frames: list[Frame], K: np.ndarray, voxel_m: float, *, tsdf_voxel_m: float = 0.01
) -> np.ndarray:
    """Integer voxel indices (M, 3) (floor(p / voxel_m)) of open3d's TSDF surface of the
    frames (VoxelBlockGrid; the legacy ScalableTSDFVolume extracts nothing in 0.20)."""
    import open3d as o3d
    import open3d.core as o3c

    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"),
        attr_dtypes=(o3c.float32, o3c.float32),
        attr_channels=((1), (1)),
        voxel_size=tsdf_voxel_m,
        block_resolution=16,
        block_count=60000,
        device=o3c.Device("CPU:0"),
    )
    intr = o3c.Tensor(K, o3c.float64)
    for depth, pose in frames:
        img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth, np.float32)))
        extr = o3c.Tensor(np.linalg.inv(pose), o3c.float64)
        blocks = vbg.compute_unique_block_coordinates(img, intr, extr, 1.0, 8.0)
        vbg.integrate(blocks, img, intr, extr, 1.0, 8.0)
    pts = vbg.extract_point_cloud().point.positions.numpy().astype(np.float64)
    return np.unique(np.floor(pts / voxel_m).astype(np.int64), axis=0)


def surface_agreement(
    occupied_centres: np.ndarray, surface_idx: np.ndarray, voxel_m: float
) -> dict[str, float]:
    """Recall of the TSDF surface voxels by the occupied set: strict (the same voxel is
    occupied) and within one voxel (an occupied voxel in its 3x3x3 neighbourhood)."""
    occ = {tuple(v) for v in np.floor(occupied_centres / voxel_m).astype(np.int64).tolist()}
    strict = sum(tuple(v) in occ for v in surface_idx.tolist())
    offs = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    near = sum(
        any((x + a, y + b, z + c) in occ for a, b, c in offs) for x, y, z in surface_idx.tolist()
    )
    n = max(1, len(surface_idx))
    return {"strict_recall": strict / n, "within_one_voxel": near / n, "surface_voxels": n}
