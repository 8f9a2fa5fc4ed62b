"""Camera mode end to end: the cups recipe grounds "prize" in what perception calls a
yellow cube and picks one of three objects all labelled "cup", by memory."""

from __future__ import annotations

from dataclasses import replace

from engram.planners.evaluation.pipeline import EvalConfig, Pipeline


def test_cups_succeeds_in_camera_mode_from_memory():
    cfg = replace(EvalConfig.quick(), perception="camera")
    (report,) = Pipeline("cups", 3000, config=cfg).run()
    (decision,) = report["planner"]["decisions"]
    assert decision["source"] == "memory"  # memory placed the cube near one cup ...
    assert decision["answer"].startswith("cup#")  # ... one of several "cup"s, by track id
    assert report["success"]
