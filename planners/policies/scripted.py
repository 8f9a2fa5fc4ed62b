"""Scripted policies that drive the simulated tasks: expert, memoryless baseline, stop.

Each is a ``Policy`` (``engram.planners.policies.base``: ``reset(env)``, ``act(obs, info)
-> ActionChunk`` of one action), registered as kind ``policy`` under its ``name``
(``engram.planners.register``), which is how the sim node and ``engram sim`` find them.

- ``ExpertPolicy``: the task's scripted solution given the privileged answer
  (what a perfect memory would recall). Demonstrations come from it.
- ``ReactivePolicy``: the same motor script, but the answer is guessed from the
  *current* observation (and the instruction) at the moment it is needed; it
  has no memory, so on these tasks it should succeed at about chance rate
  (``env.chance_success``). Its motor primitives read object poses directly,
  like the expert's; only the remembered information is withheld.
- ``StopPolicy``: always the stop action (what the watchdog does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from engram.planners.policies.base import Policy
from engram.runtime.messages import ActionChunk

__all__ = ["ExpertPolicy", "ReactivePolicy", "StopPolicy", "run_episode"]


class _EnvPolicy(Policy):
    """A policy acting in one simulated environment (``reset(env)``), one action per
    chunk, in the env's action space and control period."""

    def __init__(self, *, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.env: Any = None

    def reset(self, env: Any = None, *, seed: int | None = None) -> None:
        if env is None:
            raise ValueError(f"{type(self).__name__}.reset needs the environment")
        self.env = env.unwrapped
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def _chunk(self, action: np.ndarray) -> ActionChunk:
        return ActionChunk(
            action_space=self.env.controller.space.name,
            actions=np.asarray(action, np.float32)[None],
            dt_s=self.env.config.control_dt_s,
        )


class _ScriptPolicy(_EnvPolicy):
    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self._script: Iterator[np.ndarray] | None = None
        self._obs: Mapping[str, Any] | None = None
        self.answer: Any = None

    def reset(self, env: Any = None, *, seed: int | None = None) -> None:
        super().reset(env, seed=seed)
        self._script = None
        self._obs = None
        self.answer = None

    def _answer(self) -> Any:
        raise NotImplementedError

    def act(
        self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None, **context: Any
    ) -> ActionChunk:
        if self.env is None:
            raise RuntimeError("call policy.reset(env) first")
        self._obs = observation
        if (info or {}).get("phase") != "act":
            return self._chunk(self.env.stop_action())
        if self._script is None:

            def answer() -> Any:
                self.answer = self._answer()
                return self.answer

            self._script = self.env.solve(answer)
        try:
            return self._chunk(next(self._script))
        except StopIteration:
            return self._chunk(self.env.stop_action())


class ExpertPolicy(_ScriptPolicy):
    """Scripted expert with privileged simulator state."""

    name: ClassVar[str] = "expert"

    def _answer(self) -> Any:
        return self.env.expert_answer()


class ReactivePolicy(_ScriptPolicy):
    """Memoryless baseline: guesses the remembered information from the current observation."""

    name: ClassVar[str] = "reactive"

    def _answer(self) -> Any:
        return self.env.guess_answer(self._obs, self.rng)


class StopPolicy(_EnvPolicy):
    """Always stop (hold the arm, stop the base)."""

    name: ClassVar[str] = "stop"

    def act(
        self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None, **context: Any
    ) -> ActionChunk:
        return self._chunk(self.env.stop_action())


def run_episode(env, policy: Policy, *, seed: int, options: dict | None = None, on_step=None):
    """Run one episode; returns (success, steps, info). ``on_step(obs, action, info)`` per step."""
    obs, info = env.reset(seed=seed, options=options)
    policy.reset(env)
    steps = 0
    while True:
        action = policy.act(obs, info).actions[0]
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if on_step is not None:
            on_step(obs, action, info)
        if terminated or truncated:
            return bool(info["success"]), steps, info
