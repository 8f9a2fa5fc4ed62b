"""A frame in three compiled calls: ``SparseOctree.insert`` from points to merged columns.

``insert_frame`` does, in three numba calls without the GIL (numpy's sorts, which also
release the GIL, between them), what ``SparseOctree.insert`` does after its argument
checks: drop non-finite rows, clip rays to ``max_range_m``, points -> voxel codes (with
the same range check, before anything changes), one hit per voxel (largest object id),
free-space carving (``kernels.carve_rays`` and ``kernels.band_and_codes``), the log-odds
merge into the main and pending columns (``kernels.apply_updates``) and the merge of new
voxels. Before it, a frame took ~1.3 ms of CPU, of which only ~0.38 ms was in the
compiled kernels: the rest was some 60 short numpy calls and Python between them, each
holding the GIL, so the memory system's other lanes waited on the spatial write. Now
~0.55 of ~0.95 ms runs without the GIL (``bench/memory.py``: spatial write CPU row).

Every float operation is the one the numpy path does, in the same order
(``1.0 / voxel_size_m`` as a factor for points, ``/ voxel_size_m`` for the carving box,
``x*x + y*y + z*z`` for lengths, no fused multiply-add, no fast-math), so both give the
same voxels bit for bit (``tests/memory/spatial/test_fused.py`` compares them on the
real RGB-D sample). Boxes too large for a bitmap are left to the numpy path (status 3).

The carving bitmap is a scratch buffer kept by the octree between frames (up to 4 MB;
larger boxes get a fresh lazily-zeroed one per frame, as before): only the cells a frame
set are cleared afterwards, instead of zeroing a whole box per frame.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from engram.memory.spatial.kernels import (
    _compact,
    _encode,
    apply_updates,
    band_and_codes,
    carve_rays,
)

__all__ = ["EMPTY", "OK", "ORIGIN_OUT_OF_RANGE", "OUT_OF_RANGE", "TOO_LARGE", "insert_frame"]

OK, OUT_OF_RANGE, ORIGIN_OUT_OF_RANGE, TOO_LARGE, EMPTY, NEED_SCRATCH = 0, 1, 2, 3, 4, 5
_KEEP_SCRATCH_CELLS = 1 << 22  # bitmaps up to 4 MB are kept between frames
# stats vector: what ``InsertStats`` gets (besides points_in)
S_DROPPED, S_HIT, S_FREE, S_NEW, S_FREED, S_FLAGGED, S_BANDED, S_RAYS, S_CELLS, S_CHANGED = range(
    10
)

_OFFSET = 1 << 20  # morton.OFFSET
_LIMIT = 1 << 20  # morton._LIMIT


@numba.njit(nogil=True, cache=True)
def merge_sorted(  # pragma: no cover - compiled; ``voxels.merge_columns`` for 6 columns
    ac: np.ndarray,
    al: np.ndarray,
    ah: np.ndarray,
    at: np.ndarray,
    ao: np.ndarray,
    af: np.ndarray,
    bc: np.ndarray,
    bl: np.ndarray,
    bh: np.ndarray,
    bt: np.ndarray,
    bo: np.ndarray,
    bf: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two column sets (codes, log_odds, hits, last_seen_ns, object_ids, flags) with
    sorted, disjoint codes -> one sorted set (new arrays)."""
    na = ac.shape[0]
    nb = bc.shape[0]
    n = na + nb
    oc = np.empty(n, ac.dtype)
    ol = np.empty(n, al.dtype)
    oh = np.empty(n, ah.dtype)
    ot = np.empty(n, at.dtype)
    oo = np.empty(n, ao.dtype)
    of = np.empty(n, af.dtype)
    i = 0
    j = 0
    for k in range(n):
        if j >= nb or (i < na and ac[i] < bc[j]):
            oc[k], ol[k], oh[k], ot[k], oo[k], of[k] = ac[i], al[i], ah[i], at[i], ao[i], af[i]
            i += 1
        else:
            oc[k], ol[k], oh[k], ot[k], oo[k], of[k] = bc[j], bl[j], bh[j], bt[j], bo[j], bf[j]
            j += 1
    return oc, ol, oh, ot, oo, of


