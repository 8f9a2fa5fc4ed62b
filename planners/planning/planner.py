"""Planners: instruction -> plan of subgoals, decisions, replanning after failures.

``Planner`` (ABC) and ``RuleBasedPlanner``, the default: no language model, task
recipes selected by ``Instruction.task`` or by the instruction's wording (each task's
``TaskSpec.instruction_patterns``), plus the generic imperative parser ("pick up the
red cube", "press the blue button", "go to the plant"). ``reasoner.LLMPlanner`` adds
an optional LLM planner behind the same interface. Planners are registered under kind
``planner`` (``engram.planners.register``) and built with ``from_config(config)``.

Lifelong learning. After an attempt the environment's verdict (or a user's) is a
terminal ``PlanStep`` (skill ``episode``) that closes the episode in episodic
memory. At a decision the planner recalls earlier episodes, keeps the ``decide``
steps made for the same layout (object positions on a 3 cm grid) and their
outcomes: a failed answer is not chosen again, a succeeded one is preferred when
memory has nothing better (``recipes.choose``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

from engram.planners.planning.plans import Plan, PlanDecision, Subgoal
from engram.planners.planning.recipes import PlanContext, Recipe
from engram.planners.planning.skills.base import Verdict
from engram.runtime import registry
from engram.runtime.messages import Instruction

__all__ = ["Planner", "RuleBasedPlanner", "detect_task", "recipe_for"]

_TOUR = re.compile(r"follow the tour", re.I)


def _recipe_class(name: str) -> type[Recipe]:
    """A task's recipe class (``TaskSpec.recipe``, imported now) or a ``recipe`` entry."""
    if ("task", name) in registry.REGISTRY:
        return registry.load(registry.get("task", name).recipe)
    return registry.get("recipe", name)


def recipe_for(name: str) -> Recipe:
    """A fresh recipe for a task (its ``TaskSpec.recipe``) or a ``recipe`` entry
    (``tour``, ``generic``)."""
    return _recipe_class(name)()


def detect_task(instruction: Instruction) -> str:
    """The recipe for an instruction: ``tour`` for the show phase of the apartment
    tasks, else its ``task`` when that names a recipe (a registered task, ``tour``,
    ``generic``; and the text has the recipe's ``task_wording``), else the task whose
    ``instruction_patterns`` match the wording, else ``generic``."""
    text = instruction.text or ""
    if _TOUR.search(text):
        return "tour"
    task = instruction.task
    if ("task", task) in registry.REGISTRY or ("recipe", task) in registry.REGISTRY:
        wording = _recipe_class(task).task_wording
        if not wording or re.search(wording, text, re.I):
            return task
    for name in registry.known("task"):
        patterns = registry.get("task", name).instruction_patterns
        if any(re.search(p, text, re.I) for p in patterns):
            return name
    return "generic"


class Planner(ABC):
    """Instruction -> plan of subgoals; decision points; replanning after failures."""

    name = "planner"

    @abstractmethod
    def plan(self, ctx: PlanContext) -> Plan:
        """The initial plan for ``ctx.instruction``."""

    @abstractmethod
    def decide(
        self, ctx: PlanContext, plan: Plan, subgoal: Subgoal
    ) -> tuple[list[Subgoal], PlanDecision]:
        """Resolve a ``decide`` subgoal now (ask memory): the subgoals replacing it."""

    def replan(
        self, ctx: PlanContext, plan: Plan, index: int, verdict: Verdict, action: str
    ) -> list[Subgoal] | None:
        """The subgoals to run from ``index`` on after ``plan.steps[index]`` failed.

        ``action`` is the loop detector's: ``retry`` (the same subgoal again, after
        re-observing), ``alternative`` (something else: the subgoal's next alternative
        args, else None), ``abort``. None = give up."""
        failed = plan.steps[index]
        rest = plan.steps[index + 1 :]
        if action in ("retry", "alternative") and failed.skill == "place":
            # a place that failed has lost the object: find it, pick it up again, place
            obj = failed.args.get("object", "")
            again = [Subgoal("look_for", {"object": obj}), Subgoal("pick", {"object": obj}), failed]
            return again + rest
        if action == "retry":
            again = [failed]
            if failed.skill in ("pick", "lift", "press", "push"):
                again = [Subgoal("look_for", {"object": failed.args.get("object", "")}), *again]
            return again + rest
        if action == "alternative" and failed.alternatives:
            alt = Subgoal(
                failed.skill,
                {**failed.args, **failed.alternatives[0]},
                expect=dict(failed.expect),
                alternatives=failed.alternatives[1:],
                description=failed.description,
            )
            return [alt, *rest]
        return None


class RuleBasedPlanner(Planner):
    """The default planner: task recipes grounded in memory, no language model."""

    name = "rule"

    @classmethod
    def from_config(cls, config: Any) -> RuleBasedPlanner:
        """The planner for a ``PlannerNodeConfig`` (needs nothing from it)."""
        return cls()

    def plan(self, ctx: PlanContext) -> Plan:
        task = detect_task(ctx.instruction)
        steps = recipe_for(task).initial(ctx)
        return Plan(task=task, instruction=ctx.instruction.text, steps=steps)

    def decide(self, ctx, plan, subgoal):
        return recipe_for(plan.task).decide(ctx, subgoal)
