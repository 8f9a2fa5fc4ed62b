"""cups: a yellow cube is covered by one of several identical opaque cups; lift that cup.

Show phase (1.6 s): the cube stands on the table at one of ``n_cups`` spots while
the cups hover 15 cm above the spots, then the cups come down and cover the
spots. Decision time: when the cups are down; from then on the cube is hidden
and the cups are indistinguishable (the decision-time observation is the same
whichever cup hides it). Success: the lifted cup (rim more than 5 cm above the
table) is the one that hides the cube; lifting another cup ends the episode as
a failure. Chance: 1 / n_cups.
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
from engram.sim.motion import nearest_yaw
from engram.sim.tasks._skills import arm_hold, arm_move
from engram.sim.tasks._tabletop import sample_positions
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "CupsConfig", "CupsEnv", "CupsRecipe"]

_HOVER_M = 0.15  # cup rim height above the table while showing
_SHOW_STEPS = 8  # steps with the cube visible and the cups hovering
_DESCEND_STEPS = 6  # steps for the cups to come down
_ACT_STEP = 16  # first step of the act phase
_LIFTED_M = 0.05  # rim height that counts as lifted


@dataclass
class CupsConfig(EnvConfig):
    """``EnvConfig`` plus the number of cups."""

    n_cups: int = 3  # identical cups, 2..4


class CupsEnv(TabletopEnv):
    Config = CupsConfig
    task_name = "cups"
    description = "a cube is covered by one of identical cups; lift the cup that hides it"
    default_max_steps = 90

    def _load_model(self):
        if not 2 <= self.config.n_cups <= 4:
            raise ValueError(f"n_cups must be 2..4, got {self.config.n_cups}")
        from engram.sim.scene import load_scene

        cups = tuple(f"cup_{i}" for i in range(self.config.n_cups))
        return load_scene("tabletop", keep=("prize", *cups))

    def _tracked_bodies(self) -> list[str]:
        return [f"cup_{i}" for i in range(self.config.n_cups)] + ["prize"]

    def _build(self) -> None:
        self.cups = [f"cup_{i}" for i in range(self.config.n_cups)]
        self.cup_ids = [self._body(c) for c in self.cups]
        self.chance_success = 1.0 / self.config.n_cups

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        self._reset_arm()
        z = self.table_z_m
        spots = sample_positions(
            rng, self.config.n_cups, (-0.26, -0.02), (0.26, 0.14), min_dist_m=0.15
        )
        self.spots = [np.array([p[0], p[1], z]) for p in spots]
        self.cup_yaw = [float(rng.uniform(-0.4, 0.4)) for _ in self.cups]
        k = int(rng.integers(self.config.n_cups))
        if "answer" in options:  # force the hiding cup (index); the rng stream stays the same
            k = int(options["answer"])
            if not 0 <= k < self.config.n_cups:
                raise ValueError(f"answer must be a cup index 0..{self.config.n_cups - 1}, got {k}")
        self.answer_index = k
        self.set_free_pose("prize", self.spots[k] + (0, 0, 0.0152), float(rng.uniform(-0.5, 0.5)))
        for i, cup in enumerate(self.cups):
            self.set_free_pose(cup, self.spots[i] + (0, 0, _HOVER_M), self.cup_yaw[i])
        self.model.body_gravcomp[self.cup_ids] = 1.0
        self.lifted: str | None = None
        self.log.answer = {"cup": self.cups[k], "spot_m": self.spots[k][:2]}
        self.event("prize_shown", spot=k, position=self.spots[k])
        self.set_instruction("Watch the yellow cube. Then lift the cup that hides it.")

    def _pre_physics(self) -> None:
        s = self.steps
        if s < _SHOW_STEPS + _DESCEND_STEPS:
            frac = max(0, s - _SHOW_STEPS + 1) / _DESCEND_STEPS
            height = _HOVER_M * (1.0 - frac) + 0.0004
            for i, cup in enumerate(self.cups):
                self.set_free_pose(cup, self.spots[i] + (0, 0, height), self.cup_yaw[i])
            if frac >= 1.0:
                self.model.body_gravcomp[self.cup_ids] = 0.0
                self.event("covered", cup=self.cups[self.answer_index])

    def _show_done(self) -> bool:
        return self.steps >= _ACT_STEP

    def _outcome(self) -> tuple[bool, bool]:
        for cup, bid in zip(self.cups, self.cup_ids):
            if self.data.xpos[bid][2] > self.table_z_m + _LIFTED_M:
                if self.lifted is None:
                    self.lifted = cup
                    self.event("lifted", cup=cup)
                return True, cup == self.cups[self.answer_index]
        return False, False

    # ---- policies ------------------------------------------------------------------
    def expert_answer(self) -> str:
        return self.cups[self.answer_index]

    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> str:
        rows = obs["objects"][: len(self.cups)]
        seen = [c for c, row in zip(self.cups, rows) if row[0] > 0] or self.cups
        return seen[int(rng.integers(len(seen)))]

    def solve(self, answer):
        cup = answer()
        pos = self.body_pos(cup)
        yaw = nearest_yaw(self.body_yaw(cup), self.controller.ee_yaw(), math.pi / 2)
        z = self.table_z_m
        yield from arm_move(self, [pos[0], pos[1], z + 0.2], gripper=0.0, yaw=yaw)
        yield from arm_move(self, [pos[0], pos[1], z + 0.062], gripper=0.0, yaw=yaw, tol_m=0.005)
        yield from arm_hold(self, gripper=1.0, steps=4)
        yield from arm_move(self, [pos[0], pos[1], z + 0.25], gripper=1.0)
        yield from arm_hold(self, gripper=1.0, steps=20)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class CupsRecipe(Recipe):
    """Watch the cube being covered; lift the cup standing where memory last saw it."""

    question = "which_cup"

    def initial(self, ctx):
        return [
            Subgoal("watch", {"until": "hidden:prize", "settle_s": 0.2, "max_s": 8.0}),
            Subgoal("decide", {"question": self.question}),
        ]

    def decide(self, ctx, subgoal):
        cups = sorted(label for label in ctx.world.objects if label.startswith("cup"))
        if not cups:
            raise SkillError("no cup in view")
        seen = ctx.grounding.object_position("prize")
        remembered = None
        if seen is not None:
            p = seen[0]
            near = min(
                cups, key=lambda c: np.linalg.norm(ctx.world.objects[c].position[:2] - p[:2])
            )
            if np.linalg.norm(ctx.world.objects[near].position[:2] - p[:2]) < 0.08:
                remembered = near
        layout = layout_key(ctx.world)
        d = choose(ctx, self.question, cups, remembered, layout=layout)
        expect: dict[str, Any] = {"visible": "prize", "radius_m": 0.06}
        if seen is not None:
            expect["near"] = seen[0][:2].tolist()
            d.facts["prize_last_seen"] = seen[0].tolist()
        lift = Subgoal(
            "lift", {"object": d.answer}, expect=expect, alternatives=[{"grasp_dz_m": -0.01}]
        )
        return [lift], d


SPEC = TaskSpec(
    name="cups",
    env="engram.sim.tasks.cups:CupsEnv",
    kind="tabletop",
    chance=1.0 / 3.0,  # 1 / n_cups (default 3)
    instruction_patterns=(r"cup that hides|which cup|under (the|which) cup",),
    recipe="engram.sim.tasks.cups:CupsRecipe",
    lifelong=True,
)
