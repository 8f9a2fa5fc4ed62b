"""Pick re-takes its grasp height from the freshest sighting (issue 17 round 5b)."""

from __future__ import annotations

import numpy as np

from engram.planners.planning.skills.base import ObjectView, WorldView, make_skill
from engram.runtime.messages import RobotState


def _robot(ee) -> RobotState:
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = ee
    return RobotState(stamp_ns=0, world_from_ee=pose, gripper_width_m=0.08)


def test_pick_grasps_at_the_height_of_the_fresh_sighting_not_the_first_one():
    # the pick starts from a part-occluded view (box 2.2 cm tall, its bottom 1.6 cm high);
    # by the time the gripper is above the cube the camera sees all 4 cm of it
    short = ObjectView("cube", 1, np.array([0.2, 0.0, 0.437]), np.array([0.04, 0.04, 0.022]), 0)
    full = ObjectView("cube", 1, np.array([0.2, 0.0, 0.428]), np.array([0.04, 0.04, 0.04]), 1)
    ee = np.array([0.0, 0.0, 0.7])
    calls = [0]

    def world() -> WorldView:
        calls[0] += 1
        return WorldView({"cube": short if calls[0] <= 3 else full}, _robot(ee.copy()))

    skill = make_skill("pick")
    closed_at = None
    for chunk in skill.run(world, {"object": "cube"}):
        for row in np.asarray(chunk):
            if row[4] > 0.5 and closed_at is None:
                closed_at = ee.copy()
            ee += row[:3]
    cfg = skill.config
    want = 0.408 + cfg.finger_half_length_m + 0.4 * 0.04  # from the full view's bottom
    stale = 0.426 + cfg.finger_half_length_m + 0.4 * 0.022
    assert closed_at is not None
    assert abs(skill.notes["grasp_z"] - want) < 1e-6
    assert abs(closed_at[2] - want) < 0.005 < abs(closed_at[2] - stale)


def _view(objects: dict, ee, width_m: float) -> WorldView:
    robot = _robot(ee)
    robot.gripper_width_m = width_m
    return WorldView(objects, robot)


def test_pick_check_trusts_the_gripper_when_the_lifted_object_is_out_of_view():
    # camera mode, put_back 11003/11005: the camera lost the cube in the raised gripper
    # for a moment; the check failed and the recovery let go of the cube over the table
    cube = ObjectView("cube", 1, np.array([0.2, 0.0, 0.428]), np.array([0.04] * 3), 0)
    skill = make_skill("pick")
    skill.notes["grasp_z"] = 0.46
    before = _view({"cube": cube}, (0.2, 0.0, 0.46), 0.08)
    check = skill.check
    held = check(before, _view({}, (0.2, 0.0, 0.58), 0.04), [], {"object": "cube"})
    assert held.ok and held.details["out_of_view"]
    empty = check(before, _view({}, (0.2, 0.0, 0.58), 0.0), [], {"object": "cube"})
    assert not empty.ok and "not in view" in empty.reason  # closed on nothing
    low = check(before, _view({}, (0.2, 0.0, 0.47), 0.04), [], {"object": "cube"})
    assert not low.ok  # not raised


def test_place_carries_a_held_object_out_of_view_over_the_target_first():
    ee = np.array([0.2, 0.0, 0.58])
    target = np.array([-0.2, -0.06])

    def world() -> WorldView:
        if np.linalg.norm(ee[:2] - target) > 0.05:  # hidden by the arm until it moves
            return _view({}, ee.copy(), 0.04)
        cube = ObjectView("cube", 1, ee - [0, 0, 0.035], np.array([0.04] * 3), 0)
        return _view({"cube": cube}, ee.copy(), 0.04)

    skill = make_skill("place")
    for chunk in skill.run(world, {"object": "cube", "target": target.tolist()}):
        ee += np.asarray(chunk)[:, :3].sum(axis=0)
    assert np.linalg.norm(ee[:2] - target) < 0.01


def test_gripper_only_checks_take_their_thresholds_from_the_grip_config():
    # the out-of-view pick check and the place's drop guard read GripCheckConfig (issue 17
    # round 6: they were inline numbers); defaults unchanged: 4 mm, 3 cm, closure 0.5
    import dataclasses

    from engram.planners.planning.skills.arm import GripCheckConfig
    from engram.planners.planning.skills.base import SkillError

    cube = ObjectView("cube", 1, np.array([0.2, 0.0, 0.428]), np.array([0.04] * 3), 0)
    skill = make_skill("pick")
    assert skill.grip == GripCheckConfig()
    skill.notes["grasp_z"] = 0.46
    before = _view({"cube": cube}, (0.2, 0.0, 0.46), 0.08)

    def held(width_m: float, tool_z: float) -> bool:
        after = _view({}, (0.2, 0.0, tool_z), width_m)
        return skill.check(before, after, [], {"object": "cube"}).ok

    assert held(0.004, 0.491) and not held(0.0039, 0.491)  # width >= 4 mm
    assert not held(0.04, 0.489)  # raised >= 3 cm
    skill.grip = dataclasses.replace(skill.grip, held_min_width_m=0.05)
    assert not held(0.04, 0.58)  # a 4 cm object is "nothing" for 5 cm fingers
    skill.grip = dataclasses.replace(skill.grip, held_min_width_m=0.004, raised_min_m=0.2)
    assert not held(0.04, 0.58)
    place = make_skill("place")
    place.grip = dataclasses.replace(place.grip, held_min_width_m=0.05)
    guard = place._holding("cube")
    try:
        guard(_view({}, (0.2, 0.0, 0.58), 0.04))
    except SkillError as exc:
        assert "dropped" in str(exc)
    else:
        raise AssertionError("the guard must read held_min_width_m")
