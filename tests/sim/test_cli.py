"""`engram sim` subcommands and the demo through the bus."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from engram.runtime.apps.cli import main
from engram.sim.collect import load_episode, read_meta


def test_collect_writes_readable_episodes(tmp_path, capsys):
    out = tmp_path / "demos"
    rc = main(
        [
            "sim",
            "collect",
            "--task",
            "count",
            "--episodes",
            "2",
            "--out",
            str(out),
            "--images",
            "--width-px",
            "32",
            "--height-px",
            "24",
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "wrote 2 episode(s)" in capsys.readouterr().out
    meta = read_meta(out)  # a LeRobotDataset v3 (sim/collect.py)
    assert meta["info"]["codebase_version"] == "v3.0"
    assert meta["task"] == "count" and meta["success_rate"] == 1.0
    assert meta["action_space"]["names"] == ["dx", "dy", "dz", "dyaw", "gripper"]
    assert [e["seed"] for e in meta["episodes"]] == [3, 4]
    for entry in meta["episodes"]:
        ep = load_episode(out, entry["episode_index"])
        steps = entry["steps"]
        assert ep["action"].shape == (steps, 5) and ep["action"].dtype == np.float32
        for key in ("robot", "objects", "task"):
            width = int(np.prod(meta["observation"][key]["shape"]))
            assert ep[f"observation.{key}"].shape == (steps, width), key
        assert ep["observation.image"].dtype == np.uint8
        assert ep["next.success"].all()
        assert ep["observation.phase"][0] == 0 and ep["observation.phase"][-1] == 1
        gt = json.loads((out / entry["ground_truth"]).read_text())
        assert gt["answer"]["count"] >= 1
        assert entry["instructions"] and "blue button" in entry["instructions"][0]


def test_list_and_run(capsys):
    assert main(["sim", "list"]) == 0
    text = capsys.readouterr().out
    for task in ("cups", "button_sequence", "put_back", "count", "fetch_seen", "where_heard"):
        assert task in text
    assert main(["sim", "run", "--task", "button_sequence", "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success_rate"] == 1.0 and len(result["episodes"]) == 2
    assert main(["sim", "run", "--task", "nope"]) == 2
    assert "known:" in capsys.readouterr().err


def test_importing_sim_does_not_import_mujoco():
    code = (
        "import sys, engram.sim, engram.sim.node, engram.sim.cli, engram.sim.tasks\n"
        "from engram.runtime.node import load_node_class; load_node_class('sim')\n"
        "assert 'mujoco' not in sys.modules, 'mujoco imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
