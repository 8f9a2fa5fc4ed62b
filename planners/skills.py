"""The skill library: closed-loop controllers that turn a subgoal into action chunks.

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
(``planners/action_expert.py``): in these tasks the difficulty is what to do (that
is memory's and the planner's job), not how to move, and a servo that re-reads the
object's perceived centroid every chunk reaches the millimetre tolerances the tasks
need (put the cube back within 3 cm, press a 12 mm button, grasp a 7 cm cup with a
10 cm gripper) with no training, where a small behaviour-cloned policy trained for
minutes on a CPU does not reliably. So ``engram eval`` needs nothing trained; the
action expert is trained (``engram train``) and measured (``bench/policy.py``) on
its own.

Skills (args):

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

from engram.runtime.messages import Percept, RobotState

__all__ = [
    "ARM_SPACE",
    "BASE_SPACE",
    "ROBOT_LABELS",
    "SKILLS",
    "ObjectView",
    "SceneMonitor",
    "Skill",
    "SkillConfig",
    "SkillError",
    "Verdict",
    "WorldView",
    "estimate_yaw",
    "make_skill",
    "resolve_label",
]

#: the robot's own bodies as segmentation labels them (self-knowledge, not objects)
ROBOT_LABELS: frozenset[str] = frozenset(
    (
        "arm_base",
        "link1",
        "link2",
        "link3",
        "link4",
        "link5",
        "hand",
        "finger_left",
        "finger_right",
        "base",
    )
)

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
    finger_half_length_m: float = 0.036  # fingertips below the tool centre point (gripper down)
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
    ) -> WorldView:
        """Objects of the newest percept, plus those of older percepts within ``max_age_s``
        of it that the newest one did not see (a hand can hide an object for a frame)."""
        objects: dict[str, ObjectView] = {}
        newest = max((p.stamp_ns for p in percepts), default=0)
        for p in sorted(percepts, key=lambda p: p.stamp_ns, reverse=True):
            if newest - p.stamp_ns > max_age_s * 1e9:
                continue
            for k, label in enumerate(p.object_labels):
                if label in objects or label in ROBOT_LABELS:
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
        yaw = float(np.arctan2(pose[1, 0], pose[0, 0]))
        if self.gripper_command is not None:  # fingers on an object are not fully closed
            return pose[:3, 3].copy(), yaw, float(self.gripper_command)
        closure = float(np.clip(1.0 - self.robot.gripper_width_m / 0.10, 0.0, 1.0))
        return pose[:3, 3].copy(), yaw, closure

    def base_pose(self) -> np.ndarray:
        """(3,) [x, y, yaw] of the mobile base."""
        if self.robot is None:
            raise SkillError("no robot state yet")
        pose = self.robot.world_from_base
        return np.array([pose[0, 3], pose[1, 3], np.arctan2(pose[1, 0], pose[0, 0])])

    # ---- objects -----------------------------------------------------------------------
    def get(self, label: str) -> ObjectView | None:
        name = resolve_label(label, self.objects)
        return self.objects.get(name) if name else None

    def require(self, label: str) -> ObjectView:
        obj = self.get(label)
        if obj is None:
            seen = ", ".join(sorted(self.objects)) or "nothing"
            raise SkillError(f"{label!r} is not in view (I see {seen})")
        return obj


def resolve_label(name: str, labels: Any) -> str:
    """The label among ``labels`` that ``name`` refers to ("red cube" -> ``cube_red``,
    "blue button" -> ``button_blue_cap``); "" when none matches."""
    labels = list(labels)
    if name in labels:
        return name
    want = set(_words(name))
    if not want:
        return ""
    best, best_score = "", 0.0
    for label in labels:
        have = set(_words(label))
        if not have:
            continue
        common = len(want & have)
        # a match names every word of the label, or the label has every word named
        if common < min(len(want), len(have)):
            continue
        score = (common / len(want) + common / len(have)) / 2
        if score > best_score or (score == best_score and label < best):
            best, best_score = label, score
    return best


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


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _nearest_equivalent(yaw: float, current: float, period: float = math.pi / 2) -> float:
    """The yaw equivalent to ``yaw`` modulo ``period`` nearest ``current`` (kept in +-2.5)."""
    k = round((current - yaw) / period)
    out = yaw + k * period
    while out > 2.5:
        out -= period
    while out < -2.5:
        out += period
    return out


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
            yaw_err = 0.0 if yaw is None else _wrap(yaw - cur_yaw)
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


class _ArmSkill(Skill):
    action_space: ClassVar[str] = ARM_SPACE

    def _grasp(self, world: WorldFn, obj: ObjectView, dz: float = 0.0) -> tuple[float, float]:
        """(tool centre height, yaw) for a top grasp of ``obj`` (``dz``: an alternative
        grasp height offset)."""
        cfg = self.config
        height = float(obj.extent[2])
        # fingertips about 40 % up a tall object, at the bottom + 4 mm for a small one
        tcp_z = obj.bottom_z + cfg.finger_half_length_m + max(0.004, min(0.4 * height, 0.03)) + dz
        _, cur_yaw, _ = world().ee()
        yaw = estimate_yaw(obj.points[:, :2]) if len(obj.points) else None
        if yaw is None:
            yaw = 0.0
        return tcp_z, _nearest_equivalent(yaw, cur_yaw)

    def _pick(
        self, world: WorldFn, label: str, lift_to_z: float, dz: float = 0.0
    ) -> Iterator[np.ndarray]:
        cfg = self.config
        obj = world().require(label)
        tcp_z, yaw = self._grasp(world, obj, dz)
        self.notes.update(start=obj.position.tolist(), grasp_z=tcp_z, yaw=yaw)
        above = [obj.position[0], obj.position[1], tcp_z + cfg.approach_dz_m]
        yield from self._arm_move(world, above, gripper=0.0, yaw=yaw)
        obj = world().get(label) or obj  # re-centre on the freshest sighting
        yield from self._arm_move(
            world, [obj.position[0], obj.position[1], tcp_z], gripper=0.0, yaw=yaw, tol_m=0.004
        )
        yield self._hold_arm(1.0, cfg.grasp_hold_steps)
        pos, _, _ = world().ee()
        yield from self._arm_move(world, [pos[0], pos[1], lift_to_z], gripper=1.0)


class Pick(_ArmSkill):
    """Top grasp of ``object`` (``grasp_dz_m``: grasp higher / lower) and lift to carry
    height. Post: the object rose with the gripper (>= 3 cm above its start, within
    6 cm of the tool in xy)."""

    name = "pick"

    def run(self, world, args):
        obj = world().require(args["object"])
        carry = obj.bottom_z + self.config.carry_z_m
        yield from self._pick(world, args["object"], carry, float(args.get("grasp_dz_m", 0.0)))

    def check(self, before, after, trace, args):
        start = before.require(args["object"])
        now = after.get(args["object"])
        if now is None:
            return Verdict(False, f"{args['object']} not in view after the pick")
        tcp, _, _ = after.ee()
        rise = float(now.position[2] - start.position[2])
        off = float(np.linalg.norm(now.position[:2] - tcp[:2]))
        width = after.robot.gripper_width_m if after.robot is not None else 0.0
        details = {"rise_m": rise, "offset_m": off, "gripper_width_m": width}
        if rise < 0.03:
            return Verdict(False, f"{args['object']} did not rise ({rise:.3f} m)", details)
        if off > 0.06:
            return Verdict(False, f"{args['object']} is not in the gripper", details)
        return Verdict(True, "", details)


class Lift(_ArmSkill):
    """Grasp ``object`` and raise it by ``height_m`` (default 15 cm). Post: it rose by
    at least 5 cm."""

    name = "lift"

    def run(self, world, args):
        obj = world().require(args["object"])
        height = float(args.get("height_m", self.config.lift_height_m))
        dz = float(args.get("grasp_dz_m", 0.0))
        tcp_z, _ = self._grasp(world, obj, dz)
        yield from self._pick(world, args["object"], tcp_z + height, dz)
        yield self._hold_arm(1.0, 3)

    def check(self, before, after, trace, args):
        start = before.require(args["object"])
        now = after.get(args["object"])
        if now is None:
            return Verdict(False, f"{args['object']} not in view after lifting")
        rise = float(now.position[2] - start.position[2])
        if rise < 0.05:
            return Verdict(False, f"{args['object']} rose only {rise:.3f} m", {"rise_m": rise})
        return Verdict(True, "", {"rise_m": rise})


class Place(_ArmSkill):
    """Carry the held ``object`` over ``target`` [x, y] (or onto the object ``on``),
    lower it until its bottom is just above the surface, release, back off.
    Post: it rests within ``tol_m`` (default 2 cm; 6 cm for ``on``) of the target,
    below the gripper's carry height, and the gripper is open."""

    name = "place"

    @staticmethod
    def _holding(label: str) -> Callable[[WorldView], None]:
        def guard(view: WorldView) -> None:
            if view.robot is not None and view.robot.gripper_width_m < 0.004:
                raise SkillError(f"{label} dropped: the gripper closed on nothing")

        return guard

    def _target(self, view: WorldView, args) -> tuple[np.ndarray, float]:
        """(target xy, surface z) from the args and the current view."""
        obj = view.require(args["object"])
        if args.get("on"):
            base = view.require(args["on"])
            return base.position[:2].copy(), base.top_z
        if "target" not in args:
            raise SkillError("place needs 'target' [x, y] or 'on' (a label)")
        xy = np.asarray(args["target"], np.float64)[:2]
        surface = float(args.get("surface_z", self.notes.get("surface_z", obj.bottom_z)))
        return xy, surface

    def run(self, world, args):
        cfg = self.config
        view = world()
        obj = view.require(args["object"])
        if "surface_z" not in args and "on" not in args:
            # the surface it was picked from: the table under the tool at grasp height
            tcp, _, _ = view.ee()
            self.notes["surface_z"] = float(tcp[2] - cfg.carry_z_m)
        xy, surface = self._target(view, args)
        self.notes.update(target=xy.tolist(), surface_z=surface)
        tcp, _yaw, _ = view.ee()
        carry_z = max(tcp[2], surface + cfg.carry_z_m * 0.8)
        for final in (False, True):  # coarse, then correct the object's offset from the tool
            view = world()
            obj = view.get(args["object"]) or obj
            tcp, _, _ = view.ee()
            offset = tcp[:2] - obj.position[:2]
            goal = xy + offset
            yield from self._arm_move(
                world,
                [goal[0], goal[1], carry_z],
                gripper=1.0,
                tol_m=0.004 if final else 0.01,
                guard=self._holding(args["object"]),
            )
        view = world()
        obj = view.get(args["object"]) or obj
        tcp, _, _ = view.ee()
        drop = obj.bottom_z - (surface + cfg.place_gap_m)
        offset = tcp[:2] - obj.position[:2]
        goal = xy + offset
        yield from self._arm_move(
            world, [goal[0], goal[1], tcp[2] - drop], gripper=1.0, tol_m=0.003, max_step_m=0.02
        )
        yield self._hold_arm(0.0, 3)
        tcp, _, _ = world().ee()
        yield from self._arm_move(world, [tcp[0], tcp[1], carry_z], gripper=0.0)

    def check(self, before, after, trace, args):
        now = after.get(args["object"])
        if now is None:
            return Verdict(False, f"{args['object']} not in view after placing")
        target = np.asarray(self.notes.get("target", args.get("target", now.position[:2])))
        err = float(np.linalg.norm(now.position[:2] - target[:2]))
        tol = float(args.get("tol_m", 0.06 if args.get("on") else 0.02))
        details = {"error_m": err, "position": now.position.tolist()}
        _, _, closure = after.ee()
        if closure > 0.5:
            return Verdict(False, "the gripper did not open", details)
        tcp, _, _ = after.ee()
        if now.position[2] > tcp[2] - 0.05:
            return Verdict(False, f"{args['object']} is still held", details)
        if err > tol:
            return Verdict(False, f"{args['object']} is {err:.3f} m from the target", details)
        return Verdict(True, "", details)


