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
  tool then backed off upwards by ``rise_m`` above the lowest point it reached after
  the opening and stopped rising (or rose ``done_m``).
- ``press``: the tool went straight down (a step of at least ``descend_m``, less than
  ``sideways_m`` sideways) and then back up by ``press_rise_m`` above the lowest point
  it reached, and stopped rising. With the cap's perceived top height (``start(...,
  cap_top_z=)``, from the percepts / memory the subgoal was grounded on) the press
  counts only if the fingertips went ``press_register_m`` below that top (the lowest
  tool height over the cap during the subgoal, from proprioception, less
  ``finger_half_length_m``), as the skills
  executor's critic checks (``planning/skills/arm.py`` ``Press.check``); a shallower
  press fails the subgoal so the planner retries it. Without a known top (or with
  ``check_press_depth`` off: the old rule) any such down-and-up counts. With a known
  top, a press that registered ends as soon as the tool is back above the height
  where the cap is released (fingertips ``press_release_m`` above the top) and stops
  rising, however little it rose (round 6 trace, button_sequence seed 114: a press
  that registered, rose 1.2 cm, released the cap and turned straight down again was
  still running, and the second push pressed the same button twice).
- ``push`` and any other motion: the expert's own actions fell still (``still_steps``
  steps with less than ``still_m`` of motion) after it had moved.
- Every subgoal fails after ``budget_steps`` control steps without finishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CompletionConfig",
    "GraspStroke",
    "GraspStrokeConfig",
    "PressStroke",
    "PressStrokeConfig",
    "SubgoalTracker",
    "turn_to_yaw",
]


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
    # fingertips this far above the cap's perceived top: the cap is released (the sim
    # releases a press at 2 mm of travel left); a registered press then ends on any
    # step that stops rising
    press_release_m: float = 0.002
    end_press_on_release: bool = True  # the rule above (False: only the rise ends a press)
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

    @property
    def cap(self) -> tuple[float, np.ndarray] | None:
        """A press's cap as perceived when it began: (top z, centre xy); None unknown."""
        if self._cap_top_z is None or self._cap_xy is None:
            return None
        return self._cap_top_z, self._cap_xy

    def press_depth_m(self) -> float:
        """How far the fingertips have gone below the cap's top so far (-inf: unknown)."""
        if self._cap_top_z is None or not np.isfinite(self._deepest):
            return -np.inf
        return self._cap_top_z + self.config.finger_half_length_m - self._deepest

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
            if self._event_z is not None and z < self._event_z:
                # released on the way down: the back-off is measured from the lowest
                # point after the release (round 6 trace, put_back seed 102: opened at
                # 0.553 m, went on down to 0.481 and back up to 0.571; judged from the
                # opening height it never rose 3 cm and ran out its 150 steps)
                self._event_z, self._peak_z = z, -np.inf
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
            if cfg.check_press_depth and self._cap_top_z is not None:
                tips = self._cap_top_z + cfg.finger_half_length_m  # tool z at the cap's top
                depth = tips - self._deepest
                if out is not None and depth < cfg.press_register_m:
                    out = ("failed", f"pressed only {depth * 1000:.1f} mm deep")
                elif (
                    out is None
                    and cfg.end_press_on_release
                    and depth >= cfg.press_register_m
                    and z >= tips + cfg.press_release_m
                    and not self._rising(a)
                ):
                    out = ("succeeded", f"pressed {depth * 1000:.1f} mm deep and released")
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
        if rise >= cfg.done_m or (rise >= need_m and not self._rising(a)):
            return ("succeeded", f"{what} ({rise * 100:.1f} cm)")
        return None

    def _rising(self, a: np.ndarray) -> bool:
        """The action goes straight up (the follow-through of a grasp, release or press)."""
        cfg = self.config
        return bool(a[2] >= cfg.rising_m and float(np.linalg.norm(a[:2])) < cfg.sideways_m)


@dataclass
class PressStrokeConfig:
    """Thresholds of ``PressStroke``."""

    over_m: float = 0.015  # the tool within this of the cap's centre (xy): over the cap
    extra_m: float = 0.004  # the downstroke aims this far past the registering depth
    up_m: float = 0.015  # the upstroke ends with the fingertips this far above the cap
    steps: int = 8  # control steps the downstroke gets to reach its depth


