"""Plans: ``Subgoal`` (a skill with arguments), ``Plan`` and ``PlanDecision`` (what a
``decide`` subgoal chose). A ``decide`` subgoal is a decision point: when the executive
reaches it, the planner asks memory *then* (at decision time) and replaces it with the
motor subgoals the answer implies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engram.planners.planning.critic import subgoal_key

__all__ = ["Plan", "PlanDecision", "Subgoal"]


@dataclass
class Subgoal:
    """One step of a plan: a skill with arguments, what the critic should expect after
    it, and alternatives (other args) to try when the loop detector stops retries."""

    skill: str
    args: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""

    @property
    def key(self) -> str:
        return subgoal_key(self.skill, self.args)


@dataclass
class Plan:
    """A task's subgoals and the facts they were grounded in."""

    task: str
    instruction: str
    steps: list[Subgoal]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanDecision:
    """What a ``decide`` step chose: the question, the answer (a compact token), where
    it came from (``memory``, ``lifelong``, ``guess``) and the layout it was made for."""

    question: str
    answer: str
    source: str
    layout: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> str:
        return f"answer={self.answer} layout={self.layout} source={self.source}"
