"""The sparse octree's data: its voxel columns, settings and results, and the array
helpers over sorted Morton codes (``engram.memory.spatial.octree`` uses them).

Storage is a set of parallel columns sorted by leaf Morton code (see ``morton.py``):

==============  ========  ===================================================
column          dtype     meaning
==============  ========  ===================================================
codes           int64     leaf Morton code (sorted, unique)
log_odds        float32   occupancy log-odds, clamped (OctoMap update rule)
hits            uint32    frames in which a point ended in the voxel
last_seen_ns    int64     stamp of the last frame that observed it (hit or miss)
object_ids      int32     last object id seen there (-1 none)
flags           uint8     ``FLAG_DYNAMIC``: was occupied, later seen free
==============  ========  ===================================================

29 bytes per stored voxel. Free voxels (carved by camera rays) are stored too, so
a query can tell *free* from *unknown*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import engram.memory.spatial.morton as morton

__all__ = [
    "COLUMNS",
    "FLAG_DYNAMIC",
    "InsertStats",
    "OctreeConfig",
    "View",
    "VoxelSet",
    "empty_columns",
    "expand",
    "gather_ranges",
    "merge_columns",
    "range_end",
    "unique_hits",
]


FLAG_DYNAMIC = np.uint8(1)  # voxel was occupied and later observed free

COLUMNS: dict[str, np.dtype] = {
    "codes": np.dtype(np.int64),
    "log_odds": np.dtype(np.float32),
    "hits": np.dtype(np.uint32),
    "last_seen_ns": np.dtype(np.int64),
    "object_ids": np.dtype(np.int32),
    "flags": np.dtype(np.uint8),
}


@dataclass
class OctreeConfig:
    """Resolution, occupancy model and free-space carving of a ``SparseOctree``."""

    voxel_size_m: float = 0.05  # edge of a leaf voxel, metres
    hit_log_odds: float = 0.85  # added when a point ends in a voxel (p = 0.7, OctoMap)
    miss_log_odds: float = -0.4  # added when a ray passes through a voxel (p = 0.4, OctoMap)
    min_log_odds: float = -2.0  # lower clamp (p = 0.12): free space can be re-occupied quickly
    max_log_odds: float = 3.5  # upper clamp (p = 0.97): static structure needs many misses
    occupied_log_odds: float = 0.0  # occupied above this, free at or below it (p = 0.5)
    carve: bool = True  # free-space carving along camera rays (needs the camera origin)
    carve_level: int = 0  # one ray per distinct end cell at this level (0 = every end voxel)
    # stop carving this many voxel edges before the end point (depth noise, grazing rays)
    carve_margin_voxels: float = 1.5
    max_range_m: float = 8.0  # points farther than this give no hit; rays carve up to it (0 = off)
    # extra carving margin growing with range squared, metres per metre^2 of range: structured
    # light / stereo depth noise grows as z^2 (Kinect: sigma ~ 0.0019 z^2), so at 4 m the rays
    # stop 6.4 cm earlier (0 = off, the previous model)
    carve_margin_depth_sq_per_m: float = 0.004
    # no miss for voxels within this many voxels (Chebyshev) of a voxel hit in the same
    # frame: grazing rays run inside the surface's voxels long before their own end (0 = off)
    surface_band_voxels: int = 1
    # a voxel with h hits takes misses weighted max(min_miss_weight, n / (n + h)) for
    # n = this: structure seen in many frames is not erased by a short run of misses
    # (0 = full weight, the previous model)
    miss_weight_hits: float = 4.0
    min_miss_weight: float = 0.1  # floor of that weight, so moved structure still clears
    # a voxel flipping occupied -> free is flagged dynamic only with at least this many hits
    # (a single-frame speckle that a later ray clears is noise, not motion)
    dynamic_min_hits: int = 2

    @classmethod
    def legacy(cls, **overrides: object) -> OctreeConfig:
        """The sensor model before issue 16 (plain OctoMap misses up to a fixed margin),
        kept for benchmarks and comparisons."""
        base: dict[str, object] = {
            "carve_margin_depth_sq_per_m": 0.0,
            "surface_band_voxels": 0,
            "miss_weight_hits": 0.0,
            "dynamic_min_hits": 1,
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not (self.voxel_size_m > 0 and math.isfinite(self.voxel_size_m)):
            raise ValueError(f"OctreeConfig.voxel_size_m must be > 0, got {self.voxel_size_m}")
        if not self.hit_log_odds > 0:
            raise ValueError(f"OctreeConfig.hit_log_odds must be > 0, got {self.hit_log_odds}")
        if not self.miss_log_odds < 0:
            raise ValueError(f"OctreeConfig.miss_log_odds must be < 0, got {self.miss_log_odds}")
        if not self.min_log_odds < self.occupied_log_odds < self.max_log_odds:
            raise ValueError("OctreeConfig: need min_log_odds < occupied_log_odds < max_log_odds")
        if not 0 <= self.carve_level < morton.MAX_LEVEL:
            raise ValueError(f"OctreeConfig.carve_level out of range: {self.carve_level}")
        if not self.max_range_m >= 0:
            raise ValueError("OctreeConfig.max_range_m must be >= 0")
        if not (self.carve_margin_depth_sq_per_m >= 0 and self.carve_margin_voxels >= 0):
            raise ValueError("OctreeConfig: carve margins must be >= 0")
        if not 0 <= self.surface_band_voxels <= 4:
            raise ValueError(
                f"OctreeConfig.surface_band_voxels must be in [0, 4], got {self.surface_band_voxels}"
            )
        if not self.miss_weight_hits >= 0:
            raise ValueError("OctreeConfig.miss_weight_hits must be >= 0")
        if not 0 < self.min_miss_weight <= 1:
            raise ValueError("OctreeConfig.min_miss_weight must be in (0, 1]")
        if self.dynamic_min_hits < 1:
            raise ValueError("OctreeConfig.dynamic_min_hits must be >= 1")


@dataclass
class InsertStats:
    """What one ``SparseOctree.insert`` did."""

    points_in: int = 0  # rows given
    points_dropped: int = 0  # rows with NaN/inf removed
    hit_voxels: int = 0  # distinct voxels that got a hit
    free_voxels: int = 0  # distinct voxels that got a miss
    new_voxels: int = 0  # voxels added to the map
    freed_voxels: int = 0  # voxels that flipped occupied -> free
    dynamic_voxels: int = 0  # of those, flagged dynamic (had >= dynamic_min_hits hits)
    banded_voxels: int = 0  # traversed voxels spared a miss by the surface band
    rays: int = 0  # rays cast for carving
    ray_cells: int = 0  # cells traversed by the rays (with repeats across rays)


@dataclass
class VoxelSet:
    """Voxels (or coarse cells) returned by a query; arrays of length V.

    codes (V,) int64 Morton codes at ``level``; centers (V, 3) float64 world metres;
    log_odds (V,) float32; hits (V,) uint32 observations; last_seen_ns (V,) int64;
    object_ids (V,) int32.
    """

    level: int
    codes: np.ndarray
    centers: np.ndarray
    log_odds: np.ndarray
    hits: np.ndarray
    last_seen_ns: np.ndarray
    object_ids: np.ndarray
    distances_m: np.ndarray | None = None  # (V,) for radius queries

    def __len__(self) -> int:
        return len(self.codes)


@dataclass
class View:
    """Columns at one level (sorted by code), optionally occupied cells only."""

    codes: np.ndarray
    log_odds: np.ndarray
    hits: np.ndarray
    last_seen_ns: np.ndarray
    object_ids: np.ndarray


def empty_columns() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, dt) for k, dt in COLUMNS.items()}


def merge_columns(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Two column sets with sorted, disjoint codes -> one sorted set (one shared plan)."""
    na, nb = len(a["codes"]), len(b["codes"])
    if not nb:
        return a
    if not na:
        return b
    # where each of b's codes lands among a's, then its row in the merged columns
    rows_b = np.searchsorted(a["codes"], b["codes"]) + np.arange(nb)
    from_a = np.ones(na + nb, bool)
    from_a[rows_b] = False
    out = {}
    for k in a:
        merged = np.empty(na + nb, a[k].dtype)
        merged[rows_b] = b[k]
        merged[from_a] = a[k]
        out[k] = merged
    return out


def range_end(codes: np.ndarray, shift: int) -> np.ndarray:
    """Exclusive end of the child range of each cell: (c + 1) << shift, saturating."""
    end = (codes + 1) << np.int64(shift)
    end[end < 0] = np.iinfo(np.int64).max
    return end


def expand(lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(lo[i], lo[i] + counts[i])`` for all i, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.cumsum(counts) - counts
    return np.repeat(lo - starts, counts) + np.arange(total)


def gather_ranges(codes: np.ndarray, cells: np.ndarray, shift: int) -> np.ndarray:
    lo = np.searchsorted(codes, cells << np.int64(shift))
    hi = np.searchsorted(codes, range_end(cells, shift))
    return expand(lo, hi - lo)


def unique_hits(codes: np.ndarray, object_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(N,) codes and optional (N,) object ids -> sorted unique codes (U,) and the
    largest object id per voxel (U,) int32 (-1 none)."""
    if object_ids is None:
        u, _ = morton.sorted_unique(codes)
        return u, np.full(len(u), -1, np.int32)
    if len(codes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    order = np.argsort(codes)
    s = codes[order]
    first = np.empty(len(s), bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    obj = np.maximum.reduceat(object_ids[order].astype(np.int32), starts)
    return s[starts], obj
