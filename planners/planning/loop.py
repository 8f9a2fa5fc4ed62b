"""``ClosedLoop``: the executive (plan -> act -> critic -> replan).

For each subgoal it runs the skill's controller chunk by chunk (``tick`` returns the
next action chunk), lets the robot settle, asks the ``Critic`` (fresh percepts and
memory), records the outcome with the ``LoopDetector`` and, on failure, retries, asks
the planner for an alternative, or aborts with a clear reason. Subgoals whose skill is
in ``external_skills`` (``executor: expert``: the ``MOTION_SKILLS``) are executed by
another node (the policy node): for those the loop holds while that executor works and
waits for its report (``report``: a ``PlanStep`` for the running subgoal, status
``succeeded`` or ``failed``, ``args["subgoal_seq"]`` = the running step's seq), then
settles and lets the critic check the outcome as for its own skills; no controller runs
on the side. Every status change is
reported as a ``PlanStep`` (the node publishes them; the memory system stores them in
the episode), including each ``decide`` with its answer and the layout it was made
for, so that a later attempt at the same layout can avoid a choice that failed.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from engram.planners.planning.critic import Critic, LoopDetector, world_signature
from engram.planners.planning.grounding import Grounding, jsonable
from engram.planners.planning.planner import Planner
from engram.planners.planning.plans import Plan, PlanDecision, Subgoal
from engram.planners.planning.recipes import PlanContext
from engram.planners.planning.skills.base import (
    ARM_SPACE,
    SkillConfig,
    SkillError,
    Verdict,
    WorldView,
    make_skill,
)
from engram.runtime.messages import Instruction, PlanStep

__all__ = ["MOTION_SKILLS", "ClosedLoop"]

_OVER_CAP_M = 0.012  # tool within this of a button cap's centre (xy) counts as over it
#: skills that move the arm: what an external executor (the policy node) runs
MOTION_SKILLS = ("pick", "lift", "place", "press", "push")

log = logging.getLogger(__name__)


class ClosedLoop:
    """Plan -> act -> critic -> replan, one action chunk per ``tick``. See module doc.

    ``on_step(PlanStep)`` receives every status change. ``tick(world)`` returns the
    next (H, A) chunk; when there is nothing to do it returns a hold chunk.
    """

    def __init__(
        self,
        planner: Planner,
        *,
        grounding: Grounding,
        critic: Critic | None = None,
        loop: LoopDetector | None = None,
        skill_config: SkillConfig | None = None,
        on_step: Callable[[PlanStep], None] | None = None,
        seed: int = 0,
        settle_steps: int = 2,
        hold_steps: int = 2,
        external_skills: tuple[str, ...] = (),
        external_budget_steps: int = 200,
    ) -> None:
        """``external_skills``: skills another node executes and reports on (``report``);
        ``external_budget_steps``: steps to wait for its report before failing."""
        self.planner = planner
        self.grounding = grounding
        self.critic = critic or Critic()
        self.loop = loop or LoopDetector()
        self.skill_config = skill_config or SkillConfig()
        self.on_step = on_step or (lambda step: None)
        self.seed = seed
        self.settle_steps = settle_steps
        self.hold_steps = hold_steps
        self.instruction: Instruction | None = None
        self.plan: Plan | None = None
        self.status = "idle"  # idle | running | done | failed
        self.reason = ""
        self.decisions: list[PlanDecision] = []
        self.current: Subgoal | None = None
        self.current_seq = 0
        self._world = WorldView()
        self._gen: Iterator[np.ndarray] | None = None
        self._gripper: float | None = None  # last gripper command sent (arm)
        self._episode_start_ns = 0
        self.external_skills = tuple(external_skills)
        self.external_budget_steps = int(external_budget_steps)
        self._report: PlanStep | None = None

    def report(self, step: PlanStep) -> bool:
        """The external executor's verdict on the running subgoal; True when it was
        for the running subgoal (others, e.g. late reports, are ignored)."""
        sg = self.current
        if (
            sg is None
            or sg.skill not in self.external_skills
            or step.status not in ("succeeded", "failed")
            or int(step.args.get("subgoal_seq", -1)) != self.current_seq
        ):
            return False
        self._report = step
        return True

    # ---- control --------------------------------------------------------------------------
    def start(self, instruction: Instruction, *, episode_start_ns: int | None = None) -> None:
        """Begin working on ``instruction`` (drops whatever was running)."""
        self.instruction = instruction
        self.plan = None
        self.status = "running"
        self.reason = ""
        self.decisions = []
        self.current = None
        self.loop.reset()
        self._gripper = None
        if episode_start_ns is not None:
            self._episode_start_ns = int(episode_start_ns)
        self._gen = self._run()

    def tick(self, world: WorldView) -> np.ndarray:
        """The next action chunk (H, A) float32 for ``world``."""
        self._world = world
        if world.gripper_command is None:
            world.gripper_command = self._gripper
        chunk = None
        if self._gen is not None:
            try:
                chunk = np.asarray(next(self._gen), np.float32)
            except StopIteration:
                self._gen = None
        if chunk is None:
            chunk = self._hold()
        if world.action_space == ARM_SPACE and chunk.ndim == 2 and chunk.shape[1] == 5:
            self._gripper = float(chunk[-1, 4])
        return chunk

    def _hold(self, steps: int | None = None) -> np.ndarray:
        n = steps or self.hold_steps
        if self._world.action_space == ARM_SPACE:
            _, _, closure = self._world.ee()
            out = np.zeros((n, 5), np.float32)
            out[:, 4] = round(closure)
            return out
        return np.zeros((n, 3), np.float32)

    # ---- steps ----------------------------------------------------------------------------
    def _emit(self, sg: Subgoal, status: str, *, attempt: int = 0, reason: str = "") -> PlanStep:
        ins = self.instruction
        step = PlanStep(
            stamp_ns=max(self._world.now_ns, 0),
            skill=sg.skill,
            args=jsonable(sg.args),
            status=status,
            attempt=attempt,
            reason=reason,
            episode_id=ins.episode_id if ins is not None else "",
        )
        try:
            self.on_step(step)
        except Exception:  # noqa: BLE001 - reporting must not stop the robot
            log.exception("on_step failed")
        return step

    def _context(self) -> PlanContext:
        ins = self.instruction
        assert ins is not None
        rng = np.random.default_rng(
            zlib.crc32(f"{self.seed}:{ins.episode_id}:{ins.text}:{len(self.decisions)}".encode())
        )
        return PlanContext(ins, self._world, self.grounding, rng, self._episode_start_ns)

    def _run(self) -> Iterator[np.ndarray]:
        ctx = self._context()
        try:
            plan = self.plan = self.planner.plan(ctx)
        except Exception as exc:  # noqa: BLE001 - a plan that cannot be made is a failure
            self._finish("failed", f"no plan: {exc}")
            self._emit(Subgoal("task"), "aborted", reason=f"no plan: {exc}")
            return
        attempts: dict[str, int] = {}
        i = 0
        while i < len(plan.steps):
            sg = plan.steps[i]
            if sg.skill == "decide":
                try:
                    new, decision = self.planner.decide(self._context(), plan, sg)
                except Exception as exc:  # noqa: BLE001
                    self._emit(sg, "failed", reason=str(exc))
                    self._finish("failed", f"cannot decide {sg.args.get('question')}: {exc}")
                    self._emit(Subgoal("task"), "aborted", reason=self.reason)
                    return
                self.decisions.append(decision)
                plan.facts[decision.question] = {
                    "answer": decision.answer,
                    "source": decision.source,
                    **jsonable(decision.facts),
                }
                args = {"question": decision.question, "answer": decision.answer}
                self._emit(
                    Subgoal("decide", args),
                    "succeeded",
                    reason=f"question={decision.question} {decision.reason()}",
                )
                plan.steps[i : i + 1] = new
                continue
            attempt = attempts.get(sg.key, 0)
            attempts[sg.key] = attempt + 1
            self.current = sg
            running = self._emit(sg, "running", attempt=attempt)
            self.current_seq = running.seq
            verdict = yield from self._execute(sg)
            self._emit(
                sg, "succeeded" if verdict.ok else "failed", attempt=attempt, reason=verdict.reason
            )
            decision = self.loop.record(sg.key, verdict, world_signature(self._world))
            if verdict.ok:
                i += 1
                continue
            new = None
            if decision.action != "abort":
                new = self.planner.replan(self._context(), plan, i, verdict, decision.action)
            if new is None:
                why = decision.reason if decision.action == "abort" else verdict.reason
                if decision.action != "abort":
                    self.loop.give_up(sg.key, f"no alternative after: {decision.reason}")
                self._finish("failed", f"{sg.skill} failed: {why}")
                self._emit(Subgoal("task"), "aborted", reason=self.reason)
                return
            plan.steps[i:] = new
        self.current = None
        self._finish("done", "")

    def _finish(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        self.current = None

    def _execute(self, sg: Subgoal) -> Iterator[np.ndarray]:
        """Run one subgoal's controller, settle, ask the critic -> Verdict."""
        try:
            skill = make_skill(sg.skill, self.skill_config)
        except KeyError as exc:
            return Verdict(False, str(exc))
        before = self._world
        trace: list[WorldView] = []
        if sg.skill in self.external_skills:
            return (yield from self._execute_external(sg, skill))
        try:
            for chunk in skill.run(lambda: self._world, sg.args):
                yield chunk
                if len(trace) < 256:
                    trace.append(self._world)
        except SkillError as exc:
            return Verdict(False, str(exc))
        except (KeyError, ValueError, TypeError) as exc:
            return Verdict(False, f"bad arguments {sg.args}: {exc}")
        if sg.skill not in ("watch", "decide") and self.settle_steps:
            yield self._hold(self.settle_steps)  # let fresh percepts arrive
        return self.critic.evaluate(sg, skill, before, self._world, trace, grounding=self.grounding)

    def _execute_external(self, sg: Subgoal, skill) -> Iterator[np.ndarray]:  # noqa: ANN001
        """Hold while the external executor works on ``sg``; its report ends it."""
        before = self._world
        trace: list[WorldView] = []
        self._report = None
        steps = 0
        while self._report is None and steps < self.external_budget_steps:
            yield self._hold(1)
            steps += 1
            if len(trace) < 256:
                trace.append(self._world)
        rep = self._report
        self._report = None
        if rep is None:
            return Verdict(False, f"the executor did not report on {sg.skill} in {steps} steps")
        if rep.status != "succeeded":
            return Verdict(False, f"executor: {rep.reason or rep.status}")
        _external_notes(skill, sg.args, before, trace)
        if self.settle_steps:
            yield self._hold(self.settle_steps)  # let fresh percepts arrive
        return self.critic.evaluate(sg, skill, before, self._world, trace, grounding=self.grounding)


