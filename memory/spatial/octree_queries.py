"""Queries (all vectorised): occupancy at points, nearest occupied voxels (k-NN), box
and radius queries, each at any coarser ``level`` (cells of ``voxel_size_m * 2**level``):
a coarse cell is the contiguous range of its children's sorted codes, so its value
(max log-odds, summed hits, latest stamp) comes from a ``reduceat`` over that range,
cached until the next write. Nothing is rebuilt from points.

Occupancy at points, k-NN, box and radius queries of ``SparseOctree`` (which composes
``OctreeQueries``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

import engram.memory.spatial.morton as morton
from engram.memory.spatial.voxels import (
    OctreeConfig,
    View,
    VoxelSet,
    expand,
    gather_ranges,
    range_end,
)

__all__ = ["OctreeQueries"]


_MAX_GATHER_CELLS = 512  # cells enumerated by a box query before going one level up
# k-NN batches at least this large go through a KD-tree (built once per map version)
KDTREE_MIN_QUERIES = 32
_NEIGHBOURS = np.stack(
    np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), axis=-1
).reshape(27, 3)


class OctreeQueries:
    """The read side of ``SparseOctree``: level views (cached until the next write)
    and queries. Reads the columns through ``_cols``."""

    config: OctreeConfig
    _cache: dict[tuple, Any]
    _cache_version: int
    _version: int

    if TYPE_CHECKING:  # defined by SparseOctree

        @property
        def _cols(self) -> dict[str, np.ndarray]: ...

    def _view(self, level: int, occupied_only: bool) -> View:
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
            base = View(c["codes"], c["log_odds"], c["hits"], c["last_seen_ns"], c["object_ids"])
        else:
            base = cache.get(("view", level, False)) or self._coarsen(level)
            cache[("view", level, False)] = base
        if occupied_only:
            m = base.log_odds > thr
            view = View(
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

    def _fresh_cache(self) -> dict[tuple, Any]:
        if self._cache_version != self._version:
            self._cache.clear()
            self._cache_version = self._version
        return self._cache

    def _coarsen(self, level: int) -> View:
        """Leaf columns -> cells at ``level``: max log-odds (a cell is occupied if any
        child is), summed hits, latest stamp, the object id of the most likely child."""
        c = self._cols
        if len(c["codes"]) == 0:
            return View(
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
        return View(coarse[starts], lo, hits, seen, obj.astype(np.int32))

    def _centers(self, view: View, level: int, idx: np.ndarray) -> np.ndarray:
        """Centres (len(idx), 3) of the view's cells ``idx`` (decoded on demand)."""
        return morton.cell_centers(view.codes[idx], self.config.voxel_size_m, level)

    def _voxelset(
        self,
        view: View,
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

    def _gather_box(self, view: View, level: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
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
        return gather_ranges(view.codes, cells, 3 * (gl - level))

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
        Batches of ``KDTREE_MIN_QUERIES`` or more go through a KD-tree over the occupied
        centres (cached until the next write). Fewer points: the search widens one octree
        level at a time: at level G the 27 cells around the query hold every centre within
        one cell edge, so a query is answered once k candidates lie that close.
        """
        pts = self._points_arg(points)
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        if not max_distance_m >= 0:
            raise ValueError(f"max_distance_m: must be >= 0, got {max_distance_m}")
        q = len(pts)
        dist = np.full((q, k), np.inf)
        out = np.full((q, k), -1, np.int64)
        view = self._view(level, occupied_only=True)
        nv = len(view.codes)
        if nv == 0 or q == 0:
            return dist, out
        if q >= KDTREE_MIN_QUERIES:
            return self._nearest_kdtree(view, level, pts, k, max_distance_m, dist, out)
        return self._nearest_octree(view, level, pts, k, max_distance_m, dist, out)

    def _nearest_kdtree(
        self,
        view: View,
        level: int,
        pts: np.ndarray,
        k: int,
        max_distance_m: float,
        dist: np.ndarray,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched k-NN through a KD-tree over the occupied centres, built on demand and
        kept until the next write (the octree walk below answers a few points without a
        build, but costs ~27 cell lookups per point and level, 50-200x a KD-tree on
        batches). scipy's KDTree (cKDTree) is used as is: a well-kept C++ tree that releases the GIL."""
        from scipy.spatial import KDTree  # cKDTree underneath (scipy >= 1.6)

        cache = self._fresh_cache()
        key = ("kdtree", level)
        tree = cache.get(key)
        if tree is None:
            centres = self._centers(view, level, np.arange(len(view.codes)))
            tree = KDTree(centres, balanced_tree=False, compact_nodes=False)
            cache[key] = tree
        bound = np.nextafter(max_distance_m, np.inf) if math.isfinite(max_distance_m) else np.inf
        d, i = tree.query(pts, k=k, distance_upper_bound=bound)
        d = np.asarray(d, np.float64).reshape(len(pts), k)
        i = np.asarray(i, np.int64).reshape(len(pts), k)
        found = i < len(view.codes)
        dist[found] = d[found]
        out[found] = i[found]
        return dist, out

    def _nearest_octree(
        self,
        view: View,
        level: int,
        pts: np.ndarray,
        k: int,
        max_distance_m: float,
        dist: np.ndarray,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k-NN by widening octree neighbourhoods (no build; for a few points)."""
        q = len(pts)
        nv = len(view.codes)
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
            hi = np.searchsorted(view.codes, range_end(codes, shift))
            counts = hi - lo
            cand = expand(lo, counts)
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
