"""Shared pieces of the action-expert tests: tiny synthetic demonstrations (npz, the
training format) and a tiny network config."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engram.planners.policies.diffusion.action_expert import ActionExpertConfig

INSTRUCTION_DIM = 384


def tiny_config(**overrides: Any) -> ActionExpertConfig:
    """A small ``ActionExpertConfig`` (token_dim 32, one denoiser layer, 50 diffusion
    steps) sized for ``cue_reach_episode`` (S = 5, A = 3, H = 4); ``overrides`` replace
    fields. Training takes S and A from the data anyway."""
    # torch: imported only where used
    from engram.planners.policies.diffusion.action_expert import ActionExpertConfig

    base: dict[str, Any] = dict(
        action_dim=3,
        horizon=4,
        state_dim=5,
        token_dim=32,
        num_heads=2,
        state_tokens=1,
        denoiser_layers=1,
        diffusion_steps=50,
        ddim_steps=5,
        memory_capacity=8,
        memory_context=8,
    )
    base.update(overrides)
    return ActionExpertConfig(**base)


def instruction_embedding(text: str) -> np.ndarray:
    """A fixed unit vector per text (stands in for MiniLM where the text is irrelevant)."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    v = rng.standard_normal(INSTRUCTION_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def reach_episode(rng: np.random.Generator, steps: int = 16) -> dict[str, np.ndarray]:
    """state [x, y, gx, gy]; action = clip(2 (goal - pos), +-1) (A = 2); pos += 0.1 * a.

    The whole future chunk is a function of the current state."""
    pos = rng.uniform(-1, 1, 2)
    goal = rng.uniform(-1, 1, 2)
    states, actions = [], []
    for _ in range(steps):
        a = np.clip(2.0 * (goal - pos), -1.0, 1.0)
        states.append(np.concatenate([pos, goal]))
        actions.append(a)
        pos = pos + 0.1 * a
    return _pack(states, actions, "reach the goal")


def cue_reach_episode(
    rng: np.random.Generator, steps: int = 16, cue_steps: int = 4
) -> dict[str, np.ndarray]:
    """state [x, y, gx, gy, cue shown (+-1 for the first cue_steps steps, then 0)];
    action [clip(2 (goal - pos), +-1) (2 values), cue] (A = 3); pos += 0.1 * a[:2].

    a[:2] is a function of the current state; a[2] only of a cue seen earlier in the
    episode: after ``cue_steps`` only memory tells it."""
    cue = float(rng.choice([-1.0, 1.0]))
    pos = rng.uniform(-1, 1, 2)
    goal = rng.uniform(-1, 1, 2)
    states, actions = [], []
    for t in range(steps):
        a = np.clip(2.0 * (goal - pos), -1.0, 1.0)
        states.append([*pos, *goal, cue if t < cue_steps else 0.0])
        actions.append([*a, cue])
        pos = pos + 0.1 * a
    return _pack(states, actions, "reach the goal, remember the cue")


def _pack(states: list, actions: list, instruction: str) -> dict[str, np.ndarray]:
    return {
        "obs_state": np.asarray(states, np.float32),
        "actions": np.asarray(actions, np.float32),
        "instruction": np.asarray(instruction),
        "instruction_embedding": instruction_embedding(instruction),
        "success": np.asarray(True),
        "action_space": np.asarray("test"),
        "dt_s": np.asarray(0.1),
    }


def write_episodes(folder: Path, make, n: int, *, seed: int = 0, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.savez(folder / f"episode_{i:04d}.npz", **make(rng, **kw))
    return folder