class PressStroke:
    """Carries a press stroke the expert began over the cap through: once a press
    subgoal's action steps straight down (``descend_m``) with the tool over the cap
    and the press has not registered yet, the arm goes down over the cap's centre to
    ``extra_m`` past the registering depth (or for ``steps`` steps), then straight back
    up to ``up_m`` above the cap's top, where ``SubgoalTracker`` ends it.

    Why: the expert aims presses well but its descents over the cap stopped 0-3 mm
    short of the 6 mm that registers, or it hovered there, up to 14 mm off the centre
    (round 6 traces:
    button_sequence seed 103, count seed 105, three shallow tries each, then the
    planner gave up); the executor finishes the stroke as a compliant press would.
    Needs the tracker started on a press with the cap's top and xy (``start(...,
    cap_top_z=, cap_xy=)``); otherwise the actions pass unchanged."""

    def __init__(self, config: PressStrokeConfig | None = None) -> None:
        self.config = config or PressStrokeConfig()
        self.reset()

    def reset(self) -> None:
        """A new subgoal: no stroke under way."""
        self.phase = ""  # "" | "down" | "up"
        self._steps = 0
        self._grip = 0.0  # the gripper command when the stroke began

    def apply(self, actions: Any, robot: Any, tracker: SubgoalTracker) -> np.ndarray:
        """The controller actions (H, 5) to send now, given the measured robot vector."""
        from engram.planners.policies.diffusion.features import waypoints_to_deltas

        actions = np.asarray(actions, np.float32)
        robot = np.asarray(robot, np.float64).reshape(-1)
        cap = tracker.cap
        if tracker.skill != "press" or cap is None or actions.ndim != 2 or actions.shape[1] < 5:
            return actions
        cfg, tcfg = self.config, tracker.config
        top, cap_xy = cap
        tips = top + tcfg.finger_half_length_m  # tool height with the fingertips on the cap
        depth = tracker.press_depth_m()
        over = float(np.linalg.norm(robot[:2] - cap_xy)) <= cfg.over_m
        down = float(actions[0, 2]) <= -tcfg.descend_m
        if not self.phase and over and down and depth < tcfg.press_register_m:
            self.phase, self._steps = "down", 0
            self._grip = float(actions[0, 4])
        if self.phase == "down":
            self._steps += 1
            if depth >= tcfg.press_register_m + cfg.extra_m / 2 or self._steps > cfg.steps:
                self.phase = "up"
        if not self.phase:
            return actions
        if self.phase == "down":
            z = tips - tcfg.press_register_m - cfg.extra_m
        else:
            z = tips + cfg.up_m
        # down / up over the cap's centre (the expert aimed within over_m of it: round 6
        # trace, end to end button_sequence seed 17, it hovered 9-14 mm off the centre)
        # with the fingers as closed as when the stroke began: an opening during the
        # stroke spreads them around the cap (round 8 trace, end to end through the
        # pipeline, button_sequence seed 710: the expert opened to 0.34 on the way down
        # and the red press, 1 mm from the env harness's registering one, did not count)
        grip = max(float(actions[0, 4]), self._grip)
        wp = np.array([[cap_xy[0], cap_xy[1], z, robot[3], grip]], np.float64)
        return waypoints_to_deltas(wp, robot)


@dataclass
class GraspStrokeConfig:
    """Thresholds of ``GraspStroke``."""

    over_m: float = 0.02  # the tool within this of the object's centre (xy): over it
    # a close commanded with the fingertips less than this below the object's perceived
    # top is too high to hold it (round 7 traces: 1.1 cm below a cube's top slipped)
    high_m: float = 0.02
    # the grasp height it is taken down to: the skills executor's (fingertips
    # grasp_fraction of the perceived height above the bottom, within grasp_min_m ..
    # grasp_max_m; the scripted demonstrations grip a cup 2.6 cm, a cube 0.4 cm up) ...
    grasp_fraction: float = 0.4
    grasp_min_m: float = 0.004
    grasp_max_m: float = 0.03
    # ... but at least this far below the top (a tray's rim hides a cube's lower half
    # and its perceived bottom is high: round 7 trace, put_back seed 114), and without a
    # perceived bottom this far
    below_top_m: float = 0.028
    steps: int = 8  # control steps the descent gets to reach the grasp height
    blocked_m: float = 0.002  # a descent step lower by less than this: blocked, close there
    close_steps: int = 3  # steps held still with the gripper closed at the bottom


