"""The skill library's base: ``Skill``, what a skill may read (``WorldView``) and its
result (``Verdict``). Closed-loop controllers that turn a subgoal into action chunks.

A *skill* is one kind of subgoal (``pick``, ``place``, ``press`` ...). It has

- ``run(world, args)``: a generator of action chunks (H, A) float32; it is resumed
  after each chunk has been executed with a *fresh* ``WorldView`` (``world()``), so
  every chunk is computed from the latest percepts and robot state (closed loop);
- ``check(before, after, trace, args)``: the postcondition, evaluated by the critic
  on fresh percepts once the controller is done -> ``Verdict``;
- ``action_space``: ``arm_ee_delta`` (tabletop arm, A = 5) or ``base_velocity``
  (mobile base, A = 3), see ``sim/robots.py``; ``any`` for skills that work on both.

What a skill may read is a ``WorldView``: objects from the latest percepts (label,
centroid, extent, points; identity from the simulator's segmentation), the latest
``RobotState`` and, for navigation, a route the planner grounded in memory. Never
the simulator's state.

Executor choice. Every skill here is executed by its *controller* (a servo on
perceived 3D positions), not by the diffusion action expert
(``planners/policies/diffusion/action_expert.py``): in these tasks the difficulty is what to do (that
is memory's and the planner's job), not how to move, and a servo that re-reads the
object's perceived centroid every chunk reaches the millimetre tolerances the tasks
need (put the cube back within 3 cm, press a 12 mm button, grasp a 7 cm cup with a
10 cm gripper) with no training, where a small behaviour-cloned policy trained for
minutes on a CPU does not reliably. So ``engram eval`` needs nothing trained; the
action expert is trained (``engram train``) and measured (``bench/policy.py``) on
its own.

The skills are registered under kind ``skill`` (``engram.planners.register``):
arm skills in ``skills.arm``, the base's in ``skills.mobile``, looking, waiting and
watching in ``skills.observe``. Skills (args):

==============  ====================  ============================================
skill           space                 args
==============  ====================  ============================================
``look_for``    any                   ``object`` (label); arm waits, base spins
``navigate_to`` base_velocity         ``target`` [x, y], ``route`` [[x, y], ...],
                                      ``stop_m`` (stand-off), ``tol_m``
``pick``        arm_ee_delta          ``object``, ``grasp_dz_m``
``place``       arm_ee_delta          ``object``, ``target`` [x, y] or ``on`` (label)
``push``        arm_ee_delta          ``object``, ``direction`` [dx, dy], ``distance_m``
``lift``        arm_ee_delta          ``object``, ``height_m``, ``grasp_dz_m``
``press``       arm_ee_delta          ``object`` (a button cap label)
``wait``        any                   ``duration_s``
``watch``       any                   ``until`` (still, hidden:<label>, gone:<prefix>,
                                      lights_off, instruction), ``settle_s``, ``max_s``
==============  ====================  ============================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from engram.planners.planning.skills.scene import SceneMonitor, object_key
from engram.runtime import registry
from engram.runtime.messages import Percept, RobotState
from engram.sim.motion import FINGER_HALF_LENGTH_M, wrap_angle, yaw_of
from engram.sim.object_kinds import kind_of, strip_track_id
from engram.sim.robots import ROBOT_PART_LABELS

__all__ = [
    "ARM_SPACE",
    "BASE_SPACE",
    "ObjectView",
    "Skill",
    "SkillConfig",
    "SkillError",
    "Verdict",
    "WorldFn",
    "WorldView",
    "estimate_yaw",
    "make_skill",
    "object_key",
    "resolve_label",
]

ARM_SPACE = "arm_ee_delta"
BASE_SPACE = "base_velocity"

_ARM_LIMITS = np.array([0.05, 0.05, 0.05, 0.5], np.float32)  # |dx|, |dy|, |dz| m, |dyaw| rad
_BASE_LIMITS = np.array([1.0, 1.0, 2.0], np.float32)  # |vx|, |vy| m/s, |yaw rate| rad/s


class SkillError(RuntimeError):
    """A skill cannot run (object not in view, bad arguments): the subgoal fails."""


@dataclass
class SkillConfig:
    """Geometry and gains of the skill controllers (units in the names)."""

    chunk_steps: int = 4  # H: most actions per chunk (the loop closes between chunks)
    dt_s: float = 0.1  # seconds per action (the robot's control period)
    arm_step_m: float = 0.035  # largest end-effector move per step
    arm_gain: float = 0.9  # fraction of the remaining error commanded per chunk
    arm_tol_m: float = 0.006  # end-effector position tolerance
    yaw_tol_rad: float = 0.05  # end-effector yaw tolerance
    max_move_chunks: int = 30  # a move that has not converged after this many chunks gives up
    arm_home_m: tuple[float, float, float] = (0.0, -0.15, 0.70)  # out of the camera's way
    finger_half_length_m: float = (
        FINGER_HALF_LENGTH_M  # fingertips below the tool centre point (gripper down)
    )
    approach_dz_m: float = 0.10  # approach height above a grasp
    carry_z_m: float = 0.16  # carry height above the table
    lift_height_m: float = 0.15  # default lift above the object's start
    gripper_open_m: float = 0.10  # finger opening when fully open
    grasp_hold_steps: int = 4  # steps to close the gripper
    press_depth_m: float = 0.011  # fingertip travel below a button cap's top
    press_hold_steps: int = 2  # steps to hold a button down
    place_gap_m: float = 0.004  # object bottom above the surface at release
    base_speed_mps: float = 0.9  # cruise speed of the base
    base_turn_rate: float = 1.8  # largest yaw rate of the base, rad/s
    base_tol_m: float = 0.08  # waypoint tolerance
    spin_rate: float = 1.5  # look-around yaw rate, rad/s
    max_base_chunks: int = 150  # a drive gives up after this many chunks


@dataclass
class ObjectView:
    """One object as the latest percepts saw it. position/extent: (3,) world metres,
    points: (N, 3) world points of the object (may be empty)."""

    label: str
    object_id: int
    position: np.ndarray
    extent: np.ndarray
    stamp_ns: int
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))

    @property
    def bottom_z(self) -> float:
        return float(self.position[2] - self.extent[2] / 2)

    @property
    def top_z(self) -> float:
        return float(self.position[2] + self.extent[2] / 2)


class WorldView:
    """What a skill may read at one moment: perceived objects and the robot state.

    ``objects``: label -> ``ObjectView`` of objects in the current view (the latest
    percepts), ``robot``: the latest ``RobotState`` (or None), ``now_ns``: the newest stamp.
    """

    def __init__(
        self,
        objects: dict[str, ObjectView] | None = None,
        robot: RobotState | None = None,
        *,
        now_ns: int = 0,
        scene: SceneMonitor | None = None,
    ) -> None:
        self.objects = dict(objects or {})
        self.robot = robot
        self.now_ns = int(now_ns)
        self.scene = scene  # short-term scene changes (for watch); None = not tracked
        #: the gripper closure last commanded (0..1); None = infer it from the opening
        self.gripper_command: float | None = None

    @classmethod
    def from_percepts(
        cls,
        percepts: list[Percept],
        robot: RobotState | None = None,
        *,
        max_age_s: float = 1.0,
        scene: SceneMonitor | None = None,
        key_by_id: bool = False,
    ) -> WorldView:
        """Objects of the newest percept, plus those of older percepts within ``max_age_s``
        of it that the newest one did not see (a hand can hide an object for a frame).
        ``key_by_id``: labels name kinds, not objects (camera mode: three cups are all
        "cup"), so each object is keyed ``label#id`` (``object_key``)."""
        objects: dict[str, ObjectView] = {}
        newest = max((p.stamp_ns for p in percepts), default=0)
        for p in sorted(percepts, key=lambda p: p.stamp_ns, reverse=True):
            if newest - p.stamp_ns > max_age_s * 1e9:
                continue
            for k, name in enumerate(p.object_labels):
                if name in ROBOT_PART_LABELS:
                    continue
                label = object_key(name, int(p.object_ids[k]), key_by_id)
                if label in objects:
                    continue
                pts = np.zeros((0, 3), np.float32)
                if p.points is not None and p.point_object_ids is not None:
                    pts = p.points[p.point_object_ids == p.object_ids[k]]
                objects[label] = ObjectView(
                    label=label,
                    object_id=int(p.object_ids[k]),
                    position=np.asarray(p.object_centroids[k], np.float64),
                    extent=np.asarray(p.object_extents[k], np.float64),
                    stamp_ns=int(p.stamp_ns),
                    points=pts,
                )
        stamp = max(newest, robot.stamp_ns if robot is not None else 0)
        return cls(objects, robot, now_ns=stamp, scene=scene)

    # ---- robot -------------------------------------------------------------------------
    @property
    def action_space(self) -> str:
        """``arm_ee_delta`` when the robot reports an end effector, else ``base_velocity``."""
        if self.robot is None:
            return ""
        return ARM_SPACE if self.robot.world_from_ee is not None else BASE_SPACE

    def ee(self) -> tuple[np.ndarray, float, float]:
        """(tool centre point (3,), yaw rad, gripper closure 0..1) of the arm; the closure
        is the last command when known (``gripper_command``), else read off the opening."""
        if self.robot is None or self.robot.world_from_ee is None:
            raise SkillError("no end-effector pose in the robot state (is this an arm?)")
        pose = self.robot.world_from_ee
        yaw = yaw_of(pose)
        if self.gripper_command is not None:  # fingers on an object are not fully closed
            return pose[:3, 3].copy(), yaw, float(self.gripper_command)
        closure = float(np.clip(1.0 - self.robot.gripper_width_m / 0.10, 0.0, 1.0))
        return pose[:3, 3].copy(), yaw, closure

    def base_pose(self) -> np.ndarray:
        """(3,) [x, y, yaw] of the mobile base."""
        if self.robot is None:
            raise SkillError("no robot state yet")
        pose = self.robot.world_from_base
        return np.array([pose[0, 3], pose[1, 3], yaw_of(pose)])

    # ---- objects -----------------------------------------------------------------------
    def get(self, label: str) -> ObjectView | None:
        name = resolve_label(label, self.objects)
        if name and name != label and strip_track_id(name) != name:
            # a kind, not one object ("red cube" among "red cube#5", "red cube#9"): the
            # one seen most recently (an older track may be a stale view of the same one)
            base = strip_track_id(name)
            same = [o for k, o in self.objects.items() if strip_track_id(k) == base]
            return max(same, key=lambda o: (o.stamp_ns, o.object_id))
        return self.objects.get(name) if name else None

    def require(self, label: str) -> ObjectView:
        obj = self.get(label)
        if obj is None:
            seen = ", ".join(sorted(self.objects)) or "nothing"
            raise SkillError(f"{label!r} is not in view (I see {seen})")
        return obj