class Push(_ArmSkill):
    """Push ``object`` along ``direction`` [dx, dy] by ``distance_m`` with the closed
    gripper. Post: it moved at least half the distance along the direction."""

    name = "push"

    def run(self, world, args):
        cfg = self.config
        view = world()
        obj = view.require(args["object"])
        d = np.asarray(args.get("direction", [1.0, 0.0]), np.float64)[:2]
        if np.linalg.norm(d) < 1e-6:
            raise SkillError("push needs a non-zero 'direction'")
        d /= np.linalg.norm(d)
        dist = float(args.get("distance_m", 0.05))
        reach = float(np.max(obj.extent[:2])) / 2 + 0.02
        z = obj.bottom_z + cfg.finger_half_length_m + 0.01
        start = obj.position[:2] - d * reach
        yield from self._arm_move(world, [start[0], start[1], z + 0.08], gripper=1.0, yaw=0.0)
        yield from self._arm_move(world, [start[0], start[1], z], gripper=1.0)
        end = start + d * dist
        yield from self._arm_move(world, [end[0], end[1], z], gripper=1.0, max_step_m=0.02)
        tcp, _, _ = world().ee()
        yield from self._arm_move(world, [tcp[0], tcp[1], z + 0.08], gripper=1.0)

    def check(self, before, after, trace, args):
        start = before.require(args["object"])
        now = after.get(args["object"])
        if now is None:
            return Verdict(False, f"{args['object']} not in view after pushing")
        d = np.asarray(args.get("direction", [1.0, 0.0]), np.float64)[:2]
        d /= max(np.linalg.norm(d), 1e-9)
        moved = float((now.position[:2] - start.position[:2]) @ d)
        want = float(args.get("distance_m", 0.05))
        ok = moved >= 0.5 * want
        return Verdict(ok, "" if ok else f"moved {moved:.3f} m of {want:.3f}", {"moved_m": moved})


