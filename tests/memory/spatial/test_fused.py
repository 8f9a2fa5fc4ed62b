"""The fused insert (``engram.memory.spatial.fused``: a frame in three compiled calls
without the GIL) gives exactly what the per-stage path and the numpy path give, on the
real RGB-D sample: the same voxel columns, insert statistics, errors, and in a
``SpatialMemory`` the same objects, places and recall."""

from __future__ import annotations

import numpy as np
import pytest

import engram.memory.spatial.octree as octree
from engram.memory.spatial import SpatialConfig, SpatialMemory
from engram.memory.spatial.voxels import OctreeConfig
from engram.runtime.messages import MemoryQuery
from tests.memory.spatial._helpers import make_percept
from tests.memory.spatial._rgbd import K_SAMPLE, depth_to_points, real_sequence

PATHS = ("fused", "stages", "numpy")


def _use(path: str, monkeypatch) -> None:
    monkeypatch.setattr(octree, "_KERNELS", [None] if path == "numpy" else [])
    monkeypatch.setattr(octree.SparseOctree, "fused", path == "fused")
    if path != "numpy":
        assert octree._kernels() is not None  # numba is a dependency: really compiled


@pytest.fixture(scope="module")
def real_frames(rgbd_sample_dir) -> list[tuple[np.ndarray, np.ndarray]]:
    """(points (N, 3), world_from_camera) of the real frames, every other pixel, twice
    over (the second pass updates, weighs misses and flips voxels), with a few NaN rows."""
    out = []
    for depth, pose in real_sequence(rgbd_sample_dir):
        pts = depth_to_points(depth[::2, ::2], K_SAMPLE / np.array([[2], [2], [1]]), pose)
        pts[::997] = np.nan
        out.append((pts, pose))
    return out + out[::-1]


def _octree_run(frames, config: OctreeConfig, path: str, monkeypatch):
    _use(path, monkeypatch)
    tree = octree.SparseOctree(config)
    stats = []
    for k, (pts, pose) in enumerate(frames):
        ids = (np.arange(len(pts)) // 5000 % 7 - 1).astype(np.int32)  # -1 and 0..5
        hit = np.arange(len(pts)) % 11 != 0  # some points only end a ray
        stats.append(
            vars(tree.insert(pts, origin=pose[:3, 3], object_ids=ids, hit_mask=hit, stamp_ns=k + 1))
        )
    counters = (tree.frames, tree.dynamic_events, tree.freed_events, tree.version)
    return {k: v.copy() for k, v in tree.columns().items()}, stats, counters


@pytest.mark.parametrize(
    "config",
    [
        OctreeConfig(),  # the defaults: band 1, weighted misses, 8 m range
        OctreeConfig(max_range_m=2.0, carve_level=1, surface_band_voxels=2, voxel_size_m=0.04),
        OctreeConfig.legacy(voxel_size_m=0.1),
    ],
    ids=["defaults", "short-range-level1-band2", "legacy"],
)
def test_fused_insert_equals_both_reference_paths_on_real_frames(real_frames, config, monkeypatch):
    runs = {p: _octree_run(real_frames, config, p, monkeypatch) for p in PATHS}
    cols, stats, counters = runs["fused"]
    assert stats[0]["free_voxels"] > 1000 and stats[0]["points_dropped"] > 0
    if config.miss_weight_hits == 0:  # plain OctoMap misses: some voxels flip to free
        assert any(s["freed_voxels"] for s in stats)
    for ref in ("stages", "numpy"):
        ref_cols, ref_stats, ref_counters = runs[ref]
        assert stats == ref_stats, ref
        assert counters == ref_counters, ref
        for k in cols:
            assert cols[k].dtype == ref_cols[k].dtype
            np.testing.assert_array_equal(cols[k], ref_cols[k], err_msg=f"{ref}: {k}")


def test_fused_errors_and_edge_cases_match(monkeypatch):
    far = np.array([[1e6, 0.0, 0.0], [0.0, 0.0, 1.0]])
    outcomes = {}
    for path in PATHS:
        _use(path, monkeypatch)
        tree = octree.SparseOctree(OctreeConfig(max_range_m=0.0))
        tree.insert(np.array([[1.0, 0.0, 0.5]]), origin=np.zeros(3), stamp_ns=1)
        before = {k: v.copy() for k, v in tree.columns().items()}
        errors = []
        for pts, origin in ((far, np.zeros(3)), (np.ones((2, 3)), np.array([-1e6, 0.0, 0.0]))):
            with pytest.raises(ValueError) as exc:
                tree.insert(pts, origin=origin, stamp_ns=2)
            errors.append(str(exc.value))
        for k, v in tree.columns().items():  # a rejected frame changes nothing
            np.testing.assert_array_equal(v, before[k])
        nan = vars(tree.insert(np.full((3, 3), np.nan), origin=np.zeros(3), stamp_ns=3))
        no_origin = vars(tree.insert(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.52]]), stamp_ns=4))
        no_carve = vars(tree.insert(np.ones((1, 3)), origin=np.zeros(3), carve=False, stamp_ns=5))
        cols = {k: v.copy() for k, v in tree.columns().items()}
        outcomes[path] = (errors, nan, no_origin, no_carve, tree.frames, tree.version, cols)
    ref = outcomes["numpy"]
    for path in ("fused", "stages"):
        got = outcomes[path]
        assert got[:6] == ref[:6], path
        for k in ref[6]:
            np.testing.assert_array_equal(got[6][k], ref[6][k])
    assert "outside the map's range" in ref[0][0] and ref[1]["points_dropped"] == 3


