"""Recipes: how a plan for a task is made (initial subgoals) and how its decision is
answered from memory. The base ``Recipe``, the context it gets (``PlanContext``), the
shared helpers (``choose`` an answer with lifelong learning, ``label_like``,
``xy_token``), ``GoToRecipe`` (go where memory places something), and the two recipes
that belong to no task: ``tour`` (watch until the question comes) and ``generic``
(imperative sentences over the skill library). Each task's own recipe is in its module
under ``engram.sim.tasks`` (``TaskSpec.recipe``)."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from engram.planners.planning.grounding import Grounding
from engram.planners.planning.plans import PlanDecision, Subgoal
from engram.planners.planning.skills.base import SkillError, WorldView, resolve_label
from engram.runtime.messages import Instruction

__all__ = [
    "GenericRecipe",
    "GoToRecipe",
    "PlanContext",
    "Recipe",
    "TourRecipe",
    "choose",
    "label_like",
    "xy_token",
]


@dataclass
class PlanContext:
    """What a recipe may use: the instruction, the current view, memory, a seeded RNG."""

    instruction: Instruction
    world: WorldView
    grounding: Grounding
    rng: np.random.Generator
    episode_start_ns: int = 0


class Recipe(ABC):
    """A task's plan: initial subgoals and how its decision is made from memory.

    A task's recipe lives in the task's module (``TaskSpec.recipe``); ``tour`` and
    ``generic`` are registered under kind ``recipe``. ``task_wording``: when set, an
    ``Instruction.task`` naming this recipe's task selects it only if the instruction's
    text matches (the apartment tasks' tour comes with the same task name)."""

    question = "task"
    task_wording: ClassVar[str] = ""

    @abstractmethod
    def initial(self, ctx: PlanContext) -> list[Subgoal]: ...

    def decide(self, ctx: PlanContext, subgoal: Subgoal) -> tuple[list[Subgoal], PlanDecision]:
        raise SkillError(f"{type(self).__name__} has no decision")


def choose(
    ctx: PlanContext,
    question: str,
    candidates: list[str],
    remembered: str | None,
    *,
    layout: str,
) -> PlanDecision:
    """Pick an answer for ``question``: memory's unless it failed here before; else an
    answer that succeeded here before; else a uniform guess among candidates that did
    not fail."""
    past = ctx.grounding.past_decisions(question, layout, ctx.instruction.text) if layout else []
    failed = {a for a, outcome in past if outcome == "failed"}
    worked = [a for a, outcome in past if outcome == "succeeded"]
    if remembered is not None and remembered not in failed:
        return PlanDecision(question, remembered, "memory", layout)
    for a in worked:
        if a in candidates or not candidates:
            return PlanDecision(question, a, "lifelong", layout)
    pool = [c for c in candidates if c not in failed] or list(candidates)
    if not pool:
        raise SkillError(f"no candidate answer for {question}")
    source = "lifelong" if failed & set(candidates) else "guess"
    return PlanDecision(question, pool[int(ctx.rng.integers(len(pool)))], source, layout)


def label_like(world: WorldView, name: str) -> str:
    """The label in view that ``name`` refers to; ``SkillError`` when none."""
    label = resolve_label(name, world.objects)
    if not label:
        raise SkillError(f"no {name} in view (I see {', '.join(sorted(world.objects))})")
    return label


def xy_token(xy: np.ndarray) -> str:
    """A compact answer token for a point on the floor or table."""
    return f"{float(xy[0]):.3f},{float(xy[1]):.3f}"


class TourRecipe(Recipe):
    """The show phase of the apartment tasks: watch until the question comes."""

    def initial(self, ctx):
        return [Subgoal("watch", {"until": "instruction", "max_s": 3600.0})]


class GoToRecipe(Recipe):
    """Go where memory places something: an object (``kind`` "object", e.g. fetch_seen)
    or a sound ("sound", e.g. where_heard)."""

    kind = "object"
    task_wording: ClassVar[str] = r"go to"

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or type(self).kind
        self.question = "goal_" + self.kind

    def initial(self, ctx):
        return [Subgoal("decide", {"question": self.question})]

    def _target_name(self, text: str) -> str:
        if self.kind == "sound":
            m = re.search(r"heard the (.+?)[.?!]?$", text, re.I)
        else:
            m = re.search(r"go to the (.+?)(?: you saw.*)?[.?!]?$", text, re.I)
        return m.group(1).strip() if m else text

    def decide(self, ctx, subgoal):
        name = self._target_name(ctx.instruction.text)
        here = ctx.world.base_pose()
        target: np.ndarray | None = None
        facts: dict[str, Any] = {"target_name": name}
        if self.kind == "sound":
            found = ctx.grounding.where_heard(name, since_ns=ctx.episode_start_ns)
            stop_m, within_m = 0.0, 0.35
        else:
            label = self._label(ctx, name)
            facts["label"] = label
            found = ctx.grounding.object_position(label) if label else None
            if found is None and label:
                obj = ctx.world.get(label)  # in view now (also without memory)
                found = (obj.position, ctx.world.now_ns) if obj is not None else None
            stop_m, within_m = 0.35, 0.5
        if found is not None:
            target = found[0]
            source = "memory"
        else:
            # nothing known: a guess, somewhere 1.5-3 m away in a random direction
            ang = ctx.rng.uniform(-math.pi, math.pi)
            dist = ctx.rng.uniform(1.5, 3.0)
            target = np.array([here[0] + dist * math.cos(ang), here[1] + dist * math.sin(ang), 0])
            source = "guess"
        route = ctx.grounding.route(here[:2], target[:2]) if source == "memory" else []
        facts["route_len"] = len(route)
        d = PlanDecision(self.question, xy_token(target[:2]), source, "", facts)
        nav = Subgoal(
            "navigate_to",
            {
                "target": [float(target[0]), float(target[1])],
                "route": [[float(p[0]), float(p[1])] for p in route],
                "stop_m": stop_m,
                "within_m": within_m,
            },
        )
        return [nav, Subgoal("wait", {"duration_s": 3.0})], d

    @staticmethod
    def _label(ctx: PlanContext, name: str) -> str:
        known = set(ctx.world.objects)
        for h in ctx.grounding.memory.recall(name, memories=("episodic", "spatial"), top_k=40):
            lab = h.get("data", {}).get("label")
            if h.get("data", {}).get("kind") == "object" and lab:
                known.add(lab)
        return resolve_label(name, known)


class GenericRecipe(Recipe):
    """Imperative sentences over the skill library, one clause per subgoal:
    "pick up X", "put X on Y", "place X at x, y", "press X", "lift X", "push X left",
    "look for X", "go to X", "wait N seconds"."""

    _CLAUSE = re.compile(r"\s*(?:,\s*then|\bthen\b|\band then\b|;|\.)\s*", re.I)

    def initial(self, ctx):
        steps: list[Subgoal] = []
        for clause in self._CLAUSE.split(ctx.instruction.text or ""):
            clause = clause.strip()
            if clause:
                steps += self._parse(ctx, clause)
        if not steps:
            raise SkillError(f"cannot make a plan for {ctx.instruction.text!r}")
        return steps

    def _obj(self, ctx: PlanContext, name: str) -> str:
        return resolve_label(name, ctx.world.objects) or name.strip()

    def _parse(self, ctx: PlanContext, c: str) -> list[Subgoal]:
        if m := re.match(r"(?:pick up|pick|grab|take) (?:the )?(.+)", c, re.I):
            obj = self._obj(ctx, m.group(1))
            return [Subgoal("pick", {"object": obj}, alternatives=[{"grasp_dz_m": -0.006}])]
        if m := re.match(
            r"(?:put|place) (?:the )?(.+?) (?:on|onto|in|into) (?:the )?(.+)", c, re.I
        ):
            obj = self._obj(ctx, m.group(1))
            return [
                Subgoal("pick", {"object": obj}),
                Subgoal("place", {"object": obj, "on": self._obj(ctx, m.group(2))}),
            ]
        if m := re.match(r"(?:press|push the button|hit) (?:the )?(.+)", c, re.I):
            return [Subgoal("press", {"object": self._obj(ctx, m.group(1))})]
        if m := re.match(r"(?:lift|raise) (?:the )?(.+)", c, re.I):
            return [Subgoal("lift", {"object": self._obj(ctx, m.group(1))})]
        if m := re.match(
            r"push (?:the )?(.+?) (left|right|forward|away|back|towards you)", c, re.I
        ):
            d = {"left": [1, 0], "right": [-1, 0], "forward": [0, -1], "away": [0, -1]}.get(
                m.group(2).lower(), [0, 1]
            )
            return [
                Subgoal(
                    "push",
                    {"object": self._obj(ctx, m.group(1)), "direction": d, "distance_m": 0.06},
                )
            ]
        if m := re.match(r"(?:look for|find|search for) (?:the )?(.+)", c, re.I):
            return [Subgoal("look_for", {"object": self._obj(ctx, m.group(1))})]
        if m := re.match(r"wait(?: for)? (\d+(?:\.\d+)?) ?s", c, re.I):
            return [Subgoal("wait", {"duration_s": float(m.group(1))})]
        if re.match(r"(?:go|drive|navigate) to", c, re.I):
            return [Subgoal("decide", {"question": "goal_object", "kind": "object"})]
        if re.match(r"(?:watch|remember|observe|listen)", c, re.I):
            return [Subgoal("watch", {"until": "still", "settle_s": 0.5, "max_s": 10.0})]
        raise SkillError(f"cannot understand {c!r}")

    def decide(self, ctx, subgoal):
        return GoToRecipe("object").decide(ctx, subgoal)