class Press(_ArmSkill):
    """Press the push button whose cap is ``object`` once: above it, down until the
    fingertips are ``press_depth_m`` below the cap's resting top, hold, back up.
    Post: the tool reached the press depth (the robot's own proprioception) and the
    cap is back up in a fresh percept."""

    name = "press"

    @staticmethod
    def _cap(view: WorldView, label: str) -> ObjectView:
        """The pressable cap of a button (``<label>_cap`` when the housing was named)."""
        return view.get(f"{label}_cap") or view.require(label)

    def run(self, world, args):
        cfg = self.config
        cap = self._cap(world(), args["object"])
        top = cap.top_z
        self.notes["cap_top_z"] = top
        above = top + cfg.finger_half_length_m + 0.03
        yield from self._arm_move(
            world, [cap.position[0], cap.position[1], above], gripper=1.0, tol_m=0.006
        )
        bottom = top + cfg.finger_half_length_m - cfg.press_depth_m
        pos, _, _ = world().ee()
        yield from self._arm_move(
            world, [pos[0], pos[1], bottom], gripper=1.0, tol_m=0.002, max_step_m=0.02
        )
        pos, _, _ = world().ee()
        self.notes["lowest_z"] = float(pos[2])
        yield self._hold_arm(1.0, cfg.press_hold_steps)
        pos, _, _ = world().ee()
        self.notes["lowest_z"] = min(self.notes["lowest_z"], float(pos[2]))
        yield from self._arm_move(world, [pos[0], pos[1], above], gripper=1.0, tol_m=0.01)

    def check(self, before, after, trace, args):
        cfg = self.config
        top = self.notes.get("cap_top_z")
        lowest = self.notes.get("lowest_z")
        if top is None or lowest is None:
            return Verdict(False, "the press did not start")
        depth = float(top + cfg.finger_half_length_m - lowest)
        details = {"depth_m": depth}
        if depth < 0.006:
            return Verdict(False, f"pressed only {depth * 1000:.1f} mm deep", details)
        return Verdict(True, "", details)