def _external_notes(skill, args: dict, before: WorldView, trace: list[WorldView]) -> None:  # noqa: ANN001
    """What a skill's check reads from its own run (``notes``), taken from the views
    of another executor's run instead: a press's cap height and lowest tool height,
    a place's target."""
    label = str(args.get("object", ""))
    if _skill_name(skill) == "press":
        cap = before.get(f"{label}_cap") or before.get(label)
        if cap is None:
            return
        skill.notes["cap_top_z"] = float(cap.top_z)
        # the depth counts only where the tool was over the cap: an executor that
        # went down beside it pressed nothing (its own controller aims by construction)
        over = max(_OVER_CAP_M, float(np.max(cap.extent[:2])) / 2 + 0.005)
        zs = [
            float(v.ee()[0][2])
            for v in trace
            if v.robot is not None
            and float(np.linalg.norm(v.ee()[0][:2] - cap.position[:2])) <= over
        ]
        if zs:
            skill.notes["lowest_z"] = min(zs)
    elif _skill_name(skill) == "place":
        on = args.get("on")
        base = before.get(on) if on else None
        if base is not None:
            skill.notes["target"] = base.position[:2].tolist()
        elif args.get("target") is not None:
            skill.notes["target"] = list(np.asarray(args["target"], float)[:2])


def _skill_name(skill) -> str:  # noqa: ANN001
    return str(getattr(skill, "name", ""))