def resolve_label(name: str, labels: Any) -> str:
    """The label among ``labels`` that ``name`` refers to ("red cube" -> ``cube_red``,
    "blue button" -> ``button_blue_cap``; a body name or a kind finds a key of the same
    kind: ``prize`` -> ``yellow cube#17``, ``cup`` -> ``cup#5``); "" when none matches.
    A key with an id (``cup#5``) refers to that object only."""
    labels = list(labels)
    if name in labels:
        return name
    if strip_track_id(name) != name:  # one object by id: that one or none
        return ""
    want = set(_words(name))
    if not want:
        return ""
    best, best_score = "", 0.0
    for label in labels:
        have = set(_words(strip_track_id(label)))
        if not have:
            continue
        common = len(want & have)
        # a match names every word of the label, or the label has every word named
        if common < min(len(want), len(have)):
            continue
        score = (common / len(want) + common / len(have)) / 2
        if score > best_score or (score == best_score and label < best):
            best, best_score = label, score
    if best:
        return best
    kind = kind_of(name)  # ground-truth body names vs camera-mode kinds
    same = sorted(label for label in labels if kind is not None and kind_of(label) == kind)
    return same[0] if same else ""


def _words(text: str) -> list[str]:
    out = []
    for w in text.lower().replace("-", " ").replace("_", " ").split():
        w = w.strip(".,!?\"'")
        if w in ("the", "a", "an", "of"):
            continue
        out.append(w[:-1] if len(w) > 3 and w.endswith("s") else w)
    return out


