"""SpatialMemory through the Memory interface: write, recall, consolidate, save/load."""

import json
from pathlib import Path

import numpy as np
import pytest

from engram.memory.base import Memory
from engram.memory.spatial import ShortTermConfig, SpatialConfig, SpatialMemory
from engram.runtime.messages import MemoryQuery, RobotState, Transcript
from tests.memory.spatial._helpers import (
    depth_to_points,
    intrinsics,
    look_at,
    make_percept,
    render_depth,
    unit,
)

S = 1_000_000_000
ROOM = (np.array([-3.0, -2.0, 0.0]), np.array([3.0, 3.0, 2.5]))
K = intrinsics(96, 72, 48.0)
OBJECTS = [  # id, label, box lo, box hi
    (1, "red mug", (-1.2, 1.0, 0.7), (-1.0, 1.2, 0.9)),
    (2, "blue book", (0.5, 1.5, 0.5), (0.9, 1.8, 0.6)),
    (3, "potted plant", (1.5, 2.2, 0.0), (1.9, 2.6, 1.0)),
]


def _scene_percept(stamp_ns, eye, target, embs, rng):
    pose = look_at(eye, target)
    boxes = [(np.array(lo), np.array(hi)) for _, _, lo, hi in OBJECTS]
    depth, which = render_depth(K, pose, (96, 72), boxes=boxes, room=ROOM)
    valid = depth.ravel() > 0
    pts = depth_to_points(depth, K, pose)
    box_idx = which.ravel()[valid]
    ids = np.full(len(pts), -1, np.int32)
    objs = []
    for i, (oid, label, _, _) in enumerate(OBJECTS):
        m = box_idx == i
        if m.any():
            ids[m] = oid
            objs.append({"id": oid, "label": label, "centroid": pts[m].mean(0),
                         "extent": np.ptp(pts[m], 0), "embedding": embs[oid]})  # fmt: skip
    return make_percept(stamp_ns=stamp_ns, world_from_camera=pose, points=pts,
                        point_object_ids=ids, objects=objs, embedding=unit(rng, 16))  # fmt: skip


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    embs = {oid: unit(rng, 16) for oid, *_ in OBJECTS}
    mem = SpatialMemory()
    stamps = []
    for i, x in enumerate(np.linspace(-1.0, 1.0, 5)):
        stamp = (i + 1) * S
        eye = np.array([x, -1.5, 1.2])
        mem.write(
            RobotState(
                stamp_ns=stamp, world_from_base=look_at(eye, eye + np.array([0.0, 1.0, 0.0]))
            )
        )
        mem.write(_scene_percept(stamp, eye, [0.0, 2.0, 0.8], embs, rng), topic="/percepts")
        stamps.append(stamp)
    return mem, embs, stamps


def test_is_a_memory_with_the_agreed_surface():
    mem = SpatialMemory(SpatialConfig())
    assert isinstance(mem, Memory)
    assert mem.name == "spatial" and mem.accepts == ("Percept", "RobotState")
    assert len(mem) == 0 and mem.stats()["records"] == 0
    assert mem.recall(MemoryQuery(text="anything")) == []
    mem.write(Transcript(text="hello"))  # other types are ignored
    assert len(mem) == 0


def test_embedding_query_ranks_3d_locations_with_evidence(scene):
    mem, embs, stamps = scene
    rng = np.random.default_rng(5)
    q = embs[1] + 0.2 * unit(rng, 16)
    hits = mem.recall(MemoryQuery(embedding=(q / np.linalg.norm(q)).astype(np.float32), top_k=3))
    assert len(hits) == 3 and hits[0].data["object_id"] == 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert top.memory == "spatial" and top.record_id == "object:1"
    assert np.linalg.norm(np.array(top.position) - [-1.1, 1.0, 0.8]) < 0.15  # visible face
    assert top.data["last_seen_ns"] == stamps[-1] and top.stamp_ns == stamps[-1]
    assert top.data["observations"] == 5 and top.data["first_seen_ns"] == stamps[0]
    assert top.data["voxels"] > 0 and top.data["present"]
    assert top.provenance.source_topic == "/percepts" and top.provenance.stamp_ns == stamps[-1]
    assert "position_in_robot" in top.data and top.data["place_id"] >= 0
    json.dumps([h.to_dict() for h in hits])  # JSON-able for a Recall message


