"""Paper-ready evaluation output: Wilson intervals, a PNG plot, provenance, rounded floats."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from engram.planners.evaluation.report import (
    add_confidence_intervals,
    provenance,
    round_floats,
    wilson_interval,
    write_report,
)


def test_wilson_interval_matches_known_values():
    # Reference values (Wilson score interval, z = 1.96), e.g. from statsmodels'
    # proportion_confint(method="wilson").
    assert wilson_interval(2, 2) == pytest.approx((0.3424, 1.0), abs=1e-4)
    assert wilson_interval(1, 2) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_two_episodes_give_overlapping_intervals():
    """n=2, "100% vs 50%": the intervals overlap, which the JSON now shows."""
    doc = {
        "bench": "eval",
        "results": [
            {
                "case": "cups",
                "metric": "success_rate",
                "value": 1.0,
                "better": "higher",
                "peer": "no memory",
                "peer_value": 0.5,
                "episodes": 2,
            },
            {"case": "x", "metric": "position_error_m", "value": 0.3, "better": "lower", "n": 4},
        ],
    }
    add_confidence_intervals(doc)
    row = doc["results"][0]
    assert row["ci95_low"] < row["peer_ci95_high"]
    assert "ci95_low" not in doc["results"][1]  # not a rate: no Wilson interval


def test_round_floats():
    assert round_floats({"a": [1.6000000000000012, 2], "b": {"c": 0.1 + 0.2}}) == {
        "a": [1.6, 2],
        "b": {"c": 0.3},
    }
    assert round_floats(float("nan")) != round_floats(float("nan"))  # NaN stays NaN


@dataclass
class _Config:
    episodes: int = 3
    frame_width_px: int = 320


def test_write_report_embeds_commit_packages_config_and_a_plot(tmp_path):
    doc = {
        "bench": "eval",
        "results": [
            {
                "case": task,
                "metric": "success_rate",
                "value": v,
                "better": "higher",
                "peer": "no memory",
                "peer_value": p,
                "episodes": 5,
            }
            for task, v, p in (("cups", 0.8, 0.2), ("count", 0.6000000000000001, 0.4))
        ],
    }
    out = tmp_path / "eval.json"
    written = write_report(doc, out, config={"eval": _Config(), "arguments": {"_run": print}})
    loaded = json.loads(out.read_text())
    assert loaded == written
    png = tmp_path / "eval.png"
    assert loaded["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prov = loaded["provenance"]
    assert prov["git_commit"] and len(prov["git_commit"]) == 40
    assert isinstance(prov["git_dirty"], bool)
    assert "numpy" in prov["packages"] and prov["python"].count(".") == 2
    assert prov["config"] == {"eval": {"episodes": 3, "frame_width_px": 320}, "arguments": {}}
    row = loaded["results"][1]
    assert row["value"] == 0.6 and 0 < row["ci95_low"] < 0.6 < row["ci95_high"] < 1


def test_provenance_without_config():
    prov = provenance(None, ["engram", "eval"])
    assert prov["command"] == ["engram", "eval"] and prov["config"] is None


def test_plot_accepts_a_full_success_rate_whose_interval_rounds_below_it(tmp_path):
    """6/6: the rate is 1.0 and the rounded interval's top can come out a hair under it;
    the plot (and so the JSON written after it) must not fail on that."""
    from engram.planners.evaluation.report import plot_results

    doc = {
        "bench": "eval",
        "results": [
            {
                "case": "cups",
                "metric": "success_rate",
                "value": 1.0,
                "ci95_low": 0.61,
                "ci95_high": 0.9999999,
                "peer": "no memory",
                "peer_value": 0.0,
                "peer_ci95_low": 1e-9,
                "peer_ci95_high": 0.39,
            }
        ],
    }
    out = plot_results(doc, tmp_path / "eval.png")
    assert out.exists() and out.stat().st_size > 0
