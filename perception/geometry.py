"""Depth geometry in vectorised numpy: back-projection, voxel downsampling, object boxes.

Conventions (runtime/messages.py): OpenCV camera frame (+x right, +y down, +z
forward), depth in metres with 0 / NaN / inf meaning "no measurement",
``point_in_world = world_from_camera @ point_in_camera``.

- ``backproject(depth, K, world_from_camera)`` -> ``Cloud``: (N, 3) float32 world
  points of the valid pixels and their (N,) flat pixel indices. Invalid depth is
  masked, never propagated.
- ``voxel_downsample(points, voxel_size_m, labels=...)`` -> one point per occupied
  voxel (the mean of its points) and the most common label among them.
- ``object_boxes_3d(points, labels, ids)`` -> per-object centre and extent of the
  robust axis-aligned box of its points (percentile trimmed against flying pixels).

Bad inputs (a non-rigid or non-finite pose, a K with non-positive focal length,
shape mismatches) raise ``GeometryError`` naming the argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engram.runtime.messages import pose_problem

__all__ = [
    "Cloud",
    "GeometryError",
    "backproject",
    "check_intrinsics",
    "check_pose",
    "object_boxes_3d",
    "project",
    "voxel_downsample",
]


class GeometryError(ValueError):
    """A geometry input is malformed (shape, non-finite values, non-rigid pose)."""


def check_pose(pose: np.ndarray, *, name: str = "world_from_camera") -> np.ndarray:
    """Validate a (4, 4) rigid transform; returns it as float64.

    Rejects non-finite entries, a last row other than [0 0 0 1], and a rotation
    part that is not orthonormal with determinant +1.
    """
    arr = np.asarray(pose)
    if arr.shape != (4, 4):
        raise GeometryError(f"{name}: expected a (4, 4) pose, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise GeometryError(f"{name}: expected a numeric pose, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    problem = pose_problem(arr)
    if problem:
        raise GeometryError(f"{name}: {problem}")
    return arr


def check_intrinsics(K: np.ndarray, *, name: str = "K") -> np.ndarray:
    """Validate a (3, 3) pinhole matrix with positive focal lengths; returns float64."""
    arr = np.asarray(K)
    if arr.shape != (3, 3):
        raise GeometryError(f"{name}: expected (3, 3) intrinsics, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name}: contains NaN or inf")
    if arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise GeometryError(
            f"{name}: focal lengths must be positive, got fx={arr[0, 0]}, fy={arr[1, 1]}"
        )
    return arr


@dataclass
class Cloud:
    """Back-projected points. points: (N, 3) float32 world metres; pixels: (N,) int64
    flat indices ``v * W + u`` into the (H, W) image they came from."""

    points: np.ndarray
    pixels: np.ndarray
    image_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.points)

    def sample(self, image: np.ndarray) -> np.ndarray:
        """Values of an (H, W, ...) image at this cloud's pixels -> (N, ...)."""
        h, w = self.image_shape
        if image.shape[:2] != (h, w):
            raise GeometryError(
                f"image: expected shape ({h}, {w}, ...) to match the depth, got {image.shape}"
            )
        return image.reshape(h * w, *image.shape[2:])[self.pixels]


