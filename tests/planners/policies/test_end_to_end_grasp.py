"""End to end, the pointed pick / lift gets planner mode's grasp guard (issue 15, round 8).

Trace (end to end through the pipeline, cups seed 805): the expert closed the gripper on
its way down, and the closed fingers sat on the cup's rim, 2 cm above the grasp height,
until the episode ran out.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")

from engram.planners.policies.node import PolicyNode, robot_vector  # noqa: E402
from engram.runtime.messages import Instruction  # noqa: E402
from engram.runtime.testing import run_node  # noqa: E402

from ._expert import tiny_tabletop_checkpoint  # noqa: E402
from .test_node import cups_world  # noqa: E402, F401 - the fixture


def _closing_over_the_cup(cups_world, grasp_stroke: bool):  # noqa: F811
    """An end-to-end node (a tiny goal-frame expert) whose pointer lifts cup_0 and whose expert closes the gripper
    with the fingertips 1 cm above the cup's perceived top, right over its centre.
    Returns (the action it sent, the robot vector, the cup's top)."""
    import torch

    from engram.planners.policies.diffusion import features as F

    robot, percept, text = cups_world
    node = PolicyNode(
        {
            "checkpoint": str(tiny_tabletop_checkpoint(frame="goal")),
            "mode": "end_to_end",
            "grasp_stroke": grasp_stroke,
            "grasp_yaw": False,
        }
    )
    names = node.policy.config.object_names["cups"]
    cup = percept.object_labels.index("cup_0")
    c = percept.object_centroids[cup]
    top = float(c[2] + percept.object_extents[cup][2] / 2)
    r = robot_vector(robot).copy()
    r[:3] = [c[0], c[1], top + node.tracker.config.finger_half_length_m + 0.01]
    ee = np.array(robot.world_from_ee, np.float64, copy=True)
    ee[:3, 3] = r[:3]
    here = dataclasses.replace(robot, world_from_ee=ee)
    np.testing.assert_allclose(robot_vector(here)[:3], r[:3], atol=1e-6)

    def lift_cup_0(*_fused):
        skill = torch.full((1, len(F.SKILLS)), -9.0)
        skill[0, F.SKILLS.index("lift")] = 9.0
        obj = torch.full((1, F.MAX_OBJECTS), -9.0)
        obj[0, names.index("cup_0")] = 9.0
        return skill, obj, obj.clone()

    node.policy.expert.pointer_logits = lift_cup_0
    close = np.array([[0.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
    node.policy.to_controller = lambda actions, robot: close.repeat(len(actions), 0)
    ins = Instruction(stamp_ns=0, text=text, task="cups", episode_id="cups-4", phase="act")
    out = run_node(node, [("instruction", ins), ("percepts", percept), ("robot_state", here)])
    assert node.policy.pointed is not None and node.policy.pointed[:2] == ("lift", "cup_0")
    return out["actions"][-1].actions[0], r, top


def test_a_pointed_lift_closing_too_high_goes_down_open_first(cups_world):  # noqa: F811
    sent, _, _ = _closing_over_the_cup(cups_world, grasp_stroke=True)
    assert sent[2] < -0.005 and sent[4] == 0.0  # down to the grasp height, fingers open


def test_without_the_switch_the_close_is_sent_as_the_expert_made_it(cups_world):  # noqa: F811
    sent, _, _ = _closing_over_the_cup(cups_world, grasp_stroke=False)
    assert sent[4] == 1.0 and abs(sent[2]) < 1e-6
