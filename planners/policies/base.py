"""``Policy``: the one base class of everything that turns observations into actions.

Scripted experts (``engram.planners.policies.scripted``), and the learned diffusion
action expert (``engram.planners.policies.diffusion.policy``) share it, so a sim
node, a collector or an evaluation drives any of them the same way.

Lifecycle, one episode at a time::

    policy = registry.get("policy", "expert")(seed=0)   # built once per episode or run
    policy.reset(env, seed=...)        # new episode (after env.reset): clear its state
    while running:
        chunk = policy.act(obs, info)  # a step that needs actions: ActionChunk (H, A)
        policy.observe(obs, info)      # a step that needs none (only memory records it)
    policy.close()                     # release what it holds (default: nothing)

``act`` returns an ``ActionChunk`` of H >= 1 future actions; a caller that steps one
action at a time takes ``chunk.actions[0]``. ``context`` keywords carry what a policy
may need beyond the observation (``instruction_embedding``, ``memory``); a policy
ignores those it does not use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from engram.runtime.messages import ActionChunk

__all__ = ["Policy"]


class Policy(ABC):
    """Observations in, ``ActionChunk``s out, episode by episode (see the module doc)."""

    name: ClassVar[str] = "policy"  # registry name (kind "policy")

    @abstractmethod
    def reset(self, env: Any = None, *, seed: int | None = None) -> None:
        """Start an episode: ``env`` (the environment the policy acts in, when it needs
        one: scripted policies read it), ``seed`` (reseed sampling; None keeps it)."""

    @abstractmethod
    def act(
        self,
        observation: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
        **context: Any,
    ) -> ActionChunk:
        """Observation (and the env's step ``info``) -> ``ActionChunk``, actions (H, A)."""

    def observe(  # noqa: B027 - optional hook
        self,
        observation: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
        **context: Any,
    ) -> None:
        """A control step that needs no new chunk (a policy with memory records it).
        Default: nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the policy holds. Default: nothing."""
