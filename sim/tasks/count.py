"""count: some tokens are shown, then removed; press the blue button that many times.

Show phase (1.7 s): 1..``max_count`` identical tokens stand in a display area for
1.5 s, then disappear (moved below the floor). Decision time: when they are
gone. The agent presses the blue button once per token, then the green button
to say it is done. Success: the green button is pressed after exactly as many
blue presses as there were tokens (more than ``max_count`` + 2 blue presses end
the episode as a failure). Chance: 1 / max_count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.planners.planning.grounding import layout_key
from engram.planners.planning.plans import Subgoal
from engram.planners.planning.recipes import Recipe, choose, label_like
from engram.sim.envs import EnvConfig, TabletopEnv
from engram.sim.scene import load_scene
from engram.sim.tasks._skills import arm_hold, arm_press
from engram.sim.tasks._tabletop import ButtonPanel, sample_positions
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "CountConfig", "CountEnv", "CountRecipe"]

_SHOW_STEPS = 15  # steps the tokens are on display
_ACT_STEP = 17  # first step of the act phase
_HIDDEN = (0.0, 0.0, -1.0)  # where removed tokens go (below the floor)
_TOKENS = tuple(f"token_{i}" for i in range(5))


@dataclass
class CountConfig(EnvConfig):
    """``EnvConfig`` plus the largest count."""

    max_count: int = 4  # tokens shown: uniform in 1..max_count (at most 5)


class CountEnv(TabletopEnv):
    Config = CountConfig
    task_name = "count"
    description = "tokens are shown then removed; press the blue button once per token, then green"
    default_max_steps = 160

    def _load_model(self):
        if not 1 <= self.config.max_count <= len(_TOKENS):
            raise ValueError(f"max_count must be 1..{len(_TOKENS)}, got {self.config.max_count}")
        return load_scene(
            "tabletop", keep=(*_TOKENS[: self.config.max_count], "button_blue", "button_green")
        )

    def _tracked_bodies(self) -> list[str]:
        return [*_TOKENS[: self.config.max_count], "button_blue_cap", "button_green_cap"]

    def _build(self) -> None:
        self.buttons = ButtonPanel(self, ("blue", "green"))
        self.tokens = list(_TOKENS[: self.config.max_count])
        self.mocap = [self.model.body_mocapid[self._body(t)] for t in self.tokens]
        self.chance_success = 1.0 / self.config.max_count

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        self._reset_arm()
        z = self.table_z_m
        buttons = sample_positions(rng, 2, (-0.25, -0.1), (0.25, -0.02), min_dist_m=0.16)
        for c, p in zip(("blue", "green"), buttons):
            self.buttons.place(c, p, z)
        self.buttons.reset()
        n = int(rng.integers(1, self.config.max_count + 1))
        spots = sample_positions(
            rng, self.config.max_count, (-0.25, 0.06), (0.25, 0.16), min_dist_m=0.07
        )
        if "answer" in options:  # force the count; the rng stream stays the same
            n = int(options["answer"])
            if not 1 <= n <= self.config.max_count:
                raise ValueError(f"answer must be 1..{self.config.max_count}, got {n}")
        self.n_tokens = n
        for i, m in enumerate(self.mocap):
            self.data.mocap_pos[m] = (*spots[i], z + 0.02) if i < n else _HIDDEN
        self.log.answer = {"count": n}
        self.event("tokens_shown", count=n)
        self.set_instruction(
            "Count the tokens. Then press the blue button once for each token, "
            "and press the green button when you are done."
        )

    def _pre_physics(self) -> None:
        if self.steps == _SHOW_STEPS:
            for m in self.mocap:
                self.data.mocap_pos[m] = _HIDDEN
            self.event("tokens_removed", count=self.n_tokens)

    def _post_physics(self) -> None:
        self.buttons.update()

    def _show_done(self) -> bool:
        return self.steps >= _ACT_STEP

    def _outcome(self) -> tuple[bool, bool]:
        blue = self.buttons.press_count("blue")
        if self.buttons.press_count("green") > 0:
            return True, blue == self.n_tokens
        return blue > self.config.max_count + 2, False

    # ---- policies ------------------------------------------------------------------
    def expert_answer(self) -> int:
        return self.n_tokens

    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> int:
        visible = int(obs["objects"][: len(self.tokens), 0].sum())
        return visible if visible > 0 else int(rng.integers(1, self.config.max_count + 1))

    def solve(self, answer):
        for _ in range(int(answer())):
            yield from arm_press(self, "blue")
        yield from arm_press(self, "green")
        yield from arm_hold(self, gripper=1.0, steps=10)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class CountRecipe(Recipe):
    """Watch the tokens; press blue once per token memory saw, then green."""

    question = "token_count"
    max_count = 5  # prior: how many tokens there can be (for a guess)

    def initial(self, ctx):
        return [
            Subgoal("watch", {"until": "gone:token", "settle_s": 0.2, "max_s": 8.0}),
            Subgoal("decide", {"question": self.question}),
        ]

    def decide(self, ctx, subgoal):
        seen = ctx.grounding.labels_seen("token", since_ns=ctx.episode_start_ns)
        remembered = str(len(seen)) if seen else None
        candidates = [str(n) for n in range(1, 5)]
        layout = layout_key(ctx.world)
        d = choose(ctx, self.question, candidates, remembered, layout=layout)
        d.facts["tokens_seen"] = seen
        blue = label_like(ctx.world, "button blue cap")
        green = label_like(ctx.world, "button green cap")
        steps = [Subgoal("press", {"object": blue}) for _ in range(int(d.answer))]
        return [*steps, Subgoal("press", {"object": green})], d


SPEC = TaskSpec(
    name="count",
    env="engram.sim.tasks.count:CountEnv",
    kind="tabletop",
    chance=0.25,  # 1 / max_count (default 4)
    instruction_patterns=(r"count the|once for each",),
    recipe="engram.sim.tasks.count:CountRecipe",
    lifelong=True,
)
