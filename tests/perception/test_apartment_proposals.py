"""Camera mode in the apartment: furniture parts are not things, a plant is one thing.

Regressions from the memory-QA tour (seed 8600, 128 x 96 head camera): brown dining-table
legs and the table top's edge were named "brown teddy bear" (the tour counted 14 objects
for 6, and "what is at the teddy's place" found a leg), and the plant's pot was a second
"brown teddy bear" beside its leaves; a teddy on a brown table was never found. The
frames below are rendered where the robot stood when it saw them; the real sim-trained
encoder names the proposals.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engram.perception.geometry import backproject
from engram.perception.objects import ObjectExtractor, ObjectsConfig
from engram.perception.shapes import furniture_shaped, horizontal_thickness

pytest.importorskip("mujoco")

# round 3's apartment settings: what the new ones are compared with
_ROUND3 = {
    "ignore_cos_ratio": 0.0,
    "min_thickness_m": 0.0,
    "floor_z_m": None,
    "merge_parts_max_m": 0.075,
    "max_object_size_m": 0.3,
    "support_plane_min_frac": 0.05,
    "join_same_label_m": -1.0,  # round 3 joined no same-label parts (``perception.parts``)
}


@pytest.fixture(scope="module")
def frames():
    """(frame, placement) where the tour robot stood: facing the dining table's legs,
    and facing the plant on its shelf."""
    import mujoco

    from engram.sim.envs import make

    env = make("where_heard", width_px=128, height_px=96)
    try:
        env.reset(seed=8600)
        truth = {n: np.asarray(s["position_m"], np.float64) for n, s in env.placement.items()}
        out = []
        for x, y, yaw in ((-1.531, 1.999, 21.989), (-1.6, -2.0, 5.0)):
            env.controller.reset(x, y, yaw)
            mujoco.mj_forward(env.model, env.data)
            out.append(env.render_frame())
    finally:
        env.close()
    return out, truth


def _objects(encoder, frame, **changes):
    from engram.planners.evaluation.pipeline import camera_perception_params

    params = camera_perception_params(scene="apartment")["objects"]
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    # the eval's frame-size setting (EvalConfig.min_object_pixels) on top
    cfg = dataclasses.replace(
        ObjectsConfig(**params), min_object_pixels=8, reuse_max_frames=0, **changes
    )
    cloud = backproject(frame.depth, frame.intrinsics, frame.world_from_camera, stride_px=1)
    return ObjectExtractor(cfg, encoder=encoder).extract(
        frame.rgb,
        cloud=cloud,
        world_from_camera=frame.world_from_camera,
        depth=frame.depth,
        intrinsics=frame.intrinsics,
    )


def _misplaced(objs, truth) -> list[tuple[str, list[float]]]:
    """Objects named as one of the apartment's things but nowhere near it."""
    from engram.sim.tasks._apartment import OBJECT_LABELS

    where = {OBJECT_LABELS[n]: p for n, p in truth.items()}
    return [
        (lb, np.round(c, 2).tolist())
        for lb, c in zip(objs.labels, objs.centroids)
        if lb in where and np.linalg.norm(where[lb][:2] - c[:2]) > 0.4
    ]


def test_table_legs_are_not_teddy_bears(sim_clip, frames):
    (legs, _plant), truth = frames
    before = _misplaced(_objects(sim_clip, legs, **_ROUND3), truth)
    assert len(before) >= 2, before  # the legs, named "brown teddy bear"
    assert _misplaced(_objects(sim_clip, legs), truth) == []


def test_a_plant_and_its_pot_are_one_plant(sim_clip, frames):
    (_legs, plant), truth = frames
    before = _objects(sim_clip, plant, **_ROUND3)
    assert "brown teddy bear" in before.labels  # the pot, on its own
    after = _objects(sim_clip, plant)
    assert _misplaced(after, truth) == []
    assert after.labels.count("potted plant") == 1, after.labels


