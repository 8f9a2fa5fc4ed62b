"""A press counts only if it went deep enough to register (issue 15, round 4b).

The learned expert often pressed too shallow: the tool went down and came back up, the
old completion rule said "pressed", the planner moved on, and the episode failed. Now
``SubgoalTracker`` checks the depth below the cap's perceived top (as the skills
executor's critic does) and fails a shallow press so the planner retries it.

- Real MuJoCo button: a 3 mm press does not register in the sim and now fails (the old
  rule, ``check_press_depth=False``, called it done); a 10 mm press registers and
  succeeds under both rules.
- The policy node hands the tracker the perceived top of the subgoal's object.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engram.planners.policies.completion import CompletionConfig, SubgoalTracker

FINGER_M = CompletionConfig().finger_half_length_m


def _press(depth_m: float):
    """Drive a real button_sequence scene: over the first button, straight down until
    the fingertips are ``depth_m`` below its cap's top, back up, hold. Returns (presses
    the sim registered, verdict with the depth check, verdict with the old rule)."""
    from ._expert import button_scene_in_act_phase

    env, obs, cap = button_scene_in_act_phase()  # cap: test ground truth, its resting top
    top = float(cap[2])
    trackers = {k: SubgoalTracker(CompletionConfig(check_press_depth=k)) for k in (True, False)}
    verdicts: dict[bool, tuple[str, str] | None] = {True: None, False: None}

    def step(a: np.ndarray) -> None:
        nonlocal obs
        obs, *_ = env.step(a)
        for k, t in trackers.items():
            v = t.update(a, obs["robot"])
            verdicts[k] = verdicts[k] or v

    def move(target: list[float], step_m: float, n: int, tol_m: float = 0.001) -> None:
        for _ in range(n):
            err = np.asarray(target) - obs["robot"][:3]
            if np.linalg.norm(err) < tol_m:
                return
            d = err * min(1.0, step_m / max(float(np.linalg.norm(err)), 1e-9))
            step(np.array([d[0], d[1], d[2], 0.0, 1.0], np.float32))

    above = [cap[0], cap[1], top + FINGER_M + 0.04]
    for t in trackers.values():
        t.start("push", obs["robot"], gripper=1.0)  # the approach is not the press
    move(above, 0.03, 60, tol_m=0.003)
    for t in trackers.values():
        t.start("press", obs["robot"], gripper=1.0, cap_top_z=top, cap_xy=cap[:2])
    move([cap[0], cap[1], top + FINGER_M - depth_m], 0.01, 30)
    move(above, 0.01, 30)
    for _ in range(3):
        step(np.array([0, 0, 0, 0, 1.0], np.float32))
    presses = env.buttons.press_count()
    env.close()
    return presses, verdicts[True], verdicts[False]


def test_a_shallow_press_is_not_reported_done_and_a_deep_one_is():
    presses, new, old = _press(0.003)
    assert presses == 0  # the sim did not register it ...
    assert old is not None and old[0] == "succeeded"  # ... the old rule said pressed
    assert old[1].startswith("pressed")
    assert new is not None and new[0] == "failed" and "mm deep" in new[1]
    presses, new, old = _press(0.010)
    assert presses == 1
    assert new is not None and new[0] == "succeeded"
    assert old is not None and old[0] == "succeeded"


def test_without_a_known_cap_top_the_press_rule_is_unchanged():
    t = SubgoalTracker()
    robot = np.zeros(11)
    t.start("press", robot, gripper=1.0)  # no cap_top_z: depth cannot be judged
    out = None
    for z, dz in [(0.50, -0.01), (0.49, -0.01), (0.48, 0.01), (0.50, 0.01), (0.50, 0.0)]:
        robot = robot.copy()
        robot[2] = z
        out = out or t.update(np.array([0, 0, dz, 0, 1.0]), robot)
    assert out is not None and out[0] == "succeeded"


def _run(tracker: SubgoalTracker, path: list[tuple[float, float, float]]):
    """Feed ee positions (x, y, z) with the actions that move between them."""
    robot = np.zeros(11)
    robot[:3] = path[0]
    out = None
    for prev, now in itertools.pairwise(path):
        a = np.array([*(np.subtract(now, prev)), 0.0, 1.0])
        robot = robot.copy()
        robot[:3] = now
        out = out or tracker.update(a, robot)
    return out


def test_the_depth_counts_over_the_cap_during_the_whole_subgoal():
    """Traced in the pipeline (seed 41): the expert pushed the cap down on a diagonal
    approach, then made its straight down-and-up higher up; the press had registered,
    so it must count. The same depth beside the cap does not."""
    top = 0.44
    deep = top + FINGER_M - 0.010  # fingertips 10 mm into the cap
    path = [
        (0.05, 0.0, 0.52),
        (0.03, 0.0, 0.49),
        (0.01, 0.0, 0.47),
        (0.0, 0.0, deep),  # diagonal: the rule's straight descent has not begun
        (0.0, 0.0, 0.50),
        (0.0, 0.0, 0.49),  # straight down (too high to press), then back up
        (0.0, 0.0, 0.51),
        (0.0, 0.0, 0.51),
    ]
    for cap_xy, want in (((0.0, 0.0), "succeeded"), ((0.08, 0.0), "failed")):
        t = SubgoalTracker()
        t.start("press", np.zeros(11), gripper=1.0, cap_top_z=top, cap_xy=cap_xy)
        out = _run(t, path)
        assert out is not None and out[0] == want, (cap_xy, out)


@pytest.fixture(scope="module")
def ckpt():
    from ._expert import tiny_tabletop_checkpoint

    return tiny_tabletop_checkpoint()


def test_the_node_gives_the_tracker_the_perceived_top_of_the_pressed_object(ckpt):
    from engram.planners.policies.node import PolicyNode
    from engram.runtime.messages import Instruction, Percept, PlanStep, RobotState
    from engram.runtime.testing import run_node
    from engram.sim.envs import make

    env = make("cups")
    _obs, info = env.reset(seed=4)
    robot = RobotState(stamp_ns=100_000_000, **env.robot_state())
    env.close()
    centroid = np.array([0.1, 0.0, 0.43], np.float32)
    percept = Percept(
        stamp_ns=100_000_000,
        object_ids=np.arange(1, dtype=np.int32),
        object_labels=["cup_1"],
        object_confidences=np.ones(1, np.float32),
        object_boxes=np.zeros((1, 4), np.int32),
        object_centroids=centroid[None],
        object_extents=np.array([[0.03, 0.03, 0.02]], np.float32),
    )
    ins = Instruction(stamp_ns=0, text=info["instruction"], task="cups", episode_id="c-4")
    press = PlanStep(stamp_ns=1, skill="press", args={"object": "cup_1"}, status="running")
    node = PolicyNode({"checkpoint": str(ckpt), "mode": "planner", "execute_steps": 2})
    run_node(
        node,
        [("instruction", ins), ("percepts", percept), ("plan", press), ("robot_state", robot)],
    )
    assert node.tracker.skill == "press"
    assert node.tracker._cap_top_z == pytest.approx(0.43 + 0.01, abs=1e-6)
    np.testing.assert_allclose(node.tracker._cap_xy, centroid[:2], atol=1e-6)