def test_text_fallback_near_and_time_filters(scene):
    mem, embs, stamps = scene
    hits = mem.recall(MemoryQuery(text="where is the blue book?", top_k=2))
    assert hits[0].data["label"] == "blue book" and hits[0].data["label_match"] == 1.0
    # text plus an embedding of another dimension (e.g. a text encoder): label match still works
    hits = mem.recall(
        MemoryQuery(text="potted plant", embedding=unit(np.random.default_rng(1), 384))
    )
    assert hits[0].data["object_id"] == 3
    # near + radius: only what is within the ball, nearest first when nothing else ranks
    near = np.array([0.7, 1.6, 0.55], np.float32)
    hits = mem.recall(MemoryQuery(near=near, radius_m=0.5, top_k=5))
    kinds = [h.data["kind"] for h in hits]
    assert "object" in kinds and "occupancy" in kinds
    objects = [h for h in hits if h.data["kind"] == "object"]
    assert [h.data["object_id"] for h in objects] == [2]
    occ = next(h for h in hits if h.data["kind"] == "occupancy")
    assert occ.data["distance_m"] < 0.1 and occ.data["occupied_within_radius"] > 0
    # an embedding query restricted to a region excludes the best match elsewhere
    hits = mem.recall(MemoryQuery(embedding=embs[1], near=near, radius_m=0.5, top_k=5))
    assert all(h.data.get("object_id") != 1 for h in hits)
    # time window: nothing was seen after the last stamp
    assert mem.recall(MemoryQuery(embedding=embs[1], t0_ns=stamps[-1] + 1)) == []
    hits = mem.recall(MemoryQuery(embedding=embs[1], t0_ns=stamps[0], t1_ns=stamps[1]))
    assert hits and hits[0].data["object_id"] == 1


def test_short_term_memory_answers_first_then_long_term():
    rng = np.random.default_rng(2)
    embs = {oid: unit(rng, 16) for oid, *_ in OBJECTS}
    mem = SpatialMemory(SpatialConfig(short_term=ShortTermConfig(capacity=2)))
    for i, (oid, label, lo, hi) in enumerate(OBJECTS):
        c = (np.array(lo) + np.array(hi)) / 2
        mem.write(make_percept(stamp_ns=(i + 1) * S, world_from_camera=np.eye(4),
                               objects=[{"id": oid, "label": label, "centroid": c, "embedding": embs[oid]}]))  # fmt: skip
    assert set(mem.short_term.entries) == {2, 3}  # object 1 was evicted (oldest)
    hit = mem.recall(MemoryQuery(embedding=embs[3], top_k=1))[0]
    assert hit.data["object_id"] == 3 and hit.data["tier"] == "short_term"
    assert mem.short_term.entries[3].frequency == 2  # recalled: reinforced
    hit = mem.recall(MemoryQuery(embedding=embs[1], top_k=1))[0]
    assert hit.data["object_id"] == 1 and hit.data["tier"] == "long_term"


def _state(mem):
    cols = mem.octree.columns()
    objs = {k: (r.label, r.position.tolist(), r.embedding.tobytes() if r.embedding is not None else None,
                r.observations, r.first_seen_ns, r.last_seen_ns, r.velocity.tolist(), r.dynamic,
                r.provenance, r.had_voxels, r.moves)
            for k, r in mem.objects.records.items()}  # fmt: skip
    places = [(p.position.tolist(), None if p.descriptor is None else p.descriptor.tobytes(),
               p.views, p.visits, p.landmarks) for p in mem.places.places]  # fmt: skip
    stm = {
        k: (e.label, e.position.tolist(), e.frequency, e.stamp_ns)
        for k, e in mem.short_term.entries.items()
    }
    ring = [
        (f.stamp_ns, f.points.tobytes(), f.object_ids.tobytes(), f.velocities.tobytes())
        for f in mem.transient.frames
    ]
    return ({k: v.tobytes() for k, v in cols.items()}, objs, places, mem.places.edges, stm, ring,
            mem.stats(), mem.world_from_robot.tobytes(), mem.config)  # fmt: skip


