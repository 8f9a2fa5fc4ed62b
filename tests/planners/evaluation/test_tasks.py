"""End to end: each task through sim -> perception -> memory -> planner -> sim, tiny models.

One episode per task, in lockstep (reproducible), with the quick configuration
(small frames, the tiny random-weight open_clip). The seeds are fixed, so the
assertions (success with memory, what was decided and from where) are exact.
"""

from __future__ import annotations

import json

import pytest

from engram.planners.evaluation.pipeline import EvalConfig, Pipeline
from engram.planners.evaluation.tasks import bench_json, evaluate_tasks, format_table
from engram.runtime import registry

QUICK = EvalConfig.quick()

#: the question each task's plan decides from memory
_QUESTION = {
    "cups": "which_cup",
    "button_sequence": "button_order",
    "put_back": "start_position",
    "count": "token_count",
    "fetch_seen": "goal_object",
    "where_heard": "goal_sound",
    "spoken_keys": "goal_object",
}


def test_every_registered_task_is_evaluated():
    assert set(_QUESTION) == set(registry.known("task"))


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("task", list(_QUESTION))
def test_each_task_runs_end_to_end_with_memory(task):
    pipe = Pipeline(task, 0, episodes=1, use_memory=True, config=QUICK)
    reports = pipe.run()
    assert len(reports) == 1
    report = reports[0]
    assert report["external_control"] and report["chunks_rejected"] == 0
    planner = report["planner"]
    decisions = {d["question"]: d for d in planner["decisions"]}
    assert decisions[_QUESTION[task]]["source"] == "memory", planner
    assert planner["memory_queries"] > 0
    assert report["success"], (task, planner)
    # the planner read the world only through the bus: percepts and recalls
    counters = pipe.planner_node.counters
    assert counters["handled"] > 0 and counters["chunks"] > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_eval_with_and_without_memory_writes_bench_json(tmp_path):
    result = evaluate_tasks(["cups"], episodes=1, seed=3, config=QUICK, progress=False)
    row = result["tasks"]["cups"]
    assert row["memory"]["episodes"] == 1 and row["no_memory"]["episodes"] == 1
    assert row["memory"]["success_rate"] == 1.0
    no_mem = row["no_memory"]["reports"][0]["planner"]
    assert no_mem["memory_queries"] == 0  # the ablation asks memory nothing ...
    assert [d["source"] for d in no_mem["decisions"]] == ["guess"]  # ... and guesses
    table = format_table(result)
    assert "| cups | 100% (1/1) [21%, 100%] |" in table and "chance" in table
    doc = bench_json(result)
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(doc))
    doc = json.loads(path.read_text())
    assert doc["bench"] == "eval" and set(doc["machine"]) == {"cpus", "gpu", "python"}
    (res,) = doc["results"]
    assert res["case"] == "cups" and res["metric"] == "success_rate" and res["better"] == "higher"
    assert res["value"] == 1.0 and res["peer"] == "no memory"
    assert res["peer_value"] == row["no_memory"]["success_rate"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        pipe = Pipeline("count", 1, episodes=1, use_memory=True, config=QUICK)
        (report,) = pipe.run()
        runs.append((report["steps"], report["success"], report["planner"]["decisions"]))
    assert runs[0] == runs[1]


def test_wilson_interval():
    from engram.planners.evaluation.tasks import wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    lo, hi = wilson_interval(23, 30)
    assert lo < 23 / 30 < hi and hi - lo < 0.35
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_expert_end_to_end_in_the_env_with_and_without_memory(tmp_path, capsys):
    """The expert drives the simulator (fast harness): a row per condition with a
    Wilson interval, the no-memory run as the BENCH.md peer; bad flags exit 2."""
    from engram.runtime.apps.cli import main

    from ..policies._expert import tiny_tabletop_checkpoint

    ckpt = tiny_tabletop_checkpoint()
    result = evaluate_tasks(
        ["cups"],
        episodes=1,
        seed=7,
        config=QUICK,
        executor="expert",
        mode="end_to_end",
        checkpoint=str(ckpt),
        harness="env",
        progress=False,
    )
    row = result["tasks"]["cups"]
    for name in ("memory", "no_memory"):
        c = row[name]
        assert c["episodes"] == 1 and len(c["ci95"]) == 2 and c["ci95"][0] <= c["success_rate"]
        assert c["reports"][0]["chunks"] > 0  # the expert acted
    doc = bench_json(result)
    (case,) = doc["results"]
    assert "cups" in case["case"] and "expert end_to_end" in case["case"]
    assert case["peer"] == "no memory" and case["metric"] == "success_rate"
    assert "[" in format_table(result)

    argv = ["eval", "--task", "cups", "--episodes", "1", "--executor", "expert"]
    assert main([*argv, "--checkpoint", "no-such-checkpoint"]) == 2
    assert "no shipped checkpoint" in capsys.readouterr().err
    assert main(["eval", "--task", "cups", "--harness", "env"]) == 2
    assert "--harness env needs --executor expert" in capsys.readouterr().err
