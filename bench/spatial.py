"""Spatial memory benchmark: octree insertion rate and query latency, against open3d.

Cases, all measured in the same run on the same points:

- **insertion** of a stream of 640x480 depth frames (fx = fy = 525): a synthetic furnished
  room ray-cast analytically (camera walking a loop) and the five real frames of
  ``../shared/data/rgbd-sample``. Engram's ``SparseOctree.insert`` integrates every frame
  into one map (5 cm voxels), without and with free-space carving (exact traversal of
  the rays from the camera to every distinct end voxel). Peers build open3d's
  ``VoxelGrid.create_from_point_cloud`` and ``Octree.convert_from_point_cloud`` (leaf
  about 5 cm) from each frame's points (numpy -> ``PointCloud`` conversion excluded).
  Metric: raw depth points per second. Targets: without carving >= 2x open3d's octree;
  with carving >= 0.5 M points/s (OctoMap's published C++ rate).
- **queries** on maps of 10^5 and 10^6 occupied voxels (a floor plus box-shaped objects
  with 512-d embeddings, written as ``Percept`` messages into ``SpatialMemory``):
  occupancy at a point (peer: open3d ``Octree.locate_leaf_node``), occupied voxels within
  0.5 m (peer: open3d ``KDTreeFlann.search_radius_vector_3d`` over the voxel centres),
  nearest occupied voxel (peer: ``KDTreeFlann.search_knn_vector_3d``), text query =
  ``SpatialMemory.recall`` with a query embedding, top 5 ranked 3D locations with
  evidence (peer: faiss ``IndexFlatIP`` over the same object embeddings, ranking only),
  and a radius query right after a write (Engram's cached views are rebuilt; the peer
  rebuilds its KD-tree). p50/p99 in microseconds.
- **bytes per voxel** of the octree columns.
- **sensor model** (issue 16), on the real frames and on a MuJoCo loop through a furnished
  room with a structured-light sensor's noise and a drifting pose (``tests/memory/spatial/
  _rgbd.py``; 200 640x480 frames, 40 with ``--quick``): strict (same-voxel) recall of open3d's
  ``VoxelBlockGrid`` TSDF surface of the same frames and recall within one voxel, with carving
  off, with the previous sensor model (``OctreeConfig.legacy()``) and with the current one;
  voxels flagged dynamic in these static scenes.
- **nearest occupied voxels, batched** (1,000 points): ``nearest_occupied`` versus scipy's
  ``cKDTree`` over the same centres (build excluded), and the previous octree walk.
- **static objects**: real frames played back and forth at 30 fps through the perception
  node's proposals and tracker into ``SpatialMemory``: objects classified dynamic or moved and
  voxels removed, previous motion rule (``DynamicsConfig.legacy()``) versus the current one.

Usage: ``python bench/spatial.py [--quick]``; prints one JSON object (bench/README.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, percentile, result  # noqa: E402

from engram.memory.spatial import OctreeConfig, SparseOctree, SpatialConfig, SpatialMemory  # noqa: E402
from engram.runtime.messages import MemoryQuery, Percept  # noqa: E402

VOXEL_M = 0.05
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
W, H = 640, 480
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "rgbd-sample"
EMB_DIM = 512


# ---------------------------------------------------------------------------
# depth frames


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    t = np.eye(4)
    t[:3, 0], t[:3, 1], t[:3, 2], t[:3, 3] = x, np.cross(z, x), z, eye
    return t


def _render_room(pose: np.ndarray, boxes: list, room: tuple) -> np.ndarray:
    """Analytic ray cast of solid boxes inside a room -> (H, W) depth in metres."""
    v, u = np.mgrid[0:H, 0:W]
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1)
    d = d.reshape(-1, 3) @ pose[:3, :3].T
    o = pose[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1, t2 = (room[0] - o) * inv, (room[1] - o) * inv
        best = np.nanmin(np.maximum(t1, t2), axis=1)
        for lo, hi in boxes:
            t1, t2 = (lo - o) * inv, (hi - o) * inv
            tmin, tmax = (
                np.nanmax(np.minimum(t1, t2), axis=1),
                np.nanmin(np.maximum(t1, t2), axis=1),
            )
            hit = (tmax >= tmin) & (tmin > 0) & (tmin < best)
            best[hit] = tmin[hit]
    return best.reshape(H, W).astype(np.float32)


def _backproject(depth: np.ndarray, pose: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    z = depth.astype(np.float64)
    ok = np.isfinite(z) & (z > 0)
    cam = np.stack(
        [(u[ok] - K[0, 2]) / K[0, 0] * z[ok], (v[ok] - K[1, 2]) / K[1, 1] * z[ok], z[ok]], 1
    )
    return cam @ pose[:3, :3].T + pose[:3, 3]


def synthetic_frames(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n frames (points (N, 3), camera origin (3,)) walking a loop in an 8 x 6 x 3 m room."""
    rng = np.random.default_rng(0)
    room = (np.array([-4.0, -3.0, 0.0]), np.array([4.0, 3.0, 3.0]))
    boxes = []
    for _ in range(12):
        c = rng.uniform([-3.5, -2.5, 0], [3.5, 2.5, 0])
        s = rng.uniform([0.3, 0.3, 0.4], [1.5, 1.0, 1.8])
        boxes.append(
            (
                np.array([c[0] - s[0] / 2, c[1] - s[1] / 2, 0.0]),
                np.array([c[0] + s[0] / 2, c[1] + s[1] / 2, s[2]]),
            )
        )
    frames = []
    for i in range(n):
        a = 2 * math.pi * i / max(n, 1)
        eye = np.array([1.2 * math.cos(a), 0.9 * math.sin(a), 1.4])
        target = eye + np.array([math.cos(a + 1.2), math.sin(a + 1.2), -0.35])
        pose = _look_at(eye, target)
        frames.append((_backproject(_render_room(pose, boxes, room), pose), eye))
    return frames


