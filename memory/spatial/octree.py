"""A sparse voxel octree keyed by Morton code, built for streaming depth frames.

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

A whole frame is inserted at once: points -> voxel codes -> sort-unique (one hit per
voxel per frame); rays from the camera origin to every distinct end voxel are
traversed exactly (every voxel they cross, found from their voxel-plane crossings) and
those voxels (minus this frame's end voxels) get a miss.
Updates are merged into the sorted columns with one ``searchsorted`` + ``np.insert``
per column; nothing loops over points in Python.

Queries (all vectorised): occupancy at points, nearest occupied voxels (k-NN), box
and radius queries, each at any coarser ``level`` (cells of ``voxel_size_m * 2**level``):
a coarse cell is the contiguous range of its children's sorted codes, so its value
(max log-odds, summed hits, latest stamp) comes from a ``reduceat`` over that range,
cached until the next write. Nothing is rebuilt from points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engram.memory.spatial import morton

__all__ = ["FLAG_DYNAMIC", "InsertStats", "OctreeConfig", "SparseOctree", "VoxelSet"]

FLAG_DYNAMIC = np.uint8(1)  # voxel was occupied and later observed free

_COLUMNS: dict[str, np.dtype] = {
    "codes": np.dtype(np.int64),
    "log_odds": np.dtype(np.float32),
    "hits": np.dtype(np.uint32),
    "last_seen_ns": np.dtype(np.int64),
    "object_ids": np.dtype(np.int32),
    "flags": np.dtype(np.uint8),
}
_MAX_CELLS_PER_CHUNK = 1 << 20  # ray-crossing cells materialised at once
_NUDGE_VOXELS = 1e-3  # see ``_carve``: read a crossing's other indices this far past it
_MAX_BITMAP_CELLS = 1 << 25  # dedupe ray samples in a bitmap over boxes up to 32 MB
_MAX_GATHER_CELLS = 512  # cells enumerated by a box query before going one level up
_NEIGHBOURS = np.stack(
    np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), axis=-1
).reshape(27, 3)


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


@dataclass
class InsertStats:
    """What one ``SparseOctree.insert`` did."""

    points_in: int = 0  # rows given
    points_dropped: int = 0  # rows with NaN/inf removed
    hit_voxels: int = 0  # distinct voxels that got a hit
    free_voxels: int = 0  # distinct voxels that got a miss
    new_voxels: int = 0  # voxels added to the map
    freed_voxels: int = 0  # voxels that flipped occupied -> free (dynamic content)
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
class _View:
    """Columns at one level (sorted by code), optionally occupied cells only."""

    codes: np.ndarray
    log_odds: np.ndarray
    hits: np.ndarray
    last_seen_ns: np.ndarray
    object_ids: np.ndarray


class SparseOctree:
    """Sparse occupancy octree with per-voxel evidence; see the module docstring.

    ``insert`` takes whole frames of world points; queries take world points and a
    ``level`` (0 = leaves). Bad input raises ``ValueError`` naming the argument, and a
    rejected insert changes nothing.
    """

    def __init__(self, config: OctreeConfig | None = None) -> None:
        self.config = config or OctreeConfig()
        self.config.validate()
        self._main: dict[str, np.ndarray] = _empty_columns()
        # New voxels of recent frames, sorted, disjoint from _main; merged into _main when
        # any reader asks for ``_cols`` or when it outgrows ``_delta_limit()``. Without it
        # every frame that adds a voxel would copy every column (O(map size)).
        self._delta: dict[str, np.ndarray] = _empty_columns()
        self._version = 0
        self._cache: dict[tuple, object] = {}  # derived views, valid for ``_cache_version``
        self._cache_version = -1
        self.dynamic_events = 0  # voxels that flipped occupied -> free so far
        self.frames = 0  # frames inserted

    # ------------------------------------------------------------------ storage

    @property
    def _cols(self) -> dict[str, np.ndarray]:
        """The sorted voxel columns (every reader goes through here: pending new voxels
        are merged in first)."""
        if len(self._delta["codes"]):
            self._main = _merge_columns(self._main, self._delta)
            self._delta = _empty_columns()
        return self._main

    @_cols.setter
    def _cols(self, cols: dict[str, np.ndarray]) -> None:
        self._main = cols
        self._delta = _empty_columns()

    def _delta_limit(self) -> int:
        """Pending new voxels before they are merged into the main columns."""
        return max(8192, min(65536, len(self._main["codes"]) // 8))

    # ------------------------------------------------------------------ basics

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
        return int(sum(dt.itemsize for dt in _COLUMNS.values()))

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
        state["octree_counters"] = np.array([self.dynamic_events, self.frames], np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        cols = {}
        for k, dt in _COLUMNS.items():
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
        self._touch()

    def _touch(self) -> None:
        self._version += 1

    # ------------------------------------------------------------------ insert

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
                ends = o + offs * scale[:, None]
        end_idx = morton.points_to_index(ends, cfg.voxel_size_m)  # may raise: before mutation
        end_codes = morton.encode(end_idx[:, 0], end_idx[:, 1], end_idx[:, 2])

        hit_codes, hit_obj = _unique_hits(
            end_codes[hit_sel], None if object_ids is None else object_ids[hit_sel]
        )
        free_codes = np.zeros(0, np.int64)
        if do_carve and o is not None:
            morton.points_to_index(o[None], cfg.voxel_size_m)  # origin in range
            all_end, _ = morton.sorted_unique(end_codes)
            free_codes, stats.rays, stats.ray_cells = self._carve(o, all_end)
        stats.hit_voxels = len(hit_codes)
        stats.free_voxels = len(free_codes)
        new, freed = self._apply(hit_codes, hit_obj, free_codes, int(stamp_ns))
        stats.new_voxels, stats.freed_voxels = new, freed
        self.frames += 1
        return stats

    def _carve(self, origin: np.ndarray, end_codes: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Sorted unique end voxel codes -> sorted unique codes of the voxels the rays
        traverse (excluding every end voxel), number of rays, number of traversed cells.

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
        # traverse up to ``carve_margin_voxels`` before each end voxel's centre
        frac = 1.0 - cfg.carve_margin_voxels * vs / np.maximum(length, 1e-12)
        rays = np.flatnonzero(frac > 0)
        if len(rays) == 0:
            return np.zeros(0, np.int64), len(targets), 0
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
        bitmap = np.zeros(n_cells, bool) if use_bitmap else None
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

        emit([np.array([i0[k]], np.int32) for k in range(3)])  # the camera's voxel
        total = 1
        for a in range(3):
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
        if use_bitmap:
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
        return codes[keep], len(targets), total

    def _apply(
        self, hit_codes: np.ndarray, hit_obj: np.ndarray, free_codes: np.ndarray, stamp_ns: int
    ) -> tuple[int, int]:
        """Merge one frame's hits and misses into the sorted columns. Returns (new, freed)."""
        cfg = self.config
        n_hit = len(hit_codes)
        upd = np.concatenate([hit_codes, free_codes])
        if len(upd) == 0:
            return 0, 0
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
        freed = 0
        rest = np.ones(len(upd), bool)  # not yet found in a column set
        for cols in (self._main, self._delta):  # a code is in at most one of them
            codes = cols["codes"]
            if not len(codes) or not rest.any():
                continue
            pos = np.searchsorted(codes, upd)
            exists = rest & (codes[np.minimum(pos, len(codes) - 1)] == upd)
            if not exists.any():
                continue
            rest &= ~exists
            ei = pos[exists]
            old = cols["log_odds"][ei]
            new = np.clip(old + delta[exists], lo, hi)
            flipped = (old > thr) & (new <= thr)
            n_flipped = int(flipped.sum())
            freed += n_flipped
            cols["log_odds"][ei] = new
            eh = is_hit[exists]
            cols["hits"][ei[eh]] += np.uint32(1)
            cols["last_seen_ns"][ei] = stamp_ns
            eo = obj[exists]
            set_obj = eh & (eo >= 0)
            cols["object_ids"][ei[set_obj]] = eo[set_obj]
            if n_flipped:
                fi = ei[flipped]
                cols["flags"][fi] |= FLAG_DYNAMIC
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
            self._delta = _merge_columns(self._delta, fresh)
            if len(self._delta["codes"]) > self._delta_limit():
                self._main = _merge_columns(self._main, self._delta)
                self._delta = _empty_columns()
        self.dynamic_events += freed
        self._touch()
        return n_new, freed

    # ------------------------------------------------------------------ edits

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

    # ------------------------------------------------------------------ views

    def _view(self, level: int, occupied_only: bool) -> _View:
        if not 0 <= level < morton.MAX_LEVEL:
            raise ValueError(f"level: must be in [0, {morton.MAX_LEVEL}), got {level}")
        cache = self._fresh_cache()
        key = ("view", level, occupied_only)
        view = cache.get(key)
        if view is not None:
            return view
        thr = self.config.occupied_log_odds
        if level == 0:
            c = self._cols
            base = _View(c["codes"], c["log_odds"], c["hits"], c["last_seen_ns"], c["object_ids"])
        else:
            base = cache.get(("view", level, False)) or self._coarsen(level)
            cache[("view", level, False)] = base
        if occupied_only:
            m = base.log_odds > thr
            view = _View(
                base.codes[m],
                base.log_odds[m],
                base.hits[m],
                base.last_seen_ns[m],
                base.object_ids[m],
            )
        else:
            view = base
        cache[key] = view
        return view

    def _fresh_cache(self) -> dict[tuple, object]:
        if self._cache_version != self._version:
            self._cache.clear()
            self._cache_version = self._version
        return self._cache

    def _coarsen(self, level: int) -> _View:
        """Leaf columns -> cells at ``level``: max log-odds (a cell is occupied if any
        child is), summed hits, latest stamp, the object id of the most likely child."""
        c = self._cols
        if len(c["codes"]) == 0:
            return _View(
                *(
                    np.zeros(0, c[k].dtype)
                    for k in ("codes", "log_odds", "hits", "last_seen_ns", "object_ids")
                )
            )
        coarse = c["codes"] >> np.int64(3 * level)
        first = np.empty(len(coarse), bool)
        first[0] = True
        np.not_equal(coarse[1:], coarse[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        lo = np.maximum.reduceat(c["log_odds"], starts)
        hits = np.add.reduceat(c["hits"].astype(np.uint64), starts)
        hits = np.minimum(hits, np.iinfo(np.uint32).max).astype(np.uint32)
        seen = np.maximum.reduceat(c["last_seen_ns"], starts)
        obj = np.maximum.reduceat(
            np.where(c["log_odds"] > self.config.occupied_log_odds, c["object_ids"], -1), starts
        )
        return _View(coarse[starts], lo, hits, seen, obj.astype(np.int32))

    def _centers(self, view: _View, level: int, idx: np.ndarray) -> np.ndarray:
        """Centres (len(idx), 3) of the view's cells ``idx`` (decoded on demand)."""
        return morton.cell_centers(view.codes[idx], self.config.voxel_size_m, level)

    def _voxelset(
        self,
        view: _View,
        idx: np.ndarray,
        level: int,
        dist: np.ndarray | None = None,
        centers: np.ndarray | None = None,
    ) -> VoxelSet:
        return VoxelSet(
            level=level,
            codes=view.codes[idx],
            centers=self._centers(view, level, idx) if centers is None else centers,
            log_odds=view.log_odds[idx],
            hits=view.hits[idx],
            last_seen_ns=view.last_seen_ns[idx],
            object_ids=view.object_ids[idx],
            distances_m=dist,
        )

    # ------------------------------------------------------------------ queries

    def _points_arg(self, points: np.ndarray, name: str = "points") -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape == (3,):
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"{name}: expected shape (N, 3), got {np.asarray(points).shape}")
        if not np.isfinite(pts).all():
            raise ValueError(f"{name}: contains NaN or inf")
        return pts

    def codes_at(self, points: np.ndarray, level: int = 0) -> np.ndarray:
        """(N, 3) world points -> (N,) int64 cell codes at ``level``."""
        pts = self._points_arg(points)
        if len(pts) <= 4:  # a few points: plain Python is faster than 40 tiny numpy calls
            return np.array([self._code_of(p, level) for p in pts.tolist()], np.int64)
        idx = morton.points_to_index(pts, self.config.voxel_size_m)
        idx >>= level
        return morton.encode(idx[:, 0], idx[:, 1], idx[:, 2])

    def _code_of(self, point: list[float], level: int) -> int:
        inv = 1.0 / self.config.voxel_size_m
        ijk = [math.floor(c * inv) for c in point]
        if min(ijk) < -morton.OFFSET or max(ijk) >= morton.OFFSET - 1:
            bound = morton.OFFSET * self.config.voxel_size_m
            raise ValueError(f"points: coordinates outside the map's range of +-{bound:.0f} m")
        return morton.encode_int(*((v + morton.OFFSET) >> level for v in ijk))

    def log_odds_at(self, points: np.ndarray, *, level: int = 0) -> np.ndarray:
        """(N, 3) -> (N,) float32 log-odds of the cell containing each point; NaN = unknown."""
        view = self._view(level, occupied_only=False)
        codes = self.codes_at(points, level)
        out = np.full(len(codes), np.nan, np.float32)
        n = len(view.codes)
        if n:
            pos = np.searchsorted(view.codes, codes)
            pos[pos == n] = 0
            found = view.codes[pos] == codes
            out[found] = view.log_odds[pos[found]]
        return out

    def occupancy(self, points: np.ndarray, *, level: int = 0) -> np.ndarray:
        """(N, 3) -> (N,) int8: 1 occupied, 0 free, -1 unknown (never observed)."""
        lo = self.log_odds_at(points, level=level)
        out = (lo > self.config.occupied_log_odds).astype(np.int8)
        out[np.isnan(lo)] = -1
        return out

    def occupied(self, *, level: int = 0) -> VoxelSet:
        """Every occupied voxel (or coarse cell containing one) with its evidence."""
        view = self._view(level, occupied_only=True)
        return self._voxelset(view, np.arange(len(view.codes)), level)

    def voxels_of_object(self, object_id: int) -> VoxelSet:
        """Occupied leaf voxels last labelled ``object_id``."""
        view = self._view(0, occupied_only=True)
        return self._voxelset(view, np.flatnonzero(view.object_ids == np.int32(object_id)), 0)

    def object_voxel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Object ids (U,) int32 sorted and their numbers of occupied leaf voxels (U,)
        int64 (cached until the next change)."""
        cache = self._fresh_cache()
        cached = cache.get(("object_counts",))
        if cached is None:
            ids = self._view(0, occupied_only=True).object_ids
            ids = np.sort(ids[ids >= 0])
            u, starts = morton.sorted_unique(ids)
            cached = (u, np.diff(np.append(starts, len(ids))))
            cache[("object_counts",)] = cached
        return cached

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

    def _gather_box(self, view: _View, level: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Indices into ``view`` of cells whose Morton range overlaps the box
        [lo, hi] (world, (3,)); a superset, filtered exactly by the caller."""
        if len(view.codes) == 0:
            return np.zeros(0, np.int64)
        inv = 1.0 / self.config.voxel_size_m
        top = (1 << morton.BITS) - 2
        i0 = [min(max(math.floor(v * inv) + morton.OFFSET, 0), top) for v in lo.tolist()]
        i1 = [min(max(math.floor(v * inv) + morton.OFFSET, 0), top) for v in hi.tolist()]
        gl = level
        while True:
            n = math.prod((b >> gl) - (a >> gl) + 1 for a, b in zip(i0, i1))
            if n <= _MAX_GATHER_CELLS or gl >= morton.MAX_LEVEL - 1:
                break
            gl += 1
        axes = [np.arange(a >> gl, (b >> gl) + 1) for a, b in zip(i0, i1)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        cells = np.sort(morton.encode(grid[:, 0], grid[:, 1], grid[:, 2]))
        return _gather_ranges(view.codes, cells, 3 * (gl - level))

    def query_box(self, lo: np.ndarray, hi: np.ndarray, *, level: int = 0) -> VoxelSet:
        """Occupied cells at ``level`` whose centre lies in the box [lo, hi] (world (3,))."""
        lo = self._points_arg(lo, "lo")[0]
        hi = self._points_arg(hi, "hi")[0]
        if np.any(hi < lo):
            raise ValueError(f"box: hi {hi.tolist()} is below lo {lo.tolist()}")
        view = self._view(level, occupied_only=True)
        idx = self._gather_box(view, level, lo, hi)
        c = self._centers(view, level, idx)
        keep = np.all((c >= lo) & (c <= hi), axis=1)
        return self._voxelset(view, idx[keep], level, centers=c[keep])

    def query_radius(self, center: np.ndarray, radius_m: float, *, level: int = 0) -> VoxelSet:
        """Occupied cells at ``level`` whose centre is within ``radius_m`` of ``center``,
        nearest first (``distances_m`` filled)."""
        c0 = self._points_arg(center, "center")[0]
        if not (math.isfinite(radius_m) and radius_m >= 0):
            raise ValueError(f"radius_m: must be a finite number >= 0, got {radius_m}")
        view = self._view(level, occupied_only=True)
        idx = self._gather_box(view, level, c0 - radius_m, c0 + radius_m)
        c = self._centers(view, level, idx)
        d = np.sqrt(((c - c0) ** 2).sum(axis=1))
        keep = np.flatnonzero(d <= radius_m)
        keep = keep[np.argsort(d[keep], kind="stable")]
        return self._voxelset(view, idx[keep], level, d[keep], c[keep])

    def nearest_occupied(
        self, points: np.ndarray, *, k: int = 1, level: int = 0, max_distance_m: float = math.inf
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest occupied cell centres to each point.

        (Q, 3) -> distances (Q, k) float64 (inf where fewer than k within
        ``max_distance_m``), indices (Q, k) int64 into ``occupied(level=level)`` (-1 none).
        Search widens one octree level at a time: at level G the 27 cells around the
        query hold every centre within one cell edge, so a query is answered once k
        candidates lie that close.
        """
        pts = self._points_arg(points)
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        q = len(pts)
        dist = np.full((q, k), np.inf)
        out = np.full((q, k), -1, np.int64)
        view = self._view(level, occupied_only=True)
        nv = len(view.codes)
        if nv == 0 or q == 0:
            return dist, out
        vs = self.config.voxel_size_m
        idx_all = morton.points_to_index(pts, vs)
        remaining = np.arange(q)
        top = (1 << morton.BITS) - 1
        # start two levels up: 27 cells of 4 voxels hold few candidates and most
        # queries (obstacles within ~4 voxels) are answered in one round
        for gl in range(min(level + 2, morton.MAX_LEVEL - 1), morton.MAX_LEVEL):
            cell = vs * (1 << gl)
            qi = (idx_all[remaining] >> gl)[:, None, :] + _NEIGHBOURS[None]
            valid = np.all((qi >= 0) & (qi <= (top >> gl)), axis=2)
            rows = np.broadcast_to(np.arange(len(remaining))[:, None], valid.shape)[valid]
            qc = qi[valid]
            codes = morton.encode(qc[:, 0], qc[:, 1], qc[:, 2])
            shift = 3 * (gl - level)
            lo = np.searchsorted(view.codes, codes << np.int64(shift))
            hi = np.searchsorted(view.codes, _range_end(codes, shift))
            counts = hi - lo
            cand = _expand(lo, counts)
            owner = np.repeat(rows, counts)
            d = np.linalg.norm(self._centers(view, level, cand) - pts[remaining[owner]], axis=1)
            n_cand = np.bincount(owner, minlength=len(remaining))
            close = d <= cell
            n_close = np.bincount(owner[close], minlength=len(remaining))
            whole_map = n_cand == nv
            done = (n_close >= k) | whole_map | (cell > max_distance_m)
            if done.any():
                sel = done[owner] & (close | whole_map[owner])
                o_, d_, c_ = owner[sel], d[sel], cand[sel]
                order = np.lexsort((d_, o_))
                o_, d_, c_ = o_[order], d_[order], c_[order]
                starts = np.searchsorted(o_, o_)  # first index of each owner's run
                rank = np.arange(len(o_)) - starts
                take = (rank < k) & (d_ <= max_distance_m)
                rr = remaining[o_[take]]
                dist[rr, rank[take]] = d_[take]
                out[rr, rank[take]] = c_[take]
                remaining = remaining[~done]
            if len(remaining) == 0:
                break
        return dist, out


def _empty_columns() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, dt) for k, dt in _COLUMNS.items()}


def _merge_columns(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def _range_end(codes: np.ndarray, shift: int) -> np.ndarray:
    """Exclusive end of the child range of each cell: (c + 1) << shift, saturating."""
    end = (codes + 1) << np.int64(shift)
    end[end < 0] = np.iinfo(np.int64).max
    return end


def _expand(lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(lo[i], lo[i] + counts[i])`` for all i, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.cumsum(counts) - counts
    return np.repeat(lo - starts, counts) + np.arange(total)


def _gather_ranges(codes: np.ndarray, cells: np.ndarray, shift: int) -> np.ndarray:
    lo = np.searchsorted(codes, cells << np.int64(shift))
    hi = np.searchsorted(codes, _range_end(cells, shift))
    return _expand(lo, hi - lo)


def _unique_hits(codes: np.ndarray, object_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
