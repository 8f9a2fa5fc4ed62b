"""The critic (did this subgoal happen?) and the loop detector (stop repeating failures).

``Critic.evaluate`` runs after a subgoal's controller is done, on *fresh* percepts
(the executive lets the robot settle for a moment first) and, where a subgoal
asks for it, on memory:

1. the skill's own postcondition (``Skill.check``: the cube rose with the gripper,
   the tool reached the press depth, the base is at the goal, ...);
2. the subgoal's expectations (``Subgoal.expect``), which is where the plan's
   *reason* for the step is checked, for example "after lifting this cup the yellow
   cube is visible where memory last saw it":

   - ``visible``: a label that must be in view (optionally ``near`` [x, y, z] within
     ``radius_m``);
   - ``absent``: a label that must not be in view;
   - ``memory_agrees``: a label whose perceived position must agree with what memory
     now says (within ``radius_m``): catches a memory that was not updated.

``LoopDetector`` (RoboMemory's infinite-loop mitigation) watches the sequence of
executed subgoals and their failures and answers, after each failure, one of

- ``retry``: the same subgoal again (at most ``max_retries`` failures per subgoal);
- ``alternative``: stop repeating it, the planner must change the plan (a different
  grasp, the next candidate); also when the *same* failure happens again with the
  world unchanged (no progress: retrying cannot help), or when the executed
  subgoals cycle with a period of at most ``max_period`` more than
  ``max_cycle_repeats`` times;
- ``abort``: give up with a clear failure (alternatives exhausted, or more than
  ``max_subgoals`` subgoals executed for one task).

Every time it intervenes, ``fired`` gets an entry (kind, subgoal key, reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.planners.planning.skills.base import Skill, Verdict, WorldView

__all__ = [
    "Critic",
    "CriticConfig",
    "LoopConfig",
    "LoopDecision",
    "LoopDetector",
    "subgoal_key",
    "world_signature",
]


def subgoal_key(skill: str, args: dict[str, Any]) -> str:
    """A canonical string for one subgoal (skill and arguments, floats rounded to 1 cm)."""

    def canon(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): canon(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple, np.ndarray)):
            return [canon(v) for v in np.asarray(value, dtype=object).tolist()]
        if isinstance(value, (float, np.floating)):
            return round(float(value), 2)
        if isinstance(value, np.integer):
            return int(value)
        return value

    return f"{skill}:{json.dumps(canon(args), sort_keys=True)}"


def world_signature(world: WorldView, *, grid_m: float = 0.01) -> tuple:
    """What the world looks like, coarsely: object labels and positions on a ``grid_m``
    grid, and the robot's end effector or base position. Equal signatures = no change."""
    objects = tuple(
        (label, tuple(np.round(obj.position / grid_m).astype(int).tolist()))
        for label, obj in sorted(world.objects.items())
    )
    robot: tuple = ()
    if world.robot is not None:
        pose = world.robot.world_from_ee if world.robot.world_from_ee is not None else None
        if pose is None:
            pose = world.robot.world_from_base
        robot = tuple(np.round(pose[:3, 3] / grid_m).astype(int).tolist())
    return objects, robot


@dataclass
class CriticConfig:
    """Settings of the ``Critic``."""

    default_radius_m: float = 0.08  # 'near' tolerance of an expectation without radius_m
    memory_radius_m: float = 0.05  # perceived vs remembered position, memory_agrees


class Critic:
    """Checks a finished subgoal's postcondition and expectations. See module doc."""

    def __init__(self, config: CriticConfig | None = None) -> None:
        self.config = config or CriticConfig()
        self.evaluations = 0
        self.failures = 0

    def evaluate(
        self,
        subgoal: Any,
        skill: Skill,
        before: WorldView,
        after: WorldView,
        trace: list[WorldView],
        *,
        grounding: Any = None,
    ) -> Verdict:
        """``subgoal`` has ``skill``, ``args`` and ``expect``; ``grounding`` (optional)
        answers ``object_position(label)`` from memory."""
        self.evaluations += 1
        try:
            verdict = skill.check(before, after, trace, subgoal.args)
        except Exception as exc:  # noqa: BLE001 - a postcondition that cannot run fails
            verdict = Verdict(False, f"postcondition could not be checked: {exc}")
        if verdict.ok:
            verdict = self._expectations(subgoal, after, grounding, verdict)
        if not verdict.ok:
            self.failures += 1
        return verdict

    def _expectations(
        self, subgoal: Any, after: WorldView, grounding: Any, base: Verdict
    ) -> Verdict:
        expect = dict(getattr(subgoal, "expect", {}) or {})
        details = dict(base.details)
        if not expect:
            return base
        radius = float(expect.get("radius_m", self.config.default_radius_m))
        label = expect.get("visible")
        if label:
            obj = after.get(label)
            if obj is None:
                return Verdict(False, f"expected to see {label}, it is not in view", details)
            near = expect.get("near")
            if near is not None:
                dist = float(np.linalg.norm(obj.position[:2] - np.asarray(near, float)[:2]))
                details["expected_distance_m"] = dist
                if dist > radius:
                    return Verdict(
                        False, f"{label} is {dist:.2f} m from where it was expected", details
                    )
        label = expect.get("absent")
        if label and after.get(label) is not None:
            return Verdict(False, f"expected {label} to be gone, it is still in view", details)
        label = expect.get("memory_agrees")
        if label and grounding is not None:
            obj = after.get(label)
            remembered = grounding.object_position(label)
            if obj is not None and remembered is not None:
                dist = float(np.linalg.norm(obj.position - np.asarray(remembered[0])))
                details["memory_error_m"] = dist
                if dist > self.config.memory_radius_m:
                    return Verdict(False, f"memory has {label} {dist:.2f} m off", details)
        return Verdict(True, base.reason, details)


