"""Camera-mode perception in the simulation, scored stage by stage against ground truth.

The sim publishes RGB-D and the camera pose only (``sim.perception: camera``); perception
proposes objects from depth and colour, tracks them and names them with the sim-trained
encoder (``sim_clip``). ``engram.planners.evaluation.perception_errors`` matches every
percept's objects to the objects the ground truth says were visible and counts missed
detections, false positives, wrong labels, identity switches and position error. The
peer is the same seeds in camera mode without the filters (``EvalConfig.camera_filters``
False: no robot self-filter, no support-plane removal, RGB edges, no size limit: the
first camera mode), so each figure is an after/before pair; ground-truth mode
(segmentation gives identity and labels) is in ``details`` for reference.

Usage: ``python bench/camera.py [--quick]``; prints one JSON object (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, result  # noqa: E402

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_METRICS = (
    ("detection_recall", "higher"),
    ("precision", "higher"),
    ("label_accuracy", "higher"),
    ("id_switches_per_object", "lower"),
    ("position_error_m_median", "lower"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one task, one seed (< 1 min)")
    ap.add_argument("--seeds", default="900,901", help="comma-separated fresh seeds")
    args = ap.parse_args()
    from engram.planners.evaluation.perception_errors import camera_perception_errors
    from engram.planners.evaluation.pipeline import EvalConfig

    tasks = (
        ["cups"]
        if args.quick
        else ["cups", "button_sequence", "put_back", "count", "fetch_seen"]  # + the apartment
    )
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    cfg = EvalConfig()
    rows, details = [], {}
    for task in tasks:
        got = {}
        modes = {
            "camera": replace(cfg, perception="camera"),
            "camera_unfiltered": replace(cfg, perception="camera", camera_filters=False),
            "ground_truth": replace(cfg, perception="ground_truth"),
        }
        for mode, mode_cfg in modes.items():
            got[mode] = camera_perception_errors(task, seeds, config=mode_cfg)
            got[mode]["position_error_m_median"] = got[mode]["position_error_m"]["median"]
            got[mode]["id_switches_per_episode"] = got[mode]["id_switches"] / max(len(seeds), 1)
        details[task] = got
        for metric, better in _METRICS:
            if metric == "id_switches_per_object":
                metric = "id_switches_per_episode"
            cam, before = got["camera"].get(metric), got["camera_unfiltered"].get(metric)
            if cam is None:
                continue
            rows.append(
                result(f"{task}, camera mode, seeds {seeds}", metric, float(cam), better,
                       peer="camera mode without self-filter / plane removal (before)",
                       peer_value=None if before is None else float(before))
            )  # fmt: skip
    emit("camera", rows, details=details)


if __name__ == "__main__":
    main()
