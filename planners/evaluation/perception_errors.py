"""Where perception goes wrong: percepts scored against the simulator's ground truth.

In camera mode (``sim.perception: camera``) the simulator publishes RGB-D and the camera
pose only, and perception must find, track and name objects itself. The ground truth
(``SimEnv.ground_truth()``: every tracked object's position and visibility per control
step) stays with the scorer. ``score_percepts`` matches each percept's objects to the
objects visible at that time (Hungarian assignment on world distance, the height offset
weighted 0.3: the truth is a body's origin, the base of the apartment's things; within
``match_radius_m``) and counts, per stage:

- **missed detection**: a visible object with no percept object near it;
- **false positive**: a percept object near no tracked object (clutter, robot parts);
- **wrong label**: a matched object whose label is neither the object's kind
  (``engram.sim.object_kinds.kind_of``, e.g. ``cup_2 -> "cup"``, ``button_red_cap ->
  "red button"``) nor its own name (ground-truth mode
  labels with body names); objects with no kind are not scored;
- **identity switch**: a tracked object matched to a different percept id than the
  last time it was matched (the tracker lost it);
- **position error**: distance between a matched centroid and the true position.

A percept stamped no later than the one before it is a held-back first sighting (a
tracker that confirms a track at its second match publishes the first detection late,
with its own frame's stamp; ``engram.perception.node``): it holds only the tracks just
confirmed, its frame was scored already, and it is not scored again.

The result is a dict of counts and rates (``detection_recall``, ``label_accuracy``,
``precision``, ``id_switches_per_object``, ``position_error_m`` median and p90), so the
next gap is visible at a glance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["camera_perception_errors", "score_percepts"]

_Z_WEIGHT = 0.3  # weight of the height offset when matching percepts to the truth


def score_percepts(
    percepts: Iterable[Any],
    ground_truth: dict[str, Any],
    *,
    kind_of: Callable[[str], str | None],
    match_radius_m: float = 0.08,
) -> dict[str, Any]:
    """Score ``percepts`` (``Percept`` messages stamped in simulation time) against one
    episode's ``ground_truth`` (``GroundTruthLog.to_dict()``). See the module doc."""
    counts, errors = _count(percepts, ground_truth, kind_of, match_radius_m)
    return _summary(counts, errors)


def _count(
    percepts: Iterable[Any],
    ground_truth: dict[str, Any],
    kind_of: Callable[[str], str | None],
    match_radius_m: float,
) -> tuple[dict[str, int], list[float]]:
    """Error counts of one episode and the matched objects' position errors (m)."""
    from scipy.optimize import linear_sum_assignment

    if match_radius_m <= 0:
        raise ValueError(f"match_radius_m must be > 0, got {match_radius_m}")
    times = np.asarray(ground_truth.get("times_s") or [], np.float64)
    objects = ground_truth.get("objects") or {}
    names = list(objects)
    if len(times) == 0 or not names:
        raise ValueError("ground truth has no steps or no tracked objects")
    positions = np.stack(
        [np.asarray(objects[n]["positions_m"], np.float64) for n in names], axis=1
    )  # (T, N, 3)
    visible = np.stack([np.asarray(objects[n]["visible"], bool) for n in names], axis=1)
    kinds = [kind_of(n) for n in names]

    c = dict.fromkeys(
        ("frames", "visible", "detected", "false_positives", "labelled", "label_ok", "switches"),
        0,
    )
    errors: list[float] = []
    last_id: dict[int, int] = {}
    last_stamp = -1
    for percept in percepts:
        if percept.stamp_ns <= last_stamp:  # a held-back sighting, published late
            continue
        last_stamp = percept.stamp_ns
        step = int(
            np.clip(np.searchsorted(times, percept.stamp_ns / 1e9 - 1e-6), 0, len(times) - 1)
        )
        c["frames"] += 1
        vis = np.nonzero(visible[step])[0]
        c["visible"] += len(vis)
        cents = np.asarray(percept.object_centroids, np.float64).reshape(-1, 3)
        if len(vis) == 0 or len(cents) == 0:
            c["false_positives"] += len(cents)
            continue
        diff = positions[step, vis][:, None, :] - cents[None, :, :]
        dist = np.linalg.norm(diff, axis=2)
        # matched on distance with the height offset counted _Z_WEIGHT x: the truth is a
        # body's frame origin, the base of the apartment's things, while a camera measures
        # the middle of what it sees (a 31 cm plant's centre is 15 cm above its base)
        gate = np.linalg.norm(diff * np.array([1.0, 1.0, _Z_WEIGHT]), axis=2)
        rows, cols = linear_sum_assignment(gate)
        ok = gate[rows, cols] <= match_radius_m
        rows, cols = rows[ok], cols[ok]
        c["detected"] += len(rows)
        c["false_positives"] += len(cents) - len(cols)
        for r, col in zip(rows, cols, strict=True):
            obj = int(vis[r])
            errors.append(float(dist[r, col]))
            if kinds[obj] is not None:
                said = _norm(percept.object_labels[col])  # the kind, or the body's own name
                c["labelled"] += 1
                c["label_ok"] += int(said in (_norm(kinds[obj]), _norm(names[obj])))
            pid = int(percept.object_ids[col])
            c["switches"] += int(obj in last_id and last_id[obj] != pid)
            last_id[obj] = pid
    c["objects_seen"] = len(last_id)
    return c, errors


