"""Direct press labels and their loss weight (round 5).

- A press's straight descent (tool over the cap, label below it) is relabelled with
  the press's deepest waypoint, ``depth_m`` deeper; the approach, the rise and every
  other skill keep their labels.
- Training on real demonstrations relabels every press of button_sequence and marks
  those steps; with ``press_weight`` a batch weighs exactly those chunk positions more,
  and the diffusion loss uses the weights.
"""

from __future__ import annotations

import numpy as np

from engram.planners.policies.diffusion import features as F


def _press_episode():
    # approach over the cap at 0.506, two 2.2 cm descent steps, the rise; then a pick
    ee = np.array(
        [
            [0.00, 0.00, 0.70],
            [0.09, 0.09, 0.52],
            [0.10, 0.10, 0.506],
            [0.10, 0.10, 0.484],
            [0.10, 0.10, 0.466],
            [0.10, 0.10, 0.50],
            [0.10, 0.10, 0.50],
        ]
    )
    wp = np.zeros((7, 5), np.float32)
    wp[:, 4] = 1.0
    wp[0, :3] = wp[1, :3] = (0.10, 0.10, 0.506)  # approach (diagonal, not straight down)
    wp[2, :3] = (0.10, 0.10, 0.484)
    wp[3, :3] = (0.10, 0.10, 0.462)
    wp[4, :3] = (0.10, 0.10, 0.498)  # rise
    wp[5, :3] = wp[6, :3] = (0.10, 0.10, 0.470)  # a pick's descent: not a press
    segment = np.array([[0, 5]] * 5 + [[5, 7]] * 2)
    is_press = np.array([True] * 5 + [False] * 2)
    return ee, wp, segment, is_press


def test_press_descent_heads_for_the_bottom_and_nothing_else_changes():
    ee, wp, segment, is_press = _press_episode()
    out, mask = F.press_labels(ee, wp, segment, is_press, depth_m=0.003)
    assert mask.tolist() == [False, False, True, True, False, False, False]
    assert np.allclose(out[2:4, 2], 0.462 - 0.003)
    keep = ~mask
    assert np.array_equal(out[keep], wp[keep])  # approach, rise and the pick unchanged
    assert np.array_equal(out[:, :2], wp[:, :2])  # only heights change
    assert not np.shares_memory(out, wp)
    # the tracking law reaches below the recorded bottom from the top of the descent
    deltas = F.waypoints_to_deltas(out[2:4], np.r_[ee[2], 0.0])
    assert 0.506 + deltas[:, 2].sum() < 0.462


def test_training_relabels_real_presses_and_weighs_them(tmp_path):
    import torch

    from engram.planners.policies.diffusion.data import Demonstrations, load_episodes
    from engram.planners.policies.diffusion.train import _direct_presses
    from engram.sim.collect import collect

    from ._expert import constant_embedder, goal_frame_policy

    collect("button_sequence", 1, tmp_path / "button_sequence", seed=11, progress=False)
    (ep,) = load_episodes(tmp_path, "button_sequence")
    ep.actions = F.waypoint_labels(ep.state[:, : F.ROBOT_DIM], ep.actions)
    before = ep.actions.copy()
    _direct_presses([ep], 0.003)
    assert ep.press is not None
    starts = sorted({int(ep.segment[t, 0]) for t in np.flatnonzero(ep.press)})
    assert len(starts) == 3  # each of the three presses
    for s in starts:
        e = int(ep.segment[s, 1])
        seg = ep.press[s:e]
        assert seg.sum() >= 2
        assert np.allclose(ep.actions[s:e][seg, 2], before[s:e, 2].min() - 0.003, atol=1e-6)
    assert np.array_equal(ep.actions[~ep.press], before[~ep.press])

    h = 6
    data = Demonstrations(
        [ep],
        horizon=h,
        memory_context=0,
        text_embedder=constant_embedder,
        subgoal_fraction=0.7,
        frame="goal",
        segment_chunks=True,
        press_weight=3.0,
    )
    batch = data.batch(np.random.default_rng(0), 128)
    w = batch["weight"]
    assert w.shape == (128, h)
    for k, t in enumerate(batch["step"]):
        idx = np.minimum(np.arange(t, t + h), ep.segment[t, 1] - 1)
        want = np.where(ep.press[idx], 3.0, 1.0) if batch["diffuse"][k] else np.ones(h)
        assert np.array_equal(w[k], want)
    assert (w == 3.0).any()

    # the loss reads the weights: all ones = the unweighted loss, heavier = larger
    expert = goal_frame_policy().expert
    m = expert.config.memory_context
    tb = {
        "mem_state": torch.zeros(2, m, F.STATE_DIM),
        "mem_step": torch.zeros(2, m, dtype=torch.int64),
        "mem_mask": torch.zeros(2, m, dtype=torch.bool),
        "state": torch.zeros(2, F.STATE_DIM),
        "instruction": torch.ones(2, expert.config.instruction_dim),
        "actions": torch.zeros(2, expert.config.horizon, 5),
        "step": torch.zeros(2, dtype=torch.int64),
        "diffuse": torch.ones(2, dtype=torch.bool),
    }
    with torch.no_grad():
        plain = float(expert.loss(tb, generator=torch.Generator().manual_seed(0)))
        ones = torch.ones(2, expert.config.horizon)
        same = float(
            expert.loss({**tb, "weight": ones}, generator=torch.Generator().manual_seed(0))
        )
        heavy = float(
            expert.loss({**tb, "weight": 3 * ones}, generator=torch.Generator().manual_seed(0))
        )
    assert abs(same - plain) < 1e-6
    assert abs(heavy - 3 * plain) < 1e-5


