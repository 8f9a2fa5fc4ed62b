"""End to end, a pointed press keeps the tool above the other caps (issue 15, round 8).

Trace (end to end button_sequence, round 8): after the second press the pointer chose
the third button, and the expert's first step toward it went down where the arm was,
2 cm above the button just pressed, and pressed it again.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from engram.planners.policies.completion import CompletionConfig  # noqa: E402

FINGER_M = CompletionConfig().finger_half_length_m


def _over_another_cap(policy, robot):
    """The robot 2 cm above touching the caps' tops, over the red cap at (0.2, -0.05)
    (not the pointed blue one)."""
    top, _ = policy._tracker.cap
    here = robot.copy()
    here[:3] = [0.2, -0.05, top + FINGER_M + 0.02]
    return here, top


def test_a_descent_away_from_the_pointed_cap_stops_above_the_caps():
    from ._expert import pointing_at_a_press

    policy, robot = pointing_at_a_press()
    here, top = _over_another_cap(policy, robot)
    down = np.array([[0.01, 0.0, -0.03, 0.0, 1.0]], np.float32)
    out = policy.guard(down, here)
    floor = top + FINGER_M + policy.cap_clearance_m
    assert here[2] + out[0, 2] == pytest.approx(floor, abs=1e-6)  # down to the floor only
    assert out[0, 0] == pytest.approx(0.01)  # the sideways motion is kept
    below = here.copy()
    below[2] = floor - 0.005  # already lower (e.g. the back-off of the last press)
    assert policy.guard(down, below)[0, 2] == 0.0  # holds its height, no deeper
    up = np.array([[0.0, 0.0, 0.02, 0.0, 1.0]], np.float32)
    assert policy.guard(up, below)[0, 2] == pytest.approx(0.02)  # rising is free


def test_the_pointed_caps_own_press_and_the_switch_are_not_limited():
    from ._expert import pointing_at_a_press

    policy, robot = pointing_at_a_press()
    top, xy = policy._tracker.cap
    over = robot.copy()
    over[:3] = [xy[0] + 0.01, xy[1], top + FINGER_M + 0.02]
    down = np.array([[0.0, 0.0, -0.008, 0.0, 1.0]], np.float32)
    assert policy.guard(down, over)[0, 2] < -0.005  # over the pointed cap: the press goes on
    here, _ = _over_another_cap(policy, robot)
    policy.cap_clearance_m = -1.0  # off
    policy._stroke.reset()
    deep = np.array([[0.0, 0.0, -0.03, 0.0, 1.0]], np.float32)
    assert policy.guard(deep, here)[0, 2] == pytest.approx(-0.03)