def _summary(c: dict[str, int], errors: list[float]) -> dict[str, Any]:
    """Counts and rates (see the module doc) from ``_count``'s counts, summed or not."""
    return {
        "frames": c["frames"],
        "visible_object_instances": c["visible"],
        "missed_detections": c["visible"] - c["detected"],
        "false_positives": c["false_positives"],
        "wrong_labels": c["labelled"] - c["label_ok"],
        "id_switches": c["switches"],
        "detection_recall": _rate(c["detected"], c["visible"]),
        "precision": _rate(c["detected"], c["detected"] + c["false_positives"]),
        "label_accuracy": _rate(c["label_ok"], c["labelled"]),
        "id_switches_per_object": round(c["switches"] / max(c["objects_seen"], 1), 3),
        "position_error_m": {
            "median": round(float(np.median(errors)), 4) if errors else None,
            "p90": round(float(np.percentile(errors, 90)), 4) if errors else None,
        },
    }


def _norm(label: str) -> str:
    return " ".join(label.lower().replace("_", " ").split())


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def camera_perception_errors(
    task: str, seeds: Iterable[int], *, config: Any = None, max_percepts: int = 4096
) -> dict[str, Any]:
    """Run ``task`` once per seed through the sim and perception nodes of the launch graph
    (the scripted expert acting, no planner) and score every percept.

    ``config``: an ``EvalConfig`` (its ``perception`` says ground_truth or camera). Returns
    ``score_percepts``' fields over all seeds pooled, plus ``task``, ``seeds``,
    ``perception``."""
    from dataclasses import replace

    from engram.planners.evaluation.pipeline import EvalConfig, Pipeline
    from engram.sim.object_kinds import kind_of

    config = config or EvalConfig()
    total: dict[str, int] = {}
    errors: list[float] = []
    seeds = list(seeds)
    for seed in seeds:
        truths: list[dict[str, Any]] = []
        pipe = Pipeline(
            task,
            seed,
            planner=False,
            driver="expert",
            config=replace(config, memories=("temporal",)),
            on_episode=lambda report, env, out=truths: out.append(env.ground_truth()),
        )
        sub = pipe.bus.subscribe("/percepts", f"all({max_percepts})")
        pipe.run()
        counts, errs = _count(sub.drain(), truths[0], kind_of, 0.08)
        errors += errs
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    return {
        **_summary(total, errors),
        "task": task,
        "seeds": seeds,
        "perception": config.perception,
    }
