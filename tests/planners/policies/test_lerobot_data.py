"""`engram sim collect` writes a LeRobotDataset v3; `engram train` reads it into the
shared tabletop layout with hindsight subgoals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engram.planners.policies.diffusion import features as F
from engram.planners.policies.diffusion.data import load_episodes
from engram.sim.collect import collect, load_episode, read_meta


def test_collect_writes_the_documented_v3_layout(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    root = tmp_path / "count"
    collect("count", 2, root, seed=3, images=True, width_px=32, height_px=24, progress=False)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet")
    assert data.num_rows == info["total_frames"]
    for name in info["features"]:
        assert name in data.column_names, name
    assert info["features"]["action"]["shape"] == [5]
    assert info["features"]["observation.image"]["dtype"] == "image"
    episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    rows = episodes.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1]
    assert rows[0]["dataset_from_index"] == 0
    assert rows[0]["dataset_to_index"] == rows[1]["dataset_from_index"] == rows[0]["length"]
    assert rows[1]["dataset_to_index"] == info["total_frames"]
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    assert "blue button" in tasks.index[0] and tasks["task_index"].tolist() == [0]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert len(stats["action"]["mean"]) == 5

    meta = read_meta(root)
    assert meta["task"] == "count" and meta["success_rate"] == 1.0
    ep = load_episode(root, 1)
    steps = rows[1]["length"]
    assert ep["action"].shape == (steps, 5) and ep["observation.image"].shape == (steps, 24, 32, 3)
    assert ep["observation.phase"][0] == 0 and ep["observation.phase"][-1] == 1
    assert ep["frame_index"].tolist() == list(range(steps))

    with pytest.raises(ValueError, match="already holds a dataset"):
        collect("count", 1, root, progress=False)


def test_loader_builds_the_tabletop_layout_and_labels_subgoals(tmp_path):
    """Cups: one subgoal, lifting the cup that hides the prize; button_sequence: one
    press per button, in the order they lit up (the task's own answer)."""
    from engram.sim.envs import make

    collect("cups", 2, tmp_path / "cups", seed=11, progress=False)
    collect("button_sequence", 2, tmp_path / "button_sequence", seed=11, progress=False)
    eps = load_episodes(tmp_path, "all")
    assert {ep.task for ep in eps} == {"cups", "button_sequence"}
    assert all(ep.state.shape[1] == F.STATE_DIM and ep.features == F.FEATURES for ep in eps)
    for ep in eps:
        seed = 11 + int(ep.path.rsplit("_", 1)[1])
        env = make(ep.task)
        env.reset(seed=seed)
        answer = env.expert_answer()
        env.close()
        order = [ep.subgoals[i] for i in dict.fromkeys(ep.subgoal_index[ep.target].tolist())]
        if ep.task == "cups":
            assert order == [F.subgoal_text("lift", answer)]
        else:
            assert order == [F.subgoal_text("press", f"button_{c}_cap") for c in answer]
        assert (ep.subgoal_index[~ep.target] == -1).all()  # no subgoal in the show phase
    with pytest.raises(FileNotFoundError, match="sim collect"):
        load_episodes(tmp_path, "put_back")


def test_state_vector_layout_and_bad_input():
    slots = np.array([[1, 0.1, 0.2, 0.45, 1]], np.float32)
    v = F.state_vector(np.arange(11), slots, 2.5, goal=[0.3, -0.1])
    assert v.shape == (F.STATE_DIM,)
    assert v[11:16].tolist() == pytest.approx([1, 0.1, 0.2, 0.45, 1])
    assert v[-4:].tolist() == pytest.approx([0.25, 0.3, -0.1, 1.0])
    assert F.state_vector(np.zeros(11), slots, 0.0)[-3:].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="robot state must have 11"):
        F.state_vector(np.zeros(10), slots, 0.0)
    with pytest.raises(ValueError, match="at most 6 objects"):
        F.state_vector(np.zeros(11), np.zeros((7, 5)), 0.0)
