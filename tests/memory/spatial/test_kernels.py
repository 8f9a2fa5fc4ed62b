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