@dataclass
class LoopConfig:
    """Bounds of the ``LoopDetector``."""

    max_retries: int = 2  # failures of one subgoal that are retried as they are
    max_alternatives: int = 3  # alternatives asked for per task before aborting
    max_period: int = 3  # longest repeating pattern of subgoals looked for
    max_cycle_repeats: int = 2  # a pattern seen more often than this in a row is a loop
    max_subgoals: int = 40  # subgoal executions per task; beyond: abort


@dataclass
class LoopDecision:
    """What to do after a failure: ``retry``, ``alternative`` or ``abort``, and why."""

    action: str
    reason: str = ""


@dataclass
class LoopDetector:
    """Bounded retries, no-progress and cycle detection over one task. See module doc."""

    config: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.history: list[tuple[str, bool]] = []  # executed (subgoal key, succeeded), in order
        self.failures: dict[str, int] = {}
        self._failure_states: set[tuple] = set()
        self.alternatives = 0
        self.fired: list[dict[str, Any]] = []

    def record(self, key: str, verdict: Verdict, signature: tuple = ()) -> LoopDecision:
        """Record one executed subgoal; after a failure, say what to do next."""
        cfg = self.config
        self.history.append((key, bool(verdict.ok)))
        if verdict.ok:
            return LoopDecision("continue")
        self.failures[key] = self.failures.get(key, 0) + 1
        state = (key, verdict.reason, signature)
        repeated = state in self._failure_states
        self._failure_states.add(state)
        if len(self.history) >= cfg.max_subgoals:
            return self._fire("abort", key, f"{len(self.history)} subgoals executed for one task")
        if repeated:
            return self._alternative(
                key, f"same failure with no change in the world: {verdict.reason}"
            )
        period = self.cycle()
        if period:
            return self._alternative(key, f"subgoals repeat with period {period}")
        if self.failures[key] > cfg.max_retries:
            return self._alternative(key, f"failed {self.failures[key]} times: {verdict.reason}")
        return LoopDecision("retry", verdict.reason)

    def _alternative(self, key: str, reason: str) -> LoopDecision:
        self.alternatives += 1
        if self.alternatives > self.config.max_alternatives:
            return self._fire("abort", key, f"no alternative left ({reason})")
        return self._fire("alternative", key, reason)

    def give_up(self, key: str, reason: str) -> LoopDecision:
        """The planner has no alternative for ``key``: record the abort."""
        return self._fire("abort", key, reason)

    def _fire(self, action: str, key: str, reason: str) -> LoopDecision:
        self.fired.append({"action": action, "subgoal": key, "reason": reason})
        return LoopDecision(action, reason)

    def cycle(self) -> int:
        """The period (2..max_period) of a pattern of (subgoal, outcome) that ends the
        history, contains a failure and repeats more than ``max_cycle_repeats`` times in
        a row; 0 if none (a subgoal that succeeds again and again is no loop)."""
        h = self.history
        reps = self.config.max_cycle_repeats + 1
        for period in range(2, self.config.max_period + 1):  # period 1 = max_retries
            n = period * reps
            if len(h) < n:
                break
            tail = h[-n:]
            pattern = tail[:period]
            if len(set(pattern)) != period or all(ok for _, ok in pattern):
                continue  # (a, a) repeats a shorter pattern; all-success is progress
            if all(tail[i] == pattern[i % period] for i in range(n)):
                return period
        return 0
