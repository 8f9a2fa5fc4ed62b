"""Support surfaces in a depth frame: world heights, the dominant horizontal planes, and
the cut that separates what stands on a plane from the furniture under it.

``world_heights`` and ``support_planes`` are what ``perception.objects`` removes as table
tops and floors (``ObjectsConfig.remove_support_planes``). A far table top is a thin band
of pixels, so removing it leaves the top's edge faces and the legs, and a thing standing
on the table joins them wherever its lowest pixels touch the top's edge in the image: a
brown teddy on a brown table was one proposal with the table's edge and legs (0.85 m
tall), dropped as furniture by the size limit, and remembered 10-25 s late or never on
the apartment's dev tours.

``cut_at_supports`` (``ObjectsConfig.support_cut_depth_m`` > 0): a region that reaches
above a support plane *and* below it, and is taller than ``max_object_size_m`` (so the
size limit would drop it whole), loses its pixels from ``support_plane_tol_m`` above the
plane to ``support_cut_depth_m`` below it (the top's thickness and edge faces). Its
planes: the frame's support planes, and its own most common 1 cm height when that holds
``support_cut_min_frac`` of its pixels (a far table top, too small a share of the frame
to be a support plane, is a quarter of the region it joined). What stood
on the plane becomes its own region and goes through every usual test (size, shape,
naming); the edges and legs below stay one region, dropped as before. A region the size
limit would keep is never cut, so no kept proposal changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cut_at_supports", "support_planes", "world_heights"]


def world_heights(
    z: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y, z) of every pixel of the depth grid ``z`` ((h, w, 3); every
    ``step``-th pixel of the image ``K`` describes) and its validity (h, w)."""
    h, w = z.shape
    valid = np.isfinite(z) & (z > 0)
    K = np.asarray(K, np.float64)
    pose = np.asarray(world_from_camera, np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) * step
    y = (v - K[1, 2]) / K[1, 1]
    x = ((u - K[0, 2]) - K[0, 1] * y) / K[0, 0]
    zz = np.where(valid, z, 0.0)
    cam = np.stack([x * zz, y * zz, zz], axis=-1)
    return cam @ pose[:3, :3].T + pose[:3, 3], valid


def support_planes(world: np.ndarray, valid: np.ndarray, config: Any) -> list[float]:
    """Heights of the dominant horizontal planes: 1 cm bins of world heights holding at
    least ``support_plane_min_frac`` of the valid pixels."""
    hv = world[..., 2][valid]
    bins = _bins(hv)
    counts = np.bincount(bins)
    return [
        float(np.median(hv[bins == b]))
        for b in np.flatnonzero(counts >= config.support_plane_min_frac * len(hv))
    ]


def cut_at_supports(
    edges: np.ndarray, world: np.ndarray, valid: np.ndarray, config: Any
) -> np.ndarray:
    """(h, w) bool edges -> the same with the cut bands of the regions (connected non-edge
    pixels) that span a support plane and are taller than ``max_object_size_m`` (module
    docstring); ``world`` (h, w, 3), ``valid`` (h, w) as from ``world_heights``."""
    from scipy import ndimage

    depth_m = config.support_cut_depth_m
    if depth_m <= 0 or config.max_object_size_m <= 0 or valid.sum() < 16:
        return edges
    regions, n = ndimage.label(~edges & valid)
    if n == 0:
        return edges
    height = np.where(valid, world[..., 2], 0.0)
    index = np.arange(1, n + 1)
    top = np.asarray(ndimage.maximum(height, regions, index))
    bottom = np.asarray(ndimage.minimum(height, regions, index))
    tall = np.flatnonzero(top - bottom > config.max_object_size_m) + 1
    if not len(tall):
        return edges
    frame_planes = support_planes(world, valid, config)
    tol = config.support_plane_tol_m
    out = edges.copy()
    for r in tall.tolist():
        mine = regions == r
        planes = [*frame_planes, *_local_plane(height[mine], config)]
        for plane in planes:
            if top[r - 1] > plane + tol and bottom[r - 1] < plane - depth_m:
                out |= mine & (height > plane - depth_m) & (height <= plane + tol)
    return out


def _local_plane(heights: np.ndarray, config: Any) -> list[float]:
    """[height] of the 1 cm bin holding at least ``support_cut_min_frac`` of one region's
    pixels (a table top too small in the frame to be a support plane of it), or []."""
    if config.support_cut_min_frac <= 0 or len(heights) == 0:
        return []
    bins = _bins(heights)
    counts = np.bincount(bins)
    best = int(counts.argmax())
    if counts[best] < config.support_cut_min_frac * len(heights):
        return []
    return [float(np.median(heights[bins == best]))]


def _bins(heights: np.ndarray) -> np.ndarray:
    """1 cm bin of each height, from the lowest one's floor (0, 1, ...)."""
    lo = float(np.floor(heights.min() * 100) / 100)
    return ((heights - lo) * 100).astype(np.int64)
