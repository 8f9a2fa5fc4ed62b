"""Where perception goes wrong: percepts scored against the simulator's ground truth.

In camera mode (``sim.perception: camera``) the simulator publishes RGB-D and the camera
pose only, and perception must find, track and name objects itself. The ground truth
(``SimEnv.ground_truth()``: every tracked object's position and visibility per control
step) stays with the scorer. ``score_percepts`` matches each percept's objects to the
objects visible at that time (Hungarian assignment on world distance, within
``match_radius_m``) and counts, per stage:

- **missed detection**: a visible object with no percept object near it;
- **false positive**: a percept object near no tracked object (clutter, robot parts);
- **wrong label**: a matched object whose label is neither the object's kind
  (``kind_of(name)``, e.g. ``cup_2 -> "cup"``) nor its own name (ground-truth mode
  labels with body names); objects with no kind are not scored;
- **identity switch**: a tracked object matched to a different percept id than the
  last time it was matched (the tracker lost it);
- **position error**: distance between a matched centroid and the true position.

The result is a dict of counts and rates (``detection_recall``, ``label_accuracy``,
``precision``, ``id_switches_per_object``, ``position_error_m`` median and p90), so the
next gap is visible at a glance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["camera_perception_errors", "score_percepts"]


def score_percepts(
    percepts: Iterable[Any],
    ground_truth: dict[str, Any],
    *,
    kind_of: Callable[[str], str | None],
    match_radius_m: float = 0.08,
) -> dict[str, Any]:
    """Score ``percepts`` (``Percept`` messages stamped in simulation time) against one
    episode's ``ground_truth`` (``GroundTruthLog.to_dict()``). See the module doc."""
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

    frames = visible_total = detected = false_pos = labelled = label_ok = switches = 0
    errors: list[float] = []
    last_id: dict[int, int] = {}
    for percept in percepts:
        t = percept.stamp_ns / 1e9
        step = int(np.clip(np.searchsorted(times, t - 1e-6), 0, len(times) - 1))
        frames += 1
        vis = np.nonzero(visible[step])[0]
        visible_total += len(vis)
        cents = np.asarray(percept.object_centroids, np.float64).reshape(-1, 3)
        if len(vis) == 0:
            false_pos += len(cents)
            continue
        if len(cents) == 0:
            continue
        dist = np.linalg.norm(positions[step, vis][:, None, :] - cents[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(dist)
        ok = dist[rows, cols] <= match_radius_m
        rows, cols = rows[ok], cols[ok]
        detected += len(rows)
        false_pos += len(cents) - len(cols)
        for r, c in zip(rows, cols, strict=True):
            obj = int(vis[r])
            errors.append(float(dist[r, c]))
            if kinds[obj] is not None:
                labelled += 1
                said = _norm(percept.object_labels[c])  # the kind, or the body's own name
                label_ok += int(said in (_norm(kinds[obj]), _norm(names[obj])))
            pid = int(percept.object_ids[c])
            if obj in last_id and last_id[obj] != pid:
                switches += 1
            last_id[obj] = pid
    seen_objects = max(len(last_id), 1)
    return {
        "frames": frames,
        "visible_object_instances": visible_total,
        "missed_detections": visible_total - detected,
        "false_positives": false_pos,
        "wrong_labels": labelled - label_ok,
        "id_switches": switches,
        "detection_recall": _rate(detected, visible_total),
        "precision": _rate(detected, detected + false_pos),
        "label_accuracy": _rate(label_ok, labelled),
        "id_switches_per_object": round(switches / seen_objects, 3),
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
    (the scripted expert acting, no planner) and score every percept (``score_percepts``).

    ``config``: an ``EvalConfig`` (its ``perception`` says ground_truth or camera). Returns
    the scores of all seeds pooled, plus ``seeds``."""
    from dataclasses import replace

    from engram.planners.evaluation.pipeline import EvalConfig, Pipeline
    from engram.sim.encoder_data import OBJECT_CLASSES

    config = config or EvalConfig()
    kind = {body: name for name, (bodies, _) in OBJECT_CLASSES.items() for body in bodies}
    percepts: list[Any] = []
    truths: list[dict[str, Any]] = []
    seeds = list(seeds)
    for seed in seeds:
        pipe = Pipeline(
            task,
            seed,
            planner=False,
            driver="expert",
            config=replace(config, memories=("temporal",)),
            on_episode=lambda report, env: truths.append(env.ground_truth()),
        )
        sub = pipe.bus.subscribe("/percepts", f"all({max_percepts})")
        pipe.run()
        percepts.append(sub.drain())
    pooled: dict[str, Any] = {}
    for got, truth in zip(percepts, truths, strict=True):
        s = score_percepts(got, truth, kind_of=kind.get)
        pooled.setdefault("per_seed", []).append(s)
        for key, value in s.items():
            if isinstance(value, int):
                pooled[key] = pooled.get(key, 0) + value
    tot = pooled.get("visible_object_instances", 0)
    det = tot - pooled.get("missed_detections", 0)
    fp = pooled.get("false_positives", 0)
    labelled_ok = [
        (p["label_accuracy"], p["visible_object_instances"] - p["missed_detections"])
        for p in pooled.get("per_seed", [])
        if p["label_accuracy"] is not None
    ]
    n_lab = sum(n for _, n in labelled_ok)
    pooled.update(
        task=task,
        seeds=seeds,
        perception=config.perception,
        detection_recall=_rate(det, tot),
        precision=_rate(det, det + fp),
        label_accuracy=round(sum(a * n for a, n in labelled_ok) / n_lab, 4) if n_lab else None,
        position_error_m_median=_median(
            [p["position_error_m"]["median"] for p in pooled.get("per_seed", [])]
        ),
    )
    return pooled


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.median(vals)), 4) if vals else None
