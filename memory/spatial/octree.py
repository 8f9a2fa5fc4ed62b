"""A sparse voxel octree keyed by Morton code, built for streaming depth frames.

Storage: sorted parallel columns per voxel (``engram.memory.spatial.voxels``).

A whole frame is inserted at once: points -> voxel codes -> sort-unique (one hit per
voxel per frame); rays from the camera origin to every distinct end voxel are
traversed exactly (every voxel they cross, found from their voxel-plane crossings) and
those voxels (minus this frame's end voxels) get a miss.
Updates are merged into the sorted columns with one ``searchsorted`` + ``np.insert``
per column; nothing loops over points in Python.

Hot paths (ray marking, the surface band, bitmap -> codes, merging updates) run as
compiled kernels without the GIL (``engram.memory.spatial.kernels``, numba) when numba is
there and ``ENGRAM_NUMBA`` is not 0; the numpy code beside them is the fallback and the
reference: both give the same voxels (``tests/memory/spatial/test_kernels.py``). With
the kernels in use, ``insert`` runs a whole frame in three compiled calls
(``engram.memory.spatial.fused``: ~0.55 of ~0.95 ms CPU per percept without the GIL,
against ~0.38 of ~1.33 ms for the per-stage path); ``SparseOctree.fused = False`` selects
the per-stage path, and ``tests/memory/spatial/test_fused.py`` checks all three give the
same voxels on the real RGB-D sample.

Queries: ``engram.memory.spatial.octree_queries``; columns, settings and results:
``engram.memory.spatial.voxels``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, cast

import numpy as np

import engram.memory.spatial.morton as morton
from engram.memory.spatial.octree_queries import OctreeQueries
from engram.memory.spatial.voxels import (
    COLUMNS,
    FLAG_DYNAMIC,
    InsertStats,
    OctreeConfig,
    empty_columns,
    merge_columns,
    unique_hits,
)

__all__ = ["SparseOctree"]

log = logging.getLogger(__name__)


_MAX_CELLS_PER_CHUNK = 1 << 20  # ray-crossing cells materialised at once
_NUDGE_VOXELS = 1e-3  # see ``_carve``: read a crossing's other indices this far past it
_MAX_BITMAP_CELLS = 1 << 25  # dedupe ray samples in a bitmap over boxes up to 32 MB


def _band_bitmap(hit_codes: np.ndarray, lo: np.ndarray, dims: np.ndarray, band: int) -> np.ndarray:
    """Flat bitmap over the carving box (``lo``, ``dims``; x fastest) of the cells within
    ``band`` voxels (Chebyshev) of a hit voxel: hits marked in a padded box, then a
    separable dilation (a cube is the product of three 1-D windows), then cropped."""
    idx = morton.decode(hit_codes) - (lo + morton.OFFSET)
    inside = np.all((idx >= -band) & (idx < dims + band), axis=1)
    idx = idx[inside] + band
    pd = dims + 2 * band
    grid = np.zeros((int(pd[2]), int(pd[1]), int(pd[0])), bool)
    grid[idx[:, 2], idx[:, 1], idx[:, 0]] = True
    for axis in range(3):
        for _ in range(band):
            src = grid.copy()
            lead = [slice(None)] * 3
            lag = [slice(None)] * 3
            lead[axis], lag[axis] = slice(1, None), slice(None, -1)
            grid[tuple(lead)] |= src[tuple(lag)]
            grid[tuple(lag)] |= src[tuple(lead)]
    b = band
    return grid[b:-b, b:-b, b:-b].ravel()


def _clear_band(
    bitmap: np.ndarray, hit_codes: np.ndarray, lo: np.ndarray, dims: np.ndarray, band: int
) -> int:
    """Clear, in the flat bitmap over the carving box (``lo``, ``dims``; x fastest), the
    cells within ``band`` voxels (Chebyshev) of a hit voxel; returns how many were set.
    The same cells as ``bitmap &= ~_band_bitmap(...)``, but it touches only the
    (2 band + 1)^3 cells around each hit instead of dilating the whole box."""
    idx = morton.decode(hit_codes) - (lo + morton.OFFSET)
    idx = idx[np.all((idx >= -band) & (idx < dims + band), axis=1)]
    if not len(idx):
        return 0
    r = np.arange(-band, band + 1)
    cube = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    cells = (idx[:, None, :] + cube[None]).reshape(-1, 3)
    cells = cells[np.all((cells >= 0) & (cells < dims), axis=1)]
    keys = cells[:, 0] + dims[0] * (cells[:, 1] + dims[1] * cells[:, 2])
    was_set = keys[bitmap[keys]]  # few: ray cells next to a surface (repeats possible)
    bitmap[was_set] = False
    return len(np.unique(was_set))


_KERNELS: list[Any] = []  # [the kernels module or None], filled on first use


def _kernels() -> Any:
    """The compiled kernels (``engram.memory.spatial.kernels``), or None: numba missing or
    ``ENGRAM_NUMBA=0`` (then the numpy paths of ``_carve``, which give the same voxels)."""
    if not _KERNELS:
        mod = None
        if os.environ.get("ENGRAM_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off"):
            try:  # numba takes ~1 s to import: only when a frame is carved
                import engram.memory.spatial.kernels as mod
            except ImportError:  # pragma: no cover - numba is a dependency
                mod = None
            except RuntimeError as exc:  # pragma: no cover - numba: no writable cache dir
                log.warning("spatial kernels not compiled (%s): numpy path", exc)
                mod = None
        _KERNELS.append(mod)
    return _KERNELS[0]


_FUSED: list[Any] = []  # [the fused-insert module or None], filled on first use


def _fused() -> Any:
    """``engram.memory.spatial.fused`` when the compiled kernels are in use, else None."""
    if _kernels() is None:
        return None
    if not _FUSED:
        try:
            import engram.memory.spatial.fused as mod
        except (ImportError, RuntimeError) as exc:  # numba: e.g. no writable cache dir
            log.warning("fused spatial insert not compiled (%s): per-stage path", exc)
            mod = None
        _FUSED.append(mod)
    return _FUSED[0]


def _near_codes(codes: np.ndarray, hit_codes: np.ndarray, band: int) -> np.ndarray:
    """(F,) codes -> (F,) bool: within ``band`` voxels (Chebyshev) of a sorted hit code
    (the slow path, for carving boxes too large for a bitmap)."""
    idx = morton.decode(codes)
    near = np.zeros(len(codes), bool)
    r = np.arange(-band, band + 1)
    for off in np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3):
        n = idx + off
        c = morton.encode(n[:, 0], n[:, 1], n[:, 2])
        pos = np.minimum(np.searchsorted(hit_codes, c), len(hit_codes) - 1)
        near |= hit_codes[pos] == c
    return near


class SparseOctree(OctreeQueries):
    """Sparse occupancy octree with per-voxel evidence; see the module docstring.

    ``insert`` takes whole frames of world points; queries take world points and a
    ``level`` (0 = leaves). Bad input raises ``ValueError`` naming the argument, and a
    rejected insert changes nothing.
    """

    # A frame in three compiled calls (``fused``) when numba is in use; False: the per-stage
    # path (numpy between the compiled kernels), kept as the reference (tests compare them)
    fused: bool = True

    def __init__(self, config: OctreeConfig | None = None) -> None:
        self.config = config or OctreeConfig()
        self.config.validate()
        self._main: dict[str, np.ndarray] = empty_columns()
        # New voxels of recent frames, sorted, disjoint from _main; merged into _main when
        # any reader asks for ``_cols`` or when it outgrows ``_delta_limit()``. Without it
        # every frame that adds a voxel would copy every column (O(map size)).
        self._delta: dict[str, np.ndarray] = empty_columns()
        self._version = 0
        self._cache: dict[tuple, Any] = {}  # derived views, valid for ``_cache_version``
        self._cache_version = -1
        self.dynamic_events = 0  # voxels flagged dynamic (confirmed occupied, then free) so far
        self.freed_events = 0  # voxels that flipped occupied -> free so far (noise included)
        self.frames = 0  # frames inserted
        self._scratch = np.zeros(0, bool)  # carving bitmap reused by ``fused`` (kept clear)

    @property
    def _cols(self) -> dict[str, np.ndarray]:
        """The sorted voxel columns (every reader goes through here: pending new voxels
        are merged in first)."""
        if len(self._delta["codes"]):
            self._main = merge_columns(self._main, self._delta)
            self._delta = empty_columns()
        return self._main

    @_cols.setter
    def _cols(self, cols: dict[str, np.ndarray]) -> None:
        self._main = cols
        self._delta = empty_columns()

    def _delta_limit(self) -> int:
        """Pending new voxels before they are merged into the main columns."""
        return max(8192, min(65536, len(self._main["codes"]) // 8))

    def __len__(self) -> int:
        """Stored voxels (occupied and free)."""
        return len(self._cols["codes"])

    @property
    def voxel_size_m(self) -> float:
        return self.config.voxel_size_m

    @property
    def version(self) -> int:
        """Increments on every change (caches key on it)."""
        return self._version

    @property
    def nbytes(self) -> int:
        """Bytes held by the voxel columns."""
        return int(sum(c.nbytes for c in self._cols.values()))

    @property
    def bytes_per_voxel(self) -> int:
        return int(sum(dt.itemsize for dt in COLUMNS.values()))

    def num_occupied(self) -> int:
        return int(np.count_nonzero(self._cols["log_odds"] > self.config.occupied_log_odds))

    def columns(self) -> dict[str, np.ndarray]:
        """The raw sorted columns (read-only views)."""
        out = {}
        for k, v in self._cols.items():
            view = v.view()
            view.flags.writeable = False
            out[k] = view
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to restore this octree exactly (arrays only)."""
        state = {f"octree_{k}": v.copy() for k, v in self._cols.items()}
        state["octree_counters"] = np.array(
            [self.dynamic_events, self.frames, self.freed_events], np.int64
        )
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        cols = {}
        for k, dt in COLUMNS.items():
            key = f"octree_{k}"
            if key not in state:
                raise ValueError(f"octree state: missing array {key!r}")
            arr = np.asarray(state[key])
            if arr.dtype != dt or arr.ndim != 1:
                raise ValueError(
                    f"octree state: {key} must be 1-D {dt}, got {arr.dtype} {arr.shape}"
                )
            cols[k] = arr.copy()
        n = len(cols["codes"])
        if any(len(v) != n for v in cols.values()):
            raise ValueError("octree state: columns differ in length")
        if n > 1 and not np.all(cols["codes"][1:] > cols["codes"][:-1]):
            raise ValueError("octree state: codes are not sorted and unique")
        counters = np.asarray(state.get("octree_counters", np.zeros(2, np.int64)))
        self._cols = cols
        self.dynamic_events, self.frames = int(counters[0]), int(counters[1])
        self.freed_events = int(counters[2]) if len(counters) > 2 else self.dynamic_events
        self._touch()

    def _touch(self) -> None:
        self._version += 1

    def insert(
        self,
        points: np.ndarray,
        *,
        origin: np.ndarray | None = None,
        stamp_ns: int = 0,
        object_ids: np.ndarray | None = None,
        hit_mask: np.ndarray | None = None,
        carve: bool | None = None,
    ) -> InsertStats:
        """Integrate one frame.

        points: (N, 3) world metres; rows with NaN/inf are dropped (counted in the stats).
        origin: (3,) camera centre in world; needed for carving and ``max_range_m``.
        object_ids: (N,) int object id per point (-1 none); a voxel keeps the largest id
        seen in the frame. hit_mask: (N,) bool, points that add a hit (the others only end
        a carving ray, e.g. dynamic objects kept out of the persistent map).
        carve: override ``config.carve`` for this frame.
        """
        cfg = self.config
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points: expected shape (N, 3), got {pts.shape}")
        if pts.dtype.kind not in "fiu":
            raise ValueError(f"points: expected a numeric array, got dtype {pts.dtype}")
        n_in = len(pts)
        if object_ids is not None:
            object_ids = np.asarray(object_ids)
            if object_ids.shape != (n_in,) or object_ids.dtype.kind not in "iu":
                raise ValueError(
                    f"object_ids: expected ({n_in},) integers, got {object_ids.dtype} {object_ids.shape}"
                )
            if object_ids.dtype.itemsize > 4 and n_in:
                info = np.iinfo(np.int32)
                if object_ids.min() < info.min or object_ids.max() > info.max:
                    raise ValueError("object_ids: values must fit in int32")
        if hit_mask is not None:
            hit_mask = np.asarray(hit_mask)
            if hit_mask.shape != (n_in,) or hit_mask.dtype != bool:
                raise ValueError(
                    f"hit_mask: expected ({n_in},) bool, got {hit_mask.dtype} {hit_mask.shape}"
                )
        o = None
        if origin is not None:
            o = np.asarray(origin, dtype=np.float64)
            if o.shape != (3,) or not np.all(np.isfinite(o)):
                raise ValueError(
                    f"origin: expected a finite (3,) point, got {np.asarray(origin)!r}"
                )
        if (
            isinstance(stamp_ns, bool)
            or not isinstance(stamp_ns, (int, np.integer))
            or stamp_ns < 0
        ):
            raise ValueError(f"stamp_ns: expected a non-negative int, got {stamp_ns!r}")
        do_carve = cfg.carve if carve is None else bool(carve)

        if self.fused and (fused := _fused()) is not None:
            done = self._insert_fused(fused, pts, o, int(stamp_ns), object_ids, hit_mask, do_carve)
            if done is not None:
                return done
        pts = pts.astype(np.float64, copy=False)
        finite = np.isfinite(pts).all(axis=1)
        stats = InsertStats(points_in=n_in)
        if not finite.all():
            stats.points_dropped = int(n_in - finite.sum())
            pts = pts[finite]
            object_ids = object_ids[finite] if object_ids is not None else None
            hit_mask = hit_mask[finite] if hit_mask is not None else None
        if len(pts) == 0:
            return stats  # nothing seen: no change

        # Everything below either raises before mutating or cannot fail.
        if o is not None and (cfg.max_range_m > 0 or do_carve):
            offs = pts - o
            rng = np.sqrt(np.einsum("ij,ij->i", offs, offs))
        else:
            offs = rng = None
        hit_sel = np.ones(len(pts), bool) if hit_mask is None else hit_mask.copy()
        ends = pts
        if rng is not None and cfg.max_range_m > 0:
            far = rng > cfg.max_range_m
            if far.any():
                hit_sel &= ~far
                scale = np.where(far, cfg.max_range_m / np.maximum(rng, 1e-12), 1.0)
                ends = cast(np.ndarray, o) + cast(np.ndarray, offs) * scale[:, None]
        end_idx = morton.points_to_index(ends, cfg.voxel_size_m)  # may raise: before mutation
        end_codes = morton.encode(end_idx[:, 0], end_idx[:, 1], end_idx[:, 2])

        hit_codes, hit_obj = unique_hits(
            end_codes[hit_sel], None if object_ids is None else object_ids[hit_sel]
        )
        free_codes = np.zeros(0, np.int64)
        if do_carve and o is not None:
            morton.points_to_index(o[None], cfg.voxel_size_m)  # origin in range
            all_end, _ = morton.sorted_unique(end_codes)
            free_codes, stats.rays, stats.ray_cells, stats.banded_voxels = self._carve(
                o, all_end, hit_codes
            )
        stats.hit_voxels = len(hit_codes)
        stats.free_voxels = len(free_codes)
        new, freed, flagged = self._apply(hit_codes, hit_obj, free_codes, int(stamp_ns))
        stats.new_voxels, stats.freed_voxels, stats.dynamic_voxels = new, freed, flagged
        self.frames += 1
        return stats

    def _insert_fused(
        self,
        fused: Any,
        points: np.ndarray,
        origin: np.ndarray | None,
        stamp_ns: int,
        object_ids: np.ndarray | None,
        hit_mask: np.ndarray | None,
        do_carve: bool,
    ) -> InsertStats | None:
        """The rest of ``insert`` as one compiled call without the GIL
        (``engram.memory.spatial.fused``): the same voxels, counters and errors. None
        when the carving box is too large for a bitmap (nothing changed: the numpy path
        takes the frame)."""
        cfg = self.config
        n = len(points)
        f32 = tuple(
            np.float32(v)
            for v in (cfg.hit_log_odds, cfg.miss_log_odds, cfg.occupied_log_odds,
                      cfg.min_log_odds, cfg.max_log_odds)
        )  # fmt: skip
        pts = np.ascontiguousarray(points, dtype=np.float64)
        obj = (
            np.full(n, -1, np.int32)
            if object_ids is None
            else np.ascontiguousarray(object_ids, dtype=np.int32)
        )
        hm = np.ones(n, bool) if hit_mask is None else np.ascontiguousarray(hit_mask)
        status, st, main, delta, self._scratch = fused.insert_frame(
            pts, obj, hm, np.zeros(3) if origin is None else origin, origin is not None,
            do_carve, float(cfg.voxel_size_m), 1.0 / cfg.voxel_size_m, float(cfg.max_range_m),
            int(cfg.carve_level), cfg.carve_margin_voxels * cfg.voxel_size_m,
            float(cfg.carve_margin_depth_sq_per_m), int(cfg.surface_band_voxels),
            f32, (np.float32(cfg.miss_weight_hits),
            np.float32(cfg.min_miss_weight)), int(cfg.dynamic_min_hits), np.uint8(FLAG_DYNAMIC),
            stamp_ns, tuple(self._main[k] for k in COLUMNS),
            tuple(self._delta[k] for k in COLUMNS), self._delta_limit(), _NUDGE_VOXELS,
            _MAX_BITMAP_CELLS, self._scratch,
        )  # fmt: skip
        if status == fused.TOO_LARGE:
            return None
        if status in (fused.OUT_OF_RANGE, fused.ORIGIN_OUT_OF_RANGE):  # as points_to_index
            bound = morton.OFFSET * cfg.voxel_size_m
            raise ValueError(f"points: coordinates outside the map's range of +-{bound:.0f} m")
        stats = InsertStats(points_in=n, points_dropped=int(st[fused.S_DROPPED]))
        if status == fused.EMPTY:
            return stats
        stats.hit_voxels, stats.free_voxels = int(st[fused.S_HIT]), int(st[fused.S_FREE])
        stats.rays, stats.ray_cells = int(st[fused.S_RAYS]), int(st[fused.S_CELLS])
        stats.banded_voxels, stats.new_voxels = int(st[fused.S_BANDED]), int(st[fused.S_NEW])
        stats.freed_voxels = int(st[fused.S_FREED])
        stats.dynamic_voxels = int(st[fused.S_FLAGGED])
        if st[fused.S_CHANGED]:
            self._main = dict(zip(COLUMNS, main))
            self._delta = dict(zip(COLUMNS, delta))
            self.dynamic_events += stats.dynamic_voxels
            self.freed_events += stats.freed_voxels
            self._touch()
        self.frames += 1
        return stats

    def _carve(
        self, origin: np.ndarray, end_codes: np.ndarray, hit_codes: np.ndarray | None = None
    ) -> tuple[np.ndarray, int, int, int]:
        """Sorted unique end voxel codes -> sorted unique codes of the voxels the rays
        traverse (excluding every end voxel and, with ``surface_band_voxels``, every voxel
        that close to one of ``hit_codes``), number of rays, number of traversed cells,
        number of traversed voxels spared by the surface band.

        Each ray stops ``carve_margin_voxels`` voxel edges plus
        ``carve_margin_depth_sq_per_m * range**2`` before its end voxel's centre.

        Exact traversal (like a 3D DDA, without a loop over steps): a ray enters a new
        voxel exactly where it crosses a voxel plane. For each axis the crossings of
        every ray are generated at once as a dense (rays, crossings) grid, with the
        crossed axis index known exactly and the other two from the crossing point.
        The entered voxels are deduplicated in a bitmap over the frame's bounding box
        (a sort when the box is too large for one). No Python loop over rays or steps.
        """
        cfg = self.config
        vs = cfg.voxel_size_m
        lvl = cfg.carve_level
        if lvl > 0:
            coarse = end_codes >> np.int64(3 * lvl)
            first = np.empty(len(coarse), bool)
            first[0] = True
            np.not_equal(coarse[1:], coarse[:-1], out=first[1:])
            targets = end_codes[first]
        else:
            targets = end_codes
        ends = morton.cell_centers(targets, vs)
        vec = ends - origin
        length = np.sqrt(np.einsum("ij,ij->i", vec, vec))
        # traverse up to the margin before each end voxel's centre
        margin = cfg.carve_margin_voxels * vs + cfg.carve_margin_depth_sq_per_m * length**2
        frac = 1.0 - margin / np.maximum(length, 1e-12)
        rays = np.flatnonzero(frac > 0)
        if len(rays) == 0:
            return np.zeros(0, np.int64), len(targets), 0, 0
        # voxel units, relative to the bounding box (one spare voxel on each side)
        start_idx = np.floor(origin / vs).astype(np.int64)
        stop_pts = origin + vec[rays] * frac[rays, None]
        box_pts = np.floor(np.vstack([stop_pts, origin[None]]) / vs).astype(np.int64)
        lo = box_pts.min(axis=0) - 1
        dims = box_pts.max(axis=0) + 2 - lo
        o_rel = origin / vs - lo  # (3,) float64
        v_rel = vec[rays] * frac[rays, None] / vs  # (R, 3): origin -> stop point
        i0 = start_idx - lo  # (3,) origin voxel
        i1 = np.floor(o_rel + v_rel).astype(np.int64)  # (R, 3) voxel at the stop point
        n_cells = int(np.prod(dims))
        use_bitmap = n_cells <= _MAX_BITMAP_CELLS
        bitmap = np.zeros(n_cells if use_bitmap else 0, bool)  # used only with use_bitmap
        parts: list[np.ndarray] = []
        strides = (1, int(dims[0]), int(dims[0] * dims[1]))
        f32 = np.float32

        def emit(k: list[np.ndarray]) -> None:
            """Mark cells with per-axis int32 indices k[0], k[1], k[2] (same shape)."""
            if use_bitmap:
                key = k[0]
                key += k[1] * np.int32(strides[1])
                key += k[2] * np.int32(strides[2])
                bitmap[key.ravel()] = True
            else:
                key = np.zeros(k[0].shape, np.int64)
                for axis, shift in ((0, 0), (1, 21), (2, 42)):
                    key |= (k[axis].astype(np.int64) + lo[axis] + morton.OFFSET) << np.int64(shift)
                parts.append(morton.sorted_unique(key.ravel())[0])

        kernels = _kernels() if use_bitmap else None
        if kernels is not None:  # cells set, each once: the compiled path visits only them
            room = 1 + int(np.abs(i1 - i0).sum())  # one per crossing, plus the camera's
            touched = np.empty(room, np.int64)
            n_touched = 1
            touched[0] = int(i0[0] + i0[1] * strides[1] + i0[2] * strides[2])
            bitmap[touched[0]] = True  # the camera's voxel
        else:
            emit([np.array([i0[k]], np.int32) for k in range(3)])  # the camera's voxel
        total = 1
        if kernels is not None:  # the same cells: per-ray set-up and marking compiled, no GIL
            n_touched, crossings = kernels.carve_rays(
                bitmap,
                touched,
                n_touched,
                i0,
                i1,
                v_rel,
                o_rel,
                strides[1],
                strides[2],
                _NUDGE_VOXELS,
            )
            total += crossings
        for a in range(3 if kernels is None else 0):  # the numpy path (ENGRAM_NUMBA=0)
            b, c = (a + 1) % 3, (a + 2) % 3
            count = np.abs(i1[:, a] - i0[a])
            sel = np.flatnonzero(count)
            if not len(sel):
                continue
            sel = sel[np.argsort(count[sel], kind="stable")]  # similar counts share a chunk
            cnt = count[sel]
            total += int(cnt.sum())
            va, vb, vc = v_rel[sel, a], v_rel[sel, b], v_rel[sel, c]
            sgn = np.sign(va)
            # plane p (axis a) is crossed where axis b is o_b + (p - o_a) * v_b / v_a
            bb, bc = (vb / va).astype(f32), (vc / va).astype(f32)
            ob, oc, oa = f32(o_rel[b]), f32(o_rel[c]), f32(o_rel[a])
            first = (i0[a] + (sgn > 0)).astype(f32)  # first plane crossed
            # The other two indices are read just past the crossing (at most
            # _NUDGE_VOXELS further along the ray on any axis), so a ray that crosses
            # several planes at once (a camera on a voxel corner) enters the right cell.
            nudge = (sgn * _NUDGE_VOXELS * np.abs(va) / np.abs(v_rel[sel]).max(axis=1)).astype(f32)
            first_b = first + nudge - oa  # plane offset from the origin, nudged
            shift = -(sgn < 0).astype(np.int32)  # entered voxel = plane - 1 going down
            sgn = sgn.astype(f32)
            start = 0
            while start < len(sel):
                stop = min(len(sel), start + max(1, _MAX_CELLS_PER_CHUNK // int(cnt[-1])))
                stop = min(len(sel), start + max(1, _MAX_CELLS_PER_CHUNK // int(cnt[stop - 1])))
                r = slice(start, stop)
                j_max = int(cnt[stop - 1])
                # crossing j of a ray; past its last crossing a ray repeats it (harmless)
                j = np.minimum(
                    np.arange(j_max, dtype=f32)[None, :], (cnt[r] - 1).astype(f32)[:, None]
                )
                plane = j
                plane *= sgn[r, None]
                ka = plane.astype(np.int32)
                ka += (first[r] + shift[r]).astype(np.int32)[:, None]
                plane += first_b[r, None]
                kb = plane * bb[r, None]
                kb += ob
                kb = np.floor(kb, out=kb).astype(np.int32)
                kc = plane * bc[r, None]
                kc += oc
                kc = np.floor(kc, out=kc).astype(np.int32)
                k = [ka, kb, kc] if a == 0 else ([kc, ka, kb] if a == 1 else [kb, kc, ka])
                emit(k)
                start = stop
        band = cfg.surface_band_voxels if hit_codes is not None and len(hit_codes) else 0
        banded = 0
        if kernels is not None:  # band, bitmap -> sorted codes: compiled, without the GIL
            hit_idx = (
                morton.decode(cast(np.ndarray, hit_codes)) - (lo + morton.OFFSET)
                if band
                else np.zeros((0, 3), np.int64)
            )
            codes, banded = kernels.band_and_codes(
                bitmap,
                touched[:n_touched],
                dims.astype(np.int64),
                (lo + morton.OFFSET).astype(np.int64),
                hit_idx,
                band,
            )
        elif use_bitmap:
            if band:
                banded = _clear_band(bitmap, cast(np.ndarray, hit_codes), lo, dims, band)
            flat = np.flatnonzero(bitmap)
            ix = flat % dims[0]
            rest = flat // dims[0]
            iy = rest % dims[1]
            iz = rest // dims[1]
            off = lo + morton.OFFSET
            codes = morton.encode(ix + off[0], iy + off[1], iz + off[2])
        else:
            keys = parts[0] if len(parts) == 1 else morton.sorted_unique(np.concatenate(parts))[0]
            m21 = np.int64((1 << 21) - 1)
            codes = morton.encode(keys & m21, (keys >> 21) & m21, (keys >> 42) & m21)
        codes.sort()
        # Voxels where a ray of this frame ends are not free.
        pos = np.searchsorted(end_codes, codes)
        pos[pos == len(end_codes)] = 0
        keep = end_codes[pos] != codes
        codes = codes[keep]
        if band and not use_bitmap:
            near = _near_codes(codes, cast(np.ndarray, hit_codes), band)
            banded = int(near.sum())
            codes = codes[~near]
        return codes, len(targets), total, banded

    def _apply(
        self, hit_codes: np.ndarray, hit_obj: np.ndarray, free_codes: np.ndarray, stamp_ns: int
    ) -> tuple[int, int, int]:
        """Merge one frame's hits and misses into the sorted columns. Returns (new,
        freed, flagged dynamic). A miss on a voxel with h hits weighs
        max(min_miss_weight, n / (n + h)), n = ``miss_weight_hits`` (0: full weight)."""
        cfg = self.config
        n_hit = len(hit_codes)
        upd = np.concatenate([hit_codes, free_codes])
        if len(upd) == 0:
            return 0, 0, 0
        is_hit = np.zeros(len(upd), bool)
        is_hit[:n_hit] = True
        obj = np.full(len(upd), -1, np.int32)
        obj[:n_hit] = hit_obj
        if n_hit and len(free_codes):
            order = np.argsort(upd, kind="stable")
            upd, is_hit, obj = upd[order], is_hit[order], obj[order]
        delta = np.where(is_hit, np.float32(cfg.hit_log_odds), np.float32(cfg.miss_log_odds))
        thr = np.float32(cfg.occupied_log_odds)
        lo, hi = np.float32(cfg.min_log_odds), np.float32(cfg.max_log_odds)
        freed = flagged = 0
        rest = np.ones(len(upd), bool)  # not yet found in a column set
        kernels = _kernels()
        for cols in (self._main, self._delta):  # a code is in at most one of them
            codes = cols["codes"]
            if not len(codes) or not rest.any():
                continue
            if kernels is not None:  # the same updates, one compiled loop without the GIL
                f, g = kernels.apply_updates(
                    codes,
                    cols["log_odds"],
                    cols["hits"],
                    cols["last_seen_ns"],
                    cols["object_ids"],
                    cols["flags"],
                    upd,
                    is_hit,
                    obj,
                    delta,
                    rest,
                    stamp_ns,
                    thr,
                    lo,
                    hi,
                    np.float32(cfg.miss_weight_hits),
                    np.float32(cfg.min_miss_weight),
                    int(cfg.dynamic_min_hits),
                    np.uint8(FLAG_DYNAMIC),
                )
                freed += f
                flagged += g
                continue
            pos = np.searchsorted(codes, upd)
            exists = rest & (codes[np.minimum(pos, len(codes) - 1)] == upd)
            if not exists.any():
                continue
            rest &= ~exists
            ei = pos[exists]
            old = cols["log_odds"][ei]
            eh = is_hit[exists]
            d = delta[exists]
            if cfg.miss_weight_hits > 0 and not eh.all():
                em = ~eh
                n_w = np.float32(cfg.miss_weight_hits)
                h = cols["hits"][ei[em]].astype(np.float32)
                d[em] *= np.maximum(np.float32(cfg.min_miss_weight), n_w / (n_w + h))
            new = np.clip(old + d, lo, hi)
            flipped = (old > thr) & (new <= thr)
            n_flipped = int(flipped.sum())
            freed += n_flipped
            cols["log_odds"][ei] = new
            cols["hits"][ei[eh]] += np.uint32(1)
            cols["last_seen_ns"][ei] = stamp_ns
            eo = obj[exists]
            set_obj = eh & (eo >= 0)
            cols["object_ids"][ei[set_obj]] = eo[set_obj]
            if n_flipped:
                fi = ei[flipped]
                confirmed = fi[cols["hits"][fi] >= np.uint32(cfg.dynamic_min_hits)]
                cols["flags"][confirmed] |= FLAG_DYNAMIC
                flagged += len(confirmed)
                cols["object_ids"][fi] = -1
        n_new = int(rest.sum())
        if n_new:
            fresh = {
                "codes": upd[rest],
                "log_odds": np.clip(delta[rest], lo, hi),
                "hits": is_hit[rest].astype(np.uint32),
                "last_seen_ns": np.full(n_new, stamp_ns, np.int64),
                "object_ids": obj[rest],
                "flags": np.zeros(n_new, np.uint8),
            }
            self._delta = merge_columns(self._delta, fresh)
            if len(self._delta["codes"]) > self._delta_limit():
                self._main = merge_columns(self._main, self._delta)
                self._delta = empty_columns()
        self.dynamic_events += flagged
        self.freed_events += freed
        self._touch()
        return n_new, freed, flagged

    def remove_object(self, object_id: int, *, keep_codes: np.ndarray | None = None) -> int:
        """Delete the voxels labelled ``object_id`` (except ``keep_codes``, sorted leaf codes).
        Used when an object moved or turned out to be dynamic. Returns how many."""
        mask = self._cols["object_ids"] == np.int32(object_id)
        if keep_codes is not None and len(keep_codes) and mask.any():
            idx = np.flatnonzero(mask)
            pos = np.searchsorted(keep_codes, self._cols["codes"][idx])
            pos[pos == len(keep_codes)] = 0
            mask[idx[keep_codes[pos] == self._cols["codes"][idx]]] = False
        n = int(mask.sum())
        if n:
            self._keep(~mask)
        return n

    def prune(self, max_voxels: int) -> int:
        """Keep at most ``max_voxels``: drop the least recently seen free voxels first,
        then the least recently seen occupied ones. Returns how many were dropped."""
        n = len(self)
        if n <= max_voxels:
            return 0
        occ = self._cols["log_odds"] > self.config.occupied_log_odds
        # sort key: free before occupied, then oldest first
        order = np.lexsort((self._cols["last_seen_ns"], occ))
        drop = np.zeros(n, bool)
        drop[order[: n - max_voxels]] = True
        self._keep(~drop)
        return n - max_voxels

    def _keep(self, mask: np.ndarray) -> None:
        for k in self._cols:
            self._cols[k] = self._cols[k][mask]
        self._touch()

    def remove_objects(self, object_ids: list[int] | np.ndarray) -> int:
        """Delete every voxel labelled with one of ``object_ids`` (objects that moved or
        turned out to be dynamic). Returns how many."""
        ids = np.asarray(object_ids, np.int32)
        if not len(ids):
            return 0
        mask = np.isin(self._cols["object_ids"], ids)
        n = int(mask.sum())
        if n:
            self._keep(~mask)
        return n
