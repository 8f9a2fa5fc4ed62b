"""The compiled spatial kernels (numba) give exactly what the numpy paths give: the same
voxel columns (codes, log-odds, hits, stamps, object ids, dynamic flags) and the same
insert statistics, over frames that carve, band, add, weigh misses and flip occupied
voxels to free; ``ENGRAM_NUMBA=0`` selects the numpy path."""

from __future__ import annotations

import numpy as np
import pytest

import engram.memory.spatial.octree as octree
from engram.memory.spatial.voxels import FLAG_DYNAMIC, OctreeConfig


def _frames(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A camera circling a room: a wall and an object that leaves halfway (its voxels are
    then seen through, flip to free and are flagged dynamic), plus scattered points."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        origin = np.array([np.cos(i / 6) * 1.5, np.sin(i / 6) * 1.5, 1.0]) + rng.normal(0, 0.01, 3)
        wall = np.column_stack(
            [np.full(96, 3.0), rng.uniform(-2, 2, 96), rng.uniform(0, 2, 96)]
        ) + rng.normal(0, 0.01, (96, 3))
        scatter = rng.uniform([-3, -3, 0], [3, 3, 2], (64, 3))
        parts, ids = [wall, scatter], [np.full(96, -1), np.full(64, -1)]
        if i < n // 2:  # an object in front of the wall, then gone
            box = rng.uniform([2.0, -0.3, 0.5], [2.3, 0.3, 1.0], (48, 3))
            parts.append(box)
            ids.append(np.full(48, 7))
        out.append((origin, np.vstack(parts), np.concatenate(ids).astype(np.int32)))
    return out


def _run(frames, config: OctreeConfig, compiled: bool, monkeypatch) -> tuple[dict, list]:
    monkeypatch.setattr(octree, "_KERNELS", [] if compiled else [None])
    if compiled:
        assert octree._kernels() is not None  # numba is a dependency: really compiled
    tree = octree.SparseOctree(config)
    stats = [
        tree.insert(p, origin=o, object_ids=ids, stamp_ns=k + 1)
        for k, (o, p, ids) in enumerate(frames)
    ]
    cols = {k: v.copy() for k, v in tree.columns().items()}
    return cols, [vars(s) for s in stats]


@pytest.mark.parametrize(
    "config",
    [
        OctreeConfig(),  # defaults: surface band 1, weighted misses
        OctreeConfig(surface_band_voxels=0, miss_weight_hits=0),
        OctreeConfig(surface_band_voxels=2, voxel_size_m=0.1),
    ],
)
def test_compiled_kernels_give_exactly_the_numpy_voxels(config, monkeypatch):
    frames = _frames(24, seed=3)
    fast, fast_stats = _run(frames, config, True, monkeypatch)
    slow, slow_stats = _run(frames, config, False, monkeypatch)
    assert fast_stats == slow_stats
    for k in slow:
        assert np.array_equal(fast[k], slow[k]), k
    assert len(slow["codes"]) > 1000  # a real map, not a trivial one
    assert sum(s["free_voxels"] for s in slow_stats) > 1000  # rays carved
    if config.surface_band_voxels:
        assert sum(s["banded_voxels"] for s in slow_stats) > 0  # the band spared some
    assert (slow["flags"] & FLAG_DYNAMIC).any()  # the object's voxels flipped to free


def test_band_clearing_marks_the_cells_the_dilated_bitmap_marks():
    rng = np.random.default_rng(0)
    lo = np.array([-20, -15, -5])
    dims = np.array([40, 30, 12])
    idx = rng.integers(-3, dims + 3, (60, 3))  # some hits outside the box, some near it
    import engram.memory.spatial.morton as morton

    hits = np.sort(morton.encode(*(idx + lo + morton.OFFSET).T))
    for band in (1, 2):
        bitmap = rng.random(int(np.prod(dims))) < 0.3
        want = bitmap & ~octree._band_bitmap(hits, lo, dims, band)
        got = bitmap.copy()
        banded = octree._clear_band(got, hits, lo, dims, band)
        assert np.array_equal(got, want)
        assert banded == int(bitmap.sum() - want.sum()) > 0


def test_engram_numba_0_selects_the_numpy_path(monkeypatch):
    monkeypatch.setattr(octree, "_KERNELS", [])
    monkeypatch.setenv("ENGRAM_NUMBA", "0")
    assert octree._kernels() is None


def test_galloping_column_merge_finds_what_a_bisection_finds():
    """``apply_updates`` walks sorted updates forward through the sorted codes: found and
    missed codes, clipped log-odds and hit counts equal a per-code ``searchsorted``;
    unsorted updates take the plain lookup."""
    kernels = octree._kernels()
    if kernels is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(3)
    for trial in range(60):
        codes = np.unique(rng.integers(0, 4000, int(rng.integers(1, 300)))).astype(np.int64)
        upd = np.unique(rng.integers(-10, 4010, int(rng.integers(1, 200)))).astype(np.int64)
        if trial % 3 == 2:
            upd = upd[::-1].copy()  # not ascending
        n, m = len(codes), len(upd)
        is_hit = rng.random(m) < 0.4
        delta = np.where(is_hit, np.float32(0.85), np.float32(-0.4)).astype(np.float32)
        start = rng.uniform(-1, 3, n).astype(np.float32)
        log_odds, hits = start.copy(), np.zeros(n, np.uint32)
        rest = np.ones(m, bool)
        kernels.apply_updates(
            codes, log_odds, hits, np.zeros(n, np.int64), np.full(n, -1, np.int32),
            np.zeros(n, np.uint8), upd, is_hit, np.full(m, -1, np.int32), delta, rest, 5,
            np.float32(0.0), np.float32(-2.0), np.float32(3.5), np.float32(0.0),
            np.float32(0.1), 3, np.uint8(FLAG_DYNAMIC),
        )  # fmt: skip
        pos = np.searchsorted(codes, upd)
        found = codes[np.minimum(pos, n - 1)] == upd
        want = start.copy()
        want[pos[found]] = np.clip(start[pos[found]] + delta[found], -2.0, 3.5)
        assert np.array_equal(rest, ~found), trial
        assert np.array_equal(log_odds, want), trial
        assert np.array_equal(hits[pos[found & is_hit]], np.ones(int((found & is_hit).sum())))
