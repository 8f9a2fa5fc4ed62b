"""where_heard: during a tour a sound plays in one room; afterwards, go to that room.

Show phase: the base is driven through the four rooms and looks around in
each. While it is in two of the first three rooms, a sound plays there for
2.5 s from a speaker in that room (two different sounds: doorbell, kettle,
phone); it is loud in that room and faint through the walls. Decision time:
the end of the tour (both sounds are long over and the base is in another
room), when the question is asked: "Go to the room where you heard the
<sound>." Success: when the base has stood still for 2 s, it is inside that
room. Chance: 1 / 4 (four rooms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engram.planners.planning.recipes import GoToRecipe
from engram.sim.audio import SOUNDS, SoundSource
from engram.sim.tasks._apartment import ApartmentTask
from engram.sim.tasks._skills import base_hold
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "WhereHeardEnv", "WhereHeardRecipe"]

_SOUND_DELAY_S = 1.0  # after the base starts looking around the room
_SOUND_DURATION_S = 2.5
_SOUND_NAMES = {"doorbell": "doorbell", "kettle": "kettle whistling", "phone": "phone ringing"}


class WhereHeardEnv(ApartmentTask):
    task_name = "where_heard"
    description = "during a tour a sound plays in one room; afterwards go to that room"
    chance_success = 0.25

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        super()._setup(rng, options)
        rooms = [self.tour[int(i)] for i in rng.permutation(len(self.tour) - 1)[:2]]
        labels = [list(SOUNDS)[int(i)] for i in rng.permutation(len(SOUNDS))[:2]]
        self.sound_rooms = dict(zip(rooms, labels))  # room -> sound label
        self.target_label = labels[0]
        if "answer" in options:  # force which of the two sounds is asked about
            if options["answer"] not in labels:
                raise ValueError(f"answer must be one of this episode's sounds {labels}")
            self.target_label = str(options["answer"])
        self.target_room = next(r for r, s in self.sound_rooms.items() if s == self.target_label)
        self.log.answer = {"sound": self.target_label, "room": self.target_room}
        self.log.extra["sounds"] = []
        self.set_instruction("Follow the tour of the apartment and listen.")

    def _entered_room(self, room: str, index: int) -> None:
        label = self.sound_rooms.get(room)
        if label is None:
            return
        source = SoundSource(
            label=label,
            position_m=self.layout.speakers[room],
            start_s=self.t + _SOUND_DELAY_S,
            duration_s=_SOUND_DURATION_S,
            room=room,
        )
        self.audio.add(source)
        record = {
            "label": label,
            "room": room,
            "position_m": source.position_m,
            "start_s": source.start_s,
            "end_s": source.start_s + source.duration_s,
        }
        self.log.extra["sounds"].append(record)
        self.event("sound", **record)

    def _on_decision(self) -> None:
        self.set_instruction(
            f"Go to the room where you heard the {_SOUND_NAMES[self.target_label]}."
        )

    def _outcome(self) -> tuple[bool, bool]:
        if not self.stopped():
            return False, False
        room = self.layout.room_of(self.controller.pose()[:2], margin_m=0.05)
        self.event("stopped", room=room)
        return True, room == self.target_room

    # ---- policies ------------------------------------------------------------------------
    def expert_answer(self) -> str:
        return self.target_room

    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> str:
        rooms = sorted(self.layout.rooms)
        return rooms[int(rng.integers(len(rooms)))]

    def solve(self, answer):
        yield from self.go_to_room(answer())
        yield from base_hold(self, 40)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class WhereHeardRecipe(GoToRecipe):
    """Go to where the robot was when it heard the sound."""

    kind = "sound"


SPEC = TaskSpec(
    name="where_heard",
    env="engram.sim.tasks.where_heard:WhereHeardEnv",
    kind="apartment",
    chance=WhereHeardEnv.chance_success,
    instruction_patterns=(r"room where you heard",),
    recipe="engram.sim.tasks.where_heard:WhereHeardRecipe",
    sound_names=tuple(_SOUND_NAMES.values()),
    lifelong=False,
)
