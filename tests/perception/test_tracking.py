"""ObjectTracker: persistent ids for proposals; and the node's real-camera path with it."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from engram.perception.objects import Objects
from engram.perception.tracking import ObjectTracker, TrackerConfig, box_iou

FRAME_NS = 100_000_000  # 10 Hz


def _unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _objs(
    boxes,
    *,
    emb: np.ndarray | None = None,
    centroids=None,
    labels: list[str] | None = None,
    confidences=None,
) -> Objects:
    boxes = np.asarray(boxes, np.int32).reshape(-1, 4)
    k = len(boxes)
    located = np.zeros(k, bool) if centroids is None else np.ones(k, bool)
    return Objects(
        ids=np.arange(k, dtype=np.int32),
        labels=labels if labels is not None else ["object"] * k,
        confidences=np.asarray(
            confidences if confidences is not None else np.full(k, 0.5), np.float32
        ),
        boxes=boxes,
        centroids=np.zeros((k, 3), np.float32)
        if centroids is None
        else np.asarray(centroids, np.float32),
        extents=np.zeros((k, 3), np.float32),
        embeddings=emb,
        located=located,
    )


def _box(x: float, y: float, size: int = 40) -> list[int]:
    return [round(x), round(y), round(x) + size, round(y) + size]


def test_box_iou_and_config_checks():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])
    with pytest.raises(ValueError, match="min_iou"):
        TrackerConfig(min_iou=1.0)
    with pytest.raises(ValueError, match="max_tracks"):
        TrackerConfig(max_tracks=0)


def test_moving_boxes_keep_their_ids_in_any_detection_order():
    rng = np.random.default_rng(0)
    emb = _unit(rng, 3)
    starts = np.array([[20.0, 30.0], [300.0, 200.0], [500.0, 50.0]])
    velocity = np.array([[6.0, 2.0], [-4.0, 5.0], [0.0, 7.0]])  # px per frame
    tracker = ObjectTracker()
    seen: list[list[int]] = []
    for f in range(25):
        order = rng.permutation(3)  # detection order is arbitrary
        pos = starts + f * velocity
        noisy = emb + 0.05 * rng.normal(size=emb.shape).astype(np.float32)
        out = tracker.update(
            _objs([_box(*pos[i]) for i in order], emb=noisy[order]), stamp_ns=f * FRAME_NS
        )
        by_object = np.empty(3, np.int64)
        by_object[order] = out.ids
        seen.append(by_object.tolist())
    assert all(ids == seen[0] for ids in seen)
    assert len(set(seen[0])) == 3 and len(tracker) == 3


def _crossing(with_embeddings: bool) -> list[list[int]]:
    """Two boxes of 40 px meet head-on at 8 px per frame: between frames 10 and 11 a
    box lands exactly where the other one was, so geometry alone prefers the swap."""
    rng = np.random.default_rng(1)
    emb = _unit(rng, 2)
    tracker = ObjectTracker()
    ids = []
    for f in range(22):
        xs = (100.0 + 8 * f, 268.0 - 8 * f)  # 268 - 100 = 8 * (2 * 10 + 1)
        e = emb + 0.05 * rng.normal(size=emb.shape).astype(np.float32)
        out = tracker.update(
            _objs([_box(xs[0], 100), _box(xs[1], 100)], emb=e if with_embeddings else None),
            stamp_ns=f * FRAME_NS,
        )
        ids.append(out.ids.tolist())
    return ids


def test_crossing_paths_are_disambiguated_by_embeddings():
    with_emb = _crossing(with_embeddings=True)
    assert all(ids == with_emb[0] for ids in with_emb)
    # the check can fail: on boxes alone the tracks swap at the crossing
    without = _crossing(with_embeddings=False)
    assert without[-1] == without[0][::-1]


def test_world_centroids_survive_camera_motion_that_2d_iou_cannot():
    rng = np.random.default_rng(2)
    emb = _unit(rng, 2)
    cents = [[1.0, 0.0, 2.0], [1.5, 0.2, 2.5]]
    before = [_box(100, 100), _box(200, 120)]
    after = [_box(400, 90), _box(500, 110)]  # the camera turned: boxes jump 300 px
    with_depth = ObjectTracker()
    a = with_depth.update(_objs(before, emb=emb, centroids=cents), stamp_ns=0)
    b = with_depth.update(_objs(after, emb=emb, centroids=cents), stamp_ns=FRAME_NS)
    assert b.ids.tolist() == a.ids.tolist()
    no_depth = ObjectTracker()
    a2 = no_depth.update(_objs(before, emb=emb), stamp_ns=0)
    b2 = no_depth.update(_objs(after, emb=emb), stamp_ns=FRAME_NS)
    assert set(b2.ids.tolist()).isdisjoint(a2.ids.tolist())
    # in 3D the gate is distance: an object 1 m away from any track is a new one,
    # even where a track's box was
    moved = [[1.0, 0.0, 3.0], [1.5, 0.2, 2.5]]
    c = with_depth.update(_objs(after, emb=emb, centroids=moved), stamp_ns=2 * FRAME_NS)
    assert c.ids[0] not in b.ids and c.ids[1] == b.ids[1]


def _gap_run(gap_frames: int, config: TrackerConfig, frame_ns: int = FRAME_NS) -> tuple[int, int]:
    """Object A always visible; object B visible, away for ``gap_frames``, back.
    -> (B's id before, B's id after)."""
    rng = np.random.default_rng(3)
    emb = _unit(rng, 2)
    tracker = ObjectTracker(config)
    f = 0
    first = tracker.update(_objs([_box(50, 50), _box(300, 300)], emb=emb), stamp_ns=0)
    for f in range(1, gap_frames + 1):
        tracker.update(_objs([_box(50, 50)], emb=emb[:1]), stamp_ns=f * frame_ns)
    back = tracker.update(
        _objs([_box(50, 50), _box(300, 300)], emb=emb), stamp_ns=(f + 1) * frame_ns
    )
    assert back.ids[0] == first.ids[0]  # A kept its id throughout
    return int(first.ids[1]), int(back.ids[1])


def test_returning_object_keeps_its_id_only_within_max_age():
    cfg = TrackerConfig(max_age_frames=3, max_age_s=60.0)
    before, after = _gap_run(3, cfg)
    assert after == before
    before, after = _gap_run(4, cfg)
    assert after != before and after > before  # a new id, never a reused one
    # the time limit also applies (frames are sparse when the camera is static)
    cfg = TrackerConfig(max_age_frames=100, max_age_s=1.0)
    before, after = _gap_run(1, cfg, frame_ns=400_000_000)  # back after 0.8 s
    assert after == before
    before, after = _gap_run(2, cfg, frame_ns=400_000_000)  # back after 1.2 s
    assert after != before


def test_label_flicker_is_smoothed_by_the_track_majority():
    rng = np.random.default_rng(4)
    emb = _unit(rng, 1)
    raw = ["mug", "mug", "cup", "mug", "cup", "mug", "mug", "cup", "mug", "cup"]
    conf = [0.6, 0.5, 0.4, 0.7, 0.45, 0.5, 0.6, 0.35, 0.55, 0.4]
    tracker = ObjectTracker(TrackerConfig(label_window=6))
    plain = ObjectTracker(TrackerConfig(smooth_labels=False))
    labels, confs = [], []
    for f, (lb, c) in enumerate(zip(raw, conf)):
        o = _objs([_box(100 + f, 100)], emb=emb, labels=[lb], confidences=[c])
        out = tracker.update(o, stamp_ns=f * FRAME_NS)
        labels.append(out.labels[0])
        confs.append(float(out.confidences[0]))
        assert plain.update(o, stamp_ns=f * FRAME_NS).labels == [lb]
    assert labels == ["mug"] * len(raw)
    # a replaced label carries the mean confidence of the majority's votes
    assert confs[2] == pytest.approx((0.6 + 0.5) / 2)
    assert confs[0] == pytest.approx(0.6)
    # a lasting change of label wins once it is the majority of the window
    for f in range(len(raw), len(raw) + 6):
        o = _objs([_box(100 + f, 100)], emb=emb, labels=["cup"], confidences=[0.5])
        last = tracker.update(o, stamp_ns=f * FRAME_NS).labels[0]
    assert last == "cup"


def test_random_stream_ids_are_never_reused_and_tracks_stay_bounded():
    cfg = TrackerConfig(max_tracks=20, max_age_frames=5, first_id=0)  # fixed ids: comparable

    def run() -> list[list[int]]:
        rng = np.random.default_rng(5)
        tracker = ObjectTracker(cfg)
        retired: set[int] = set()
        issued_max = -1
        live: set[int] = set()
        outputs = []
        for f in range(150):
            k = int(rng.integers(0, 15))
            xy = rng.uniform(0, 600, size=(k, 2))
            boxes = [_box(x, y, int(rng.integers(10, 80))) for x, y in xy]
            located = rng.random() < 0.5
            cents = rng.uniform(-3, 3, size=(k, 3)) if located else None
            out = tracker.update(
                _objs(boxes, emb=_unit(rng, k), centroids=cents), stamp_ns=f * FRAME_NS
            )
            ids = out.ids.tolist()
            assert len(set(ids)) == k  # one id per detection
            assert not retired & set(ids)  # a dropped track's id never comes back
            for i in ids:
                assert i in live or i > issued_max  # continuing, or brand new
            issued_max = max([issued_max, *ids])
            now = set(tracker.track_ids)
            retired |= live - now
            live = now
            assert len(tracker) <= cfg.max_tracks
            outputs.append(ids)
        assert tracker.stats["tracks_dropped"] > 0 and retired
        return outputs

    assert run() == run()  # deterministic


def test_default_ids_of_two_runs_do_not_collide():
    import time

    from engram.perception.tracking import track_id_source

    first = next(track_id_source(TrackerConfig()))
    time.sleep(0.005)
    second = next(track_id_source(TrackerConfig()))
    assert 0 < first < 2**31 and 0 < second < 2**31
    assert second != first  # a restarted process starts elsewhere (clock-derived)
    assert next(track_id_source(TrackerConfig(first_id=7))) == 7


def test_restart_when_stamps_go_back_drops_tracks_but_not_the_id_counter():
    emb = _unit(np.random.default_rng(6), 2)
    tracker = ObjectTracker()
    frame = _objs([_box(10, 10), _box(200, 10)], emb=emb)
    first = tracker.update(frame, stamp_ns=5 * FRAME_NS)
    assert tracker.update(frame, stamp_ns=6 * FRAME_NS).ids.tolist() == first.ids.tolist()
    again = tracker.update(frame, stamp_ns=FRAME_NS)  # a replay restarted
    assert again.ids.min() > first.ids.max() and tracker.stats["resets"] == 1
    tracker.reset()
    assert len(tracker) == 0
    assert tracker.update(frame, stamp_ns=0).ids.min() > again.ids.max()


def test_label_image_follows_the_track_ids():
    emb = _unit(np.random.default_rng(7), 2)
    img = np.full((50, 300), -1, np.int32)
    img[10:40, 10:50] = 0
    img[10:40, 200:240] = 1
    tracker = ObjectTracker(TrackerConfig(first_id=100))
    o = _objs([_box(10, 10), _box(200, 10)], emb=emb)
    o.label_image = img
    tracker.update(_objs([_box(200, 10)], emb=emb[1:]), stamp_ns=0)  # id 100: object 1
    out = tracker.update(o, stamp_ns=FRAME_NS)
    assert out.ids.tolist() == [101, 100]
    assert out.label_image[20, 20] == 101 and out.label_image[20, 220] == 100
    assert out.label_image[0, 0] == -1 and o.label_image[20, 20] == 0  # input untouched


def test_bad_input_raises_naming_the_field_and_leaves_state_unchanged():
    rng = np.random.default_rng(8)
    emb = _unit(rng, 3)
    good = [_objs([_box(10 * i, 10 * i) for i in range(3)], emb=emb) for _ in range(3)]
    tracker, twin = ObjectTracker(), ObjectTracker()
    for t in (tracker, twin):
        t.update(good[0], stamp_ns=0)

    def bad(field: str, **changes) -> Objects:
        o = _objs([_box(10 * i, 10 * i) for i in range(3)], emb=emb.copy())
        for k, v in changes.items():
            setattr(o, k, v)
        return o

    nan_centroids = np.zeros((3, 3), np.float32)
    nan_centroids[1, 2] = np.nan
    cases = [
        ("centroids", bad("centroids", centroids=nan_centroids)),
        ("labels", bad("labels", labels=["a", "b"])),
        ("boxes", bad("boxes", boxes=np.zeros((3, 3), np.int32))),
        ("confidences", bad("confidences", confidences=np.zeros(2, np.float32))),
        ("embeddings", bad("embeddings", embeddings=_unit(rng, 3, dim=16))),  # width
        ("embeddings", bad("embeddings", embeddings=np.full((3, 32), np.nan, np.float32))),
        ("ids", bad("ids", ids=np.zeros(3, np.int32))),
        ("located", bad("located", located=np.ones(2, bool))),
    ]
    for field, objs in cases:
        with pytest.raises(ValueError, match=field):
            tracker.update(objs, stamp_ns=FRAME_NS)
    with pytest.raises(ValueError, match="stamp_ns"):
        tracker.update(good[1], stamp_ns=-1)
    assert tracker.stats == twin.stats and tracker.track_ids == twin.track_ids
    for f, o in enumerate(good[1:], start=1):  # both continue identically
        assert (
            tracker.update(o, stamp_ns=f * FRAME_NS).ids.tolist()
            == twin.update(o, stamp_ns=f * FRAME_NS).ids.tolist()
        )


# --- the real-camera path on real RGB-D frames ------------------------------------------

K_PRIMESENSE = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])


def _real_frames(sample: Path) -> list:
    import cv2

    from engram.runtime.messages import Frame

    lines = [ln for ln in (sample / "trajectory.log").read_text().splitlines() if ln.strip()]
    poses = [
        np.array([[float(v) for v in lines[i + k].split()] for k in range(1, 5)])
        for i in range(0, len(lines), 5)
    ]
    frames = []
    for i, pose in enumerate(poses):
        bgr = cv2.imread(str(sample / "color" / f"{i:05d}.jpg"))
        depth = cv2.imread(str(sample / "depth" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        frames.append(
            Frame(
                stamp_ns=(i + 1) * 33_333_333,
                seq=i + 1,
                camera="rgbd",
                rgb=np.ascontiguousarray(bgr[:, :, ::-1]),
                depth=depth.astype(np.float32) / 1000.0,
                intrinsics=K_PRIMESENSE,
                world_from_camera=pose,
            )
        )
    return frames


def _percepts(frames: list, *, tracking: bool) -> tuple[list, object]:
    from engram.perception.node import PerceptionConfig, PerceptionNode
    from engram.runtime.bus import InProcBus

    bus = InProcBus(f"tracking-{tracking}")
    cfg = PerceptionConfig(
        model_name="engram-vit-tiny",
        device="cpu",
        audio_enabled=False,
        heartbeat_hz=0.0,
        max_queue=len(frames) + 1,
        keyframes={"min_interval_s": 0.0, "pixel_change_threshold": 0.0},  # every frame
        tracker={"enabled": tracking},
    )
    node = PerceptionNode(cfg, bus=bus)
    sub = bus.subscribe("/percepts", "queue(100)")
    node.configure()
    for frame in frames:
        node.on_frames(frame)
        node._process_batch(node.work.take(1, 0.0))  # the worker's code path, in order
    got = sub.drain()
    assert len(got) == len(frames) and node.counters["frame_errors"] == 0
    return got, (node, bus, sub)


def _same_object_pairs(a, b, radius_m: float = 0.03) -> list[tuple[int, int]]:
    """Ground truth from geometry, not from the tracker: objects of two percepts whose
    world points overlap (each covers >= half of the other's points within radius_m)."""
    from scipy.spatial import cKDTree

    def clouds(p) -> dict[int, np.ndarray]:
        return {
            int(i): p.points[p.point_object_ids == i]
            for i in p.object_ids
            if np.sum(p.point_object_ids == i) >= 20
        }

    ca, cb = clouds(a), clouds(b)
    trees = {j: cKDTree(pts) for j, pts in cb.items()}
    pairs = []
    for i, pa in ca.items():
        ta = cKDTree(pa)
        for j, pb in cb.items():
            ab = np.mean(trees[j].query(pa, distance_upper_bound=radius_m)[0] <= radius_m)
            ba = np.mean(ta.query(pb, distance_upper_bound=radius_m)[0] <= radius_m)
            if ab >= 0.5 and ba >= 0.5:
                pairs.append((i, j))
    return pairs


def _kept_share(percepts: list) -> tuple[float, int, float]:
    """(share of same-object pairs of consecutive percepts that kept their id, pairs,
    share of consecutive id equalities that are the same object)."""
    kept = total = equal = equal_true = 0
    for a, b in itertools.pairwise(percepts):
        pairs = set(_same_object_pairs(a, b))
        # point ids are the percept's object ids: a pair (i, j) kept its id when i == j
        total += len(pairs)
        kept += sum(i == j for i, j in pairs)
        same = set(a.object_ids.tolist()) & set(b.object_ids.tolist())
        equal += len(same)
        equal_true += sum((i, i) in pairs for i in same)
    return kept / max(total, 1), total, equal_true / max(equal, 1)


def test_real_rgbd_proposals_keep_their_ids_through_the_node(rgbd_sample_dir):
    from engram.runtime.messages import Frame

    frames = _real_frames(rgbd_sample_dir)
    tracked, (node, bus, sub) = _percepts(frames, tracking=True)
    share, pairs, precision = _kept_share(tracked)
    assert pairs >= 12  # about 6-7 objects per frame pair are the same object
    # measured: 27 of 29 same-object pairs kept their id (0.93; the misses: a region
    # that merged with the floor in frame 1, its centroid 0.46 m off, beyond the 0.3 m
    # gate) and every id kept between frames was the same object (1.0); frame-local
    # ids (below) score 0.79 and 0.72
    assert share >= 0.85 and precision >= 0.9, (share, precision)
    for p in tracked:  # point ids follow the object ids
        assert set(np.unique(p.point_object_ids).tolist()) <= {-1, *p.object_ids.tolist()}
    assert node.health()["counters"]["tracks_live"] >= 6

    # a replay restart (seq and stamps back to the start): new tracks, ids never reused
    before = max(int(p.object_ids.max()) for p in tracked)
    node.on_frames(frames[0])
    node._process_batch(node.work.take(1, 0.0))
    (replayed,) = sub.drain()
    assert replayed.object_ids.min() > before and node.counters["tracker_resets"] == 1

    # the simulator path keeps its segmentation ids: no tracker touches them
    seg = np.full((480, 640), -1, np.int32)
    seg[100:200, 100:300] = 42
    sim = Frame(
        stamp_ns=10**9,
        camera="sim",
        rgb=frames[1].rgb,
        depth=frames[1].depth,
        segmentation=seg,
        intrinsics=K_PRIMESENSE,
        world_from_camera=frames[1].world_from_camera,
        labels={"42": "sofa"},
    )
    node.on_frames(sim)
    node._process_batch(node.work.take(1, 0.0))
    (sp,) = sub.drain()
    assert sp.object_ids.tolist() == [42] and sp.object_labels == ["sofa"]
    assert "sim" not in node._trackers
    bus.close()

    # the check can fail: with tracking disabled, the frame-local ids miss the bound
    local, (_, bus2, _) = _percepts(frames, tracking=False)
    bus2.close()
    assert all(p.object_ids.tolist() == list(range(len(p.object_ids))) for p in local)
    base_share, base_pairs, base_precision = _kept_share(local)
    assert base_pairs == pairs  # the same proposals, only the ids differ
    assert base_share < 0.85 or base_precision < 0.9, (base_share, base_precision)


def test_a_lamp_lighting_up_keeps_its_track_when_it_stays_put():
    """Same place, new look (a button's lamp lights up): one track with same_place_m; a
    new track (an identity switch) without it; an object that moved still needs its look."""
    rng = np.random.default_rng(3)
    dark, lit = _unit(rng, 2)
    for same_place_m, want_same in ((0.02, True), (0.0, False)):
        tr = ObjectTracker(TrackerConfig(first_id=1, same_place_m=same_place_m))
        for k in range(3):  # seen dark a few times: its label is "blue button"
            a = tr.update(
                _objs(
                    [_box(10, 10)],
                    emb=dark[None],
                    centroids=[[0.1, 0.2, 0.43]],
                    labels=["blue button"],
                ),
                stamp_ns=(k + 1) * FRAME_NS,
            )
        b = tr.update(
            _objs(
                [_box(10, 10)], emb=lit[None], centroids=[[0.1, 0.205, 0.43]], labels=["blue bowl"]
            ),
            stamp_ns=4 * FRAME_NS,
        )
        assert bool(a.ids[0] == b.ids[0]) is want_same
        if want_same:
            assert b.labels == ["blue button"]  # the track's majority label holds
    tr = ObjectTracker(TrackerConfig(first_id=1, same_place_m=0.02))
    a = tr.update(
        _objs([_box(10, 10)], emb=dark[None], centroids=[[0.1, 0.2, 0.43]]), stamp_ns=FRAME_NS
    )
    b = tr.update(
        _objs([_box(10, 10)], emb=lit[None], centroids=[[0.2, 0.2, 0.43]]), stamp_ns=2 * FRAME_NS
    )
    assert a.ids[0] != b.ids[0]
    with pytest.raises(ValueError, match="same_place_m"):
        TrackerConfig(same_place_m=-1.0)


def test_min_hits_reports_a_track_once_it_is_confirmed():
    """A proposal seen in one frame only (a flicker) is never reported with min_hits 2;
    a steady object is reported from its second frame on, with its pixels labelled
    only then; min_hits 1 reports everything at once."""
    steady = [[0.1, 0.2, 0.43]]
    flicker = [[0.4, 0.0, 0.43]]
    label_image = np.full((60, 120), -1, np.int32)
    label_image[10:50, 10:50] = 0
    label_image[10:50, 70:110] = 1

    def frame(with_flicker: bool) -> Objects:
        objs = _objs(
            [_box(10, 10), _box(70, 10)] if with_flicker else [_box(10, 10)],
            centroids=steady + flicker if with_flicker else steady,
            labels=["red cube", "white mug"] if with_flicker else ["red cube"],
        )
        img = label_image if with_flicker else np.where(label_image == 1, -1, label_image)
        return dataclasses.replace(objs, label_image=img)

    tr = ObjectTracker(TrackerConfig(first_id=1, min_hits=2))
    out = [tr.update(frame(k == 2), stamp_ns=(k + 1) * FRAME_NS) for k in range(4)]
    assert [len(o) for o in out] == [0, 1, 1, 1]  # the cube from frame 2; never the flicker
    assert [o.labels for o in out[1:]] == [["red cube"]] * 3
    assert set(np.unique(out[0].label_image)) == {-1}
    assert set(np.unique(out[2].label_image)) == {-1, int(out[2].ids[0])}
    assert out[2].centroids.shape == (1, 3) and out[2].located.tolist() == [True]
    assert tr.stats["tentative"] == 2
    once = ObjectTracker(TrackerConfig(first_id=1))
    assert [len(once.update(frame(k == 2), stamp_ns=(k + 1) * FRAME_NS)) for k in range(4)] == [
        1,
        1,
        2,
        1,
    ]
    with pytest.raises(ValueError, match="min_hits"):
        TrackerConfig(min_hits=0)


def test_an_object_seen_again_after_its_track_aged_out_keeps_its_id():
    """Regression (apartment tour): the robot turned away from the ball for longer than
    max_age_s and back; the ball, 5 cm from where its track was, got a new id and memory
    kept two balls. With re-identification it keeps its id, and the gate scales with the
    object's size: a second token 7 cm from a lost 3 cm token is a second token."""

    def frame(label: str, centroid, size: float) -> Objects:
        objs = _objs([_box(40, 40)], centroids=[centroid], labels=[label])
        return dataclasses.replace(objs, extents=np.full((1, 3), size, np.float32))

    def run(cfg: TrackerConfig, label: str, size: float, moved_m: float) -> tuple[int, int]:
        tr = ObjectTracker(cfg)
        first = tr.update(frame(label, [3.0, 1.0, 0.7], size), stamp_ns=0)
        tr.update(_objs(np.zeros((0, 4))), stamp_ns=10 * 10**9)  # 10 s away: aged out
        assert len(tr) == 0
        back = tr.update(frame(label, [3.0 + moved_m, 1.0, 0.7], size), stamp_ns=20 * 10**9)
        return int(first.ids[0]), int(back.ids[0])

    reid = TrackerConfig(first_id=1, reid_extent_frac=0.75)
    a, b = run(reid, "blue ball", 0.12, 0.05)
    assert a == b  # one ball
    a, b = run(TrackerConfig(first_id=1), "blue ball", 0.12, 0.05)
    assert a != b  # without re-identification: two balls (what round 3 did)
    a, b = run(reid, "pink token", 0.03, 0.07)
    assert a != b  # two tokens stay two
    a, b = run(reid, "blue ball", 0.12, 0.20)
    assert a != b  # too far: another ball
    # another label at the same spot is another object
    tr = ObjectTracker(reid)
    first = tr.update(frame("blue ball", [3.0, 1.0, 0.7], 0.12), stamp_ns=0)
    tr.update(_objs(np.zeros((0, 4))), stamp_ns=10 * 10**9)
    other = tr.update(frame("red mug", [3.0, 1.0, 0.7], 0.12), stamp_ns=20 * 10**9)
    assert other.ids[0] != first.ids[0] and tr.stats["reidentified"] == 0
    with pytest.raises(ValueError, match="reid_extent_frac"):
        TrackerConfig(reid_extent_frac=-1.0)


def test_a_track_begun_on_a_sliver_takes_the_whole_object_seen_later():
    """Regression (fresh tours 13401, 13402): a 5 cm sliver of a far book was tracked, lost,
    and the whole 20 cm book seen 8.5 cm from it 5.6 s later became a second book (the gate
    was 0.75 x the sliver's 5 cm). The gate is sized by the larger of the two extents."""

    def frame(centroid, size: float) -> Objects:
        objs = _objs([_box(40, 40)], centroids=[centroid], labels=["red book"])
        return dataclasses.replace(objs, extents=np.full((1, 3), size, np.float32))

    tr = ObjectTracker(TrackerConfig(first_id=1, reid_extent_frac=0.75))
    sliver = tr.update(frame([3.0, 1.0, 0.7], 0.05), stamp_ns=0)
    tr.update(_objs(np.zeros((0, 4))), stamp_ns=6 * 10**9)  # aged out
    whole = tr.update(frame([3.085, 1.0, 0.7], 0.20), stamp_ns=int(5.6e9) + 6 * 10**9)
    assert int(whole.ids[0]) == int(sliver.ids[0]) and tr.stats["reidentified"] == 1
