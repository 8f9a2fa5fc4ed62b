"""A tiny tabletop action expert trained for a few steps on real `engram sim collect`
data (LeRobotDataset v3): what the policy-node, checkpoint and evaluation tests load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._synthetic import tiny_config


def constant_embedder(texts):
    return np.ones((len(texts), 384), np.float32)


_CACHE: dict[tuple[str, ...], Path] = {}
_ROOTS: dict[tuple[str, ...], Path] = {}


def tiny_tabletop_checkpoint(
    root: Path | None = None, tasks=("cups", "count"), frame: str = ""
) -> Path:
    """Collect 2 episodes of each task under ``root/data``, train 2 steps -> checkpoint.
    Without ``root`` one checkpoint per task set is made once per test session (in a
    temporary folder) and shared: these tests check plumbing, not skill. ``frame``
    "goal": a goal-frame waypoint expert with the end-to-end pointer."""
    import tempfile

    from engram.planners.policies.diffusion.train import train
    from engram.sim.collect import collect

    if root is None:
        key = (*tasks, frame)
        if key not in _CACHE:
            # one data folder per task set, shared by both frames' checkpoints
            root = _ROOTS.setdefault(tuple(tasks), Path(tempfile.mkdtemp(prefix="expert-")))
            _CACHE[key] = tiny_tabletop_checkpoint(root, tasks, frame)
        return _CACHE[key]

    for task in tasks:
        if not (root / "data" / task).is_dir():
            collect(task, 2, root / "data" / task, seed=5, progress=False)
    return train(
        ",".join(tasks),
        root / "data",
        out_dir=root / f"ckpt{frame}",
        steps=2,
        device="cpu",
        expert_config=tiny_config(horizon=4, action_mode="waypoint", frame=frame)
        if frame
        else tiny_config(horizon=4),
        text_embedder=constant_embedder,
        progress=False,
    )


def goal_frame_policy(*, pointer: bool = False, subgoal_progress: bool = False):
    """An untrained goal-frame waypoint expert (seed 0) for the count task, behind
    ``ActionExpertPolicy``: with the end-to-end ``pointer`` head and/or the
    ``subgoal_progress`` input. For tests of frames and inputs, not of skill."""
    import torch

    from engram.planners.policies.diffusion import features as F
    from engram.planners.policies.diffusion.action_expert import ActionExpert
    from engram.planners.policies.diffusion.policy import ActionExpertPolicy

    cfg = tiny_config(
        state_dim=F.STATE_DIM,
        action_dim=5,
        features=F.FEATURES,
        action_mode="waypoint",
        frame="goal",
        pointer_slots=F.MAX_OBJECTS if pointer else 0,
        pointer_skills=F.SKILLS if pointer else (),
        subgoal_progress=subgoal_progress,
        object_names={"count": ["token_0", "button_blue_cap", "button_green_cap"]},
    )
    torch.manual_seed(0)
    expert = ActionExpert(cfg, device="cpu")
    expert.set_normalization(action_min=-np.ones(5) * 0.3, action_max=np.ones(5) * 0.3)
    return ActionExpertPolicy(expert, task="count")


def pointing_at_a_press():
    """A goal-frame policy whose pointer always says "press the blue cap", after its first
    act on a count scene (blue cap top at 0.432 m, centre (-0.12, 0.05)). Returns
    (policy, the robot state it acted from)."""
    import torch

    from engram.planners.policies.diffusion import features as F

    policy = goal_frame_policy(pointer=True)
    policy.reset(seed=0)
    b = policy.config.object_names["count"].index("button_blue_cap")

    def press_blue(*_fused):
        skill = torch.full((1, len(F.SKILLS)), -9.0)
        skill[0, F.SKILLS.index("press")] = 9.0
        obj = torch.full((1, F.MAX_OBJECTS), -9.0)
        obj[0, b] = 9.0
        return skill, obj, obj.clone()

    policy.expert.pointer_logits = press_blue
    robot = np.array([0.05, -0.1, 0.6, 0.2, 0.04, 0, 0.1, 0.2, 0.3, 0.4, 0.5], np.float32)
    objects = np.array(
        [[1, 0.1, 0.1, 0.45, 0], [1, -0.12, 0.05, 0.432, 0], [1, 0.2, -0.05, 0.432, 0]],
        np.float32,
    )
    obs = {"robot": robot, "objects": objects, "task": np.array([1.0, 3, 0, 0, 0], np.float32)}
    policy.act(
        {**obs, "step": 0},
        instruction_embedding=np.ones(384, np.float32),
        raw=True,
        text=lambda t: np.full(384, 0.5, np.float32),
        task_name="count",
    )
    return policy, robot


def button_scene_in_act_phase():
    """A real button_sequence scene in its act phase: (env, obs, cap top xyz)."""
    from engram.sim.envs import make

    env = make("button_sequence")
    obs, info = env.reset(seed=3)
    for _ in range(400):
        if info.get("phase") == "act":
            break
        obs, _, _, _, info = env.step(env.stop_action())
    return env, obs, env.buttons.cap_top(env.colours[0])
