"""Motion primitives for scripted experts: generators that yield one action per step.

Arm primitives yield ``arm_ee_delta`` actions (5,), base primitives yield
``base_velocity`` actions (3,). They read the simulator state through the env
each time they are resumed, so they close the loop; each has a step budget so
a blocked motion cannot hang an episode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from engram.sim.motion import (
    FINGER_HALF_LENGTH_M,
    base_velocity_towards,
    nearest_yaw,
    wrap_angle,
)

__all__ = [
    "arm_hold",
    "arm_move",
    "arm_pick",
    "arm_place",
    "arm_press",
    "base_drive_to",
    "base_hold",
    "base_spin",
    "base_turn_to",
]


def _act(delta: np.ndarray, dyaw: float, gripper: float) -> np.ndarray:
    return np.array([delta[0], delta[1], delta[2], dyaw, gripper], np.float32)


# ---- arm ----------------------------------------------------------------------------
def arm_move(
    env,
    target,
    *,
    gripper: float,
    yaw: float | None = None,
    tol_m: float = 0.005,
    yaw_tol_rad: float = 0.04,
    max_step_m: float = 0.04,
    max_steps: int = 40,
) -> Iterator[np.ndarray]:
    """Move the tool centre point to ``target`` (3,) world metres (and to ``yaw``)."""
    c = env.controller
    target = np.asarray(target, float)
    for _ in range(max_steps):
        err = target - c.ee_pos()
        yaw_err = 0.0 if yaw is None else wrap_angle(yaw - c.ee_yaw())
        if np.linalg.norm(err) < tol_m and abs(yaw_err) < yaw_tol_rad:
            return
        delta = 0.9 * err
        n = np.linalg.norm(delta)
        if n > max_step_m:
            delta *= max_step_m / n
        yield _act(delta, float(np.clip(0.9 * yaw_err, -0.5, 0.5)), gripper)


def arm_hold(env, *, gripper: float, steps: int) -> Iterator[np.ndarray]:
    """Stay put for ``steps`` steps with the gripper at ``gripper``."""
    for _ in range(steps):
        yield _act(np.zeros(3), 0.0, gripper)


def arm_pick(
    env,
    body: str,
    *,
    grasp_z_m: float,
    symmetry_rad: float = math.pi / 2,
    lift_z_m: float,
    approach_dz_m: float = 0.1,
) -> Iterator[np.ndarray]:
    """Top grasp of ``body``: above it, down to tool height ``grasp_z_m``, close, lift."""
    pos = env.body_pos(body)
    yaw = nearest_yaw(env.body_yaw(body), env.controller.ee_yaw(), symmetry_rad)
    yield from arm_move(env, [pos[0], pos[1], grasp_z_m + approach_dz_m], gripper=0.0, yaw=yaw)
    pos = env.body_pos(body)
    yield from arm_move(env, [pos[0], pos[1], grasp_z_m], gripper=0.0, yaw=yaw, tol_m=0.004)
    yield from arm_hold(env, gripper=1.0, steps=4)
    ee = env.controller.ee_pos()
    yield from arm_move(env, [ee[0], ee[1], lift_z_m], gripper=1.0, max_step_m=0.04)


def arm_place(
    env, body: str, target_xy, *, release_z_m: float, carry_z_m: float
) -> Iterator[np.ndarray]:
    """Carry the held ``body`` so that it lands at ``target_xy`` (2,), release, back off."""
    offset = env.controller.ee_pos()[:2] - env.body_pos(body)[:2]
    goal = np.asarray(target_xy, float) + offset
    yield from arm_move(env, [goal[0], goal[1], carry_z_m], gripper=1.0)
    offset = env.controller.ee_pos()[:2] - env.body_pos(body)[:2]
    goal = np.asarray(target_xy, float) + offset
    yield from arm_move(env, [goal[0], goal[1], release_z_m], gripper=1.0, tol_m=0.003)
    yield from arm_hold(env, gripper=0.0, steps=3)
    ee = env.controller.ee_pos()
    yield from arm_move(env, [ee[0], ee[1], carry_z_m], gripper=0.0)


def arm_press(env, button: str, *, max_steps: int = 25) -> Iterator[np.ndarray]:
    """Press push-button ``button`` (a colour of the env's button panel) once."""
    panel = env.buttons
    top = panel.cap_top(button)
    above = top + FINGER_HALF_LENGTH_M + 0.03
    yield from arm_move(env, [top[0], top[1], above[2]], gripper=1.0, tol_m=0.006)
    count = panel.press_count(button)
    for _ in range(max_steps):
        if panel.press_count(button) > count:
            break
        yield _act(np.array([0.0, 0.0, -0.02]), 0.0, 1.0)
    for _ in range(max_steps):
        if not panel.is_down(button) and env.controller.ee_pos()[2] > above[2] - 0.012:
            break
        yield _act(np.array([0.0, 0.0, 0.03]), 0.0, 1.0)


# ---- base ---------------------------------------------------------------------------
def base_hold(env, steps: int) -> Iterator[np.ndarray]:
    for _ in range(steps):
        yield np.zeros(3, np.float32)


def base_turn_to(
    env, yaw: float, *, tol_rad: float = 0.04, max_rate: float = 1.8, max_steps: int = 60
) -> Iterator[np.ndarray]:
    """Rotate in place to ``yaw``."""
    for _ in range(max_steps):
        err = wrap_angle(yaw - env.controller.pose()[2])
        if abs(err) < tol_rad:
            return
        yield np.array([0.0, 0.0, np.clip(3.0 * err, -max_rate, max_rate)], np.float32)


def base_spin(env, *, turns: float = 1.0, rate: float = 1.6) -> Iterator[np.ndarray]:
    """Turn on the spot by ``turns`` full turns (counter-clockwise), to look around."""
    total = 0.0
    last = env.controller.pose()[2]
    goal = 2 * math.pi * turns
    while total < goal - 0.05:
        left = goal - total
        yield np.array([0.0, 0.0, min(rate, 3.0 * left + 0.2)], np.float32)
        now = env.controller.pose()[2]
        total += wrap_angle(now - last)
        last = now


def base_drive_to(
    env,
    xy,
    *,
    speed: float = 1.0,
    tol_m: float = 0.05,
    max_steps: int = 150,
    face: bool = True,
) -> Iterator[np.ndarray]:
    """Drive to ``xy`` (2,) world metres: turn towards it, then go straight (holonomic
    corrections keep the path straight), slowing down at the end."""
    target = np.asarray(xy, float)
    for _ in range(max_steps):
        x, y, yaw = env.controller.pose()
        d = target - (x, y)
        dist = float(np.hypot(*d))
        if dist < tol_m:
            return
        heading = math.atan2(d[1], d[0])
        yaw_err = wrap_angle(heading - yaw) if face else 0.0
        if face and abs(yaw_err) > 0.35 and dist > 0.3:
            yield np.array([0.0, 0.0, np.clip(3.0 * yaw_err, -1.8, 1.8)], np.float32)
            continue
        yield np.array(base_velocity_towards(d, dist, yaw, speed_mps=speed, face=face), np.float32)
