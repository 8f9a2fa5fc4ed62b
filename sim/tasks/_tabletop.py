"""Shared pieces of the tabletop tasks: push-button panel and layout sampling."""

from __future__ import annotations

import numpy as np

from engram.sim._gl import import_mujoco

mujoco = import_mujoco()

__all__ = ["BUTTON_COLOURS", "ButtonPanel", "sample_positions"]

#: colour -> (dark rgba, lit rgba) of the button caps
BUTTON_COLOURS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "red": ((0.35, 0.08, 0.07, 1.0), (1.0, 0.35, 0.3, 1.0)),
    "green": ((0.07, 0.3, 0.1, 1.0), (0.4, 1.0, 0.45, 1.0)),
    "blue": ((0.07, 0.12, 0.35, 1.0), (0.45, 0.6, 1.0, 1.0)),
    "yellow": ((0.35, 0.3, 0.05, 1.0), (1.0, 0.95, 0.4, 1.0)),
}

_PRESSED_M = -0.006  # cap travel that counts as a press
_RELEASED_M = -0.002  # cap travel below which a press has ended


class ButtonPanel:
    """The push buttons a task uses: placement, lights, press detection with hysteresis."""

    def __init__(self, env, colours: tuple[str, ...]) -> None:
        self.env = env
        m = env.model
        self.colours = tuple(colours)
        self.housing = {c: env._body(f"button_{c}") for c in colours}
        self.cap = {c: env._body(f"button_{c}_cap") for c in colours}
        self.qadr = {
            c: m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"button_{c}")]
            for c in colours
        }
        self.light_geom = {
            c: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"button_{c}_light") for c in colours
        }
        self.reset()

    def reset(self) -> None:
        self.lit = dict.fromkeys(self.colours, False)
        self.down = dict.fromkeys(self.colours, False)
        self.presses: list[tuple[float, str]] = []
        for c in self.colours:
            self.set_light(c, False)

    def place(self, colour: str, xy, table_z: float) -> None:
        """Move a button's housing (a fixed body) to ``xy`` on the table."""
        self.env.model.body_pos[self.housing[colour]] = (xy[0], xy[1], table_z)

    def set_light(self, colour: str, on: bool) -> None:
        dark, lit = BUTTON_COLOURS[colour]
        self.env.model.geom_rgba[self.light_geom[colour]] = lit if on else dark
        if self.lit.get(colour) != on:
            self.lit[colour] = on
            self.env.event("light_on" if on else "light_off", button=colour)

    def cap_top(self, colour: str) -> np.ndarray:
        """(3,) world position of the cap's top centre."""
        return self.env.body_pos(self.cap[colour]) + np.array([0.0, 0.0, 0.008])

    def travel(self, colour: str) -> float:
        return float(self.env.data.qpos[self.qadr[colour]])

    def is_down(self, colour: str) -> bool:
        return self.down[colour]

    def press_count(self, colour: str | None = None) -> int:
        return sum(1 for _, c in self.presses if colour is None or c == colour)

    def update(self) -> list[str]:
        """Detect new presses (call once per control step); returns the colours pressed."""
        new = []
        for c in self.colours:
            q = self.travel(c)
            if not self.down[c] and q < _PRESSED_M:
                self.down[c] = True
                self.presses.append((self.env.t, c))
                self.env.event("press", button=c)
                new.append(c)
            elif self.down[c] and q > _RELEASED_M:
                self.down[c] = False
        return new

    def lit_vector(self) -> np.ndarray:
        return np.array([1.0 if self.lit[c] else 0.0 for c in self.colours], np.float32)


def sample_positions(
    rng: np.random.Generator,
    n: int,
    low,
    high,
    *,
    min_dist_m: float,
    avoid: list[tuple[np.ndarray, float]] = (),
    tries: int = 2000,
) -> list[np.ndarray]:
    """``n`` xy points uniform in the box [low, high] at least ``min_dist_m`` apart and
    farther than r from each (point, r) in ``avoid``. Deterministic given ``rng``."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    for _ in range(tries):
        pts: list[np.ndarray] = []
        for _ in range(n * 30):
            p = rng.uniform(low, high)
            if all(np.linalg.norm(p - q) >= min_dist_m for q in pts) and all(
                np.linalg.norm(p - np.asarray(a)[:2]) >= r for a, r in avoid
            ):
                pts.append(p)
                if len(pts) == n:
                    return pts
    raise RuntimeError(f"cannot place {n} points {min_dist_m} m apart in {low}..{high}")
