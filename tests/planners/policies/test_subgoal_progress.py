"""The goal frame's progress inputs and segment-bounded chunks (round 4).

- Each demonstration step knows its subgoal segment ([start, end)) and the running
  subgoal's progress: the rise above the lowest point reached since the segment
  began, and the steps since it began (capped).
- Training batches of a progress expert carry those values in the goal slots, and
  with ``segment_chunks`` a subgoal sample's chunk holds its segment's last waypoint
  instead of running into the next subgoal's motion.
- At inference the policy computes the same inputs: they restart with each subgoal
  (``begin_subgoal``, or a new text / target), count the steps and follow the lowest
  point through ``executed``.
"""

from __future__ import annotations

import numpy as np

from engram.planners.policies.diffusion import features as F
from tests.planners.policies._expert import goal_frame_policy


def test_segment_bounds_and_progress_follow_each_segment():
    a = ("press button red cap", np.zeros(2, np.float32))
    b = ("press button red cap", np.zeros(2, np.float32))  # the same text, a new segment
    labels = [None, a, a, a, a, b, b, None]
    z = np.array([0.7, 0.60, 0.50, 0.47, 0.49, 0.52, 0.50, 0.6])
    bounds = F.segment_bounds(labels)
    assert bounds.tolist() == [[-1, -1], [1, 5], [1, 5], [1, 5], [1, 5], [5, 7], [5, 7], [-1, -1]]
    prog = F.segment_progress(labels, z)
    scale = F.PROGRESS_RISE_SCALE
    # the rise above the lowest point so far (0 while descending), steps since the start
    assert np.allclose(prog[1:5, 0], [0, 0, 0, (0.49 - 0.47) * scale], atol=1e-6)
    assert np.allclose(prog[1:5, 1], np.arange(4) / F.PROGRESS_STEP_SCALE)
    # a repeat of the same subgoal starts over
    assert np.allclose(prog[5:7], [[0, 0], [0, 1 / F.PROGRESS_STEP_SCALE]], atol=1e-6)
    assert np.all(prog[[0, 7]] == 0)
    # the step count is capped
    assert F.subgoal_progress(0.5, 0.5, 10_000)[1] == F.PROGRESS_MAX_STEPS / F.PROGRESS_STEP_SCALE


def test_batches_carry_progress_and_end_chunks_with_their_segment(tmp_path):
    from engram.planners.policies.diffusion.data import Demonstrations, load_episodes
    from engram.sim.collect import collect

    from ._expert import constant_embedder

    collect("button_sequence", 1, tmp_path / "button_sequence", seed=11, progress=False)
    (ep,) = load_episodes(tmp_path, "button_sequence")
    ep.actions = F.waypoint_labels(ep.state[:, : F.ROBOT_DIM], ep.actions)
    assert ep.progress is not None and ep.segment is not None
    h = 6
    data = Demonstrations(
        [ep],
        horizon=h,
        memory_context=4,
        text_embedder=constant_embedder,
        subgoal_fraction=1.0,
        frame="goal",
        progress=True,
        segment_chunks=True,
    )
    batch = data.batch(np.random.default_rng(0), 256)
    sub = batch["diffuse"]
    assert sub.all()
    steps = batch["step"]
    assert np.allclose(batch["state"][:, -3:-1], ep.progress[steps])
    assert (batch["state"][:, -3:-1] > 0).any()
    cut = 0
    for k, t in enumerate(steps):
        end = ep.segment[t, 1]
        idx = np.minimum(np.arange(t, t + h), end - 1)
        want = ep.actions[idx].copy()
        want[:, :2] -= ep.goal[t]
        assert np.allclose(batch["actions"][k], want, atol=1e-6)
        cut += int(t + h > end and end < len(ep))
    assert cut > 0  # some chunks reached past their segment and were held
    # statistics: the progress slots get their own scale
    stats = data.stats()
    assert np.all(stats["state_std"][-3:-1] >= 0.05)


def _progress_policy():
    policy = goal_frame_policy(subgoal_progress=True)
    expert = policy.expert
    seen: list[np.ndarray] = []
    orig = expert.online_condition

    def record(state, *args, **kwargs):
        seen.append(state[0].cpu().numpy().copy())
        return orig(state, *args, **kwargs)

    expert.online_condition = record  # type: ignore[method-assign]
    return policy, seen


def _obs(z: float, step: int, goal=(0.1, 0.1)) -> dict:
    robot = np.array([0.1, 0.1, z, 0.0, 0.0, 0, 0, 0, 0, 0, 0], np.float32)
    objects = np.array([[1, 0.1, 0.1, 0.45, 0]], np.float32)
    return {
        "robot": robot,
        "objects": objects,
        "task": np.array([1.0, 3.0, 0], np.float32),
        "goal": np.asarray(goal, np.float32),
        "step": step,
    }


def test_policy_progress_restarts_with_each_subgoal_and_follows_the_lowest_point():
    policy, seen = _progress_policy()
    emb = np.ones(384, np.float32)
    policy.reset(seed=0)
    policy.act(_obs(0.52, 10), instruction_embedding=emb, raw=True)
    assert np.allclose(seen[-1][-3:-1], 0.0)  # a new subgoal: no rise, no steps
    # the tool went down to 0.47 while the chunk ran, and is back at 0.50
    for z in (0.50, 0.48, 0.47):
        policy.executed(np.zeros(5, np.float32), _obs(z, 0)["robot"])
    policy.act(_obs(0.50, 14), instruction_embedding=emb, raw=True)
    assert np.allclose(seen[-1][-3:-1], F.subgoal_progress(0.50, 0.47, 4), atol=1e-6)
    # the same subgoal begun anew (a second press of the same button) starts over
    policy.begin_subgoal()
    policy.act(_obs(0.50, 20), instruction_embedding=emb, raw=True)
    assert np.allclose(seen[-1][-3:-1], 0.0)
    # a new target is a new subgoal even without the call
    policy.act(_obs(0.55, 24), instruction_embedding=emb, raw=True)
    policy.act(_obs(0.56, 27, goal=(0.2, 0.0)), instruction_embedding=emb, raw=True)
    assert np.allclose(seen[-1][-3:-1], 0.0)
    # a new episode too
    policy.act(_obs(0.60, 30, goal=(0.2, 0.0)), instruction_embedding=emb, raw=True)
    assert seen[-1][-2] > 0
    policy.reset(seed=0)
    policy.act(_obs(0.60, 0, goal=(0.2, 0.0)), instruction_embedding=emb, raw=True)
    assert np.allclose(seen[-1][-3:-1], 0.0)


def test_shipped_progress_checkpoint_loads_and_older_ones_keep_no_progress():
    from engram.planners.policies.diffusion.checkpoint import shipped
    from engram.planners.policies.diffusion.policy import ActionExpertPolicy

    assert "tabletop_progress" in shipped()
    policy = ActionExpertPolicy.load("tabletop_progress", device="cpu")
    assert policy.config.frame == "goal" and policy.config.subgoal_progress
    chunk = policy.act(
        {**_obs(0.55, 0, goal=(0.0, 0.1)), "task": np.zeros(3, np.float32)},
        instruction_embedding=np.ones(384, np.float32) / np.sqrt(384),
        raw=True,
    )
    assert chunk.actions.shape == (policy.config.horizon, 5)
    assert policy._sub is not None  # the progress inputs are being followed
    # a checkpoint written before the field existed means "no progress inputs"
    assert not ActionExpertPolicy.load("tabletop_goal", device="cpu").config.subgoal_progress
