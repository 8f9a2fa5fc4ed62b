"""put_back: move the red cube to the tray, press the blue button, then put it back.

The cube starts at a random spot in a 30 cm x 27 cm region (nothing marks the
spot). The agent puts it on the tray, presses the blue button (the distractor
step), then returns the cube to where it started. Decision time: when the cube
rests on the tray; from then on nothing observable tells where it started.
Success: after the button press, the cube is released on the table (resting,
not touching the fingers, off the tray) within 3 cm (xy) of its start; a cube
dropped off the table ends the episode as a failure. Chance: a uniform guess in
the start region lands within 3 cm with probability pi * 0.03^2 / 0.081 ~ 0.035.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engram.planners.planning.plans import PlanDecision, Subgoal
from engram.planners.planning.recipes import Recipe, label_like, xy_token
from engram.planners.planning.skills.base import resolve_label
from engram.sim._gl import import_mujoco
from engram.sim.envs import TabletopEnv
from engram.sim.object_kinds import strip_track_id
from engram.sim.tasks._skills import arm_hold, arm_move, arm_pick, arm_place, arm_press
from engram.sim.tasks._tabletop import ButtonPanel, sample_positions
from engram.sim.tasks.spec import TaskSpec

__all__ = ["SPEC", "PutBackEnv", "PutBackRecipe"]

mujoco = import_mujoco()

_START_LOW = (-0.28, -0.12)  # start region of the cube, xy metres
_START_HIGH = (0.02, 0.15)
_TOLERANCE_M = 0.03
_SHOW_STEPS = 2
_CUBE_HALF_M = 0.02


class PutBackEnv(TabletopEnv):
    task_name = "put_back"
    description = "move the cube to the tray, press the button, then return the cube to its start"
    default_max_steps = 320
    keep_bodies = ("cube_red", "tray", "button_blue")
    decision_at_act_start = False
    chance_success = (
        math.pi
        * _TOLERANCE_M**2
        / ((_START_HIGH[0] - _START_LOW[0]) * (_START_HIGH[1] - _START_LOW[1]))
    )

    def _tracked_bodies(self) -> list[str]:
        return ["cube_red", "tray", "button_blue_cap"]

    def _build(self) -> None:
        self.buttons = ButtonPanel(self, ("blue",))
        self.cube = self._body("cube_red")
        self.tray = self._body("tray")
        self._finger_geoms = self.controller.finger_geoms
        self._cube_geoms = set(
            range(
                self.model.body_geomadr[self.cube],
                self.model.body_geomadr[self.cube] + self.model.body_geomnum[self.cube],
            )
        )

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        self._reset_arm()
        z = self.table_z_m
        tray = rng.uniform((0.16, -0.06), (0.24, 0.1))
        self.model.body_pos[self.tray] = (tray[0], tray[1], z)
        button = sample_positions(
            rng, 1, (0.08, -0.12), (0.25, 0.16), min_dist_m=0.0, avoid=[(tray, 0.16)]
        )[0]
        self.buttons.place("blue", button, z)
        self.buttons.reset()
        start = rng.uniform(_START_LOW, _START_HIGH)
        yaw = float(rng.uniform(-0.8, 0.8))
        if "answer" in options:  # force the start (x, y); the rng stream stays the same
            start = np.asarray(options["answer"], float).reshape(-1)[:2]
            if not (np.all(start >= _START_LOW) and np.all(start <= _START_HIGH)):
                raise ValueError(f"answer (start xy) must lie in {_START_LOW}..{_START_HIGH}")
        self.start_xy = start
        self.set_free_pose("cube_red", (start[0], start[1], z + _CUBE_HALF_M + 0.0005), yaw)
        self.stage = "to_tray"  # -> pressed -> placed
        self.left_start = False
        self.placed_xy: np.ndarray | None = None
        self.log.answer = {"start_xy_m": self.start_xy}
        self.set_instruction(
            "Put the red cube on the tray, press the blue button, "
            "then put the red cube back where it was."
        )

    def _show_done(self) -> bool:
        return self.steps >= _SHOW_STEPS

    # ---- state tests --------------------------------------------------------------
    def _on_tray(self, pos: np.ndarray) -> bool:
        tray = self.data.xpos[self.tray]
        return abs(pos[0] - tray[0]) < 0.085 and abs(pos[1] - tray[1]) < 0.07

    def _touching_fingers(self) -> bool:
        d = self.data
        for i in range(d.ncon):
            g1, g2 = d.contact[i].geom1, d.contact[i].geom2
            if (g1 in self._cube_geoms and g2 in self._finger_geoms) or (
                g2 in self._cube_geoms and g1 in self._finger_geoms
            ):
                return True
        return False

    def _resting(self) -> bool:
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_BODY, self.cube, vel, 0)
        return float(np.linalg.norm(vel[3:])) < 0.03 and not self._touching_fingers()

    def _post_physics(self) -> None:
        self.buttons.update()
        pos = self.data.xpos[self.cube]
        z = self.table_z_m
        if not self.left_start and pos[2] > z + _CUBE_HALF_M + 0.02:
            self.left_start = True
            self.event("left_start", start_xy=self.start_xy)
        if self.stage == "to_tray" and self._on_tray(pos) and pos[2] < z + 0.05 and self._resting():
            self.stage = "on_tray"
            self.decision_time_s = self.t
            self.log.decision_time_s = self.t
            self.event("on_tray", position=pos)
        if self.stage == "on_tray" and self.buttons.press_count("blue") > 0:
            self.stage = "pressed"
        if (
            self.stage == "pressed"
            and not self._on_tray(pos)
            and pos[2] < z + _CUBE_HALF_M + 0.005
            and self._resting()
        ):
            self.stage = "placed"
            self.placed_xy = pos[:2].copy()
            err = float(np.linalg.norm(self.placed_xy - self.start_xy))
            self.event("placed", position=pos, error_m=err)

    def _outcome(self) -> tuple[bool, bool]:
        if self.data.xpos[self.cube][2] < self.table_z_m - 0.05:
            return True, False
        if self.stage == "placed":
            return True, bool(np.linalg.norm(self.placed_xy - self.start_xy) <= _TOLERANCE_M)
        return False, False

    # ---- policies ------------------------------------------------------------------
    def expert_answer(self) -> np.ndarray:
        return self.start_xy.copy()

    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(_START_LOW, _START_HIGH)

    def solve(self, answer):
        z = self.table_z_m
        grasp_z = z + 0.04
        carry_z = z + 0.16
        yield from arm_pick(self, "cube_red", grasp_z_m=grasp_z, lift_z_m=carry_z)
        tray = self.data.xpos[self.tray]
        yield from arm_place(
            self, "cube_red", tray[:2], release_z_m=grasp_z + 0.012, carry_z_m=carry_z
        )
        yield from arm_press(self, "blue")
        yield from arm_pick(self, "cube_red", grasp_z_m=grasp_z + 0.008, lift_z_m=carry_z)
        target = np.asarray(answer(), float)
        yield from arm_place(
            self, "cube_red", target, release_z_m=grasp_z + 0.004, carry_z_m=carry_z
        )
        yield from arm_move(self, [target[0], target[1], carry_z + 0.05], gripper=0.0)
        yield from arm_hold(self, gripper=0.0, steps=10)


# ---------------------------------------------------------------------------------------
# the planner's recipe (memory-grounded decision) and the task's spec


class PutBackRecipe(Recipe):
    """Cube to the tray, press blue, then back to where memory first saw it."""

    question = "start_position"

    def initial(self, ctx):
        cube = label_like(ctx.world, "red cube") if ctx.world.objects else "cube_red"
        cube = strip_track_id(cube)  # camera mode: "red cube", whichever track it is now
        tray = resolve_label("tray", ctx.world.objects) or "tray"
        button = resolve_label("blue button cap", ctx.world.objects) or "button_blue_cap"
        tray, button = strip_track_id(tray), strip_track_id(button)
        return [
            Subgoal("wait", {"duration_s": 0.3}),
            Subgoal("pick", {"object": cube}, alternatives=[{"grasp_dz_m": -0.006}]),
            Subgoal("place", {"object": cube, "on": tray}),
            Subgoal("press", {"object": button}),
            Subgoal("pick", {"object": cube}, alternatives=[{"grasp_dz_m": -0.006}]),
            Subgoal("decide", {"question": self.question, "object": cube}),
        ]

    def decide(self, ctx, subgoal):
        cube = subgoal.args["object"]
        start = ctx.grounding.first_position(cube, since_ns=ctx.episode_start_ns)
        if start is not None:
            xy = start[0][:2]
            d = PlanDecision(
                self.question, xy_token(xy), "memory", "", {"start": start[0].tolist()}
            )
        else:  # no memory: somewhere on the table in front of the robot
            xy = ctx.rng.uniform((-0.3, -0.15), (0.3, 0.2))
            d = PlanDecision(self.question, xy_token(xy), "guess")
        return [Subgoal("place", {"object": cube, "target": [float(xy[0]), float(xy[1])]})], d


SPEC = TaskSpec(
    name="put_back",
    env="engram.sim.tasks.put_back:PutBackEnv",
    kind="tabletop",
    chance=PutBackEnv.chance_success,
    instruction_patterns=(r"back where it was|put .+ back",),
    recipe="engram.sim.tasks.put_back:PutBackRecipe",
    lifelong=False,
)
