"""The goal frame and the end-to-end pointer (``ActionExpertConfig.frame == "goal"``).

- Relative to the subgoal's grounded target (its object's position where the segment
  starts), waypoint labels lose nothing: replayed from a fresh episode's own object
  positions they solve button_sequence again (real MuJoCo).
- The pointer's labels name each subgoal's skill, object and frame slot (a place
  steers by the tray, not by the cube it holds).
- A goal-frame expert is translation equivariant: moving the scene and the goal moves
  its waypoints by exactly as much (what a world-frame MLP could not promise: it
  pressed 2-5 cm beside button caps).
- End to end it points at a subgoal, keeps it until the completion rule ends it, then
  points anew; training batches carry the pointer labels and the loss trains both.
"""

from __future__ import annotations

import numpy as np
import pytest

from engram.planners.policies.diffusion import features as F
from tests.planners.policies._expert import goal_frame_policy
from tests.planners.policies.test_executor import _demo


def _parts(task: str, seed: int):
    env, robot, actions, act = _demo(task, seed)
    # the env's objects as the demo saw them, replayed (the demo helper keeps robot only)
    obs, info = env.reset(seed=seed)
    names = list(info["object_names"])
    objects = []
    for t in range(len(actions)):
        objects.append(np.asarray(obs["objects"], np.float32).reshape(-1, 5))
        obs, *_ = env.step(actions[t])
    objects = np.stack(objects)
    labels = F.label_subgoals(robot, actions, act, objects, names)
    slots = objects.copy()
    slots[:, :, 4] = 0.0
    return env, robot, actions, act, names, labels, slots


def test_goal_frame_labels_replay_from_grounded_targets():
    env, robot, actions, act, names, labels, slots = _parts("button_sequence", 4)
    _skill, _obj, frame, where = F.segment_parts(labels, slots, names)
    wps = F.waypoint_labels(robot, actions)
    has = frame >= 0
    rel = wps.copy()
    rel[has, :2] -= where[has]
    assert np.all(np.abs(rel[has & act, :2]).max(axis=0) < 0.6)
    # replay: each segment's target is grounded anew from the replayed episode's own
    # object position at the segment start, plus the relative label
    obs, info = env.reset(seed=4)
    goal = None
    for t in range(len(wps)):
        if has[t] and (t == 0 or frame[t - 1] != frame[t] or not has[t - 1]):
            o = np.asarray(obs["objects"], np.float32).reshape(-1, 5)[frame[t]]
            assert o[0] > 0.5  # visible when its segment starts
            goal = o[1:3].copy()
        if act[t] and has[t]:
            wp = rel[t].copy()
            wp[:2] += goal
            a = F.waypoints_to_deltas(wp[None], obs["robot"])[0]
        else:
            a = actions[t]
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    assert info["success"]
    env.close()


def test_pointer_labels_name_skill_object_and_frame():
    env, _robot, _actions, act, names, labels, slots = _parts("put_back", 2)
    env.close()
    skill, obj, frame, _where = F.segment_parts(labels, slots, names)
    seq = []
    for t in np.flatnonzero(skill >= 0):
        item = (F.SKILLS[skill[t]], names[obj[t]], names[frame[t]])
        if not seq or seq[-1] != item:
            seq.append(item)
    # take the cube to the tray, press the button, put the cube back
    assert [s[0] for s in seq] == ["pick", "place", "press", "pick", "place"]
    for skill_name, label, frame_label in seq:
        if skill_name == "place":  # steers by a scene object, not the held cube
            assert label == "cube_red" and frame_label != "cube_red"
        else:
            assert label == frame_label
    assert np.all(skill[~act] == -1)


def _obs(shift: np.ndarray, goal: bool = True) -> dict:
    robot = np.array([0.05, -0.1, 0.6, 0.2, 0.04, 0, 0.1, 0.2, 0.3, 0.4, 0.5], np.float32)
    robot[:2] += shift
    objects = np.array(
        [[1, 0.1, 0.1, 0.45, 0], [1, -0.12, 0.05, 0.46, 0], [1, 0.2, -0.05, 0.46, 0]],
        np.float32,
    )
    objects[:, 1:3] += shift
    out = {"robot": robot, "objects": objects, "task": np.array([1.0, 3.0, 0, 0, 0], np.float32)}
    if goal:
        out["goal"] = objects[1, 1:3].copy()
    return out


