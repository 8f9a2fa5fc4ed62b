"""`engram demo` (the main job): one MuJoCo episode through the full pipeline."""

from __future__ import annotations

import json

from engram.runtime.apps.demo import run_sim


def test_demo_runs_a_mujoco_episode_through_the_pipeline(tmp_path):
    report = run_sim(task="cups", seed=0, out_dir=tmp_path, quick=True, progress=False)

    assert report["ran"] and report["success"], report
    assert report["control_steps"] > 0
    # every memory received something from the stream
    assert report["memory"]["spatial"] > 0 and report["memory"]["temporal"] > 0
    # the planner grounded its choice in a memory recall
    decisions = report["episode"]["planner"]["decisions"]
    assert any(d["source"] == "memory" for d in decisions), decisions
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["success"] is True
    assert any((tmp_path / "memory").rglob("*.sqlite")), "memory store not on disk"
    assert any((tmp_path / "ground_truth").glob("*.json"))