class GraspStroke:
    """Carries a grasp the expert began over the object through at the grasp height:
    when a pick / lift's action turns the open gripper to closed with the tool over
    the object (``over_m``) but its fingertips less than ``high_m`` below the object's
    top, the arm first goes down over the object's centre, gripper open, to the
    grasp height (or for ``steps`` steps), then closes there, held still for
    ``close_steps`` steps; the expert then goes on (its lift) from the closed grasp,
    which is kept closed for the rest of the subgoal.

    Why (round 7 traces, put_back dev seeds): the expert closed after it had already
    started rising (seed 114: down to 0.461 m, up to 0.480, closed on nothing; the
    retries then pushed the cube until the episode ended), or closed while still high
    (seed 111: a re-pick from the tray closed with the fingertips 1.1 cm below the
    cube's top, lifted it, and the cube slipped out on the carry, ending the episode).
    A grasp primitive closes at the grasp height, as the skills executor and the
    scripted demonstrations do; the expert still chooses where and when to grasp.

    ``apply(actions, robot, skill, obj, prev_grip)``: ``obj`` = (top z, bottom z or
    None, centre xy) as perceived when the subgoal began (None: actions unchanged);
    ``prev_grip`` the gripper command sent the step before."""

    def __init__(self, config: GraspStrokeConfig | None = None) -> None:
        self.config = config or GraspStrokeConfig()
        self.reset()

    def reset(self) -> None:
        """A new subgoal: no stroke under way."""
        self.phase = ""  # "" | "down" | "close" | "held" (its grasp kept) | "done"
        self._steps = 0
        self._xy = np.zeros(2)
        self._z = 0.0
        self._last_z = np.inf  # tool height at the previous step of the descent

    def grasp_z(self, top_z: float, bottom_z: float | None, finger_half_m: float) -> float:
        """Tool height of the grasp for an object with this perceived top / bottom."""
        cfg = self.config
        tips = top_z - cfg.below_top_m
        if bottom_z is not None and bottom_z < top_z:
            up = min(max(cfg.grasp_fraction * (top_z - bottom_z), cfg.grasp_min_m), cfg.grasp_max_m)
            tips = min(tips, bottom_z + up)
        return tips + finger_half_m

    def apply(
        self,
        actions: Any,
        robot: Any,
        skill: str,
        obj: tuple[float, float | None, Any] | None,
        prev_grip: float,
        *,
        finger_half_m: float = 0.036,
    ) -> np.ndarray:
        from engram.planners.policies.diffusion.features import waypoints_to_deltas

        actions = np.asarray(actions, np.float32)
        robot = np.asarray(robot, np.float64).reshape(-1)
        if skill not in ("pick", "lift") or obj is None or actions.ndim != 2:
            return actions
        if actions.shape[1] < 5 or self.phase == "done":
            return actions
        if self.phase == "held":
            # the grasp it made is kept (round 7 trace, put_back seed 117: the expert,
            # which had not closed there itself, opened again and re-closed on nothing)
            out = np.array(actions, np.float32, copy=True)
            out[:, 4] = np.maximum(out[:, 4], 1.0)
            return out
        cfg = self.config
        if not self.phase:
            top, bottom, xy = obj
            xy = np.asarray(xy, np.float64)[:2]
            z = self.grasp_z(top, bottom, finger_half_m)
            closing = float(actions[0, 4]) >= 0.5 and prev_grip < 0.5
            over = float(np.linalg.norm(robot[:2] - xy)) <= cfg.over_m
            if not (closing and over):
                return actions
            if robot[2] - finger_half_m <= top - cfg.high_m:
                self.phase = "done"  # closing at the grasp height: the expert's own grasp
                return actions
            self.phase, self._steps, self._xy, self._z = "down", 0, xy, z
            self._last_z = np.inf
        self._steps += 1
        if self.phase == "down":
            # reached, out of steps, or blocked (a finger on a tray's rim: round 7 trace,
            # put_back seed 118, six steps pushing at one height): close where it is
            blocked = self._steps > 2 and robot[2] > self._last_z - cfg.blocked_m
            self._last_z = float(robot[2])
            if robot[2] <= self._z + 0.004 or self._steps > cfg.steps or blocked:
                self.phase, self._steps = "close", 1
        if self.phase == "close" and self._steps > cfg.close_steps:
            self.phase = "held"
            return self.apply(actions, robot, skill, obj, prev_grip, finger_half_m=finger_half_m)
        if self.phase == "close":
            return np.array([[0.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
        wp = np.array([[self._xy[0], self._xy[1], self._z, robot[3], 0.0]], np.float64)
        return waypoints_to_deltas(wp, robot)


def turn_to_yaw(obj_yaw: float, ee_yaw: float, period_rad: float = np.pi / 2) -> float:
    """The yaw action (rad per step) that turns the gripper toward an object's grasp yaw:
    the equivalent of ``obj_yaw`` under the object's symmetry nearest the gripper's yaw,
    by the scripted expert's tracking law (0.9 of the error, at most 0.5 rad a step)."""
    from engram.planners.policies.diffusion.features import TRACK_GAIN, TRACK_YAW_STEP_RAD
    from engram.sim.motion import nearest_yaw

    turn = TRACK_GAIN * (nearest_yaw(obj_yaw, ee_yaw, period_rad) - ee_yaw)
    return float(np.clip(turn, -TRACK_YAW_STEP_RAD, TRACK_YAW_STEP_RAD))