def test_goal_frame_expert_moves_with_the_scene():
    policy = goal_frame_policy()
    emb = np.ones(384, np.float32)
    out = []
    for shift in (np.zeros(2, np.float32), np.array([0.13, -0.07], np.float32)):
        policy.reset(seed=3)
        chunk = policy.act({**_obs(shift), "step": 5}, instruction_embedding=emb, raw=True)
        out.append(chunk.actions)
    assert np.allclose(out[1][:, :2] - out[0][:, :2], [0.13, -0.07], atol=1e-5)
    assert np.allclose(out[1][:, 2:], out[0][:, 2:], atol=1e-5)


def test_end_to_end_points_keeps_the_subgoal_until_it_ends_then_points_anew():
    policy = goal_frame_policy(pointer=True)
    policy.reset(seed=0)
    emb = np.ones(384, np.float32)
    texts: list[str] = []

    def text(t: str) -> np.ndarray:
        texts.append(t)
        return np.full(384, 0.5, np.float32)

    obs = {**_obs(np.zeros(2, np.float32), goal=False), "step": 0}
    with pytest.raises(ValueError, match="text="):
        policy.act(obs, instruction_embedding=emb, raw=True)
    chunk = policy.act(obs, instruction_embedding=emb, raw=True, text=text, task_name="count")
    skill, label, frame_label, xy = policy.pointed
    names = policy.config.object_names["count"]
    assert skill in F.SKILLS and label in names and frame_label in names
    # the target is the frame slot's position; the waypoints are relative to it
    assert np.allclose(xy, _obs(np.zeros(2, np.float32))["objects"][names.index(frame_label), 1:3])
    assert texts == [F.subgoal_text(skill, label)]
    assert chunk.actions.shape == (policy.config.horizon, 5)
    # committed: a moved scene does not change the pointed subgoal before it ends
    policy.act(
        {**_obs(np.array([0.05, 0.0], np.float32), goal=False), "step": 1},
        instruction_embedding=emb,
        raw=True,
        text=text,
        task_name="count",
    )
    assert policy.pointed[3] is xy or np.allclose(policy.pointed[3], xy)
    # the completion rule ends it (its step budget here), and the next act points anew
    robot = obs["robot"]
    done = any(policy.executed(np.zeros(5, np.float32), robot) for _ in range(200))
    assert done and not policy._committed


def test_batches_carry_pointer_labels_and_the_loss_trains_both(tmp_path):
    import torch

    from engram.planners.policies.diffusion.action_expert import ActionExpert
    from engram.planners.policies.diffusion.data import Demonstrations, load_episodes
    from engram.sim.collect import collect
    from tests.planners._synthetic import tiny_config

    from ._expert import constant_embedder

    collect("button_sequence", 2, tmp_path / "button_sequence", seed=7, progress=False)
    eps = load_episodes(tmp_path, "button_sequence")
    for ep in eps:
        ep.actions = F.waypoint_labels(ep.state[:, : F.ROBOT_DIM], ep.actions)
    data = Demonstrations(
        eps, horizon=4, memory_context=8, text_embedder=constant_embedder, frame="goal"
    )
    batch = data.batch(np.random.default_rng(0), 32)
    sub = batch["diffuse"]
    assert sub.any() and (~sub).any()
    # subgoal samples: goal frame (flag set, goal slots zero), no memory, no pointer label
    assert np.all(batch["state"][sub, -1] == 1.0) and np.all(batch["state"][sub, -3:-1] == 0)
    assert not batch["mem_mask"][sub].any() and np.all(batch["pointer"][sub] == -1)
    # instruction samples: world frame, memory, pointer labels (button_sequence: press)
    assert np.all(batch["state"][~sub, -1] == 0.0)
    assert np.all(batch["pointer"][~sub, 0] == F.SKILLS.index("press"))
    cfg = tiny_config(
        state_dim=F.STATE_DIM,
        action_dim=5,
        frame="goal",
        action_mode="waypoint",
        pointer_slots=F.MAX_OBJECTS,
        pointer_skills=F.SKILLS,
    )
    torch.manual_seed(0)
    expert = ActionExpert(cfg, device="cpu")
    expert.set_normalization(**data.stats())
    tb = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    loss = expert.loss(tb)
    loss.backward()
    assert torch.isfinite(loss)
    assert expert.module.pointer[1].weight.grad.abs().sum() > 0
    assert expert.module.act_out.weight.grad.abs().sum() > 0
