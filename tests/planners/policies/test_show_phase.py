"""The "act now" signal end to end: an ``Instruction`` with ``phase`` "show" makes the
policy node watch (hold, write its memory bank), the same instruction again with "act"
makes it act, in the same episode; the other consumers of the instruction (planner,
working and episodic memory) treat the phase change as the same instruction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")

from engram.planners.policies.node import PolicyNode  # noqa: E402
from engram.runtime.messages import Instruction  # noqa: E402
from engram.runtime.testing import run_node  # noqa: E402

from ._expert import tiny_tabletop_checkpoint  # noqa: E402
from .test_node import cups_world  # noqa: E402, F401 - the fixture

STEP_NS = 100_000_000


def _tick(robot, k: int):
    return ("robot_state", dataclasses.replace(robot, stamp_ns=robot.stamp_ns + k * STEP_NS))


def test_end_to_end_node_watches_during_show_and_acts_at_act(cups_world):  # noqa: F811
    robot, percept, text = cups_world
    node = PolicyNode(
        {"checkpoint": str(tiny_tabletop_checkpoint()), "mode": "end_to_end", "execute_steps": 2}
    )
    show = Instruction(stamp_ns=0, text=text, task="cups", episode_id="cups-4", phase="show")
    act = dataclasses.replace(show, stamp_ns=robot.stamp_ns + 3 * STEP_NS, phase="act")
    out = run_node(
        node,
        [
            ("instruction", show),
            ("percepts", percept),
            *(_tick(robot, k) for k in range(3)),
            ("instruction", act),
            _tick(robot, 3),
        ],
    )["actions"]
    assert len(out) == 4
    for chunk in out[:3]:  # the show phase: held still, nothing sampled
        assert chunk.actions.shape == (1, 5) and not chunk.actions[0, :4].any()
    assert out[3].actions.shape == (2, 5)  # "act": the expert's chunk
    assert node.counters["holds"] == 3 and node.counters["chunks"] == 1
    # one episode: the three watched steps are in the bank (none lost to a reset at
    # "act") and the episode's clock still starts at the first instruction
    assert int(node.policy.expert.module.memory.count[0]) == 4
    assert node._episode_start_ns == 0 and node.health()["info"]["phase"] == "act"


def test_an_instruction_without_a_phase_acts_at_once(cups_world):  # noqa: F811
    """A user's or a ROS 2 instruction has no show phase: the robot acts on it."""
    robot, percept, text = cups_world
    ins = Instruction(stamp_ns=0, text=text, task="cups", episode_id="user-1")
    assert ins.phase == ""
    cfg = {"checkpoint": str(tiny_tabletop_checkpoint()), "mode": "end_to_end"}
    node = PolicyNode(cfg)
    out = run_node(node, [("instruction", ins), ("percepts", percept), _tick(robot, 0)])
    assert node.counters["chunks"] == 1 and out["actions"][0].actions.shape[0] > 1
    with pytest.raises(Exception, match="phase"):
        Instruction(text=text, phase="go").validate()


def test_the_phase_change_is_not_a_new_instruction_for_planner_or_memory():
    from engram.memory.episodic.memory import EpisodicMemory
    from engram.memory.working import WorkingConfig, WorkingMemory
    from engram.planners.planning.node import PlannerNode, PlannerNodeConfig
    from engram.runtime.bus import InProcBus
    from tests.memory._factories import percept

    text = "Watch the yellow cube. Then lift the cup that hides it."
    show = Instruction(stamp_ns=0, text=text, task="cups", episode_id="cups-1", phase="show")
    act = dataclasses.replace(show, stamp_ns=2 * STEP_NS, phase="act")

    # the planner plans once
    bus = InProcBus("show-phase-planner")
    try:
        planner = PlannerNode(PlannerNodeConfig(autotick=False, heartbeat_hz=0.0), bus=bus)
        planner.on_instruction(show)
        planner.on_instruction(act)
        assert planner.counters["plans"] == 1
    finally:
        bus.close()

    # the episodic memory keeps one episode
    episodic = EpisodicMemory()
    episodic.write(show)
    episodic.write(act)
    episodes = [r for r in episodic._recs.values() if r.kind == "episode"]
    assert len(episodes) == 1 and episodes[0].data["outcome"] == ""

    # the working memory keeps what the show phase wrote; a new episode empties it
    d = 8
    wm = WorkingMemory(WorkingConfig(dim=d, perceptual_tokens=2, capacity=4, heads=2))
    e = np.ones(d, np.float32) / np.sqrt(d)
    seen = percept(0.1, ["cup_0"], embedding=e, object_embeddings=e[None])
    wm.write(show)
    wm.write(seen)
    wm.write(act)
    assert len(wm) == 1
    wm.write(dataclasses.replace(show, episode_id="cups-2"))
    assert len(wm) == 0