def test_a_box_too_large_for_the_bitmap_falls_back_to_the_numpy_path(real_frames, monkeypatch):
    monkeypatch.setattr(octree, "_MAX_BITMAP_CELLS", 1000)  # every frame's box is larger
    frames = real_frames[:2]
    fused = _octree_run(frames, OctreeConfig(), "fused", monkeypatch)
    numpy_ = _octree_run(frames, OctreeConfig(), "numpy", monkeypatch)
    assert fused[1] == numpy_[1]
    for k in fused[0]:
        np.testing.assert_array_equal(fused[0][k], numpy_[0][k])


def _memory_run(frames, path: str, monkeypatch):
    _use(path, monkeypatch)
    mem = SpatialMemory(SpatialConfig())
    rng = np.random.default_rng(5)
    looks = rng.normal(size=(4, 16)).astype(np.float32)
    for k, (pts, pose) in enumerate(frames):
        ok = np.isfinite(pts).all(axis=1)
        p = pts[ok]
        pid = (np.arange(len(p)) * 4 // len(p)).astype(np.int32)  # 4 objects, by pixel row
        objects = [
            {
                "id": i,
                "label": ("chair", "table", "lamp", "door")[i],
                "centroid": p[pid == i].mean(axis=0),
                "extent": np.ptp(p[pid == i], axis=0) / 2,
                "embedding": looks[i] / np.linalg.norm(looks[i]),
            }
            for i in range(4)
        ]
        emb = rng.normal(size=16).astype(np.float32)
        mem.write(
            make_percept(
                stamp_ns=(k + 1) * 100_000_000,
                world_from_camera=pose,
                points=p,
                point_object_ids=pid,
                objects=objects,
                embedding=emb / np.linalg.norm(emb),
            )
        )
    hits = []
    for text in ("chair", "table", "lamp"):
        for h in mem.recall(MemoryQuery(text=text, top_k=5)):
            hits.append((h.record_id, round(h.score, 12), h.text, h.position))
    near = mem.recall(MemoryQuery(near=frames[0][1][:3, 3].astype(np.float32), radius_m=3.0))
    hits += [(h.record_id, round(h.score, 12), h.text, h.position) for h in near]
    st = mem.stats()
    cols = {k: v.copy() for k, v in mem.octree.columns().items()}
    places = (mem.places.positions.copy(), sorted(mem.places.edges.items()))
    return st, cols, places, hits


def test_spatial_memory_on_real_frames_same_objects_places_and_recall(real_frames, monkeypatch):
    fused = _memory_run(real_frames, "fused", monkeypatch)
    ref = _memory_run(real_frames, "numpy", monkeypatch)
    assert fused[0] == ref[0]  # counters, voxels, occupied, objects, places, edges
    assert fused[0]["occupied_voxels"] > 1000 and fused[0]["objects"] == 4
    for k in ref[1]:
        np.testing.assert_array_equal(fused[1][k], ref[1][k])
    np.testing.assert_array_equal(fused[2][0], ref[2][0])
    assert fused[2][1] == ref[2][1]
    assert fused[3] == ref[3] and len(ref[3]) >= 3


def test_large_boxes_get_a_fresh_bitmap_and_small_ones_keep_theirs(monkeypatch):
    rng = np.random.default_rng(0)
    wide = [
        (rng.uniform([-7, -7, -2], [7, 7, 4], (2000, 3)), rng.normal(0, 0.2, 3)) for _ in range(3)
    ]
    trees = {}
    for path in ("fused", "numpy"):
        _use(path, monkeypatch)
        tree = octree.SparseOctree(OctreeConfig())
        stats = [vars(tree.insert(p, origin=o, stamp_ns=i + 1)) for i, (p, o) in enumerate(wide)]
        trees[path] = (tree, stats)
    (fused, fused_stats), (ref, ref_stats) = trees["fused"], trees["numpy"]
    assert fused_stats == ref_stats and fused_stats[0]["free_voxels"] > 100_000
    for k, v in ref.columns().items():
        np.testing.assert_array_equal(fused.columns()[k], v)
    assert fused._scratch.size == 0  # a ~20 MB box: not kept between frames
    _use("fused", monkeypatch)
    fused.insert(np.array([[0.5, 0.2, 0.3]]), origin=np.zeros(3), stamp_ns=9)
    assert 0 < fused._scratch.size <= 1 << 22 and not fused._scratch.any()  # kept, clear


def test_without_the_fused_module_the_per_stage_path_takes_over(monkeypatch, caplog):
    import sys

    frames = [(np.array([[1.0, 0.2, 0.3], [1.2, -0.1, 0.4]]), np.eye(4))]
    _use("stages", monkeypatch)
    ref = _octree_run(frames, OctreeConfig(), "stages", monkeypatch)
    monkeypatch.setattr(octree, "_FUSED", [])
    monkeypatch.setitem(sys.modules, "engram.memory.spatial.fused", None)  # import fails
    _use("fused", monkeypatch)
    with caplog.at_level("WARNING"):
        assert octree._fused() is None
    got = _octree_run(frames, OctreeConfig(), "fused", monkeypatch)
    assert got[1] == ref[1] and "per-stage path" in caplog.text
    for k in ref[0]:
        np.testing.assert_array_equal(got[0][k], ref[0][k])