def test_save_load_restores_the_exact_state_and_config(scene, tmp_path):
    mem, _, _ = scene
    mem.save(tmp_path / "spatial")
    other = SpatialMemory(SpatialConfig(max_voxels=10))  # config comes back from the save
    other.load(tmp_path / "spatial")
    assert _state(other) == _state(mem)
    # saving the loaded copy gives the same arrays again
    other.save(tmp_path / "again")
    a = np.load(tmp_path / "spatial" / "spatial.npz")
    b = np.load(tmp_path / "again" / "spatial.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    # (recalls after save -> load are compared for every memory: test_testing.py)


def test_load_errors_leave_memory_unchanged(scene, tmp_path):
    mem, _, _ = scene
    before = _state(mem)
    with pytest.raises(FileNotFoundError, match=r"spatial\.json"):
        mem.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "spatial.json").write_text("{not json")
    (tmp_path / "bad" / "spatial.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="JSON"):
        mem.load(tmp_path / "bad")
    assert _state(mem) == before


def test_bad_percepts_are_rejected_without_changes(scene):
    mem, embs, stamps = scene
    rng = np.random.default_rng(9)
    good = _scene_percept(stamps[-1] + S, np.array([0.0, -1.5, 1.2]), [0, 2, 0.8], embs, rng)
    before = _state(mem)

    def rejected(msg, match):
        with pytest.raises(ValueError, match=match):
            mem.write(msg)
        after = _state(mem)
        assert after[:6] == before[:6] and after[7:] == before[7:]
        stats_before = {k: v for k, v in before[6].items() if k != "rejected"}
        assert {k: v for k, v in after[6].items() if k != "rejected"} == stats_before

    # messages validate on construction; these were corrupted afterwards
    bad = good.replace()
    bad.world_from_camera = np.diag([2.0, 1.0, 1.0, 1.0])
    rejected(bad, "world_from_camera.*rigid")
    bad = good.replace()
    bad.world_from_camera = np.full((4, 4), np.nan)
    rejected(bad, "world_from_camera.*NaN")
    bad = good.replace()
    bad.point_object_ids = bad.point_object_ids[:10]
    rejected(bad, "point_object_ids")
    bad = good.replace()
    bad.object_ids = np.array([1, 1, 2][: len(bad.object_ids)], np.int32)
    rejected(bad, "object_ids")
    bad = good.replace()
    bad.object_centroids = bad.object_centroids.copy()
    bad.object_centroids[0, 0] = np.inf
    rejected(bad, "object_centroids")
    bad = good.replace()
    bad.points = bad.points.copy()
    bad.points[0] = [1e9, 0, 0]
    rejected(bad, "range")
    with pytest.raises(ValueError, match="world_from_base"):
        state = RobotState(stamp_ns=stamps[-1] + S, world_from_base=np.eye(4))
        state.world_from_base = np.eye(4) * 2
        mem.write(state)
    assert mem.stats()["rejected"] == 7


def test_nan_points_are_masked_and_empty_clouds_accepted(scene):
    mem, embs, stamps = scene
    rng = np.random.default_rng(3)
    p = _scene_percept(stamps[-1] + S, np.array([0.0, -1.5, 1.2]), [0, 2, 0.8], embs, rng)
    p.points = p.points.copy()
    p.points[:25] = np.nan
    n_occ = mem.octree.num_occupied()
    mem.write(p)
    assert mem.stats()["points_dropped"] == 25 and mem.last_insert.hit_voxels > 0
    assert abs(mem.octree.num_occupied() - n_occ) < 0.05 * n_occ
    voxels = len(mem.octree)
    empty = make_percept(stamp_ns=stamps[-1] + 2 * S, world_from_camera=np.eye(4),
                         points=np.zeros((0, 3)), point_object_ids=np.zeros(0))  # fmt: skip
    mem.write(empty)
    assert len(mem.octree) == voxels and mem.stats()["percepts"] == 7


def test_consolidate_bounds_the_octree(scene):
    mem, _, _ = scene
    mem.config.max_voxels = 2000
    n_occ = mem.octree.num_occupied()
    assert len(mem.octree) > 2000
    mem.consolidate()
    assert len(mem.octree) == 2000 and mem.octree.num_occupied() == min(n_occ, 2000)


def test_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, engram.memory.spatial; "
        "heavy = [m for m in ('torch', 'open3d', 'mujoco', 'cv2', 'scipy', 'networkx') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3]
    )
