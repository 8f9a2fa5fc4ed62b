"""Executor guards added in issue 15, round 7 (each from a traced failure):

- a pick whose close the expert commanded too high (after it had started rising, or
  with the fingertips 1 cm below a cube's top) closed on nothing or lost the cube on
  the carry: the grasp is taken down to the grasp height first (real MuJoCo);
- end to end, a pointed press 1.9 cm off the cap's centre registered but was judged
  5.5 mm deep (depth counted within 1.2 cm only), and the retry pressed it twice; a
  stroke started only within 1.5 cm of the centre: both now use the cap's radius.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from engram.planners.policies.completion import CompletionConfig  # noqa: E402
from engram.planners.policies.node import PolicyNode  # noqa: E402

from ._expert import tiny_tabletop_checkpoint  # noqa: E402

FINGER_M = CompletionConfig().finger_half_length_m


def _grasp_late(node: PolicyNode | None) -> tuple[float, float]:
    """Closed loop, real put_back scene: an "expert" goes down over the cube to 1 cm
    below its top, rises until its fingertips are 4 mm above it (trace, put_back seed
    114), closes there and lifts; ``node``'s grasp guard (None: none) between it and the
    robot. Returns (opening after the close, how far the cube rose), metres."""
    from engram.sim.envs import make
    from engram.sim.motion import nearest_yaw

    env = make("put_back")
    obs, info = env.reset(seed=3)
    while info.get("phase") != "act":
        obs, _, _, _, info = env.step(env.stop_action())
    cube = env.body_pos("cube_red").copy()
    top, bottom = float(cube[2]) + 0.02, float(cube[2]) - 0.02
    yaw = nearest_yaw(env.body_yaw("cube_red"), float(obs["robot"][3]))
    if node is not None:
        node.grasp.reset()
    grip, opening = 0.0, 0.0
    plan = [(top + FINGER_M + 0.04, 0.0, 40), (top + FINGER_M - 0.01, 0.0, 20)]
    plan += [(top + FINGER_M + 0.004, 0.0, 20), (None, 1.0, 14), (top + FINGER_M + 0.1, 1.0, 8)]
    for z, g, n in plan:
        for _ in range(n):
            r = obs["robot"]
            want = r[2] if z is None else z
            err = np.array([cube[0] - r[0], cube[1] - r[1], want - r[2]])
            d = err * min(1.0, 0.03 / max(float(np.linalg.norm(err)), 1e-9))
            turn = float(np.clip(0.9 * (yaw - r[3]), -0.5, 0.5))
            a = np.array([[d[0], d[1], d[2], turn, g]], np.float32)
            if node is not None:
                obj = (top, bottom, cube[:2])
                a = node.grasp.apply(a, r, "pick", obj, grip, finger_half_m=FINGER_M)
            grip = float(a[0, 4])
            obs, *_ = env.step(a[0])
            if g == 0.0 and abs(float(obs["robot"][2]) - want) < 0.003:
                break  # reached
        if z is None:
            opening = float(obs["robot"][4])
    rose = float(env.body_pos("cube_red")[2] - cube[2])
    env.close()
    return opening, rose


def test_a_grasp_closed_too_high_is_taken_down_to_the_grasp_height_first():
    """Traces (put_back seeds 114, 111): the expert closed after it had started rising
    (on nothing), or 1 cm below a cube's top (the cube slipped out on the carry)."""
    empty = CompletionConfig().empty_m
    opening, rose = _grasp_late(None)
    assert opening < empty and rose < 0.01  # the old executor: closed on nothing
    node = PolicyNode({"checkpoint": str(tiny_tabletop_checkpoint()), "mode": "planner"})
    assert node.config.grasp_stroke
    opening, rose = _grasp_late(node)
    assert opening > 0.03, opening  # the fingers hold the 4 cm cube
    assert rose > 0.05, rose  # and it comes up with the lift


def test_the_grasp_guard_leaves_a_close_at_the_grasp_height_and_away_from_the_object():
    from engram.planners.policies.completion import GraspStroke

    g = GraspStroke()
    top, xy = 0.44, np.array([0.1, 0.2])
    robot = np.zeros(11)
    robot[:3] = [0.1, 0.2, top + FINGER_M - 0.025]  # fingertips 2.5 cm below the top
    close = np.array([[0.0, 0.0, 0.01, 0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(g.apply(close, robot, "pick", (top, 0.40, xy), 0.0), close)
    g.reset()
    robot[:3] = [0.16, 0.2, top + FINGER_M + 0.01]  # high, but 6 cm beside the object
    np.testing.assert_array_equal(g.apply(close, robot, "pick", (top, 0.40, xy), 0.0), close)
    robot[:3] = [0.1, 0.2, top + FINGER_M + 0.01]  # high over it, but not a press / pick
    np.testing.assert_array_equal(g.apply(close, robot, "press", (top, 0.40, xy), 0.0), close)
    down = g.apply(close, robot, "lift", (top, 0.40, xy), 0.0)
    assert down[0, 2] < 0 and down[0, 4] == 0.0  # down, gripper kept open
    robot[2] = g.grasp_z(top, 0.40, FINGER_M)  # there: closed, held still, and kept closed
    steps = [g.apply(close, robot, "lift", (top, 0.40, xy), 0.0) for _ in range(3)]
    assert all(not a[0, :4].any() and a[0, 4] == 1.0 for a in steps)
    opening = np.array([[0.0, 0.0, 0.02, 0.0, 0.0]], np.float32)  # the expert opens
    assert g.apply(opening, robot, "lift", (top, 0.40, xy), 1.0)[0, 4] == 1.0
    # a 9 cm cup: the skills executor's grasp height (3 cm up from its bottom)
    assert g.grasp_z(0.49, 0.40, FINGER_M) == pytest.approx(0.43 + FINGER_M)


def test_end_to_end_the_pointed_press_is_judged_and_stroked_over_the_whole_cap():
    """Trace (end to end button_sequence seed 107): a press 1.9 cm off the centre
    registered but was judged 5.5 mm deep (only steps within 1.2 cm counted); the retry
    pressed the same button twice. Seed 107 again: the expert hovered 1.6 cm off the
    centre for 8 steps, no stroke began, and the pointer then skipped a button."""
    from ._expert import pointing_at_a_press

    policy, robot = pointing_at_a_press()
    top, xy = policy._tracker.cap
    off = robot.copy()
    off[:3] = [xy[0] + 0.019, xy[1], top + FINGER_M + 0.02]  # 1.9 cm off the centre
    down = np.array([[0.0, 0.0, -0.008, 0.0, 1.0]], np.float32)
    out = policy.guard(down, off)
    assert out[0, 2] < -0.01 and out[0, 0] < 0  # the stroke: down, toward the centre
    # a 7 mm press at that spot registers in the tracker's depth
    deep = off.copy()
    deep[2] = top + FINGER_M - 0.007
    policy._tracker.update(np.array([0, 0, -0.027, 0, 1.0]), deep)
    assert policy._tracker.press_depth_m() == pytest.approx(0.007, abs=1e-4)
