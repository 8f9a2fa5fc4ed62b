"""The action expert driving a simulated task directly (no bus): training's periodic
closed-loop validation and ``engram eval --executor expert --harness env``.

End to end (MemoryVLA style): every control step the expert sees the environment's
own observation (robot, objects, task extras: what ``features.py`` lays out) and the
instruction's MiniLM embedding. In the show phase it only writes the step into its
memory bank (``observe``; the robot's actions are ignored there); in the act phase it
samples a chunk every ``execute_steps`` steps and executes that many of its actions,
observing the steps in between (receding horizon); a waypoint expert's actions are
turned into the arm's deltas one step at a time, from the pose measured then. Without memory (``use_memory``
False on the policy) the bank is emptied before every chunk, so the same network
must act from the current observation alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["TextCache", "run_env_episode", "validate"]


class TextCache:
    """MiniLM text embeddings, computed once per distinct text."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> None:
        self._embed = embed
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self._cache:
            if self._embed is None:
                self._embed = _minilm()
            self._cache[text] = np.asarray(self._embed([text]), np.float32)[0]
        return self._cache[text]


_MINILM: list[Any] = []  # the process's MiniLM text encoder, loaded once (seconds)


def _minilm() -> Callable[[Sequence[str]], np.ndarray]:
    if not _MINILM:
        from engram.perception.encoders import make_encoder

        _MINILM.append(make_encoder("minilm").encode_texts)
    return _MINILM[0]


def run_env_episode(
    policy: Any, task: str, seed: int, *, text: TextCache, execute_steps: int = 4, env: Any = None
) -> dict[str, Any]:
    """One end-to-end episode of ``task`` with ``policy`` (an ``ActionExpertPolicy``):
    ``{"task", "seed", "success", "steps", "chunks"}``."""
    from engram.sim.envs import make

    own = env is None
    env = env or make(task)
    try:
        obs, info = env.reset(seed=seed)
        policy.reset(seed=seed)
        queue: list[np.ndarray] = []
        steps = chunks = 0
        while True:
            emb = text(str(info.get("instruction", "")))
            o = {**obs, "step": steps}
            if info.get("phase") != "act":
                policy.observe(o, instruction_embedding=emb)
                action = env.stop_action()
            else:
                if not queue:
                    chunk = policy.act(o, instruction_embedding=emb, raw=True)
                    queue = list(chunk.actions[: max(1, execute_steps)])
                    chunks += 1
                else:
                    policy.observe(o, instruction_embedding=emb)
                # closed loop: a waypoint is tracked from the arm's pose now
                action = policy.to_controller(queue.pop(0)[None], obs["robot"])[0]
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated:
                return {
                    "task": task,
                    "seed": seed,
                    "success": bool(info["success"]),
                    "steps": steps,
                    "chunks": chunks,
                }
    finally:
        if own:
            env.close()


def validate(
    policy: Any, tasks: Sequence[str], *, episodes: int, seed: int, text: TextCache
) -> dict[str, float]:
    """Success rate per task over ``episodes`` end-to-end episodes (seeds seed..)."""
    out = {}
    for task in tasks:
        ok = sum(
            run_env_episode(policy, task, seed + i, text=text)["success"] for i in range(episodes)
        )
        out[task] = ok / max(1, episodes)
    return out
