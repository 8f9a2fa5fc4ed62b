"""Memory QA end to end on short tabletop streams, against both baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engram.planners.evaluation.memory_qa import (
    FlatKeyframeStore,
    evaluate_memory_qa,
    qa_bench_json,
)
from engram.planners.evaluation.pipeline import EvalConfig

from .._world import make_percept


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_memory_qa_beats_the_baselines_on_a_short_episode(tmp_path):
    result = evaluate_memory_qa(
        episodes=1, seed=0, streams=("put_back", "count"), config=EvalConfig.quick(), progress=False
    )
    types = result["types"]
    # where was the cube at the start (it is on the tray now)
    was = types["where_was"]
    assert was["memory"] < 0.05 < was["none"] and was["memory"] < was["flat"]
    # how many tokens were shown (they are gone now)
    many = types["how_many"]
    assert many["memory"] == 1.0 and many["none"] == 0.0
    # where is the cube now: memory as good as looking
    assert types["where_is"]["memory"] < 0.05
    doc = json.loads(json.dumps(qa_bench_json(result)))
    assert doc["bench"] == "memory-qa"
    cases = {r["case"]: r for r in doc["results"]}
    assert cases["where_was"]["metric"] == "position_error_m"
    assert cases["where_was"]["peer"].startswith("flat vector store")
    assert cases["how_many vs no memory"]["peer"].startswith("no memory")
    for q in result["questions"]:
        assert set(q["scores"]) == {"memory", "flat", "none"}


def test_flat_store_retrieves_captions_by_meaning():
    vocab: dict[str, np.ndarray] = {}

    def embed(text: str) -> np.ndarray:  # bag of words on a fixed random basis
        v = np.zeros(16, np.float32)
        for w in text.replace(",", " ").split():
            if w not in vocab:
                vocab[w] = np.random.default_rng(len(vocab)).standard_normal(16).astype(np.float32)
            v += vocab[w]
        return v

    store = FlatKeyframeStore(embed, top_k=1)
    for t, labels in enumerate((["mug_red"], ["plant"], ["plant", "mug_red"])):
        pose = np.eye(4)
        pose[0, 3] = t
        store.add(make_percept(labels, stamp_ns=t, world_from_camera=pose))
    (best,) = store.retrieve("saw plant")
    assert best.labels == ["plant"] and best.position[0] == 1
    assert len(store.frames) == 3


def test_a_glimpse_too_small_to_name_is_not_a_sighting():
    """The tour's "seen" is what the camera resolved: the ray cast calls the blue ball
    visible 5.7 m away through a doorway, where it covers 5 pixels of the 128 x 96 head
    camera (no mode can name it: ``RESOLVED_MIN_PIXELS``); 2.6 m away it is seen."""
    pytest.importorskip("mujoco")
    import mujoco

    from engram.planners.evaluation.memory_qa import RESOLVED_MIN_PIXELS, _Sight
    from engram.sim.envs import make

    env = make("where_heard", width_px=128, height_px=96)
    try:
        env.reset(seed=8600)
        ball = env.tracked.index("ball_blue")
        far, near = _Sight(0.4), _Sight(0.4)
        for sight, pose in ((far, (-1.0, -3.0, 44.3)), (near, (0.5, 1.5, -12.2))):
            env.controller.reset(*pose)
            mujoco.mj_forward(env.model, env.data)
            assert env.visible_mask()[ball]  # the ray cast sees it from both places
            for _ in range(3):  # the sim's clock stands still: one frame is due
                sight.watch(env)
    finally:
        env.close()
    assert len(far.pixels) == len(near.pixels) == 1
    assert 0 < far.pixels[0]["ball_blue"] < RESOLVED_MIN_PIXELS, far.pixels[0]
    assert far.first("ball_blue") is None
    assert near.pixels[0]["ball_blue"] >= 4 * RESOLVED_MIN_PIXELS, near.pixels[0]
    assert near.first("ball_blue") == near.times[0]
    assert near.first("plant") is None  # not in view


def test_order_questions_ask_only_about_things_seen_a_frame_apart():
    from engram.planners.evaluation.memory_qa import _order_pick

    first = {"a": 0.0, "b": 0.1, "c": 2.0, "d": 5.0, "e": 5.3}
    rng = np.random.default_rng(0)
    picks = {tuple(sorted(_order_pick(rng, list(first), first, 0.4) or ())) for _ in range(60)}
    # a and b (0.1 s), d and e (0.3 s) were first seen in the same 0.4 s camera frame
    assert picks == {("a", "c", "d"), ("a", "c", "e"), ("b", "c", "d"), ("b", "c", "e")}
    assert _order_pick(rng, ["a", "b", "c"], first, 0.4) is None
