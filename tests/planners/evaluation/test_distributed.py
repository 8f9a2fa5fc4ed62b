"""Episodes as Ray tasks (``engram eval --ray local --workers 2``): the results come back
in the sequential order with the same values, a failing episode is reported and does
not stop the others, progress is printed, and a real evaluation gives the same per-seed
results as the sequential run. Ray is started once for the module (``ray.init`` here)."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from engram.planners.evaluation.distributed import (
    RayUnavailable,
    add_ray_arguments,
    check_ray_arguments,
    map_episodes,
    ray_session,
)
from engram.planners.evaluation.pipeline import EvalConfig
from engram.planners.evaluation.tasks import evaluate_tasks

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_arguments_are_checked(monkeypatch):
    parser = argparse.ArgumentParser()
    add_ray_arguments(parser)
    assert "--workers needs --ray" in check_ray_arguments(
        parser.parse_args(["--workers", "2"]), "x"
    )
    assert ">= 0" in check_ray_arguments(
        parser.parse_args(["--ray", "local", "--workers", "-1"]), "x"
    )
    assert check_ray_arguments(parser.parse_args(["--ray", "local", "--workers", "2"]), "x") == ""
    if not ray.is_initialized():  # no cluster to join: a clear error, not a traceback
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        with pytest.raises(RayUnavailable, match="no Ray cluster"), ray_session("auto"):
            pass


def test_episodes_fan_out_in_order_with_failures_reported(local_ray, capsys):
    calls = [(s,) for s in range(6)]
    seq = map_episodes(_episode, calls, address="", progress=False)
    par = map_episodes(_episode, calls, address="local", workers=2)
    assert [r["ok"] for r in par] == [True, True, True, False, True, True]
    same = lambda rs: [(r["value"]["seed"], r["value"]["draws"]) for r in rs if r["ok"]]  # noqa: E731
    assert same(par) == same(seq) and len(same(par)) == 5
    assert par[3]["error"] == "ValueError: seed 3 fails" == seq[3]["error"]
    pids = {r["value"]["pid"] for r in par if r["ok"]}
    assert os.getpid() not in pids  # ran in Ray workers, not here
    err = capsys.readouterr().err
    assert err.count("[") >= 6 and "[6/6]" in err and "seed 3 fails" in err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eval_ray_local_two_workers_matches_sequential(local_ray, tmp_path):
    """The real evaluation: the same seeds give the same per-seed results."""
    from engram.runtime.apps.cli import main

    cfg = EvalConfig.quick()
    seq = evaluate_tasks(
        ["where_heard"], episodes=2, seed=0, conditions=(True,), config=cfg, progress=False
    )
    out = tmp_path / "ray.json"
    rc = main(
        [
            "eval", "--task", "where_heard", "--episodes", "2", "--seed", "0", "--quick",
            "--memory-only", "--lifelong-layouts", "0", "--ray", "local", "--workers", "2",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads(out.read_text())
    par = doc["details"]["tasks"]["where_heard"]["memory"]
    want = seq["tasks"]["where_heard"]["memory"]
    assert par["episodes"] == want["episodes"] == 2
    assert par["successes"] == want["successes"]
    for a, b in zip(par["reports"], want["reports"]):
        assert a["success"] == b["success"] and a["steps"] == b["steps"]
        assert a["planner"]["decisions"] == b["planner"]["decisions"]


def _episode(seed: int) -> dict:
    """A stand-in episode: deterministic per seed, seed 3 fails."""
    import random

    if seed == 3:
        raise ValueError(f"seed {seed} fails")
    rng = random.Random(seed)
    return {"seed": seed, "draws": [rng.random() for _ in range(3)], "pid": os.getpid()}
