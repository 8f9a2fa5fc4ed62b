"""Keyframe selection: cheap signals on every frame, segment test on embeddings."""

from __future__ import annotations

import numpy as np

from engram.perception.keyframes import KeyframeConfig, KeyframeSelector, thumbnail


def _pose(x: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    pose[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    pose[0, 3] = x
    return pose


def test_thumbnail_is_small_and_area_averaged():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 320:] = 200
    th = thumbnail(img, 32)
    assert th.shape == (24, 32, 3) and th.dtype == np.uint8
    assert th[:, :16].max() == 0 and th[:, 16:].min() == 200


def test_static_camera_gives_only_periodic_keyframes():
    cfg = KeyframeConfig(max_interval_s=2.0, min_interval_s=0.1)
    sel = KeyframeSelector(cfg)
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    decisions = [sel.check(img, _pose(), i / 30.0) for i in range(300)]  # 10 s at 30 fps
    candidates = [i for i, d in enumerate(decisions) if d.candidate]
    assert decisions[0].reason == "first"
    # nothing changes: a forced keyframe every max_interval_s (t = 0, 2, 4, 6, 8 s)
    assert candidates == [0, 60, 120, 180, 240]
    assert all(decisions[i].forced for i in candidates)
    assert {d.reason for d in decisions if not d.candidate} <= {"static", "rate"}


def test_pixel_and_pose_changes_make_candidates_at_most_at_the_rate_cap():
    cfg = KeyframeConfig(min_interval_s=0.1, max_interval_s=100.0)
    sel = KeyframeSelector(cfg)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert sel.check(img, _pose(), 0.0).candidate
    # a new image 1/30 s later is inside the rate cap
    other = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    d = sel.check(other, _pose(), 1 / 30)
    assert not d.candidate and d.reason == "rate"
    d = sel.check(other, _pose(), 0.2)
    assert d.candidate and d.reason == "pixels" and d.pixel_change > cfg.pixel_change_threshold
    # same image, camera moved 15 cm -> pose candidate; then turned 10 degrees
    d = sel.check(other, _pose(x=0.15), 0.4)
    assert d.candidate and d.reason == "pose" and abs(d.translation_m - 0.15) < 1e-9
    d = sel.check(other, _pose(x=0.15, yaw=np.radians(10)), 0.6)
    assert d.candidate and d.reason == "pose" and abs(d.rotation_rad - np.radians(10)) < 1e-6
    # small motion below thresholds is ignored
    d = sel.check(other, _pose(x=0.17, yaw=np.radians(11)), 0.8)
    assert not d.candidate and d.reason == "static"
    # a big change hints "likely keyframe" (kept first when a queue overflows)
    d = sel.check(other, _pose(x=1.0), 1.0)
    assert d.likely_keyframe and not d.forced


def test_embedding_segments():
    sel = KeyframeSelector(KeyframeConfig(segment_similarity_threshold=0.9))
    rng = np.random.default_rng(2)
    a = rng.normal(size=64)
    a /= np.linalg.norm(a)
    b = rng.normal(size=64)
    b /= np.linalg.norm(b)

    def near(v: np.ndarray) -> np.ndarray:
        w = v + 0.05 * rng.normal(size=64) / 8
        return w / np.linalg.norm(w)

    flags = [sel.observe(near(a), t) for t in range(5)]
    assert flags == [True, False, False, False, False]  # one segment
    assert sel.observe(near(b), 5.0) is True  # a different view starts a new segment
    assert sel.observe(near(b), 6.0) is False
    assert sel.observe(near(b), 7.0, forced=True) is True  # forced frames are keyframes
    assert sel.segments == 2


def test_clock_going_backwards_restarts_the_selector():
    sel = KeyframeSelector(KeyframeConfig(max_interval_s=2.0))
    img = np.zeros((48, 64, 3), np.uint8)
    assert sel.check(img, _pose(), 100.0).reason == "first"
    assert not sel.check(img, _pose(), 100.5).candidate
    # a replay restarts at t = 0: the selector starts afresh instead of waiting 100 s
    assert sel.check(img, _pose(), 0.0).reason == "first"