@numba.njit(nogil=True, cache=True)
def _carve(  # pragma: no cover - compiled; ``SparseOctree._carve`` with the bitmap path
    origin: np.ndarray,
    all_end: np.ndarray,
    hit_codes: np.ndarray,
    vs: float,
    carve_level: int,
    margin0: float,
    margin_sq: float,
    band_cfg: int,
    nudge: float,
    max_cells: int,
    scratch: np.ndarray,
) -> tuple[int, np.ndarray, int, int, int, np.ndarray]:
    """-> (status, unsorted traversed codes (end voxels not yet excluded), rays, ray
    cells, banded, scratch bitmap)."""
    ne = all_end.shape[0]
    if carve_level > 0:
        shift = np.int64(3 * carve_level)
        sel = np.empty(ne, np.bool_)
        for i in range(ne):
            sel[i] = i == 0 or (all_end[i] >> shift) != (all_end[i - 1] >> shift)
        targets = all_end[sel]
    else:
        targets = all_end
    nt = targets.shape[0]
    empty = np.zeros(0, np.int64)
    vec = np.empty((nt, 3), np.float64)
    frac = np.empty(nt, np.float64)
    nr = 0
    for t in range(nt):
        c = np.uint64(targets[t])
        for a in range(3):  # cell_centers at level 0: ((idx + 0.5) * 1.0 - OFFSET) * vs
            idx = np.float64(_compact(c >> np.uint64(a)))
            vec[t, a] = ((idx + 0.5) * 1.0 - _OFFSET) * vs - origin[a]
        length = math.sqrt(vec[t, 0] * vec[t, 0] + vec[t, 1] * vec[t, 1] + vec[t, 2] * vec[t, 2])
        margin = margin0 + margin_sq * (length * length)
        frac[t] = 1.0 - margin / max(length, 1e-12)
        if frac[t] > 0:
            nr += 1
    if nr == 0:
        return OK, empty, nt, 0, 0, scratch
    start_idx = np.empty(3, np.int64)
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for a in range(3):
        start_idx[a] = np.int64(np.floor(origin[a] / vs))
        lo[a] = start_idx[a]
        hi[a] = start_idx[a]
    w = np.empty((nr, 3), np.float64)  # vec * frac of each carving ray
    r = 0
    for t in range(nt):
        if frac[t] > 0:
            for a in range(3):
                w[r, a] = vec[t, a] * frac[t]
                b = np.int64(np.floor((origin[a] + w[r, a]) / vs))
                lo[a] = min(lo[a], b)
                hi[a] = max(hi[a], b)
            r += 1
    dims = np.empty(3, np.int64)
    for a in range(3):
        lo[a] -= 1
        dims[a] = hi[a] + 2 - lo[a]
    n_cells = dims[0] * dims[1] * dims[2]
    if n_cells > max_cells:
        return TOO_LARGE, empty, nt, 0, 0, scratch
    o_rel = np.empty(3, np.float64)
    i0 = np.empty(3, np.int64)
    for a in range(3):
        o_rel[a] = origin[a] / vs - np.float64(lo[a])
        i0[a] = start_idx[a] - lo[a]
    v_rel = np.empty((nr, 3), np.float64)
    i1 = np.empty((nr, 3), np.int64)
    room = 1
    for r in range(nr):
        for a in range(3):
            v_rel[r, a] = w[r, a] / vs
            i1[r, a] = np.int64(np.floor(o_rel[a] + v_rel[r, a]))
            room += abs(i1[r, a] - i0[a])
    if scratch.shape[0] < n_cells:  # the caller allocates (lazily zeroed pages) and retries
        return NEED_SCRATCH, empty, nt, n_cells, 0, scratch
    bitmap = scratch
    sy = dims[0]
    sz = dims[0] * dims[1]
    touched = np.empty(room, np.int64)
    touched[0] = i0[0] + i0[1] * sy + i0[2] * sz
    bitmap[touched[0]] = True  # the camera's voxel
    n_touched, crossings = carve_rays(bitmap, touched, 1, i0, i1, v_rel, o_rel, sy, sz, nudge)
    band = band_cfg if hit_codes.shape[0] > 0 else 0
    nh = hit_codes.shape[0] if band else 0
    hit_idx = np.empty((nh, 3), np.int64)
    for h in range(nh):
        c = np.uint64(hit_codes[h])
        for a in range(3):
            hit_idx[h, a] = _compact(c >> np.uint64(a)) - (lo[a] + _OFFSET)
    off = np.empty(3, np.int64)
    for a in range(3):
        off[a] = lo[a] + _OFFSET
    codes, banded = band_and_codes(bitmap, touched[:n_touched], dims, off, hit_idx, band)
    for i in range(n_touched):  # leave the scratch bitmap all clear for the next frame
        bitmap[touched[i]] = False
    return OK, codes, nt, 1 + crossings, banded, scratch  # unsorted


