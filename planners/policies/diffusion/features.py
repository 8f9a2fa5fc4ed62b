"""What the tabletop action expert sees: one state layout for every task, from the
simulator's observation (training data, ``--harness env``) or from bus messages (the
policy node), and the subgoals it is conditioned on in planner mode.

State vector (``STATE_DIM`` = 45 float32, layout ``FEATURES``)::

    robot   11   ee x, y, z (m), ee yaw (rad), gripper opening (m), 6 joint angles (rad)
    objects 30   MAX_OBJECTS slots x [visible, x, y, z (m), lit]; slot i = the task's
                 i-th tracked object (``object_names``), zeros when unseen or absent
    time     1   seconds since the episode began / 10
    goal     3   planner mode: the subgoal's target [x, y (m), 1]; end to end: zeros

Object yaw is left out (perception reports centroids and extents, not yaw), and
``lit`` is the task's lamp state where it has one (button_sequence's task extras),
so the node can fill every slot from ``Percept`` messages.

Subgoals (planner mode). A demonstration's act phase is cut at its events: the
gripper closing while the arm holds still (a grasp), opening (a release), and the
end effector turning from descending to rising with the gripper unchanged (a press).
Each segment, up to and including its event, is the subgoal ``<skill> <object>``
(``pick``, ``lift`` for a grasp that is the last event, ``place``, ``press``; the
object nearest to the end effector at the event, the held one for a release) with
the event's end-effector position as its target; steps after the last event belong
to the last segment. The planner's grounded subgoals (``PlanStep`` skill + object)
map to the same texts with ``subgoal_text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FEATURES",
    "MAX_OBJECTS",
    "ROBOT_DIM",
    "STATE_DIM",
    "label_subgoals",
    "objects_from_env",
    "state_vector",
    "subgoal_text",
]

FEATURES = "engram-tabletop/1"  # layout name, saved in checkpoints; change it on any change
ROBOT_DIM = 11
MAX_OBJECTS = 6
_OBJ = 5  # visible, x, y, z, lit
STATE_DIM = ROBOT_DIM + MAX_OBJECTS * _OBJ + 1 + 3
_GRIP = 4  # action index of the gripper command
_HOLD_M = 1e-3  # an action moving less than this holds the arm
_DZ_M = 5e-3  # vertical speed that counts as descending / rising (m per step)
_TIE_M = 0.03  # objects this much farther than the nearest still count as near


def subgoal_text(skill: str, label: str) -> str:
    """The conditioning text of a subgoal: ``press button red cap``."""
    return f"{skill} {label.replace('_', ' ')}".strip()


def objects_from_env(objects: np.ndarray, extras: np.ndarray) -> np.ndarray:
    """The env's ``objects`` (N, 5: visible, x, y, z, yaw) and ``task`` extras
    ([phase, time, ...]) -> slots (N, 5: visible, x, y, z, lit)."""
    obj = np.asarray(objects, np.float32).reshape(-1, 5)
    lamps = np.asarray(extras, np.float32).reshape(-1)[2:]
    out = np.zeros((obj.shape[0], _OBJ), np.float32)
    out[:, :4] = obj[:, :4]
    if lamps.shape[0] == obj.shape[0]:
        out[:, 4] = lamps
    return out


def state_vector(
    robot: np.ndarray, slots: np.ndarray, time_s: float, goal: Sequence[float] | None = None
) -> np.ndarray:
    """robot (11,), slots (N <= MAX_OBJECTS, 5), time (s), goal [x, y] | None -> (45,)."""
    robot = np.asarray(robot, np.float32).reshape(-1)
    if robot.shape[0] != ROBOT_DIM:
        raise ValueError(f"robot state must have {ROBOT_DIM} values, got {robot.shape[0]}")
    slots = np.asarray(slots, np.float32).reshape(-1, _OBJ)
    if slots.shape[0] > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} objects, got {slots.shape[0]}")
    padded = np.zeros((MAX_OBJECTS, _OBJ), np.float32)
    padded[: slots.shape[0]] = slots
    g = np.zeros(3, np.float32)
    if goal is not None:
        g[:2] = np.asarray(goal, np.float32).reshape(-1)[:2]
        g[2] = 1.0
    return np.concatenate([robot, padded.reshape(-1), [np.float32(time_s / 10.0)], g])


def label_subgoals(
    robot: np.ndarray,
    actions: np.ndarray,
    act: np.ndarray,
    objects: np.ndarray,
    names: Sequence[str],
) -> list[tuple[str, np.ndarray] | None]:
    """Per step of one demonstration: (subgoal text, target xy) or None (show phase).

    robot (T, 11), actions (T, A), act (T,) bool, objects (T, N, 5) as the env gives
    them, names: the N object labels. See the module doc for the rule."""
    steps = len(actions)
    grip = np.asarray(actions[:, _GRIP]) >= 0.5
    moving = np.linalg.norm(actions[:, :3], axis=1) >= _HOLD_M
    events: list[tuple[int, str]] = []
    act_idx = np.flatnonzero(act)
    for t in act_idx[1:]:
        if grip[t] and not grip[t - 1] and not moving[t]:
            events.append((int(t), "grasp"))
        elif not grip[t] and grip[t - 1] and not moving[t]:
            events.append((int(t), "release"))
        elif actions[t - 1, 2] < -_DZ_M and actions[t, 2] > _DZ_M and grip[t] == grip[t - 1]:
            events.append((int(t), "press"))
    last = int(act_idx[-1]) if len(act_idx) else 0
    if len(act_idx) and actions[last, 2] < -_DZ_M and (not events or events[-1][0] < last):
        events.append((last, "press"))  # success ended the episode at the bottom of a press
    out: list[tuple[str, np.ndarray] | None] = [None] * steps
    if not events or not len(act_idx):
        return out
    held = ""
    start = int(act_idx[0])
    # where each object was last seen (the arm hides a button it presses)
    # (a cube covered by a cup was last seen where the cup stands: among objects about
    # as near, the one seen most recently is the one at hand)
    last_xy = np.full((objects.shape[1], 2), np.nan, np.float32)
    last_t = np.full(objects.shape[1], -1, np.int64)
    seen_until = 0
    for k, (t, kind) in enumerate(events):
        for s in range(seen_until, t + 1):
            vis = objects[s, :, 0] > 0.5
            last_xy[vis] = objects[s, vis, 1:3]
            last_t[vis] = s
        seen_until = t + 1
        ee = np.asarray(robot[t, :3], np.float32)
        dist = np.linalg.norm(last_xy - ee[:2], axis=1)
        dist = np.where(np.isnan(dist), np.inf, dist)
        nearest = ""
        if np.isfinite(dist).any():
            close = dist <= dist.min() + _TIE_M
            nearest = names[int(np.argmax(np.where(close, last_t, -2)))]
        if kind == "grasp":
            skill = "lift" if k == len(events) - 1 else "pick"
            label = held = nearest
        elif kind == "release":
            skill, label = "place", held
            held = ""
        else:
            skill, label = "press", nearest
        end = steps if k == len(events) - 1 else t + 1
        item = (subgoal_text(skill, label), ee[:2].copy())
        for s in range(start, end):
            if act[s]:
                out[s] = item
        start = end
    return out


def goal_from_plan(args: Mapping[str, Any], positions: Mapping[str, np.ndarray]) -> Any:
    """A planner subgoal's target [x, y] from its args and the perceived positions
    (label -> (3,)): ``target`` [x, y] if given, else the ``on`` or ``object`` label's
    position; None when it cannot be grounded."""
    if args.get("target") is not None:
        return np.asarray(args["target"], np.float32).reshape(-1)[:2]
    for key in ("on", "object"):
        label = args.get(key)
        if label and label in positions:
            return np.asarray(positions[label], np.float32)[:2]
    return None
