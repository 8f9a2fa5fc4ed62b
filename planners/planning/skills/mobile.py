"""Mobile-base skills (``base_velocity``): navigate_to. See ``skills.base``."""

from __future__ import annotations

import math

import numpy as np

from engram.planners.planning.skills.base import BASE_SPACE, Skill, SkillError, Verdict, WorldFn
from engram.sim.motion import base_velocity_towards, wrap_angle

__all__ = ["NavigateTo"]


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
            yaw_err = wrap_angle(heading - yaw) if face else 0.0
            chunk = []
            if face and abs(yaw_err) > 0.35 and dist > 0.3:
                rate = float(np.clip(3.0 * yaw_err, -cfg.base_turn_rate, cfg.base_turn_rate))
                n = int(np.clip(round(abs(yaw_err) / max(abs(rate), 1e-3) / cfg.dt_s), 1, 2))
                chunk = [[0.0, 0.0, rate]] * n
            else:
                cmd = base_velocity_towards(d, dist, yaw, speed_mps=cfg.base_speed_mps, face=face)
                v = min(cfg.base_speed_mps, 1.2 * dist + 0.05)
                n = int(np.clip(dist / max(v * cfg.dt_s, 1e-3) * 0.5, 1, cfg.chunk_steps))
                chunk = [list(cmd)] * n
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
