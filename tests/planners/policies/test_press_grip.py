"""A press stroke keeps the fingers as closed as when it began (issue 15, round 8).

Trace (end to end through the pipeline, button_sequence seed 710): on the carried
downstroke over the red cap the expert's chunk opened the gripper (0.34, then 0.15);
the tool reached the depth that registers with closed fingertips (1 mm from the env
harness's registering press), the tracker judged the press done, but the open fingers
straddled the cap and the button did not count. Real MuJoCo, the same stroke."""

from __future__ import annotations

import numpy as np

from engram.planners.policies.completion import CompletionConfig, PressStroke, SubgoalTracker

from ._expert import button_scene_in_act_phase

FINGER_M = CompletionConfig().finger_half_length_m


def test_a_press_stroke_keeps_the_fingers_closed_when_the_expert_opens_them():
    env, obs, cap = button_scene_in_act_phase()
    try:
        top = float(cap[2])
        above = np.array([cap[0], cap[1], top + FINGER_M + 0.03])
        for _ in range(60):  # the closed gripper 3 cm above the cap
            err = above - obs["robot"][:3]
            if np.linalg.norm(err) < 0.003:
                break
            d = err * min(1.0, 0.03 / float(np.linalg.norm(err)))
            obs, *_ = env.step(np.array([*d, 0.0, 1.0], np.float32))
        tracker, stroke = SubgoalTracker(), PressStroke()
        tracker.start("press", obs["robot"], gripper=1.0, cap_top_z=top, cap_xy=cap[:2])
        verdict, grips = None, []
        for k in range(14):
            # the expert: straight down, closed at first, then opening
            a = np.array([[0.0, 0.0, -0.03, 0.0, 1.0 if k == 0 else 0.3]], np.float32)
            a = stroke.apply(a, obs["robot"], tracker)
            grips.append(float(a[0, 4]))
            verdict = tracker.update(a[0], obs["robot"])
            if verdict is not None:
                break
            obs, _, ended, _, _ = env.step(a[0])
            if ended:
                break
        assert verdict is not None and verdict[0] == "succeeded", verdict
        assert min(grips) == 1.0  # held closed through the stroke
        assert env.buttons.press_count() == 1  # and the button counted (old code: 0)
    finally:
        env.close()
