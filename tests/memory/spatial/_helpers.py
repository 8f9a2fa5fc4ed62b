"""Test helpers: depth back-projection, analytic box/room depth rendering, percepts.

Kept here (not in perception/) so the spatial tests do not depend on another package.
"""

from __future__ import annotations

import numpy as np

from engram.runtime.messages import Percept

K_SAMPLE = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


def depth_to_points(depth: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
    """(H, W) float depth in metres (0/NaN/inf = no measurement) -> (N, 3) world points."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    z = depth.astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    x = (u[valid] - K[0, 2]) / K[0, 0] * z[valid]
    y = (v[valid] - K[1, 2]) / K[1, 1] * z[valid]
    cam = np.stack([x, y, z[valid]], axis=1)
    return cam @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """world_from_camera (OpenCV: +z forward, +y down) at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    t = np.eye(4)
    t[:3, 0], t[:3, 1], t[:3, 2], t[:3, 3] = x, y, z, eye
    return t


def intrinsics(width: int, height: int, fx: float) -> np.ndarray:
    return np.array([[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]])


def render_depth(
    K: np.ndarray,
    world_from_camera: np.ndarray,
    size: tuple[int, int],
    *,
    boxes: list[tuple[np.ndarray, np.ndarray]] = (),
    room: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast axis-aligned boxes (solid, seen from outside) and a room (box seen from
    inside) -> depth (H, W) float32 metres (0 = nothing hit), box index (H, W) int32
    (-1 = room or nothing)."""
    w, h = size
    v, u = np.mgrid[0:h, 0:w]
    dirs_cam = np.stack(
        [(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1
    )
    dirs = dirs_cam.reshape(-1, 3) @ world_from_camera[:3, :3].T
    o = world_from_camera[:3, 3]
    best = np.full(len(dirs), np.inf)
    which = np.full(len(dirs), -1, np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        for i, (lo, hi) in enumerate(boxes):
            t1, t2 = (np.asarray(lo) - o) * inv, (np.asarray(hi) - o) * inv
            tmin = np.nanmax(np.minimum(t1, t2), axis=1)
            tmax = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (tmax >= tmin) & (tmin > 0) & (tmin < best)
            best[hit] = tmin[hit]
            which[hit] = i
        if room is not None:
            lo, hi = room
            t1, t2 = (np.asarray(lo) - o) * inv, (np.asarray(hi) - o) * inv
            texit = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (texit > 0) & (texit < best)
            best[hit] = texit[hit]
            which[hit] = -1
    depth = np.where(np.isfinite(best), best, 0.0).reshape(h, w)  # z of dirs_cam is 1
    return depth.astype(np.float32), which.reshape(h, w)


def make_percept(
    *,
    stamp_ns: int,
    world_from_camera: np.ndarray,
    points: np.ndarray | None = None,
    point_object_ids: np.ndarray | None = None,
    objects: list[dict] = (),
    embedding: np.ndarray | None = None,
) -> Percept:
    """objects: dicts with id, label, centroid, extent, embedding (optional)."""
    k = len(objects)
    embs = [o.get("embedding") for o in objects]
    return Percept(
        stamp_ns=stamp_ns,
        world_from_camera=world_from_camera,
        embedding=embedding,
        object_ids=np.array([o["id"] for o in objects], np.int32),
        object_labels=[o["label"] for o in objects],
        object_confidences=np.ones(k, np.float32),
        object_boxes=np.zeros((k, 4), np.int32),
        object_centroids=np.array([o["centroid"] for o in objects], np.float32).reshape(k, 3),
        object_extents=np.array(
            [o.get("extent", (0.1, 0.1, 0.1)) for o in objects], np.float32
        ).reshape(k, 3),
        object_embeddings=np.array(embs, np.float32)
        if k and all(e is not None for e in embs)
        else None,
        points=None if points is None else np.asarray(points, np.float32),
        point_object_ids=None
        if point_object_ids is None
        else np.asarray(point_object_ids, np.int32),
    )


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def box_surface_points(lo, hi, spacing: float) -> np.ndarray:
    """Points on the six faces of the box [lo, hi], about ``spacing`` apart."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    pts = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        ga = np.arange(lo[a], hi[a] + 1e-9, spacing)
        gb = np.arange(lo[b], hi[b] + 1e-9, spacing)
        A, B = np.meshgrid(ga, gb, indexing="ij")
        for val in (lo[axis], hi[axis]):
            p = np.zeros((A.size, 3))
            p[:, axis], p[:, a], p[:, b] = val, A.ravel(), B.ravel()
            pts.append(p)
    return np.concatenate(pts)