@numba.njit(nogil=True, cache=True)
def _frame_codes(  # pragma: no cover - compiled
    pts: np.ndarray,
    obj_ids: np.ndarray,
    hit_mask: np.ndarray,
    origin: np.ndarray,
    has_origin: bool,
    max_range: float,
    inv_vs: float,
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Points -> (status, dropped rows, end codes (F,), hit codes (H,) and their object ids
    (H,), unsorted, with repeats): finite rows only, rays clipped to ``max_range``."""
    n = pts.shape[0]
    keep = np.empty(n, np.bool_)
    nf = 0
    for i in range(n):
        keep[i] = math.isfinite(pts[i, 0]) and math.isfinite(pts[i, 1]) and math.isfinite(pts[i, 2])
        if keep[i]:
            nf += 1
    none = np.zeros(0, np.int64)
    if nf == 0:
        return EMPTY, n, none, none, np.zeros(0, np.int32)
    ends = np.empty((nf, 3), np.float64)
    obj = np.empty(nf, np.int32)
    sel = np.empty(nf, np.bool_)
    j = 0
    for i in range(n):
        if keep[i]:
            ends[j, 0], ends[j, 1], ends[j, 2] = pts[i, 0], pts[i, 1], pts[i, 2]
            obj[j] = obj_ids[i]
            sel[j] = hit_mask[i]
            j += 1
    if has_origin and max_range > 0:  # rays longer than max_range: no hit, carve up to it
        scale = np.ones(nf, np.float64)
        any_far = False
        for i in range(nf):
            dx = ends[i, 0] - origin[0]
            dy = ends[i, 1] - origin[1]
            dz = ends[i, 2] - origin[2]
            rng = math.sqrt(dx * dx + dy * dy + dz * dz)
            if rng > max_range:
                any_far = True
                sel[i] = False
                scale[i] = max_range / max(rng, 1e-12)
        if any_far:  # then every row is o + (p - o) * scale, as in the numpy path
            for i in range(nf):
                for a in range(3):
                    ends[i, a] = origin[a] + (ends[i, a] - origin[a]) * scale[i]
    end_codes = np.empty(nf, np.int64)
    imin = np.int64(0)
    imax = np.int64(0)
    for i in range(nf):
        x = np.int64(np.floor(ends[i, 0] * inv_vs))
        y = np.int64(np.floor(ends[i, 1] * inv_vs))
        z = np.int64(np.floor(ends[i, 2] * inv_vs))
        if i == 0:
            imin = min(x, y, z)
            imax = max(x, y, z)
        else:
            imin = min(imin, x, y, z)
            imax = max(imax, x, y, z)
        end_codes[i] = _encode(x + _OFFSET, y + _OFFSET, z + _OFFSET)
    if imin < -_LIMIT or imax >= _LIMIT - 1:
        return OUT_OF_RANGE, n - nf, none, none, np.zeros(0, np.int32)
    return OK, n - nf, end_codes, end_codes[sel], obj[sel]


@numba.njit(nogil=True, cache=True)
def _frame_carve(  # pragma: no cover - compiled
    hc: np.ndarray,
    ho: np.ndarray,
    order: np.ndarray,
    end_sorted: np.ndarray,
    origin: np.ndarray,
    do_carve: bool,
    vs: float,
    inv_vs: float,
    carve_level: int,
    margin0: float,
    margin_sq: float,
    band_cfg: int,
    nudge: float,
    max_cells: int,
    scratch: np.ndarray,
) -> tuple:
    """Hit codes sorted by ``order`` -> unique hit codes with the largest object id each;
    then (``do_carve``) the traversed voxels of the rays to the sorted end codes. Returns
    (status, hit codes, hit ids, unique end codes, unsorted traversed codes, rays, ray
    cells, banded, scratch)."""
    nu = 0
    for k in range(hc.shape[0]):
        if k == 0 or hc[order[k]] != hc[order[k - 1]]:
            nu += 1
    hit_codes = np.empty(nu, np.int64)
    hit_obj = np.empty(nu, np.int32)
    u = -1
    for k in range(hc.shape[0]):
        c = hc[order[k]]
        if k == 0 or c != hc[order[k - 1]]:
            u += 1
            hit_codes[u] = c
            hit_obj[u] = ho[order[k]]
        elif ho[order[k]] > hit_obj[u]:
            hit_obj[u] = ho[order[k]]
    none = np.zeros(0, np.int64)
    if not do_carve:
        return OK, hit_codes, hit_obj, none, none, 0, 0, 0, scratch
    for a in range(3):
        b = np.int64(np.floor(origin[a] * inv_vs))
        if b < -_LIMIT or b >= _LIMIT - 1:
            return ORIGIN_OUT_OF_RANGE, hit_codes, hit_obj, none, none, 0, 0, 0, scratch
    ne = end_sorted.shape[0]
    first = np.empty(ne, np.bool_)
    for i in range(ne):
        first[i] = i == 0 or end_sorted[i] != end_sorted[i - 1]
    all_end = end_sorted[first]
    status, codes, rays, cells, banded, scratch = _carve(
        origin, all_end, hit_codes, vs, carve_level, margin0, margin_sq, band_cfg, nudge,
        max_cells, scratch,
    )  # fmt: skip
    return status, hit_codes, hit_obj, all_end, codes, rays, cells, banded, scratch


@numba.njit(nogil=True, cache=True)
def _frame_apply(  # pragma: no cover - compiled
    hit_codes: np.ndarray,
    hit_obj: np.ndarray,
    all_end: np.ndarray,
    traversed: np.ndarray,
    hit_lo: np.float32,
    miss_lo: np.float32,
    thr: np.float32,
    lo_lo: np.float32,
    hi_lo: np.float32,
    miss_weight_hits: np.float32,
    min_miss_weight: np.float32,
    dynamic_min_hits: int,
    flag_dynamic: np.uint8,
    stamp_ns: int,
    main: tuple,
    delta: tuple,
    delta_limit: int,
) -> tuple:
    """Sorted traversed codes minus the end voxels = the misses; merge hits and misses into
    the columns. Returns (free, new, freed, flagged, changed, main, delta)."""
    ne = all_end.shape[0]
    nt = traversed.shape[0]
    keep = np.empty(nt, np.bool_)
    for i in range(nt):  # voxels where a ray of this frame ends are not free
        p = np.searchsorted(all_end, traversed[i])
        if p == ne:
            p = 0
        keep[i] = all_end[p] != traversed[i]
    free_codes = traversed[keep]
    n_hit = hit_codes.shape[0]
    n_free = free_codes.shape[0]
    m = n_hit + n_free
    if m == 0:
        return n_free, 0, 0, 0, False, main, delta
    # hits and misses are sorted and disjoint (free codes exclude every end voxel): merge
    upd = np.empty(m, np.int64)
    is_hit = np.zeros(m, np.bool_)
    uobj = np.full(m, -1, np.int32)
    i = 0
    j = 0
    for k in range(m):
        if j >= n_free or (i < n_hit and hit_codes[i] < free_codes[j]):
            upd[k] = hit_codes[i]
            is_hit[k] = True
            uobj[k] = hit_obj[i]
            i += 1
        else:
            upd[k] = free_codes[j]
            j += 1
    dlt = np.empty(m, np.float32)
    for i in range(m):
        dlt[i] = hit_lo if is_hit[i] else miss_lo
    rest = np.ones(m, np.bool_)
    freed = 0
    flagged = 0
    for cols in (main, delta):  # a code is in at most one of them
        if cols[0].shape[0] == 0:
            continue
        f, g = apply_updates(
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], upd, is_hit, uobj, dlt,
            rest, stamp_ns, thr, lo_lo, hi_lo, miss_weight_hits, min_miss_weight,
            dynamic_min_hits, flag_dynamic,
        )  # fmt: skip
        freed += f
        flagged += g
    n_new = 0
    for i in range(m):
        if rest[i]:
            n_new += 1
    if n_new:
        fc = upd[rest]
        fl = np.empty(n_new, np.float32)
        fh = np.empty(n_new, np.uint32)
        k = 0
        for i in range(m):
            if rest[i]:
                fl[k] = min(max(dlt[i], lo_lo), hi_lo)
                fh[k] = 1 if is_hit[i] else 0
                k += 1
        ft = np.full(n_new, stamp_ns, np.int64)
        fo = uobj[rest]
        ff = np.zeros(n_new, np.uint8)
        d = delta
        if d[0].shape[0] == 0:
            delta = (fc, fl, fh, ft, fo, ff)
        else:
            delta = merge_sorted(d[0], d[1], d[2], d[3], d[4], d[5], fc, fl, fh, ft, fo, ff)
        if delta[0].shape[0] > delta_limit:
            a = main
            b = delta
            if a[0].shape[0] == 0:
                main = b
            else:
                main = merge_sorted(
                    a[0], a[1], a[2], a[3], a[4], a[5], b[0], b[1], b[2], b[3], b[4], b[5]
                )
            delta = (
                np.zeros(0, np.int64),
                np.zeros(0, np.float32),
                np.zeros(0, np.uint32),
                np.zeros(0, np.int64),
                np.zeros(0, np.int32),
                np.zeros(0, np.uint8),
            )
    return n_free, n_new, freed, flagged, True, main, delta


def insert_frame(
    pts: np.ndarray,
    obj_ids: np.ndarray,
    hit_mask: np.ndarray,
    origin: np.ndarray,
    has_origin: bool,
    do_carve: bool,
    vs: float,
    inv_vs: float,
    max_range: float,
    carve_level: int,
    margin0: float,
    margin_sq: float,
    band_cfg: int,
    log_odds: tuple[np.float32, ...],
    miss_weight: tuple[np.float32, np.float32],
    dynamic_min_hits: int,
    flag_dynamic: np.uint8,
    stamp_ns: int,
    main: tuple,
    delta: tuple,
    delta_limit: int,
    nudge: float,
    max_cells: int,
    scratch: np.ndarray,
) -> tuple:
    """One frame into the columns ``main`` and ``delta`` (each (codes, log_odds, hits,
    last_seen_ns, object_ids, flags)); ``log_odds`` = (hit, miss, occupied, min, max),
    ``miss_weight`` = (miss_weight_hits, min_miss_weight). Returns (status, stats (10,)
    int64, main, delta, scratch). On any status but OK nothing has changed:
    OUT_OF_RANGE / ORIGIN_OUT_OF_RANGE are ``morton.points_to_index``'s errors, TOO_LARGE
    asks for the numpy path, EMPTY means no finite point.

    Three compiled calls without the GIL; between them numpy sorts the codes (numba's
    sorts are plain quicksorts, ~10x slower than numpy's on int64: 8,000 codes 340 vs
    30 us; a radix sort does not help, the codes of a box around the map's origin differ
    in all 63 bits)."""
    stats = np.zeros(10, np.int64)
    status, dropped, end_codes, hc, ho = _frame_codes(
        pts, obj_ids, hit_mask, origin, has_origin, max_range, inv_vs
    )
    stats[S_DROPPED] = dropped
    if status != OK:
        return status, stats, main, delta, scratch
    carve = do_carve and has_origin
    order, end_sorted = np.argsort(hc), np.sort(end_codes) if carve else end_codes[:0]
    status, hit_codes, hit_obj, all_end, traversed, rays, cells, banded, bitmap = _frame_carve(
        hc, ho, order, end_sorted, origin, carve, vs, inv_vs, carve_level, margin0, margin_sq,
        band_cfg, nudge, max_cells, scratch,
    )  # fmt: skip
    if status == NEED_SCRATCH:  # np.zeros: pages zeroed lazily, only those the rays touch
        bitmap = np.zeros(cells, bool)
        if cells <= _KEEP_SCRATCH_CELLS:
            scratch = bitmap  # kept (left clear) for the next frames
        status, hit_codes, hit_obj, all_end, traversed, rays, cells, banded, bitmap = (
            _frame_carve(
                hc, ho, order, end_sorted, origin, carve, vs, inv_vs, carve_level, margin0,
                margin_sq, band_cfg, nudge, max_cells, bitmap,
            )
        )  # fmt: skip
    if status != OK:
        return status, stats, main, delta, scratch
    traversed.sort()
    hit_lo, miss_lo, thr, lo_lo, hi_lo = log_odds
    n_free, n_new, freed, flagged, changed, main, delta = _frame_apply(
        hit_codes, hit_obj, all_end, traversed, hit_lo, miss_lo, thr, lo_lo, hi_lo,
        miss_weight[0], miss_weight[1], dynamic_min_hits, flag_dynamic, stamp_ns, main, delta,
        delta_limit,
    )  # fmt: skip
    stats[S_HIT] = len(hit_codes)
    stats[S_FREE] = n_free
    stats[S_RAYS], stats[S_CELLS], stats[S_BANDED] = rays, cells, banded
    stats[S_NEW], stats[S_FREED], stats[S_FLAGGED] = n_new, freed, flagged
    stats[S_CHANGED] = changed
    return status, stats, main, delta, scratch
