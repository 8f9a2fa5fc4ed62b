"""button_sequence: buttons light up one after another, go dark; press them in that order.

Show phase: each of ``n_buttons`` push buttons (red, green, blue, yellow) lights
for 0.5 s, one after another in a random order (0.2 s gaps), then all are dark.
Decision time: when the last light goes out; afterwards the panel looks the
same whatever the order was. Success: the presses (a cap pushed down at least
6 mm) follow the shown order; a wrong press ends the episode as a failure.
Chance: 1 / n_buttons!.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.planners.planning.grounding import layout_key
from engram.planners.planning.plans import Subgoal
from engram.planners.planning.recipes import Recipe, choose
from engram.planners.planning.skills.base import SkillError
from engram.sim.envs import EnvConfig, TabletopEnv
from engram.sim.object_kinds import kind_of, strip_track_id
from engram.sim.scene import load_scene
from engram.sim.tasks._skills import arm_hold, arm_press
from engram.sim.tasks._tabletop import BUTTON_COLOURS, ButtonPanel, sample_positions
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "ButtonSequenceConfig", "ButtonSequenceEnv", "ButtonSequenceRecipe"]

_ON_STEPS = 5  # steps a light stays on
_GAP_STEPS = 2  # dark steps between lights
_PAUSE_STEPS = 2  # dark steps before the act phase


@dataclass
class ButtonSequenceConfig(EnvConfig):
    """``EnvConfig`` plus the number of buttons."""

    n_buttons: int = 3  # buttons in the sequence, 2..4


class ButtonSequenceEnv(TabletopEnv):
    Config = ButtonSequenceConfig
    task_name = "button_sequence"
    description = "buttons light up in a random order, then go dark; press them in that order"
    default_max_steps = 160

    def _load_model(self):
        n = self.config.n_buttons
        if not 2 <= n <= len(BUTTON_COLOURS):
            raise ValueError(f"n_buttons must be 2..{len(BUTTON_COLOURS)}, got {n}")
        self.colours = tuple(BUTTON_COLOURS)[:n]
        return load_scene("tabletop", keep=tuple(f"button_{c}" for c in self.colours))

    def _tracked_bodies(self) -> list[str]:
        return [f"button_{c}_cap" for c in self.colours]

    def _build(self) -> None:
        self.buttons = ButtonPanel(self, self.colours)
        self.chance_success = 1.0 / math.factorial(len(self.colours))
        self._show_steps = len(self.colours) * (_ON_STEPS + _GAP_STEPS) + _PAUSE_STEPS

    def _task_extras_dim(self) -> int:
        return len(self.colours)

    def _task_extras(self) -> np.ndarray:
        return self.buttons.lit_vector()

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        self._reset_arm()
        spots = sample_positions(
            rng, len(self.colours), (-0.26, -0.06), (0.26, 0.14), min_dist_m=0.13
        )
        for c, p in zip(self.colours, spots):
            self.buttons.place(c, p, self.table_z_m)
        self.buttons.reset()
        order = [self.colours[i] for i in rng.permutation(len(self.colours))]
        if "answer" in options:  # force the order; the rng stream stays the same
            order = [str(c) for c in options["answer"]]
            if sorted(order) != sorted(self.colours):
                raise ValueError(f"answer must be a permutation of {self.colours}, got {order}")
        self.order = order
        self.log.answer = {"order": order}
        self.set_instruction(
            "Watch the buttons light up. Then press them in the order they lit up."
        )

    def _pre_physics(self) -> None:
        s = self.steps
        slot, within = divmod(s, _ON_STEPS + _GAP_STEPS)
        for i, c in enumerate(self.order):
            self.buttons.set_light(c, i == slot and within < _ON_STEPS)

    def _post_physics(self) -> None:
        self.buttons.update()

    def _show_done(self) -> bool:
        return self.steps >= self._show_steps

    def _outcome(self) -> tuple[bool, bool]:
        pressed = [c for _, c in self.buttons.presses]
        if pressed != self.order[: len(pressed)]:
            return True, False
        return len(pressed) == len(self.order), len(pressed) == len(self.order)

    # ---- policies ------------------------------------------------------------------
    def expert_answer(self) -> list[str]:
        return list(self.order)

    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> list[str]:
        return [self.colours[i] for i in rng.permutation(len(self.colours))]

    def solve(self, answer):
        for colour in answer():
            yield from arm_press(self, colour)
        yield from arm_hold(self, gripper=1.0, steps=10)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class ButtonSequenceRecipe(Recipe):
    """Watch the lights; press the buttons in the order memory says they lit."""

    question = "button_order"

    def initial(self, ctx):
        return [
            Subgoal("watch", {"until": "lights_off", "settle_s": 0.3, "max_s": 12.0}),
            Subgoal("decide", {"question": self.question}),
        ]

    def decide(self, ctx, subgoal):
        buttons = sorted(
            label for label in ctx.world.objects if "button" in label and label.endswith("_cap")
        )
        if not buttons:  # camera mode: one object per button, named by colour ("red button")
            buttons = sorted(
                {strip_track_id(k) for k in ctx.world.objects if "button" in (kind_of(k) or "")}
            )
        if not buttons:
            raise SkillError("no button in view")
        lit = ctx.grounding.observations("light_on", since_ns=ctx.episode_start_ns)
        order: list[str] = []
        for _, label in lit:
            label = label if label in buttons else strip_track_id(label)
            if label in buttons and label not in order:
                order.append(label)
        remembered = ",".join(order) if len(order) == len(buttons) else None
        layout = layout_key(ctx.world)
        perms = [",".join(p) for p in _permutations(buttons)]
        d = choose(ctx, self.question, perms, remembered, layout=layout)
        d.facts["lit_order"] = order
        return [Subgoal("press", {"object": b}) for b in d.answer.split(",")], d


def _permutations(items: list[str]) -> list[list[str]]:
    if len(items) <= 1:
        return [list(items)]
    out = []
    for i, x in enumerate(items):
        for rest in _permutations(items[:i] + items[i + 1 :]):
            out.append([x, *rest])
    return out


SPEC = TaskSpec(
    name="button_sequence",
    env="engram.sim.tasks.button_sequence:ButtonSequenceEnv",
    kind="tabletop",
    chance=1.0 / 6.0,  # 1 / 3! orders of the three buttons
    instruction_patterns=(r"order (they|the buttons) lit|in the order",),
    recipe="engram.sim.tasks.button_sequence:ButtonSequenceRecipe",
    lifelong=True,
)