def estimate_yaw(points_xy: np.ndarray, *, symmetry_rad: float = math.pi / 2) -> float | None:
    """Yaw of an object's footprint from its points (N, 2): the rotation of the
    minimum-area bounding rectangle, in [-symmetry/2, symmetry/2). None if too few points."""
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    if len(pts) < 6:
        return None
    pts = pts - pts.mean(axis=0)

    def area(theta: np.ndarray) -> np.ndarray:
        c, s = np.cos(theta), np.sin(theta)
        u = pts[:, :1] * c[None] + pts[:, 1:] * s[None]  # (N, K)
        v = -pts[:, :1] * s[None] + pts[:, 1:] * c[None]
        return np.ptp(u, axis=0) * np.ptp(v, axis=0)

    half = symmetry_rad / 2
    grid = np.linspace(-half, half, 46, endpoint=False)
    best = grid[int(np.argmin(area(grid)))]
    fine = best + np.linspace(-0.04, 0.04, 17)
    best = float(fine[int(np.argmin(area(fine)))])
    return (best + half) % symmetry_rad - half


@dataclass
class Verdict:
    """A postcondition's result: ``ok`` and why (``reason``), plus measured ``details``."""

    ok: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


WorldFn = Callable[[], WorldView]


class Skill(ABC):
    """One subgoal type: a closed-loop controller and its postcondition."""

    name: ClassVar[str] = ""
    action_space: ClassVar[str] = "any"
    #: who executes it: "controller" (this servo) or "expert" (the diffusion policy)
    executor: ClassVar[str] = "controller"

    def __init__(self, config: SkillConfig | None = None) -> None:
        self.config = config or SkillConfig()
        self.notes: dict[str, Any] = {}  # what the controller measured while running

    @abstractmethod
    def run(self, world: WorldFn, args: dict[str, Any]) -> Iterator[np.ndarray]:
        """Yield action chunks (H, A) float32; ``world()`` is fresh after each chunk.
        Raise ``SkillError`` when the subgoal cannot be pursued."""

    @abstractmethod
    def check(
        self, before: WorldView, after: WorldView, trace: list[WorldView], args: dict[str, Any]
    ) -> Verdict:
        """The postcondition on fresh percepts: did the subgoal happen?"""

    # ---- arm helpers ---------------------------------------------------------------------
    def _hold_arm(self, gripper: float, steps: int) -> np.ndarray:
        out = np.zeros((max(1, steps), 5), np.float32)
        out[:, 4] = gripper
        return out

    def _arm_move(
        self,
        world: WorldFn,
        target: np.ndarray,
        *,
        gripper: float,
        yaw: float | None = None,
        tol_m: float | None = None,
        max_step_m: float | None = None,
        guard: Callable[[WorldView], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Servo the tool centre point to ``target`` (3,) (and ``yaw``) in chunks;
        ``guard(view)`` runs before each chunk and may raise ``SkillError``."""
        cfg = self.config
        tol = cfg.arm_tol_m if tol_m is None else tol_m
        step_m = cfg.arm_step_m if max_step_m is None else max_step_m
        target = np.asarray(target, np.float64)
        best = np.inf
        stalled = 0
        for _ in range(cfg.max_move_chunks):
            view = world()
            if guard is not None:
                guard(view)
            pos, cur_yaw, _ = view.ee()
            err = target - pos
            dist = float(np.linalg.norm(err))
            yaw_err = 0.0 if yaw is None else wrap_angle(yaw - cur_yaw)
            if dist < tol and abs(yaw_err) < cfg.yaw_tol_rad:
                return
            if dist < best - 1e-3:
                best, stalled = dist, 0
            else:
                stalled += 1
                if stalled >= 4:  # blocked (pressing on something): stop pushing
                    self.notes["blocked_at"] = pos.tolist()
                    return
            want = cfg.arm_gain * err
            n = int(np.clip(math.ceil(np.linalg.norm(want) / step_m), 1, cfg.chunk_steps))
            yaw_steps = int(np.clip(math.ceil(abs(yaw_err) * 0.9 / 0.45), 1, cfg.chunk_steps))
            n = max(n, yaw_steps)
            chunk = np.zeros((n, 5), np.float32)
            chunk[:, :3] = want / n
            chunk[:, 3] = np.clip(0.9 * yaw_err / n, -0.5, 0.5)
            chunk[:, 4] = gripper
            yield chunk
        self.notes["not_converged"] = True


def make_skill(name: str, config: SkillConfig | None = None) -> Skill:
    """A fresh controller for skill ``name`` (registered under kind ``skill``; ``KeyError``
    lists the known skills)."""
    if name not in registry.known("skill"):
        known = ", ".join(registry.known("skill"))
        raise KeyError(f"unknown skill {name!r}; known: {known}")
    return registry.get("skill", name)(config)
