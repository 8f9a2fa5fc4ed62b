"""Arm skills (``arm_ee_delta``): pick, lift, place, push, press. See ``skills.base``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engram.planners.planning.skills.base import (
    ARM_SPACE,
    ObjectView,
    Skill,
    SkillError,
    Verdict,
    WorldFn,
    WorldView,
    estimate_yaw,
)
from engram.sim.motion import nearest_yaw

__all__ = ["GripCheckConfig", "Lift", "Pick", "PlaceSkill", "Press", "Push"]


@dataclass(frozen=True)
class GripCheckConfig:
    """How the arm skills tell from the gripper alone that an object is held (a camera
    may lose a lifted object behind the fingers): the pick's out-of-view check, the
    place's carry of an out-of-view object and its drop guard."""

    # fingers at least this far apart when closed: closed on something, not on nothing
    # (the apartment's and tabletop's things are >= 4 cm; empty fingers close to ~0), metres
    held_min_width_m: float = 0.004
    # the tool at least this far above its grasp height: the pick lifted, metres
    raised_min_m: float = 0.03
    # gripper command above this means closed (0 = open, 1 = closed), fraction
    closed_min_closure: float = 0.5


class _ArmSkill(Skill):
    action_space: ClassVar[str] = ARM_SPACE
    # thresholds of the gripper-only checks (``GripCheckConfig``)
    grip: ClassVar[GripCheckConfig] = GripCheckConfig()

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
        return tcp_z, nearest_yaw(yaw, cur_yaw)

    def _pick(
        self, world: WorldFn, label: str, lift_to_z: float, dz: float = 0.0
    ) -> Iterator[np.ndarray]:
        cfg = self.config
        obj = world().require(label)
        tcp_z, yaw = self._grasp(world, obj, dz)
        self.notes.update(start=obj.position.tolist(), grasp_z=tcp_z, yaw=yaw)
        x, y = _top_centre(obj)
        yield from self._arm_move(world, [x, y, tcp_z + cfg.approach_dz_m], gripper=0.0, yaw=yaw)
        obj = world().get(label) or obj  # re-centre on the freshest sighting
        x, y = _top_centre(obj)
        # and re-take the grasp height from it: the view the pick started from may be
        # part-occluded (the arm just pressed a button beside the object), its box short
        # and its bottom high; a grasp from there closes at the top edge and drops it
        tcp_z = self._grasp(world, obj, dz)[0]
        self.notes.update(grasp_z=tcp_z)
        yield from self._arm_move(world, [x, y, tcp_z], gripper=0.0, yaw=yaw, tol_m=0.004)
        yield self._hold_arm(1.0, cfg.grasp_hold_steps)
        pos, _, _ = world().ee()
        yield from self._arm_move(world, [pos[0], pos[1], lift_to_z], gripper=1.0)


def _top_centre(obj: ObjectView, band_m: float = 0.01) -> tuple[float, float]:
    """Where to grasp from above: the xy centre of the object's points within ``band_m``
    of its top (a camera also sees side faces and, on a tray, bits of the rim in front,
    which pull the whole box's centre towards the camera); its box centre without points."""
    pts = obj.points
    if len(pts) >= 6:
        top = pts[pts[:, 2] >= float(pts[:, 2].max()) - band_m]
        if len(top) >= 3:
            lo, hi = top[:, :2].min(axis=0), top[:, :2].max(axis=0)
            return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2
    return float(obj.position[0]), float(obj.position[1])


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
        tcp, _, closure = after.ee()
        if now is None:
            # a camera may lose the lifted object for a frame (the fingers around it, a
            # track re-forming after the jump up): the gripper then says whether it is
            # held: closed on something (not on nothing) and raised from the grasp
            width = after.robot.gripper_width_m if after.robot is not None else 0.0
            raised = float(tcp[2] - self.notes.get("grasp_z", tcp[2]))
            details = {"gripper_width_m": width, "raised_m": raised, "out_of_view": True}
            g = self.grip
            if (
                closure > g.closed_min_closure
                and width >= g.held_min_width_m
                and raised >= g.raised_min_m
            ):
                return Verdict(True, "", details)
            return Verdict(False, f"{args['object']} not in view after the pick", details)
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


class PlaceSkill(_ArmSkill):
    """Carry the held ``object`` over ``target`` [x, y] (or onto the object ``on``),
    lower it until its bottom is just above the surface, release, back off.
    Post: it rests within ``tol_m`` (default 2 cm; 6 cm for ``on``) of the target,
    below the gripper's carry height, and the gripper is open."""

    name = "place"

    def _holding(self, label: str) -> Callable[[WorldView], None]:
        min_width = self.grip.held_min_width_m

        def guard(view: WorldView) -> None:
            if view.robot is not None and view.robot.gripper_width_m < min_width:
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
        held = view.robot is not None and view.robot.gripper_width_m >= self.grip.held_min_width_m
        if view.get(args["object"]) is None and held and "target" in args:
            # held but out of the camera's view (the arm hides it where it was lifted):
            # carry it over the target by the tool (a top grasp holds it about centred
            # under it) at the height it is at; from there it is seen and placed exactly
            tcp, _, _ = view.ee()
            xy = np.asarray(args["target"], np.float64)[:2]
            guard = self._holding(args["object"])
            yield from self._arm_move(
                world, [xy[0], xy[1], tcp[2]], gripper=1.0, tol_m=0.01, guard=guard
            )
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
        if closure > self.grip.closed_min_closure:
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
