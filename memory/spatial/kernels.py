"""Compiled kernels of the spatial memory's hot paths (numba, ``nogil``, cached on disk).

``carve_rays`` marks, in a flat bitmap over a frame's carving box, every voxel the rays
enter: the same float64 -> float32 steps as the numpy path of ``SparseOctree._carve``
(``plane = j * sgn``, ``+ first_b``, ``* b + o``, ``floor``; no fused multiply-add, no
fast-math), so both paths mark the same cells (tests compare them). ``band_and_codes``
spares the cells next to a surface and turns the rest into Morton codes, visiting only
the cells set; ``apply_updates`` merges a frame's hits and misses into the sorted voxel
columns. The numpy paths hold the GIL for each of their ~100 small array operations per
frame; these are loops without the GIL, so the memory system's other lanes run beside.

numba is imported here, at module import; ``octree`` imports this module lazily (numba
takes about a second to import) and falls back to numpy when numba is missing or
``ENGRAM_NUMBA=0``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["apply_updates", "band_and_codes", "carve_rays"]


@numba.njit(nogil=True, cache=True)
def _spread(v: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """21-bit value -> its bits 3 apart (``morton._spread`` for one value)."""
    v &= np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


@numba.njit(nogil=True, cache=True)
def _compact(v: np.uint64) -> np.int64:  # pragma: no cover - compiled
    """Every third bit -> a 21-bit value (``morton._compact`` for one value)."""
    v = v & np.uint64(0x1249249249249249)
    v = (v ^ (v >> np.uint64(2))) & np.uint64(0x10C30C30C30C30C3)
    v = (v ^ (v >> np.uint64(4))) & np.uint64(0x100F00F00F00F00F)
    v = (v ^ (v >> np.uint64(8))) & np.uint64(0x1F0000FF0000FF)
    v = (v ^ (v >> np.uint64(16))) & np.uint64(0x1F00000000FFFF)
    v = (v ^ (v >> np.uint64(32))) & np.uint64(0x1FFFFF)
    return np.int64(v)


@numba.njit(nogil=True, cache=True)
def _encode(x: np.int64, y: np.int64, z: np.int64) -> np.int64:  # pragma: no cover
    """Three 21-bit cell indices -> one Morton code (``morton.encode`` for one cell)."""
    c = (
        _spread(np.uint64(x))
        | (_spread(np.uint64(y)) << np.uint64(1))
        | (_spread(np.uint64(z)) << np.uint64(2))
    )
    return np.int64(c)


@numba.njit(nogil=True, cache=True)
def band_and_codes(  # pragma: no cover - compiled; compared with the numpy path in tests
    bitmap: np.ndarray,
    touched: np.ndarray,
    dims: np.ndarray,
    off: np.ndarray,
    hit_idx: np.ndarray,
    band: int,
) -> tuple[np.ndarray, int]:
    """Clear the cells within ``band`` voxels (Chebyshev) of each hit (``hit_idx``: (H, 3)
    box indices), then the (unsorted) Morton codes of the ``touched`` cells (every set cell,
    once) still set (box index + ``off`` per axis), and how many cells the band cleared.
    Only the touched cells are visited, not the whole box."""
    dx, dy, dz = dims[0], dims[1], dims[2]
    banded = 0
    for h in range(hit_idx.shape[0]):
        x0, y0, z0 = hit_idx[h, 0], hit_idx[h, 1], hit_idx[h, 2]
        for z in range(max(z0 - band, 0), min(z0 + band + 1, dz)):
            for y in range(max(y0 - band, 0), min(y0 + band + 1, dy)):
                for x in range(max(x0 - band, 0), min(x0 + band + 1, dx)):
                    k = x + dx * (y + dy * z)
                    if bitmap[k]:
                        bitmap[k] = False
                        banded += 1
    codes = np.empty(touched.shape[0], np.int64)
    n = 0
    plane = dx * dy
    for i in range(touched.shape[0]):
        k = touched[i]
        if bitmap[k]:
            z = k // plane
            y = (k - z * plane) // dx
            x = k - z * plane - y * dx
            codes[n] = _encode(x + off[0], y + off[1], z + off[2])
            n += 1
    return codes[:n], banded  # unsorted: numpy's sort is faster (and drops the GIL too)


@numba.njit(nogil=True, cache=True)
def apply_updates(  # pragma: no cover - compiled; compared with the numpy path in tests
    codes: np.ndarray,
    log_odds: np.ndarray,
    hits: np.ndarray,
    last_seen_ns: np.ndarray,
    object_ids: np.ndarray,
    flags: np.ndarray,
    upd: np.ndarray,
    is_hit: np.ndarray,
    obj: np.ndarray,
    delta: np.ndarray,
    rest: np.ndarray,
    stamp_ns: int,
    thr: np.float32,
    lo: np.float32,
    hi: np.float32,
    miss_weight_hits: np.float32,
    min_miss_weight: np.float32,
    dynamic_min_hits: int,
    flag_dynamic: np.uint8,
) -> tuple[int, int]:
    """``SparseOctree._apply`` for one set of sorted columns, one update at a time: each
    still ``rest`` code of ``upd`` found in ``codes`` gets its log-odds change (a miss
    weighted by the voxel's hits when ``miss_weight_hits`` > 0), hit count, stamp and
    object id; a voxel that flips occupied -> free loses its object id and is flagged
    dynamic when it had ``dynamic_min_hits``. Clears ``rest`` for the codes found;
    returns (freed, flagged). The same float32 operations as the numpy path.

    ``upd`` is sorted (checked: else each code is looked up on its own), so each lookup
    gallops forward from the previous one (1, 2, 4, ... then bisection inside the last
    step) instead of bisecting all ``codes``: a frame's ~7k codes into a 2e5-voxel map
    touch nearby cache lines, not 18 scattered ones each."""
    n = codes.shape[0]
    m = upd.shape[0]
    freed = 0
    flagged = 0
    if n == 0:
        return 0, 0
    ascending = True
    for i in range(1, m):
        if upd[i] <= upd[i - 1]:
            ascending = False
            break
    start = 0  # every code before ``start`` is below the current target (ascending only)
    for i in range(m):
        if not rest[i]:
            continue
        target = upd[i]
        if ascending:
            left = start
            step = 1
            while left + step < n and codes[left + step] < target:
                left += step
                step *= 2
            right = min(left + step, n)  # the first code >= target is in [left, right]
            while left < right:
                mid = (left + right) // 2
                if codes[mid] < target:
                    left = mid + 1
                else:
                    right = mid
            p = left
            start = p
        else:
            p = np.searchsorted(codes, target)
        if p >= n:
            p = n - 1
        if codes[p] != target:
            continue
        rest[i] = False
        old = log_odds[p]
        d = delta[i]
        hit = is_hit[i]
        if miss_weight_hits > 0 and not hit:
            h = np.float32(hits[p])
            d = d * max(min_miss_weight, miss_weight_hits / (miss_weight_hits + h))
        new = min(max(old + d, lo), hi)
        log_odds[p] = new
        if hit:
            hits[p] += np.uint32(1)
        last_seen_ns[p] = stamp_ns
        if hit and obj[i] >= 0:
            object_ids[p] = obj[i]
        if old > thr and new <= thr:
            freed += 1
            if hits[p] >= dynamic_min_hits:
                flags[p] |= flag_dynamic
                flagged += 1
            object_ids[p] = -1
    return freed, flagged


@numba.njit(nogil=True, cache=True)
def carve_rays(  # pragma: no cover - compiled; compared with the numpy path in tests
    bitmap: np.ndarray,
    touched: np.ndarray,
    n_touched: int,
    i0: np.ndarray,
    i1: np.ndarray,
    v_rel: np.ndarray,
    o_rel: np.ndarray,
    stride_y: int,
    stride_z: int,
    nudge_voxels: float,
) -> tuple[int, int]:
    """All three axes of ``SparseOctree._carve`` for every ray: the per-ray set-up (the
    same float64 -> float32 steps as the numpy path: ``b = f32(v_b / v_a)``, ``first``,
    the nudge, ``first_b``, the shift) and ``carve_cells``' marking, in one call without
    the GIL. Returns (touched count, crossings)."""
    total = 0
    for a in range(3):
        b = (a + 1) % 3
        c = (a + 2) % 3
        ob = np.float32(o_rel[b])
        oc = np.float32(o_rel[c])
        oa = np.float32(o_rel[a])
        for r in range(i1.shape[0]):
            cnt = abs(i1[r, a] - i0[a])
            if cnt == 0:
                continue
            total += cnt
            va = v_rel[r, a]
            sgn = np.sign(va)
            rb = np.float32(v_rel[r, b] / va)
            rc = np.float32(v_rel[r, c] / va)
            first = np.float32(i0[a] + (1 if sgn > 0 else 0))
            m = max(abs(v_rel[r, 0]), abs(v_rel[r, 1]), abs(v_rel[r, 2]))
            nudge = np.float32(sgn * nudge_voxels * abs(va) / m)
            fb = first + nudge - oa
            shift = -1 if sgn < 0 else 0
            s = np.float32(sgn)
            ba = np.int64(first) + shift
            for j in range(cnt):
                plane = np.float32(j) * s
                ka = np.int64(np.int32(plane)) + ba
                plane = plane + fb
                kb = np.int64(np.floor(plane * rb + ob))
                kc = np.int64(np.floor(plane * rc + oc))
                if a == 0:
                    x, y, z = ka, kb, kc
                elif a == 1:
                    x, y, z = kc, ka, kb
                else:
                    x, y, z = kb, kc, ka
                k = x + y * stride_y + z * stride_z
                if not bitmap[k]:
                    bitmap[k] = True
                    touched[n_touched] = k
                    n_touched += 1
    return n_touched, total
