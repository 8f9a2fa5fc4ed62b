"""fetch_seen: after a tour of the apartment, go to an object seen on the tour.

Show phase: the base is driven through the four rooms and looks around in each
(six objects stand on random furniture slots). Decision time: the end of the
tour, when the question is asked: "Go to the <object> you saw earlier." The
object was seen during the tour, stands in another room and is out of view
then. Success: when the base has stood still for 2 s, its centre is within
0.5 m of the object. Chance: a guess among the furniture slots outside the
current room (9 of 12) succeeds about 1 / 9 of the time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engram.planners.planning.recipes import GoToRecipe
from engram.sim.tasks._apartment import OBJECT_LABELS, GoToObjectTask
from engram.sim.tasks._skills import base_drive_to, base_hold
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "FetchSeenEnv", "FetchSeenRecipe"]

_MIN_SEEN_STEPS = 3  # an object counts as seen after this many visible steps


class FetchSeenEnv(GoToObjectTask):
    task_name = "fetch_seen"
    description = "after a tour, go to an object seen earlier that is now out of view"
    chance_success = 1.0 / 9.0

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        super()._setup(rng, options)
        self._forced = options.get("answer")
        if self._forced is not None and self._forced not in OBJECT_LABELS:
            raise ValueError(f"answer must be one of {list(OBJECT_LABELS)}, got {self._forced!r}")
        self.target: str | None = None
        self.set_instruction("Follow the tour of the apartment and remember what you see.")

    def _on_decision(self) -> None:
        final_room = self.layout.room_of(self.controller.pose()[:2]) or self.tour[-1]
        visible_now = dict(zip(self.tracked, self.visible_mask()))
        candidates = [
            n
            for n in OBJECT_LABELS
            if self.placement[n]["room"] != final_room
            and not visible_now[n]
            and len(self.log.seen(n)) >= _MIN_SEEN_STEPS
        ]
        pool = candidates or [n for n in OBJECT_LABELS if self.placement[n]["room"] != final_room]
        self.target = pool[int(self.np_random.integers(len(pool)))]
        if self._forced is not None:  # the rng stream stays the same
            self.target = self._forced
        slot = self.placement[self.target]
        self.log.answer = {
            "object": self.target,
            "room": slot["room"],
            "position_m": slot["position_m"],
            "seen_at_s": self.log.seen(self.target),
        }
        self.set_instruction(f"Go to the {OBJECT_LABELS[self.target]} you saw earlier.")

    # ---- policies ------------------------------------------------------------------------
    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
        row = obs["objects"][self.tracked.index(self.target)]
        if row[0] > 0:  # in view: go there
            pos = row[1:4]
            return min(self.layout.slots, key=lambda s: np.linalg.norm(s["position_m"] - pos))
        here = self.layout.room_of(obs["robot"][:2])
        pool = [s for s in self.layout.slots if s["room"] != here]
        return pool[int(rng.integers(len(pool)))]

    def solve(self, answer):
        slot = answer()
        yield from self.go_to_room(slot["room"])
        yield from base_drive_to(self, slot["approach_m"], tol_m=0.04)
        yield from base_hold(self, 40)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class FetchSeenRecipe(GoToRecipe):
    """Go to the object memory last saw."""

    kind = "object"


SPEC = TaskSpec(
    name="fetch_seen",
    env="engram.sim.tasks.fetch_seen:FetchSeenEnv",
    kind="apartment",
    chance=FetchSeenEnv.chance_success,
    instruction_patterns=(r"go to the .+ you saw",),
    recipe="engram.sim.tasks.fetch_seen:FetchSeenRecipe",
    lifelong=False,
)