def sample_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """The five real 640x480 frames of ../shared/data/rgbd-sample (empty if missing)."""
    if not (SAMPLE_DIR / "trajectory.log").is_file():
        return []
    import cv2

    lines = (SAMPLE_DIR / "trajectory.log").read_text().split("\n")
    out = []
    for i in range(5):
        pose = np.array([[float(x) for x in lines[i * 5 + 1 + r].split()] for r in range(4)])
        depth = (
            cv2.imread(str(SAMPLE_DIR / "depth" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED) / 1000.0
        )
        out.append((_backproject(depth, pose), pose[:3, 3].copy()))
    return out


# ---------------------------------------------------------------------------
# insertion


def bench_insert(name: str, frames: list, repeats: int) -> list[dict]:
    import open3d as o3d

    n_points = sum(len(p) for p, _ in frames)
    best = {"nocarve": math.inf, "carve": math.inf, "vg": math.inf, "oct": math.inf}
    stats = {}
    for _ in range(repeats):
        for key, carve in (("nocarve", False), ("carve", True)):
            tree = SparseOctree(OctreeConfig(voxel_size_m=VOXEL_M, carve=carve))
            t0 = time.perf_counter()
            for i, (pts, origin) in enumerate(frames):
                tree.insert(pts, origin=origin, stamp_ns=i + 1)
            best[key] = min(best[key], time.perf_counter() - t0)
            stats[key] = (len(tree), tree.num_occupied())
        t_vg = t_oct = 0.0
        for pts, _ in frames:
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
            t0 = time.perf_counter()
            o3d.geometry.VoxelGrid.create_from_point_cloud(pcd, VOXEL_M)
            t_vg += time.perf_counter() - t0
            extent = float(np.ptp(pts, axis=0).max())
            depth = max(1, math.ceil(math.log2(extent * 1.01 / VOXEL_M)))
            t0 = time.perf_counter()
            octree = o3d.geometry.Octree(max_depth=depth)
            octree.convert_from_point_cloud(pcd, size_expand=0.01)
            t_oct += time.perf_counter() - t0
        best["vg"], best["oct"] = min(best["vg"], t_vg), min(best["oct"], t_oct)
    rate = {k: n_points / v for k, v in best.items()}
    case = f"{name}: {len(frames)} x 640x480 depth frames, 5 cm voxels"
    return [
        result(
            f"{case}, insert without carving",
            "points_per_s",
            rate["nocarve"],
            "higher",
            peer="open3d Octree.convert_from_point_cloud",
            peer_value=rate["oct"],
            target_ratio=2.0,
            map_voxels=stats["nocarve"][1],
        ),
        result(
            f"{case}, insert without carving",
            "points_per_s",
            rate["nocarve"],
            "higher",
            peer="open3d VoxelGrid.create_from_point_cloud",
            peer_value=rate["vg"],
        ),
        result(
            f"{case}, insert with free-space carving",
            "points_per_s",
            rate["carve"],
            "higher",
            peer="open3d Octree.convert_from_point_cloud (no carving)",
            peer_value=rate["oct"],
            target_points_per_s=5e5,
            map_voxels=stats["carve"][0],
            occupied=stats["carve"][1],
        ),
        result(
            f"{case}, insert with free-space carving",
            "ms_per_frame",
            1e3 * best["carve"] / len(frames),
            "lower",
        ),
    ]


# ---------------------------------------------------------------------------
# queries


def _grid(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    axes = [np.arange(a, b, VOXEL_M) + VOXEL_M / 2 for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def build_map(n_voxels: int) -> tuple[SpatialMemory, np.ndarray, np.ndarray, float]:
    """A floor (half the voxels) and box objects of 386 surface voxels (the other half).
    Returns memory, occupied centres (M, 3), object embeddings (n_obj, D), build seconds."""
    rng = np.random.default_rng(1)
    side = math.sqrt(n_voxels / 2) * VOXEL_M
    floor = _grid(np.array([0.0, 0.0, -VOXEL_M]), np.array([side, side, 0.0]))
    box = _grid(np.zeros(3), np.full(3, 0.45))
    shell = box[np.any((box < VOXEL_M) | (box > 0.45 - VOXEL_M), axis=1)]
    n_obj = max(1, round(n_voxels / 2 / len(shell)))
    embs = rng.normal(size=(n_obj, EMB_DIM)).astype(np.float32)
    embs /= np.linalg.norm(embs, axis=1, keepdims=True)
    corners = rng.uniform([0, 0, 0], [side - 0.5, side - 0.5, 0], size=(n_obj, 3))
    # points are not from one camera: no carving, no range limit
    cfg = OctreeConfig(voxel_size_m=VOXEL_M, carve=False, max_range_m=0.0)
    mem = SpatialMemory(SpatialConfig(octree=cfg))
    per = 200
    t_build = 0.0
    chunks = np.array_split(floor, max(1, len(floor) // 200_000))
    for i in range(max(len(chunks), math.ceil(n_obj / per))):
        objs = list(range(i * per, min(n_obj, (i + 1) * per)))
        parts = [chunks[i]] if i < len(chunks) else []
        ids = [np.full(len(parts[0]), -1, np.int32)] if parts else []
        for o in objs:
            parts.append(shell + corners[o])
            ids.append(np.full(len(shell), o, np.int32))
        pts = np.concatenate(parts).astype(np.float32)
        k = len(objs)
        pose = np.eye(4)
        pose[:3, 3] = [side / 2, side / 2, 1.5]
        msg = Percept(
            stamp_ns=(i + 1) * 10**9,
            world_from_camera=pose,
            embedding=embs[objs[0]] if objs else None,
            object_ids=np.array(objs, np.int32),
            object_labels=[f"object {o}" for o in objs],
            object_confidences=np.ones(k, np.float32),
            object_boxes=np.zeros((k, 4), np.int32),
            object_centroids=(corners[objs] + 0.225).astype(np.float32).reshape(k, 3),
            object_extents=np.full((k, 3), 0.45, np.float32),
            object_embeddings=embs[objs].reshape(k, EMB_DIM),
            points=pts,
            point_object_ids=np.concatenate(ids),
        )
        t0 = time.perf_counter()
        mem.write(msg)
        t_build += time.perf_counter() - t0
    occ = mem.octree.occupied()
    return mem, occ.centers, embs, t_build


def _latencies(fn, args: list, warmup: int = 3) -> list[float]:
    for a in args[:warmup]:
        fn(a)
    out = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def bench_queries(n_voxels: int, n_queries: int) -> list[dict]:
    import faiss
    import open3d as o3d

    mem, centers, embs, t_build = build_map(n_voxels)
    tree = mem.octree
    n_occ = tree.num_occupied()
    rng = np.random.default_rng(2)
    near = centers[rng.integers(len(centers), size=n_queries)] + rng.normal(
        scale=0.3, size=(n_queries, 3)
    )
    label = (
        f"{n_occ / 1e6:.2g}M occupied voxels"
        if n_occ >= 1e6
        else f"{n_occ / 1e3:.0f}k occupied voxels"
    )
    rows = [
        result(
            f"{label}: build from Percepts (no carving)",
            "points_per_s",
            len(centers) / t_build,
            "higher",
        )
    ]

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centers))
    depth = math.ceil(math.log2(float(np.ptp(centers, axis=0).max()) * 1.01 / VOXEL_M))
    o3d_oct = o3d.geometry.Octree(max_depth=depth)
    o3d_oct.convert_from_point_cloud(pcd, size_expand=0.01)
    kd = o3d.geometry.KDTreeFlann(pcd)

    def pair(case: str, ours: list[float], peer: str, theirs: list[float]) -> None:
        for q in (50, 99):
            rows.append(
                result(
                    f"{label}: {case}",
                    f"p{q}_latency_us",
                    percentile(ours, q),
                    "lower",
                    peer=peer,
                    peer_value=percentile(theirs, q),
                )
            )

    pts = list(near)
    pair(
        "occupancy at a point",
        _latencies(lambda p: tree.occupancy(p[None]), pts),
        "open3d Octree.locate_leaf_node",
        _latencies(o3d_oct.locate_leaf_node, pts),
    )
    pair(
        "occupied voxels within 0.5 m",
        _latencies(lambda p: tree.query_radius(p, 0.5), pts),
        "open3d KDTreeFlann.search_radius_vector_3d",
        _latencies(lambda p: kd.search_radius_vector_3d(p, 0.5), pts),
    )
    pair(
        "nearest occupied voxel",
        _latencies(lambda p: tree.nearest_occupied(p[None], k=1), pts),
        "open3d KDTreeFlann.search_knn_vector_3d",
        _latencies(lambda p: kd.search_knn_vector_3d(p, 1), pts),
    )

    queries = []
    for _ in range(n_queries):
        o = int(rng.integers(len(embs)))
        q = embs[o] + 0.5 * rng.normal(size=EMB_DIM).astype(np.float32) / math.sqrt(EMB_DIM)
        queries.append((o, (q / np.linalg.norm(q)).astype(np.float32)))
    correct = 0

    def recall(item):
        nonlocal correct
        hits = mem.recall(
            MemoryQuery(text=f"where is object {item[0]}", embedding=item[1], top_k=5)
        )
        correct += hits[0].data.get("object_id") == item[0]

    ours = _latencies(recall, queries, warmup=0)
    index = faiss.IndexFlatIP(EMB_DIM)
    index.add(embs)
    theirs = _latencies(lambda item: index.search(item[1][None], 5), queries)
    pair(
        "text query (embedding) -> top-5 3D locations",
        ours,
        "faiss IndexFlatIP over object embeddings (ranking only)",
        theirs,
    )
    rows.append(
        result(f"{label}: text query top-1 correct", "accuracy", correct / len(queries), "higher")
    )

    # Streaming: every write changes the map. Engram rebuilds its cached views lazily;
    # a KD-tree has to be rebuilt over the occupied voxels (PointCloud given, not timed).
    after_write, rebuild = [], []
    for i in range(min(10, n_queries)):
        tree.insert(near[i][None], stamp_ns=10**12 + i)
        t0 = time.perf_counter()
        tree.query_radius(near[i], 0.5)
        after_write.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        o3d.geometry.KDTreeFlann(pcd).search_radius_vector_3d(near[i], 0.5)
        rebuild.append((time.perf_counter() - t0) * 1e6)
    rows.append(
        result(
            f"{label}: radius query right after a write",
            "p50_latency_us",
            percentile(after_write, 50),
            "lower",
            peer="open3d KDTreeFlann rebuilt, then searched",
            peer_value=percentile(rebuild, 50),
        )
    )
    rows.append(
        result(
            f"{label}: octree memory",
            "bytes_per_voxel",
            tree.nbytes / len(tree),
            "lower",
            voxels=len(tree),
            occupied=n_occ,
        )
    )
    return rows


# ---------------------------------------------------------------------------
# issue 16: sensor model, batched nearest queries, static objects


def bench_sensor_model(name: str, frames: list, K: np.ndarray) -> list[dict]:
    from tests.memory.spatial._rgbd import depth_to_points, surface_agreement, tsdf_surface

    surface = tsdf_surface(frames, K, VOXEL_M)
    pts = [(depth_to_points(d, K, pose), pose[:3, 3]) for d, pose in frames]
    out = {}
    for key, cfg in (
        ("off", OctreeConfig(voxel_size_m=VOXEL_M, carve=False)),
        ("legacy", OctreeConfig.legacy(voxel_size_m=VOXEL_M)),
        ("new", OctreeConfig(voxel_size_m=VOXEL_M)),
    ):
        tree = SparseOctree(cfg)
        t0 = time.perf_counter()
        for i, (p, origin) in enumerate(pts):
            tree.insert(p, origin=origin, stamp_ns=i + 1)
        dt = time.perf_counter() - t0
        agree = surface_agreement(tree.occupied().centers, surface, VOXEL_M)
        out[key] = dict(
            agree,
            flagged=int(np.count_nonzero(tree.columns()["flags"] & 1)),
            freed=tree.freed_events,
            free_voxels=len(tree) - tree.num_occupied(),
            ms_per_frame=1e3 * dt / len(frames),
        )
    case = f"{name}: {len(frames)} frames, 5 cm voxels, vs open3d VoxelBlockGrid TSDF (1 cm)"
    prev = "previous sensor model (OctoMap misses to a fixed margin), carving on"
    n_surf = out["new"]["surface_voxels"]
    return [
        result(
            f"{case}, carving on", "strict_surface_recall", out["new"]["strict_recall"],
            "higher", peer="carving off", peer_value=out["off"]["strict_recall"],
            surface_voxels=n_surf,
        ),
        result(
            f"{case}, carving on", "strict_surface_recall", out["new"]["strict_recall"],
            "higher", peer=prev, peer_value=out["legacy"]["strict_recall"],
        ),
        result(
            f"{case}, carving on", "within_one_voxel", out["new"]["within_one_voxel"],
            "higher", peer=prev, peer_value=out["legacy"]["within_one_voxel"],
            carving_off=round(out["off"]["within_one_voxel"], 4),
        ),
        result(
            f"{case}, static scene", "voxels_flagged_dynamic", out["new"]["flagged"], "lower",
            peer=prev, peer_value=out["legacy"]["flagged"],
            occupied_to_free_flips=out["new"]["freed"],
            peer_flips=out["legacy"]["freed"],
        ),
        result(
            f"{case}, insert with carving", "ms_per_frame", out["new"]["ms_per_frame"], "lower",
            peer=prev, peer_value=out["legacy"]["ms_per_frame"],
            free_voxels=out["new"]["free_voxels"], peer_free_voxels=out["legacy"]["free_voxels"],
            carving_off_ms=round(out["off"]["ms_per_frame"], 2),
        ),
    ]  # fmt: skip


def bench_nearest_batch(n_voxels: int, n_points: int, repeats: int) -> list[dict]:
    from scipy.spatial import cKDTree

    mem, centers, _embs, _t = build_map(n_voxels)
    tree = mem.octree
    rng = np.random.default_rng(5)
    label = f"{tree.num_occupied() / 1e3:.0f}k occupied voxels, {n_points} points"
    batches = [
        centers[rng.integers(len(centers), size=n_points)]
        + rng.normal(scale=0.3, size=(n_points, 3))
        for _ in range(repeats)
    ]
    kd = cKDTree(centers)
    view = tree._view(0, occupied_only=True)
    t_kd, t_ours, t_old = [], [], []
    for q in batches:
        t0 = time.perf_counter()
        d_ref, _ = kd.query(q, k=1)
        t_kd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d, _ = tree.nearest_occupied(q, k=1)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d_old, _ = tree._nearest_octree(
            view, 0, q, 1, math.inf, np.full((len(q), 1), np.inf), np.full((len(q), 1), -1)
        )
        t_old.append(time.perf_counter() - t0)
        assert np.allclose(d[:, 0], d_ref) and np.allclose(d_old[:, 0], d_ref)
    # the first batch after a write pays for the KD-tree build
    tree.insert(centers[:1], stamp_ns=10**15)
    t0 = time.perf_counter()
    tree.nearest_occupied(batches[0], k=1)
    t_first = time.perf_counter() - t0
    ms = lambda v: 1e3 * percentile(v, 50)  # noqa: E731
    return [
        result(
            f"{label}: nearest occupied voxel, batched", "p50_ms", ms(t_ours), "lower",
            peer="scipy cKDTree.query over the same centres (build excluded)",
            peer_value=ms(t_kd), target_ratio=0.5,
        ),
        result(
            f"{label}: nearest occupied voxel, batched", "p50_ms", ms(t_ours), "lower",
            peer="previous octree walk (27 cells per point and level)", peer_value=ms(t_old),
        ),
        result(
            f"{label}: nearest occupied voxel, first batch after a write (tree rebuilt)",
            "ms", 1e3 * t_first, "lower",
            peer="previous octree walk", peer_value=ms(t_old),
        ),
    ]  # fmt: skip


def bench_static_objects(n_frames: int, with_encoder: bool) -> list[dict]:
    """Real frames back and forth at 30 fps -> proposals + tracker -> SpatialMemory."""
    import cv2

    from engram.memory.spatial import DynamicsConfig
    from engram.perception.geometry import backproject, voxel_downsample
    from engram.perception.objects import ObjectExtractor, ObjectsConfig
    from engram.perception.tracking import ObjectTracker, TrackerConfig
    from engram.runtime.messages import Percept
    from tests.memory.spatial._rgbd import real_sequence

    frames = real_sequence(SAMPLE_DIR)
    rgbs = [
        cv2.imread(str(SAMPLE_DIR / "color" / f"{i:05d}.jpg"))[:, :, ::-1].copy()
        for i in range(len(frames))
    ]
    encoder = None
    if with_encoder:
        from engram.perception.encoders import make_encoder

        encoder = make_encoder("clip", model_name="engram-vit-small")
        encoder.load()
    extractor = ObjectExtractor(ObjectsConfig(), encoder=encoder)
    tracker = ObjectTracker(TrackerConfig(first_id=1))
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    percepts = []
    for i in range(n_frames):
        j = order[i % len(order)]
        depth, pose = frames[j]
        cloud = backproject(depth, K, pose, stride_px=4, max_depth_m=10.0)
        objs = extractor.extract(
            rgbs[j], cloud=cloud, world_from_camera=pose, depth=depth, intrinsics=K
        )
        objs = tracker.update(objs, stamp_ns=(i + 1) * 33_333_333)
        labels = cloud.sample(objs.label_image)
        labels = np.where(np.isin(labels, objs.ids), labels, -1)
        pts, pids = voxel_downsample(cloud.points, 0.02, labels=labels)
        percepts.append(
            Percept(
                stamp_ns=(i + 1) * 33_333_333, world_from_camera=pose, object_ids=objs.ids,
                object_labels=list(objs.labels), object_confidences=objs.confidences,
                object_boxes=objs.boxes, object_centroids=objs.centroids,
                object_extents=objs.extents, object_embeddings=objs.embeddings,
                points=pts, point_object_ids=pids,
            )
        )  # fmt: skip
    out = {}
    for key, dyn in (("legacy", DynamicsConfig.legacy()), ("new", DynamicsConfig())):
        mem = SpatialMemory(SpatialConfig(dynamics=dyn))
        flagged: set[int] = set()
        for p in percepts:
            mem.write(p)
            flagged |= {o for o, r in mem.objects.records.items() if r.dynamic or r.moves}
        out[key] = (len(flagged), len(mem.objects), mem.counters["voxels_cleared"], mem)
    case = (
        f"rgbd-sample (real) played back and forth, {n_frames} frames at 30 fps, "
        f"proposals + tracker{' + CLIP regions' if with_encoder else ''} -> SpatialMemory"
    )
    prev = "previous motion rule (speed > 0.25 m/s, no minimum displacement, no persistence)"
    return [
        result(
            case, "static_objects_marked_moving", out["new"][0], "lower", peer=prev,
            peer_value=out["legacy"][0], objects=out["new"][1], peer_objects=out["legacy"][1],
        ),
        result(
            case, "voxels_removed", out["new"][2], "lower", peer=prev,
            peer_value=out["legacy"][2],
            occupied_voxels=out["new"][3].octree.num_occupied(),
            peer_occupied_voxels=out["legacy"][3].octree.num_occupied(),
        ),
    ]  # fmt: skip


def issue16_rows(quick: bool) -> list[dict]:
    from tests.memory.spatial._rgbd import K_SAMPLE, mujoco_sequence, real_sequence

    rows = []
    if (SAMPLE_DIR / "trajectory.log").is_file():
        rows += bench_sensor_model("rgbd-sample (real)", real_sequence(SAMPLE_DIR), K_SAMPLE)
        rows += bench_static_objects(30 if quick else 90, with_encoder=not quick)
    n = 40 if quick else 200
    frames, k_sim, _truth = mujoco_sequence(
        n, width=320 if quick else 640, height=240 if quick else 480
    )
    rows += bench_sensor_model("MuJoCo room loop, sensor noise + pose drift", frames, k_sim)
    rows += bench_nearest_batch(100_000, 1000, 5 if quick else 20)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under a minute)")
    parser.add_argument(
        "--only", choices=["issue16"], help="run only the issue-16 cases (sensor model, ...)"
    )
    args = parser.parse_args(argv)
    rows = []
    rows += issue16_rows(args.quick)
    if args.only:
        emit("spatial", rows)
        return 0
    n_frames = 6 if args.quick else 30
    rows += bench_insert(
        "synthetic room", synthetic_frames(n_frames), repeats=1 if args.quick else 2
    )
    real = sample_frames()
    if real:
        rows += bench_insert("rgbd-sample (real)", real, repeats=2 if args.quick else 3)
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    for n in sizes:
        rows += bench_queries(n, 200 if args.quick else 1000)
    emit("spatial", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
