"""Policies that drive the environments: scripted expert, memoryless baseline, stop.

``Policy`` is the small interface (``reset(env)``, ``act(obs, info) -> action``).

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

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["POLICIES", "ExpertPolicy", "Policy", "ReactivePolicy", "StopPolicy", "run_episode"]


class Policy(ABC):
    """Maps observations to actions for one environment at a time."""

    @abstractmethod
    def reset(self, env) -> None:
        """Start an episode in ``env`` (call after ``env.reset``)."""

    @abstractmethod
    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """(A,) float32 action for the current step."""


class _ScriptPolicy(Policy):
    def __init__(self, *, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.env = None
        self._script: Iterator[np.ndarray] | None = None
        self._obs: dict[str, np.ndarray] | None = None
        self.answer: Any = None

    def reset(self, env) -> None:
        self.env = env.unwrapped
        self._script = None
        self._obs = None
        self.answer = None

    def _answer(self) -> Any:
        raise NotImplementedError

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("call policy.reset(env) first")
        self._obs = obs
        if info.get("phase") != "act":
            return self.env.stop_action()
        if self._script is None:

            def answer() -> Any:
                self.answer = self._answer()
                return self.answer

            self._script = self.env.solve(answer)
        try:
            return np.asarray(next(self._script), np.float32)
        except StopIteration:
            return self.env.stop_action()


class ExpertPolicy(_ScriptPolicy):
    """Scripted expert with privileged simulator state."""

    def _answer(self) -> Any:
        return self.env.expert_answer()


class ReactivePolicy(_ScriptPolicy):
    """Memoryless baseline: guesses the remembered information from the current observation."""

    def _answer(self) -> Any:
        return self.env.guess_answer(self._obs, self.rng)


class StopPolicy(Policy):
    """Always stop (hold the arm, stop the base)."""

    def __init__(self, *, seed: int = 0) -> None:
        self.env = None

    def reset(self, env) -> None:
        self.env = env.unwrapped

    def act(self, obs, info) -> np.ndarray:
        return self.env.stop_action()


POLICIES: dict[str, type[Policy]] = {
    "expert": ExpertPolicy,
    "reactive": ReactivePolicy,
    "stop": StopPolicy,
}


def run_episode(env, policy: Policy, *, seed: int, options: dict | None = None, on_step=None):
    """Run one episode; returns (success, steps, info). ``on_step(obs, action, info)`` per step."""
    obs, info = env.reset(seed=seed, options=options)
    policy.reset(env)
    steps = 0
    while True:
        action = policy.act(obs, info)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if on_step is not None:
            on_step(obs, action, info)
        if terminated or truncated:
            return bool(info["success"]), steps, info
