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
