"""When the executor has finished a subgoal: ``SubgoalTracker``.

In planner mode the policy node (``node.py``) executes the planner's running motion
subgoal and is the one to say when it is done: it publishes a ``PlanStep`` with
status ``succeeded`` or ``failed`` on ``/subgoal_status``, and the planner's closed
loop (``planners/planning/loop.py``, ``executor: expert``) settles, lets its critic
check the outcome from fresh percepts, and moves on. Nothing on the side runs a
controller to decide it.

The rule is the one the expert's training segments were cut by
(``diffusion/features.py``: a subgoal ends with its event and the event's
follow-through), read from what the executor itself commands and measures:

- ``pick`` / ``lift``: the gripper was commanded closed (having been open during the
  subgoal, or at its start), the fingers stopped on
  something (opening >= ``empty_m`` after ``grip_steps``), and the tool then rose
  ``rise_m`` (``lift``: ``lift_m``) above where it closed and stopped rising (or rose
  ``done_m``). Fingers that close on nothing fail the subgoal.
- ``place``: the gripper, closed when the subgoal began, was commanded open, and the
  tool then backed off upwards by ``rise_m`` and stopped rising (or rose ``done_m``).
- ``press``: the tool went straight down (a step of at least ``descend_m``, less than
  ``sideways_m`` sideways) and then back up by ``press_rise_m`` above the lowest point
  it reached, and stopped rising. With the cap's perceived top height (``start(...,
  cap_top_z=)``, from the percepts / memory the subgoal was grounded on) the press
  counts only if the fingertips went ``press_register_m`` below that top (the lowest
  tool height over the cap during the subgoal, from proprioception, less
  ``finger_half_length_m``), as the skills
  executor's critic checks (``planning/skills/arm.py`` ``Press.check``); a shallower
  press fails the subgoal so the planner retries it. Without a known top (or with
  ``check_press_depth`` off: the old rule) any such down-and-up counts.
- ``push`` and any other motion: the expert's own actions fell still (``still_steps``
  steps with less than ``still_m`` of motion) after it had moved.
- Every subgoal fails after ``budget_steps`` control steps without finishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CompletionConfig", "SubgoalTracker"]


@dataclass
class CompletionConfig:
    """Thresholds of ``SubgoalTracker`` (see module doc)."""

    grip_steps: int = 3  # control steps the fingers get to close before judging a grasp
    empty_m: float = 0.004  # opening below which the fingers closed on nothing
    rise_m: float = 0.03  # rise after a grasp / release that completes pick / place
    lift_m: float = 0.05  # rise after a grasp that completes lift
    done_m: float = 0.1  # a rise this large completes the subgoal even while rising
    rising_m: float = 0.002  # a commanded rise at least this large: still rising
    descend_m: float = 0.005  # a commanded step down at least this large: descending
    sideways_m: float = 0.005  # a step moving this much sideways is not straight up/down
    press_rise_m: float = 0.015  # rise above the lowest point that completes a press
    check_press_depth: bool = True  # a press must reach press_register_m (False: old rule)
    press_register_m: float = 0.006  # fingertip travel below the cap's top that registers
    finger_half_length_m: float = 0.036  # fingertips below the tool centre point (gripper down)
    still_m: float = 0.001  # commanded motion below this per step: still
    still_steps: int = 4  # still steps that complete a generic motion
    budget_steps: int = 150  # steps after which an unfinished subgoal fails


class SubgoalTracker:
    """Follows one subgoal's execution step by step; ``update`` returns
    ``(status, reason)`` once it has finished (``succeeded`` / ``failed``), else None.

    ``start(skill, robot)`` with the measured robot vector (11,: ee xyz, yaw, gripper
    opening, joints) when the subgoal begins; ``update(action, robot)`` with the
    arm_ee_delta action (5,) just sent and the robot vector measured with it.
    """

    def __init__(self, config: CompletionConfig | None = None) -> None:
        self.config = config or CompletionConfig()
        self.start("", np.zeros(11))  # no subgoal yet: every field defined

    def start(
        self,
        skill: str,
        robot: np.ndarray,
        *,
        gripper: float = 0.0,
        cap_top_z: float | None = None,
        cap_xy: Any = None,
        cap_over_m: float = 0.012,
    ) -> None:
        """``cap_top_z``: a press's button cap top height (world m) as perceived when
        the subgoal began; None when unknown (the press depth is then not checked).
        ``cap_xy``: the cap's perceived centre (x, y); the depth counts only from steps
        with the tool within ``cap_over_m`` of it (None: from every step)."""
        self.skill = skill
        self._cap_top_z = cap_top_z
        self._cap_xy = None if cap_xy is None else np.asarray(cap_xy, np.float64)[:2]
        self._cap_over_m = cap_over_m
        self._deepest = np.inf  # lowest tool z over the cap during the whole subgoal
        self.steps = 0
        self._closed_steps = 0  # consecutive steps commanded closed
        self._event_z: float | None = None  # tool height at the grasp / release / press
        self._peak_z = -np.inf  # highest tool height since the event (height) was set
        self._lowest = np.inf
        self._descended = False
        self._moved = False
        self._still = 0
        self._held_at_start = gripper >= 0.5
        self._opened = gripper < 0.5
        self._last_grip = gripper
        del robot  # the first update carries the measured state

    def update(self, action: Any, robot: Any) -> tuple[str, str] | None:
        cfg = self.config
        a = np.asarray(action, np.float64).reshape(-1)
        r = np.asarray(robot, np.float64).reshape(-1)
        z, opening = float(r[2]), float(r[4])
        closed = a[4] >= 0.5
        self.steps += 1
        out: tuple[str, str] | None = None
        if self.skill in ("pick", "lift"):
            # a grasp is the gripper closing: a gripper still closed from before (a
            # press is done with closed fingers) must open first
            self._opened = self._opened or not closed
            self._closed_steps = self._closed_steps + 1 if (closed and self._opened) else 0
            if self._closed_steps == 1:
                self._event_z, self._peak_z = z, -np.inf
            if self._closed_steps >= cfg.grip_steps and self._event_z is not None:
                if opening < cfg.empty_m:
                    out = ("failed", "the gripper closed on nothing")
                else:
                    need = cfg.lift_m if self.skill == "lift" else cfg.rise_m
                    out = self._risen(z, a, need, "grasped and lifted")
        elif self.skill == "place":
            if closed:
                self._held_at_start = True
            elif self._held_at_start and self._last_grip >= 0.5 and self._event_z is None:
                self._event_z = z  # the release
            if self._event_z is not None:
                out = self._risen(z, a, cfg.rise_m, "released and backed off")
        elif self.skill == "press":
            # the press may happen before the straight descent the rule looks for (a
            # diagonal approach that already pushes the cap): depth over the whole subgoal
            if self._cap_xy is None or np.linalg.norm(r[:2] - self._cap_xy) <= self._cap_over_m:
                self._deepest = min(self._deepest, z)
            if a[2] <= -cfg.descend_m and float(np.linalg.norm(a[:2])) < cfg.sideways_m:
                self._descended = True  # straight down (not the approach)
            if self._descended:
                if z < self._lowest:
                    self._peak_z = -np.inf  # a new bottom: the rise starts over
                self._lowest = min(self._lowest, z)
                self._event_z = self._lowest
                out = self._risen(z, a, cfg.press_rise_m, "pressed")
                if out is not None and cfg.check_press_depth and self._cap_top_z is not None:
                    depth = self._cap_top_z + cfg.finger_half_length_m - self._deepest
                    if depth < cfg.press_register_m:
                        out = ("failed", f"pressed only {depth * 1000:.1f} mm deep")
        else:
            motion = float(np.linalg.norm(a[:3]))
            self._moved = self._moved or motion >= cfg.still_m
            self._still = self._still + 1 if (self._moved and motion < cfg.still_m) else 0
            if self._still >= cfg.still_steps:
                out = ("succeeded", "the motion came to rest")
        self._last_grip = float(a[4])
        if out is None and self.steps >= cfg.budget_steps:
            out = ("failed", f"not finished after {cfg.budget_steps} steps")
        return out

    def _risen(self, z: float, a: np.ndarray, need_m: float, what: str) -> tuple[str, str] | None:
        """Done once the tool rose ``need_m`` above the event and the rise is over (it
        stopped rising, or moves sideways / down: the next segment has begun)."""
        assert self._event_z is not None
        cfg = self.config
        # the highest point since the event: a rise that turns straight into the next
        # descent (a down-up-down pump) is judged at its top, not at the pose after
        # the turn (round 5 trace: a registered press, 3.3 cm back up, then down again
        # went unreported and the second push pressed the same button twice)
        self._peak_z = max(self._peak_z, z)
        rise = self._peak_z - self._event_z
        rising = a[2] >= cfg.rising_m and float(np.linalg.norm(a[:2])) < cfg.sideways_m
        if rise >= cfg.done_m or (rise >= need_m and not rising):
            return ("succeeded", f"{what} ({rise * 100:.1f} cm)")
        return None