class _Presser:
    """A closed-loop stand-in for the expert in the oracle harness: flies over the
    subgoal's target, goes straight down to ``bottom_z`` and back up."""

    def __init__(self, bottom_z: float) -> None:
        self.bottom_z = bottom_z
        self.down = False

    def reset(self, seed: int = 0) -> None:
        self.down = False

    def begin_subgoal(self) -> None:
        self.down = False

    def observe(self, observation, **_):
        pass

    def act(self, observation, **_):
        from types import SimpleNamespace

        ee, goal = np.asarray(observation["robot"][:3]), np.asarray(observation["goal"])
        if np.linalg.norm(ee[:2] - goal) > 0.004 and not self.down:
            z = 0.506
        elif not self.down and ee[2] > self.bottom_z + 0.003:
            z = self.bottom_z
        else:
            self.down, z = True, 0.54
        return SimpleNamespace(actions=np.array([[goal[0], goal[1], z, ee[2] * 0, 1.0]]))

    def to_controller(self, actions, robot):
        wp = np.array(actions, np.float32)
        wp[:, 3] = robot[3]
        return F.waypoints_to_deltas(wp, robot)


def test_oracle_harness_checks_press_depth_and_retries():
    from engram.planners.policies.diffusion.rollout import TextCache, run_env_planner_episode

    text = TextCache(lambda texts: np.ones((len(texts), 8), np.float32))
    deep = run_env_planner_episode(
        _Presser(0.458), "button_sequence", 3, text=text, execute_steps=1
    )
    assert deep["success"] and deep["shallow"] == 0
    # 4 cm above the register depth: a down-and-up the old rule counted as a press
    shallow = run_env_planner_episode(
        _Presser(0.485), "button_sequence", 3, text=text, execute_steps=1
    )
    assert not shallow["success"]
    assert shallow["shallow"] >= 3  # the first press was tried three times


def test_a_press_that_turns_straight_into_the_next_descent_is_reported():
    # traced (round 5): a registered press, 3.3 cm back up, then straight down again;
    # judged at the pose after the turn the rise looked like 0.7 cm, so the subgoal ran
    # on and the second push pressed the same button twice
    from engram.planners.policies.completion import SubgoalTracker

    tracker = SubgoalTracker()
    robot = np.zeros(11)
    robot[2] = 0.506
    tracker.start("press", robot, gripper=1.0, cap_top_z=0.440, cap_xy=(0.0, 0.0))
    verdicts = []
    for dz, z in [(-0.022, 0.484), (-0.02, 0.464), (0.013, 0.477), (0.02, 0.497), (-0.026, 0.471)]:
        robot = robot.copy()
        robot[2] = z
        verdicts.append(tracker.update(np.array([0.0, 0.0, dz, 0.0, 1.0]), robot))
    assert verdicts[:4] == [None] * 4
    assert verdicts[4] is not None and verdicts[4][0] == "succeeded"