def test_wall_slabs_and_floor_posts_are_furniture_shaped():
    rng = np.random.default_rng(0)
    # a wall strip at 45 degrees (no axis-aligned box is thin), and a mug's visible half
    s = rng.uniform(0, 0.3, 200)
    wall = np.stack([s, s, rng.uniform(0.0, 0.3, 200)], 1)
    a = rng.uniform(-np.pi / 2, np.pi / 2, 200)
    mug = np.stack([0.05 * np.cos(a), 0.05 * np.sin(a), rng.uniform(0.7, 0.8, 200)], 1)
    pts = np.concatenate([wall, mug])
    ids = np.r_[np.zeros(200, int), np.ones(200, int)]
    thick = horizontal_thickness(pts, ids, np.array([0, 1]))
    assert thick[0] < 0.002 and thick[1] > 0.03, thick
    centroids = np.array([[0.15, 0.15, 0.15], [0.0, 0.0, 0.75], [1, 1, 0.16], [1, 1, 0.6]])
    extents = np.array([[0.3, 0.3, 0.3], [0.05, 0.1, 0.1], [0.05, 0.05, 0.28], [0.06, 0.06, 0.23]])
    thickness = np.r_[thick, 0.05, 0.05]
    shaped = furniture_shaped(
        centroids,
        extents,
        thickness,
        min_thickness_m=0.008,
        floor_z_m=0.0,
        floor_contact_m=0.04,
        post_aspect=2.5,
    )
    # the wall slab and the leg standing on the floor; not the mug, nor a bottle on a shelf
    assert shaped.tolist() == [True, False, True, False]
    off = furniture_shaped(
        centroids,
        extents,
        thickness,
        min_thickness_m=0.0,
        floor_z_m=None,
        floor_contact_m=0.04,
        post_aspect=2.5,
    )
    assert not off.any()


def test_a_teddy_on_a_brown_table_is_found(sim_clip):
    """Regression (fetch_seen seed 9501): the teddy stands on a brown table, brown on
    brown: no colour edge parts them, and the table top, 4% of the 128 px frame, was
    under the 5% a support plane needed. Teddy and table were one 0.78 m region, too
    large to be an object, so the teddy was never remembered and the robot guessed.
    The apartment's planes need 3% (a table top seen from the head camera is small)."""
    import mujoco

    from engram.sim.envs import make

    env = make("fetch_seen", width_px=128, height_px=96)
    try:
        env.reset(seed=9501)
        teddy = np.asarray(env.placement["teddy_brown"]["position_m"], np.float64)
        env.controller.reset(2.0, -1.933, 14.876)
        mujoco.mj_forward(env.model, env.data)
        frame = env.render_frame()
    finally:
        env.close()

    def teddies(objs) -> list[float]:
        return [
            float(np.linalg.norm(c[:2] - teddy[:2]))
            for lb, c in zip(objs.labels, objs.centroids)
            if lb == "brown teddy bear"
        ]

    # (without the small-object proposals, which find its top above the table's edge, and
    # the cut at a tall region's own table-top height, ``perception.supports``)
    before = _objects(
        sim_clip, frame, support_plane_min_frac=0.05, small_object_max_px=0, support_cut_depth_m=0
    )
    assert teddies(before) == []
    found = teddies(_objects(sim_clip, frame))
    assert len(found) == 1 and found[0] < 0.1, found


@pytest.fixture(scope="module")
def far_frames():
    """Frames of the 128 x 96 head camera 3.3-4.7 m from a thing that covers 9-14 pixels
    of it: (object name, frame), and the placement."""
    import mujoco

    from engram.sim.envs import make

    env = make("where_heard", width_px=128, height_px=96)
    try:
        env.reset(seed=8600)
        truth = {n: np.asarray(s["position_m"], np.float64) for n, s in env.placement.items()}
        out = []
        for name, pose in (
            ("teddy_brown", (-1.5, 2.0, 13.0)),  # 9 px, 4.7 m: brown on a grey cabinet
            ("mug_red", (-3.5, 3.0, -38.8)),  # 14 px, 3.3 m
            ("bottle_yellow", (0.0, 1.5, -38.8)),  # 10 px, 3.9 m
            ("plant", (3.0, -0.5, -147.2)),  # 12 px, 4.7 m
        ):
            env.controller.reset(*pose)
            mujoco.mj_forward(env.model, env.data)
            out.append((name, env.render_frame()))
    finally:
        env.close()
    return out, truth