def backproject(
    depth: np.ndarray,
    K: np.ndarray,
    world_from_camera: np.ndarray,
    *,
    stride_px: int = 1,
    min_depth_m: float = 0.0,
    max_depth_m: float = np.inf,
) -> Cloud:
    """Depth image -> world points.

    depth (H, W) float metres (0/NaN/inf = invalid), K (3, 3), world_from_camera (4, 4)
    -> Cloud with (N, 3) float32 points of valid pixels on a ``stride_px`` grid whose
    depth lies in (min_depth_m, max_depth_m].
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise GeometryError(f"depth: expected (H, W), got shape {depth.shape}")
    if depth.dtype.kind != "f":
        raise GeometryError(
            f"depth: expected float metres, got dtype {depth.dtype} (convert mm with / 1000)"
        )
    if stride_px < 1:
        raise GeometryError(f"stride_px must be >= 1, got {stride_px}")
    K = check_intrinsics(K)
    pose = check_pose(world_from_camera)
    h, w = depth.shape
    vs = np.arange(0, h, stride_px)
    us = np.arange(0, w, stride_px)
    z = depth[::stride_px, ::stride_px].astype(np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z > max(min_depth_m, 0.0)) & (z <= max_depth_m)
    vv, uu = np.nonzero(valid)
    z = z[vv, uu]
    v = vs[vv]
    u = us[uu]
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y_cam = (v - cy) / fy * z
    x_cam = ((u - cx) - skew * (v - cy) / fy) / fx * z
    rot = pose[:3, :3].astype(np.float32)
    trans = pose[:3, 3].astype(np.float32)
    pts_cam = np.stack([x_cam, y_cam, z], axis=1).astype(np.float32)
    points = pts_cam @ rot.T + trans
    pixels = v.astype(np.int64) * w + u.astype(np.int64)
    return Cloud(points=points.astype(np.float32), pixels=pixels, image_shape=(h, w))


def project(
    points: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel coordinates (N, 2) float64 [u, v] and depth (N,)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise GeometryError(f"points: expected (N, 3), got shape {pts.shape}")
    K = check_intrinsics(K)
    pose = check_pose(world_from_camera)
    camera_from_world = np.linalg.inv(pose)
    cam = pts @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ K.T)[:, :2] / z[:, None]
    return uv, z


def voxel_downsample(
    points: np.ndarray,
    voxel_size_m: float,
    *,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One point per occupied voxel.

    points (N, 3) -> (M, 3) float32 voxel means, M <= N; labels (N,) int -> (M,) int32,
    the most common label in each voxel (ties: the smaller label).
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise GeometryError(f"points: expected (N, 3), got shape {pts.shape}")
    if not (np.isfinite(voxel_size_m) and voxel_size_m > 0):
        raise GeometryError(f"voxel_size_m must be a positive number, got {voxel_size_m}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(pts),):
            raise GeometryError(f"labels: expected shape ({len(pts)},), got {labels.shape}")
    if len(pts) == 0:
        return pts.reshape(0, 3), None if labels is None else np.zeros(0, np.int32)
    if not np.all(np.isfinite(pts)):
        raise GeometryError("points: contains NaN or inf")
    keys = np.floor(pts / voxel_size_m).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
    uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    m = len(uniq)
    inverse = inverse.reshape(-1)
    means = np.empty((m, 3), np.float32)
    for axis in range(3):  # bincount sums are much faster than np.add.at
        means[:, axis] = np.bincount(inverse, weights=pts[:, axis], minlength=m) / counts
    if labels is None:
        return means, None
    lab = labels.astype(np.int64)
    lab_off = lab - lab.min()
    nlab = int(lab_off.max()) + 1
    pair = inverse.astype(np.int64) * nlab + lab_off
    pair_u, pair_counts = np.unique(pair, return_counts=True)
    voxel_of_pair = pair_u // nlab
    # sort by voxel, then by count descending, then by label ascending; take the first
    order = np.lexsort((pair_u % nlab, -pair_counts, voxel_of_pair))
    first = np.ones(len(order), bool)
    first[1:] = voxel_of_pair[order][1:] != voxel_of_pair[order][:-1]
    best = order[first]
    out_labels = ((pair_u[best] % nlab) + lab.min()).astype(np.int32)
    return means, out_labels


def object_boxes_3d(
    points: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    *,
    trim_percentile: float = 1.0,
    min_points: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-object robust axis-aligned boxes in world.

    points (N, 3), labels (N,) object id per point, ids (K,) -> centroids (K, 3) float32
    (box centres), extents (K, 3) float32 (box sizes, metres), counts (K,) int64.
    The box spans the [p, 100 - p] percentiles of the object's points per axis
    (p = trim_percentile), which drops flying pixels at depth edges. For a convex
    object whose top and front are visible, the box of the visible surface is the
    object's box, so its centre is the object's centre. Objects with fewer than
    ``min_points`` points get NaN centroids and zero extents (callers drop them).
    """
    pts = np.asarray(points, dtype=np.float32)
    labels = np.asarray(labels)
    ids = np.asarray(ids)
    if labels.shape != (len(pts),):
        raise GeometryError(f"labels: expected shape ({len(pts)},), got {labels.shape}")
    k = len(ids)
    centroids = np.full((k, 3), np.nan, np.float32)
    extents = np.zeros((k, 3), np.float32)
    counts = np.zeros(k, np.int64)
    if k == 0 or len(pts) == 0:
        return centroids, extents, counts
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, ids, side="left")
    ends = np.searchsorted(sorted_labels, ids, side="right")
    for i, (s, e) in enumerate(zip(starts, ends)):
        counts[i] = e - s
        if e - s < max(min_points, 1):
            continue
        obj = pts[order[s:e]]
        if trim_percentile > 0 and len(obj) > 10:
            lo, hi = np.percentile(obj, [trim_percentile, 100.0 - trim_percentile], axis=0)
        else:
            lo, hi = obj.min(axis=0), obj.max(axis=0)
        centroids[i] = (lo + hi) / 2.0
        extents[i] = hi - lo
    return centroids, extents, counts
