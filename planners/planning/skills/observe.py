"""Skills that look and wait (any robot): look_for, wait, watch (reads the
``SceneMonitor`` of ``skills.scene``). See ``skills.base``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engram.planners.planning.skills.base import ARM_SPACE, Skill, SkillError, Verdict, WorldView
from engram.sim.motion import wrap_angle
from engram.sim.object_kinds import kind_of, names_prefix, strip_track_id

__all__ = ["LookFor", "Wait", "Watch"]


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
            turned += abs(wrap_angle(yaw - last))
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
            keys = _keys_naming(until.split(":", 1)[1], scene.first_seen)
            if not keys:
                return idle
            gone = all(now - scene.last_seen.get(k, now) >= settle_ns for k in keys)
            return gone and quiet
        if until.startswith("gone:"):
            prefix = until.split(":", 1)[1]
            seen = [lb for lb in scene.last_seen if names_prefix(lb, prefix)]
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


def _keys_naming(name: str, keys: Any) -> list[str]:
    """The scene's keys that name ``name``: the label itself (or ``label#id`` keys of it),
    else those of its kind (``prize`` -> ``yellow cube#17``; camera mode)."""
    out = [k for k in keys if k == name or strip_track_id(k) == name]
    kind = kind_of(name)
    if not out and kind is not None:
        out = [k for k in keys if kind_of(k) == kind]
    return out