def test_far_things_a_few_pixels_across_are_found(sim_clip, far_frames):
    """Round 4's edges merged a thing a few pixels across into the furniture behind it (the
    memory-QA tour remembered far things 5-28 s late); small-object proposals find it."""
    from engram.sim.tasks._apartment import OBJECT_LABELS

    frames, truth = far_frames
    for name, frame in frames:
        ids = [int(k) for k, v in frame.labels.items() if v == name]
        assert 8 <= np.isin(frame.segmentation, ids).sum() <= 16, name

        def found(objs, name=name):
            return [
                c
                for lb, c in zip(objs.labels, objs.centroids)
                if lb == OBJECT_LABELS[name] and np.linalg.norm(c[:2] - truth[name][:2]) < 0.2
            ]

        assert found(_objects(sim_clip, frame, small_object_max_px=0)) == [], name
        after = _objects(sim_clip, frame)
        assert len(found(after)) == 1, (name, after.labels)
        assert _misplaced(after, truth) == [], name


def test_the_armchair_seat_is_not_a_red_mug(sim_clip):
    """Tours 12602, 13006, 13007 counted a seventh object: the seat top of the red-brown
    armchair, 1.8 m away, was a 22 px small-object proposal named "red mug" at a cosine of
    0.20 (real things' small proposals: >= 0.38 for 90%). Small proposals that match their
    best word that weakly are dropped (``perception.naming.weak_small``); the real red mug
    in the same frame, 1.7 m away, stays."""
    import mujoco

    from engram.sim.envs import make

    env = make("where_heard", width_px=128, height_px=96)
    try:
        env.reset(seed=13006)
        mug = np.asarray(env.placement["mug_red"]["position_m"], np.float64)
        env.controller.reset(0.8591, -1.9712, -3.0861)  # the tour's pose at 16.8 s
        mujoco.mj_forward(env.model, env.data)
        frame = env.render_frame()
    finally:
        env.close()
    seat = np.array([-0.96, -0.99])  # the armchair's seat-top corner

    def mugs(objs, where):
        return [
            c
            for lb, c in zip(objs.labels, objs.centroids)
            if lb == "red mug" and np.linalg.norm(c[:2] - where[:2]) < 0.2
        ]

    before = _objects(sim_clip, frame, small_object_min_cos=-1.0)
    assert len(mugs(before, seat)) == 1 and len(mugs(before, mug)) == 1
    after = _objects(sim_clip, frame)
    assert mugs(after, seat) == [] and len(mugs(after, mug)) == 1


def test_a_teddy_on_a_far_side_table_is_cut_from_the_table(sim_clip):
    """Tour 13008 (and 12600) never counted the teddy: at 2.4 s it stands 103 px on the
    brown side table, whose top is too small a share of the frame to be a support plane;
    teddy, top, edges and legs were one 635 px, 0.85 m tall region, dropped as furniture.
    A region that tall is cut at its own table-top height (``perception.supports``)."""
    import mujoco

    from engram.sim.envs import make

    env = make("where_heard", width_px=128, height_px=96)
    try:
        env.reset(seed=13008)
        teddy = np.asarray(env.placement["teddy_brown"]["position_m"], np.float64)
        env.controller.reset(2.0, 2.0, -0.98818)  # the tour's pose at 2.4 s
        mujoco.mj_forward(env.model, env.data)
        frame = env.render_frame()
    finally:
        env.close()

    def teddies(objs):
        return [
            c
            for lb, c in zip(objs.labels, objs.centroids)
            if lb == "brown teddy bear" and np.linalg.norm(c[:2] - teddy[:2]) < 0.15
        ]

    assert teddies(_objects(sim_clip, frame, support_cut_depth_m=0.0)) == []
    after = _objects(sim_clip, frame)
    assert len(teddies(after)) == 1, (after.labels, after.centroids)
    assert _misplaced(after, {"teddy_brown": teddy}) == []