class LookFor(Skill):
    """Bring ``object`` into view: the arm holds still (its camera is fixed) for up to
    ``wait_steps`` steps; the base spins on the spot for up to one turn.
    Post: the object is in view."""

    name = "look_for"

    def run(self, world, args):
        cfg = self.config
        view = world()
        if view.get(args.get("object", "")) is not None:
            return
        if view.action_space == ARM_SPACE:
            # the arm may hide it from the fixed camera: move to the home pose (behind
            # the workspace as the camera sees it), then wait for fresh percepts
            _, _, closure = view.ee()
            yield from self._arm_move(world, cfg.arm_home_m, gripper=round(closure), tol_m=0.02)
            for _ in range(int(args.get("wait_steps", 8)) // cfg.chunk_steps + 1):
                yield self._hold_arm(round(closure), cfg.chunk_steps)
                if world().get(args.get("object", "")) is not None:
                    return
            return
        turned = 0.0
        last = view.base_pose()[2]
        while turned < 2 * math.pi:
            yield np.tile(np.array([0.0, 0.0, cfg.spin_rate], np.float32), (cfg.chunk_steps, 1))
            view = world()
            yaw = view.base_pose()[2]
            turned += abs(_wrap(yaw - last))
            last = yaw
            if view.get(args.get("object", "")) is not None:
                break
        yield np.zeros((2, 3), np.float32)

    def check(self, before, after, trace, args):
        ok = after.get(args.get("object", "")) is not None
        return Verdict(ok, "" if ok else f"{args.get('object')} not found")


class Wait(Skill):
    """Stay still for ``duration_s`` (the arm holds its pose and gripper; the base stops)."""

    name = "wait"

    def run(self, world, args):
        cfg = self.config
        view = world()
        steps = max(1, round(float(args.get("duration_s", 1.0)) / cfg.dt_s))
        while steps > 0:
            n = min(steps, cfg.chunk_steps)
            if view.action_space == ARM_SPACE:
                _, _, closure = view.ee()
                yield self._hold_arm(round(closure), n)
            else:
                yield np.zeros((n, 3), np.float32)
            steps -= n

    def check(self, before, after, trace, args):
        return Verdict(True)


class NavigateTo(Skill):
    """Drive the base along ``route`` (waypoints [[x, y], ...] grounded in memory: the
    places the robot has been) to ``target`` [x, y], stopping ``stop_m`` short of it,
    then stand still. Post: the base is within ``stop_m + tol_m`` of the target (or,
    with ``within_m``, within that radius)."""

    name = "navigate_to"
    action_space = BASE_SPACE

    def _drive(self, world: WorldFn, xy: np.ndarray, *, tol_m: float, face: bool = True):
        cfg = self.config
        best, stalled = np.inf, 0
        for _ in range(cfg.max_base_chunks):
            x, y, yaw = world().base_pose()
            d = xy - (x, y)
            dist = float(np.hypot(*d))
            if dist < tol_m:
                return True
            if dist < best - 0.01:
                best, stalled = dist, 0
            else:
                stalled += 1
                if stalled >= 12:
                    self.notes["blocked_at"] = [x, y]
                    return False
            heading = math.atan2(d[1], d[0])
            yaw_err = _wrap(heading - yaw) if face else 0.0
            chunk = []
            if face and abs(yaw_err) > 0.35 and dist > 0.3:
                rate = float(np.clip(3.0 * yaw_err, -cfg.base_turn_rate, cfg.base_turn_rate))
                n = int(np.clip(round(abs(yaw_err) / max(abs(rate), 1e-3) / cfg.dt_s), 1, 2))
                chunk = [[0.0, 0.0, rate]] * n
            else:
                v = min(cfg.base_speed_mps, 1.2 * dist + 0.05)
                vw = d / dist * v
                c, s = math.cos(yaw), math.sin(yaw)
                vb = (c * vw[0] + s * vw[1], -s * vw[0] + c * vw[1])
                rate = float(np.clip(2.0 * yaw_err, -1.0, 1.0)) if dist > 0.3 else 0.0
                n = int(np.clip(dist / max(v * cfg.dt_s, 1e-3) * 0.5, 1, cfg.chunk_steps))
                chunk = [[vb[0], vb[1], rate]] * n
            yield np.asarray(chunk, np.float32)
        return False

    def run(self, world, args):
        cfg = self.config
        if "target" not in args:
            raise SkillError("navigate_to needs 'target' [x, y]")
        target = np.asarray(args["target"], np.float64)[:2]
        route = [np.asarray(p, np.float64)[:2] for p in args.get("route", [])]
        for p in route:
            yield from self._drive(
                world, p, tol_m=float(args.get("waypoint_tol_m", cfg.base_tol_m))
            )
        stop = float(args.get("stop_m", 0.0))
        x, y, _ = world().base_pose()
        d = target - (x, y)
        dist = float(np.hypot(*d))
        goal = target - d / dist * stop if dist > stop + 1e-6 else np.array([x, y])
        self.notes["goal"] = goal.tolist()
        yield from self._drive(world, goal, tol_m=float(args.get("tol_m", 0.06)))
        # come to rest: zero velocity, a few steps
        yield np.zeros((cfg.chunk_steps, 3), np.float32)

    def check(self, before, after, trace, args):
        x, y, _ = after.base_pose()
        target = np.asarray(args["target"], np.float64)[:2]
        dist = float(np.hypot(*(target - (x, y))))
        limit = float(
            args.get(
                "within_m", float(args.get("stop_m", 0.0)) + float(args.get("tol_m", 0.06)) + 0.1
            )
        )
        ok = dist <= limit
        return Verdict(ok, "" if ok else f"{dist:.2f} m from the target", {"distance_m": dist})


class SceneMonitor:
    """Short-term scene changes over the last ``window_s`` of percepts, for ``watch``.

    Per label: when it was first / last in view (since the monitor was reset), its
    position, and for lamp-like objects (labels containing ``button``, ``light`` or
    ``lamp``) whether it is *lit*: the brightest pixel of its box in the percept's
    thumbnail (max over RGB, 0..1) is above ``lit_min`` and ``lit_ratio`` times the
    median of the lamp-like objects in the same frame (or its own darkest reading).
    ``update`` returns the changes it saw: ``("light_on" | "light_off", label, stamp_ns)``.
    It is the current view's short-term state, not a memory: decisions come from memory.
    """

    def __init__(
        self,
        *,
        camera_width_px: int = 640,
        window_s: float = 5.0,
        move_tol_m: float = 0.005,
        lit_ratio: float = 1.6,
        lit_min: float = 0.4,
    ) -> None:
        self.camera_width_px = int(camera_width_px)
        self.window_s = window_s
        self.move_tol_m = move_tol_m
        self.lit_ratio = lit_ratio
        self.lit_min = lit_min
        self.reset()

    def reset(self) -> None:
        self.first_seen: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.positions: dict[str, np.ndarray] = {}
        self.lit: set[str] = set()
        self.darkest: dict[str, float] = {}
        self.last_change_ns = 0
        self.newest_ns = 0
        self.light_events = 0

    @staticmethod
    def lamp_like(label: str) -> bool:
        return any(w in label for w in ("button", "light", "lamp"))

    def brightness(self, percept: Percept, k: int) -> float | None:
        """Brightest pixel (max channel, 0..1) of object k's box in the thumbnail."""
        thumb = percept.thumbnail
        if thumb is None or thumb.size == 0 or self.camera_width_px <= 0:
            return None
        th, tw = thumb.shape[:2]
        scale = tw / self.camera_width_px
        x1, y1, x2, y2 = (float(v) * scale for v in percept.object_boxes[k])
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = max((x2 - x1) * 0.3, 0.5), max((y2 - y1) * 0.3, 0.5)
        c0, c1 = int(np.clip(np.floor(cx - hw), 0, tw - 1)), int(np.clip(np.ceil(cx + hw), 1, tw))
        r0, r1 = int(np.clip(np.floor(cy - hh), 0, th - 1)), int(np.clip(np.ceil(cy + hh), 1, th))
        region = thumb[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]
        return float(region.max(axis=2).max()) / 255.0 if region.size else None

    def update(self, percept: Percept) -> list[tuple[str, str, int]]:
        stamp = int(percept.stamp_ns)
        self.newest_ns = max(self.newest_ns, stamp)
        events: list[tuple[str, str, int]] = []
        visible = set()
        for k, label in enumerate(percept.object_labels):
            if label in ROBOT_LABELS:
                continue
            visible.add(label)
            self.first_seen.setdefault(label, stamp)
            self.last_seen[label] = stamp
            pos = np.asarray(percept.object_centroids[k], np.float64)
            old = self.positions.get(label)
            if old is None or np.linalg.norm(old - pos) > self.move_tol_m:
                self.last_change_ns = stamp
            self.positions[label] = pos
        lamps = [
            (label, self.brightness(percept, k))
            for k, label in enumerate(percept.object_labels)
            if self.lamp_like(label)
        ]
        lamps = [(label, b) for label, b in lamps if b is not None]
        if lamps:
            median = float(np.median([b for _, b in lamps]))
            for label, b in lamps:
                self.darkest[label] = min(self.darkest.get(label, b), b)
                ref = median if len(lamps) >= 2 else self.darkest[label]
                on = b >= self.lit_min and b >= self.lit_ratio * max(ref, 1e-3)
                if on and label not in self.lit:
                    self.lit.add(label)
                    events.append(("light_on", label, stamp))
                elif not on and label in self.lit:
                    self.lit.discard(label)
                    events.append(("light_off", label, stamp))
        for label in list(self.lit):  # a lamp out of view is not known to be lit
            if label not in visible:
                self.lit.discard(label)
        if events:
            self.last_change_ns = stamp
            self.light_events += sum(1 for e in events if e[0] == "light_on")
        return events

    def visible(self, label: str, *, within_s: float = 0.0) -> bool:
        last = self.last_seen.get(label)
        return last is not None and self.newest_ns - last <= within_s * 1e9

    def seen_since(self, prefix: str, t_ns: int) -> list[str]:
        return sorted(
            label
            for label, last in self.last_seen.items()
            if label.startswith(prefix) and last >= t_ns
        )


class Watch(Skill):
    """Hold still and watch the show until ``until`` holds (or ``max_s`` passes):
    ``still`` (nothing moved for ``settle_s``), ``hidden:<label>`` (it was seen, then
    out of view for ``settle_s`` with nothing moving), ``gone:<prefix>`` (objects
    named so were seen, then none for ``settle_s``), ``lights_off`` (a light was seen,
    then none lit for ``settle_s``), ``instruction`` (until a new instruction replaces
    the plan). When what is watched was never seen and nothing changed for
    ``idle_s`` (default 1 s), there is nothing to watch and it ends. What is watched goes to memory through the percepts (and, for lights,
    the executive's ``observe`` steps). Post: always true (``timed_out`` noted)."""

    name = "watch"

    def _done(self, view: WorldView, start_ns: int, args: dict[str, Any]) -> bool:
        scene = view.scene
        until = str(args.get("until", "still"))
        settle_ns = float(args.get("settle_s", 0.3)) * 1e9
        now = view.now_ns
        if scene is None or until == "instruction":
            return False
        quiet = now - scene.last_change_ns >= settle_ns and now - start_ns >= settle_ns
        # nothing of the show in view and nothing changing for a while: there is nothing
        # (more) to watch (e.g. the show happened while the camera was off)
        idle_ns = float(args.get("idle_s", 1.0)) * 1e9
        idle = scene.newest_ns > 0 and now - scene.last_change_ns >= idle_ns
        if until == "still":
            return quiet
        if until.startswith("hidden:"):
            label = until.split(":", 1)[1]
            if label not in scene.first_seen:
                return idle
            return now - scene.last_seen.get(label, now) >= settle_ns and quiet
        if until.startswith("gone:"):
            prefix = until.split(":", 1)[1]
            seen = [lb for lb in scene.last_seen if lb.startswith(prefix)]
            if not seen:
                return idle
            return all(now - scene.last_seen[lb] >= settle_ns for lb in seen)
        if until == "lights_off":
            if scene.light_events == 0:
                return idle
            return not scene.lit and quiet
        raise SkillError(f"watch: unknown condition {until!r}")

    def run(self, world, args):
        view = world()
        start = view.now_ns
        self.notes["start_ns"] = start
        max_ns = float(args.get("max_s", 30.0)) * 1e9
        steps = int(args.get("hold_steps", 2))
        while not self._done(view, start, args):
            if view.now_ns - start > max_ns:
                self.notes["timed_out"] = True
                return
            if view.action_space == ARM_SPACE:
                _, _, closure = view.ee()
                yield self._hold_arm(round(closure), steps)
            else:
                yield np.zeros((steps, 3), np.float32)
            view = world()

    def check(self, before, after, trace, args):
        return Verdict(True, "", {"timed_out": bool(self.notes.get("timed_out"))})


SKILLS: dict[str, type[Skill]] = {
    cls.name: cls for cls in (LookFor, NavigateTo, Pick, Place, Push, Lift, Press, Wait, Watch)
}


def make_skill(name: str, config: SkillConfig | None = None) -> Skill:
    """A fresh controller for skill ``name`` (``KeyError`` lists the known skills)."""
    try:
        cls = SKILLS[name]
    except KeyError:
        raise KeyError(f"unknown skill {name!r}; known: {', '.join(sorted(SKILLS))}") from None
    return cls(config)
