"""Shared motion math of the robots: angle wrap, yaw, grasp yaw and base velocity.

Used by the scripted experts (``engram.sim.tasks._skills``), the robot controllers
(``engram.sim.robots``) and the planner's skill controllers
(``engram.planners.planning.skills``). Plain numpy: importing it loads no simulator.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "FINGER_HALF_LENGTH_M",
    "base_velocity_towards",
    "nearest_yaw",
    "world_to_base_xy",
    "wrap_angle",
    "yaw_of",
]

#: fingertips are this far below the tool centre point when the gripper points down (m)
FINGER_HALF_LENGTH_M = 0.036


def wrap_angle(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def yaw_of(mat: np.ndarray) -> float:
    """Yaw (rad) of a frame's x axis projected on the world xy plane. mat: (3, 3), (9,) or
    a (4, 4) pose."""
    m = np.asarray(mat)
    m = m[:3, :3] if m.shape == (4, 4) else m.reshape(3, 3)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def nearest_yaw(obj_yaw: float, current_yaw: float, period_rad: float = math.pi / 2) -> float:
    """The yaw equivalent to ``obj_yaw`` modulo the object's symmetry ``period_rad`` nearest
    the gripper's ``current_yaw`` (kept within +-2.5 rad, the wrist's comfortable range)."""
    k = round((current_yaw - obj_yaw) / period_rad)
    yaw = obj_yaw + k * period_rad
    while yaw > 2.5:
        yaw -= period_rad
    while yaw < -2.5:
        yaw += period_rad
    return yaw


def world_to_base_xy(v_world: np.ndarray, yaw: float) -> tuple[float, float]:
    """A world-frame xy vector (2,) in the frame of a base at heading ``yaw`` (rad)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return (c * v_world[0] + s * v_world[1], -s * v_world[0] + c * v_world[1])


def base_velocity_towards(
    d_world: np.ndarray, dist_m: float, yaw: float, *, speed_mps: float, face: bool = True
) -> tuple[float, float, float]:
    """Straight-line drive command towards a goal ``d_world`` (2,) = goal - base xy at
    ``dist_m`` > 0: (vx, vy in the base frame m/s, yaw rate rad/s). Slows down near the
    goal; with ``face`` keeps turning towards it while more than 0.3 m away."""
    v = min(speed_mps, 1.2 * dist_m + 0.05)
    vb = world_to_base_xy(np.asarray(d_world) / dist_m * v, yaw)
    yaw_err = wrap_angle(math.atan2(d_world[1], d_world[0]) - yaw) if face else 0.0
    rate = float(np.clip(2.0 * yaw_err, -1.0, 1.0)) if dist_m > 0.3 else 0.0
    return vb[0], vb[1], rate
