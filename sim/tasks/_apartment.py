"""Shared pieces of the apartment tasks: layout from sites, the tour, navigation, audio.

``ApartmentLayout`` reads rooms, doorways, object slots, approach points and
speakers from the model's sites (``sim/assets/apartment.xml`` documents them).
``ApartmentTask`` places the six objects on random slots, drives the base on a
tour through the four rooms (spinning once in each room so it looks around) as
the show phase, mixes scene audio for the microphone, and ends the act phase
when the base has stood still for ``STILL_STEPS`` steps.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from engram.sim._gl import import_mujoco
from engram.sim.audio import SceneAudio
from engram.sim.envs import ApartmentEnv
from engram.sim.tasks._skills import base_drive_to, base_hold, base_spin

mujoco = import_mujoco()

__all__ = ["OBJECT_LABELS", "STILL_STEPS", "ApartmentLayout", "ApartmentTask"]

#: object body -> how instructions name it
OBJECT_LABELS: dict[str, str] = {
    "mug_red": "red mug",
    "ball_blue": "blue ball",
    "book_green": "green book",
    "plant": "potted plant",
    "teddy_brown": "brown teddy bear",
    "bottle_yellow": "yellow bottle",
}

STILL_STEPS = 20  # act phase ends after the base stands still this many steps
_STILL_SPEED = 0.04  # m/s and rad/s below which the base counts as still


class ApartmentLayout:
    """Rooms, doorways, slots, approach points and speakers of the apartment model."""

    def __init__(self, model) -> None:
        def sites(prefix: str) -> dict[str, int]:
            out = {}
            for i in range(model.nsite):
                name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_SITE, i) or ""
                if name.startswith(prefix):
                    out[name[len(prefix) :]] = i
            return out

        self.rooms: dict[str, tuple[np.ndarray, np.ndarray]] = {
            name: (model.site_pos[i][:2].copy(), model.site_size[i][:2].copy())
            for name, i in sites("room_").items()
        }
        self.doors: dict[frozenset, np.ndarray] = {}
        self.neighbours: dict[str, list[str]] = {r: [] for r in self.rooms}
        for name, i in sites("door_").items():
            a, b = name.split("__")
            self.doors[frozenset((a, b))] = model.site_pos[i][:2].copy()
            self.neighbours[a].append(b)
            self.neighbours[b].append(a)
        approach = sites("approach_")
        self.slots: list[dict[str, Any]] = []
        for name, i in sorted(sites("slot_").items()):
            room = self.room_of(model.site_pos[i][:2])
            self.slots.append(
                {
                    "name": name,
                    "room": room,
                    "position_m": model.site_pos[i].copy(),
                    "approach_m": model.site_pos[approach[name]][:2].copy(),
                }
            )
        self.speakers = {name: model.site_pos[i].copy() for name, i in sites("speaker_").items()}
        self.cycle = self._cycle()

    def room_of(self, xy, *, margin_m: float = 0.0) -> str | None:
        """The room containing ``xy`` (shrunk by ``margin_m``), or None (doorway, outside)."""
        for name, (centre, half) in self.rooms.items():
            if np.all(np.abs(np.asarray(xy)[:2] - centre) <= half - margin_m):
                return name
        return None

    def room_path(self, start: str, goal: str) -> list[str]:
        """Rooms from ``start`` to ``goal`` inclusive (breadth-first over doorways)."""
        prev: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            room = queue.popleft()
            if room == goal:
                break
            for nxt in sorted(self.neighbours[room]):
                if nxt not in prev:
                    prev[nxt] = room
                    queue.append(nxt)
        if goal not in prev:
            raise ValueError(f"no path from room {start!r} to {goal!r}")
        path = [goal]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        return path[::-1]

    def waypoints(self, start: str, goal: str) -> list[np.ndarray]:
        """Doorway and room-centre points leading from room ``start``'s centre to ``goal``'s."""
        rooms = self.room_path(start, goal)
        out = []
        for a, b in itertools.pairwise(rooms):
            out.append(self.doors[frozenset((a, b))])
            out.append(self.rooms[b][0])
        return out

    def _cycle(self) -> list[str]:
        """Rooms in doorway order around the flat (every room has two doorways)."""
        start = sorted(self.rooms)[0]
        order = [start]
        while len(order) < len(self.rooms):
            nxt = [r for r in sorted(self.neighbours[order[-1]]) if r not in order]
            if not nxt:
                break
            order.append(nxt[0])
        return order


class ApartmentTask(ApartmentEnv):
    """Base of the apartment tasks: objects on slots, a tour as the show phase, audio."""

    default_max_steps = 650

    def _tracked_bodies(self) -> list[str]:
        return list(OBJECT_LABELS)

    def _build(self) -> None:
        self.layout = ApartmentLayout(self.model)
        self.mocap = {n: self.model.body_mocapid[self._body(n)] for n in OBJECT_LABELS}
        self.mic_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "mic")
        self._ray_group = np.array([1, 1, 1, 0, 0, 0], np.uint8)
        self._geomid = np.zeros(1, np.int32)

    # ---- episode set-up -----------------------------------------------------------------
    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        slots = rng.permutation(len(self.layout.slots))[: len(OBJECT_LABELS)]
        self.placement: dict[str, dict[str, Any]] = {}
        for name, k in zip(OBJECT_LABELS, slots):
            slot = self.layout.slots[int(k)]
            self.data.mocap_pos[self.mocap[name]] = slot["position_m"]
            self.placement[name] = slot
        cycle = self.layout.cycle
        first = int(rng.integers(len(cycle)))
        step = 1 if rng.random() < 0.5 else -1
        self.tour = [cycle[(first + step * i) % len(cycle)] for i in range(len(cycle))]
        centre = self.layout.rooms[self.tour[0]][0]
        self.controller.reset(centre[0], centre[1], float(rng.uniform(-math.pi, math.pi)))
        self.audio = SceneAudio(seed=int(rng.integers(2**31)))
        self._tour_script = self._tour_actions()
        self.tour_done = False
        self._still = 0
        self.current_room = self.tour[0]
        self.log.extra["placement"] = {
            n: {"slot": s["name"], "room": s["room"], "position_m": s["position_m"]}
            for n, s in self.placement.items()
        }
        self.log.extra["tour"] = list(self.tour)

    def _tour_actions(self) -> Iterator[np.ndarray]:
        for i, room in enumerate(self.tour):
            self.current_room = room
            self._entered_room(room, i)
            self.event("tour_room", room=room)
            yield from base_spin(self, turns=1.0)
            if i + 1 < len(self.tour):
                for point in self.layout.waypoints(room, self.tour[i + 1]):
                    yield from base_drive_to(self, point, tol_m=0.08)
        yield from base_hold(self, 3)

    def _entered_room(self, room: str, index: int) -> None:
        """Hook: the tour starts looking around ``room`` (the ``index``-th of the tour)."""

    def _scripted_action(self) -> np.ndarray:
        try:
            return next(self._tour_script)
        except StopIteration:
            self.tour_done = True
            return self.controller.stop_action()

    def _show_done(self) -> bool:
        return self.tour_done

    def _begin_act(self) -> None:
        super()._begin_act()
        self._on_decision()

    def _on_decision(self) -> None:
        """Hook: the tour is over (set the question)."""

    # ---- audio ------------------------------------------------------------------------------
    def _occluded(self, a: np.ndarray, b: np.ndarray) -> bool:
        v = b - a
        dist = mujoco.mj_ray(
            self.model, self.data, a, v, self._ray_group, 1, self.controller.body, self._geomid
        )
        return 0 <= dist < 0.999

    def _audio_chunk(self) -> np.ndarray:
        n = round(16000 * self.config.control_dt_s)
        t0 = self.t - self.config.control_dt_s
        mic = self.data.site_xpos[self.mic_site].copy()
        return self.audio.chunk(t0, n, mic, self._occluded)

    # ---- act phase end ---------------------------------------------------------------------
    def _post_physics(self) -> None:
        if self.phase != "act":
            return
        v = self.controller.velocity()
        if np.hypot(v[0], v[1]) < _STILL_SPEED and abs(v[2]) < _STILL_SPEED:
            self._still += 1
        else:
            self._still = 0

    def stopped(self) -> bool:
        return self._still >= STILL_STEPS

    # ---- navigation for the scripted solutions -------------------------------------------------
    def go_to_room(self, room: str) -> Iterator[np.ndarray]:
        """From the current room's centre (or anywhere in a room) to ``room``'s centre."""
        here = self.layout.room_of(self.controller.pose()[:2]) or self.current_room
        centre = self.layout.rooms[here][0]
        yield from base_drive_to(self, centre, tol_m=0.08)
        for point in self.layout.waypoints(here, room):
            yield from base_drive_to(self, point, tol_m=0.08)


class GoToObjectTask(ApartmentTask):
    """An apartment task that ends when the robot stops: success within
    ``success_radius_m`` of the target object (``self.placement[self.target]``)."""

    success_radius_m: float = 0.5  # metres from the object's slot that count as there

    def _outcome(self) -> tuple[bool, bool]:
        if not self.stopped():
            return False, False
        obj = self.placement[self.target]["position_m"][:2]
        dist = float(np.linalg.norm(self.controller.pose()[:2] - obj))
        self.event("stopped", distance_m=dist, room=self.layout.room_of(self.controller.pose()[:2]))
        return True, dist <= self.success_radius_m

    def expert_answer(self) -> dict[str, Any]:
        return self.placement[self.target]
