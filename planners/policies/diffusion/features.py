"""What the tabletop action expert sees: one state layout for every task, from the
simulator's observation (training data, ``--harness env``) or from bus messages (the
policy node), and the subgoals it is conditioned on in planner mode.

State vector (``STATE_DIM`` = 45 float32, layout ``FEATURES``)::

    robot   11   ee x, y, z (m), ee yaw (rad), gripper opening (m), 6 joint angles (rad)
    objects 30   MAX_OBJECTS slots x [visible, x, y, z (m), lit]; slot i = the task's
                 i-th tracked object (``object_names``), zeros when unseen or absent
    time     1   seconds since the episode began / 10
    goal     3   planner mode: the subgoal's target [x, y (m), 1]; end to end: zeros.
                 Goal frame (``to_goal_frame``): the target is the origin, so the first
                 two carry the running subgoal's progress instead (``subgoal_progress``)

Object yaw is left out (perception reports centroids and extents, not yaw), and
``lit`` is the task's lamp state where it has one (button_sequence's task extras),
so the node can fill every slot from ``Percept`` messages.

Subgoals (planner mode). A demonstration's act phase is cut at its events: the
gripper closing while the arm holds still (a grasp), opening (a release), and the
end effector turning from descending to rising with the gripper unchanged (a press).
Each segment, up to and including its event and the event's follow-through (holding
still, then rising straight up: the lift after a grasp, the back-off after a release
or a press), is the subgoal ``<skill> <object>``
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
    "ACTION_MODES",
    "CAP_RADIUS_M",
    "CAP_TOP_M",
    "FEATURES",
    "MAX_OBJECTS",
    "ROBOT_DIM",
    "STATE_DIM",
    "label_subgoals",
    "objects_from_env",
    "press_labels",
    "segment_bounds",
    "segment_parts",
    "segment_progress",
    "state_vector",
    "subgoal_progress",
    "subgoal_text",
    "to_goal_frame",
    "waypoint_labels",
    "waypoints_to_deltas",
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
_SIDEWAYS_M = 5e-3  # a step moving this much sideways ends an event's follow-through
#: what the expert's actions are: ``delta`` = the controller's arm_ee_delta as recorded;
#: ``waypoint`` = [x, y, z (m, world), yaw (rad), gripper]: the end-effector pose the
#: arm should head for, which the executor tracks with ``waypoints_to_deltas``
ACTION_MODES = ("delta", "waypoint")
# the scripted experts' tracking law (sim/tasks/_skills.py arm_move): delta =
# GAIN * (target - measured), its norm clipped to STEP_M; dyaw = GAIN * yaw error,
# clipped to YAW_STEP_RAD. Waypoint labels invert it; the executor applies it.
TRACK_GAIN = 0.9
#: the skills of subgoal texts, in the order of the end-to-end pointer's skill head
SKILLS = ("pick", "lift", "place", "press")
TRACK_STEP_M = 0.04
CAP_TOP_M = 0.008  # a button cap's top above its body origin (sim/tasks/_tabletop.py cap_top)
CAP_RADIUS_M = 0.024  # a button cap's radius (sim/assets/tabletop.xml button_*_light)
TRACK_YAW_STEP_RAD = 0.5


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
        end = steps if k == len(events) - 1 else _settled(t, actions, act)
        item = (subgoal_text(skill, label), ee[:2].copy())
        for s in range(start, end):
            if act[s]:
                out[s] = item
        start = end
    return out


def segment_parts(
    labels: Sequence[tuple[str, np.ndarray] | None],
    slots: np.ndarray,
    names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What an end-to-end expert must point at, per step: (skill index into
    ``SKILLS``, object slot, frame slot), each (T,) int64, -1 where a step has no
    subgoal, and the frame slot's position [x, y] where the segment starts (T, 2)
    (zeros where none).

    ``labels``: ``label_subgoals``' output; ``slots`` (T, N, 5) the state's object
    slots (visible, x, y, z, lit). The object slot is the subgoal's object; the frame
    slot, whose position becomes the target the goal-frame expert steers by, is the
    same object, except for a place: the object nearest the release point among those
    seen up to the step the segment starts, the held one excluded (a tray)."""
    steps = len(labels)
    skill = np.full(steps, -1, np.int64)
    obj = np.full(steps, -1, np.int64)
    frame = np.full(steps, -1, np.int64)
    where = np.zeros((steps, 2), np.float32)
    norm = [n.replace("_", " ") for n in names]
    last = np.full((slots.shape[1], 2), np.nan, np.float32)
    cur: tuple[str, int, int, int] | None = None
    for t, item in enumerate(labels):
        vis = slots[t, :, 0] > 0.5
        last[vis] = slots[t, vis, 1:3]
        if item is None:
            cur = None
            continue
        text, goal = item
        if cur is None or cur[0] != text:
            sk, _, label = text.partition(" ")
            o = norm.index(label) if label in norm else -1
            dist = np.linalg.norm(last - np.asarray(goal, np.float32)[:2], axis=1)
            dist = np.where(np.isnan(dist), np.inf, dist)
            if sk == "place" and o >= 0:
                dist[o] = np.inf
            if sk != "place" and o >= 0:
                f = o  # a grasp or press steers by its own object
            else:
                f = int(np.argmin(dist)) if np.isfinite(dist).any() else -1
            xy = last[f].copy() if f >= 0 else np.zeros(2, np.float32)
            cur = (text, SKILLS.index(sk) if sk in SKILLS else -1, o, f, xy)
        skill[t], obj[t], frame[t], where[t] = cur[1], cur[2], cur[3], cur[4]
    return skill, obj, frame, where


#: progress inputs (goal frame): the rise above the lowest point of the running subgoal
#: is given in decimetres, and the steps since it began are capped and scaled
PROGRESS_RISE_SCALE = 10.0
PROGRESS_MAX_STEPS = 60
PROGRESS_STEP_SCALE = 20.0


def subgoal_progress(z_m: float, lowest_z_m: float, steps: int) -> np.ndarray:
    """The running subgoal's progress (2,) float32: [rise of the tool above the lowest
    point it reached since the subgoal began (dm), control steps since it began / 20,
    capped at 60 steps].

    Why: in the goal frame the state alone cannot tell "hovering above the button
    before the press" from "risen after it" (about 1.5 cm apart in z), so a chunk
    sampled there dithered instead of descending (round 3, traced); the rise above the
    lowest point is 0 before the press and > 1.5 cm after it, and the step count is
    the demonstration's phase clock (when to close the fingers)."""
    rise = max(0.0, float(z_m) - float(lowest_z_m)) * PROGRESS_RISE_SCALE
    step = min(max(int(steps), 0), PROGRESS_MAX_STEPS) / PROGRESS_STEP_SCALE
    return np.array([rise, step], np.float32)


def segment_bounds(labels: Sequence[tuple[str, np.ndarray] | None]) -> np.ndarray:
    """Per step of a demonstration: its subgoal segment's [first step, end) (T, 2)
    int64, -1 where a step has no subgoal (``labels``: ``label_subgoals``' output; a
    segment is a run of the same item)."""
    out = np.full((len(labels), 2), -1, np.int64)
    t = 0
    while t < len(labels):
        item = labels[t]
        if item is None:
            t += 1
            continue
        end = t + 1
        while end < len(labels) and labels[end] is item:
            end += 1
        out[t:end] = (t, end)
        t = end
    return out


def segment_progress(
    labels: Sequence[tuple[str, np.ndarray] | None], z_m: np.ndarray
) -> np.ndarray:
    """Per step of a demonstration: ``subgoal_progress`` of its subgoal segment (T, 2)
    (zeros where a step has no subgoal). ``labels``: ``label_subgoals``' output (a
    segment is a run of the same item); ``z_m`` (T,) the tool's measured height."""
    z = np.asarray(z_m, np.float64).reshape(-1)
    out = np.zeros((len(labels), 2), np.float32)
    start, low, prev = 0, np.inf, None
    for t, item in enumerate(labels):
        if item is None:
            prev = None
            continue
        if item is not prev:
            start, low, prev = t, np.inf, item
        low = min(low, float(z[t]))
        out[t] = subgoal_progress(float(z[t]), low, t - start)
    return out


def to_goal_frame(
    state: np.ndarray, goal_xy: np.ndarray, progress: np.ndarray | None = None
) -> np.ndarray:
    """States (..., STATE_DIM) -> the same with every x, y (end effector, seen
    objects, goal) relative to ``goal_xy`` (..., 2): the goal-frame expert's input.

    Why: copying an absolute target from a 45-dim input through an MLP is what left
    presses 2-5 cm beside a button cap; relative to the target, the final waypoint of
    a press or a grasp is a near-constant offset and the expert is translation
    invariant (the planner's grounded target carries the precision). ``progress``
    (..., 2): ``subgoal_progress``, written into the goal slots (zeros without it)."""
    out = np.array(state, np.float32, copy=True)
    g = np.asarray(goal_xy, np.float32)
    out[..., 0:2] -= g
    objs = out[..., ROBOT_DIM : ROBOT_DIM + MAX_OBJECTS * _OBJ].reshape(
        *out.shape[:-1], MAX_OBJECTS, _OBJ
    )
    seen = objs[..., 0:1] > 0.5
    objs[..., 1:3] -= seen * g[..., None, :]
    out[..., ROBOT_DIM : ROBOT_DIM + MAX_OBJECTS * _OBJ] = objs.reshape(*out.shape[:-1], -1)
    out[..., STATE_DIM - 3 : STATE_DIM - 1] = 0.0 if progress is None else progress
    out[..., STATE_DIM - 1] = 1.0
    return out


def press_labels(
    robot: np.ndarray,
    waypoints: np.ndarray,
    segment: np.ndarray,
    is_press: np.ndarray,
    depth_m: float = 0.003,
) -> tuple[np.ndarray, np.ndarray]:
    """Direct press labels: every waypoint of a press segment's straight descent
    (the tool over the cap, the label below it) heads for the press's deepest
    waypoint, ``depth_m`` deeper. Returns (waypoints (T, 5) copy, mask (T,) bool of
    the relabelled steps). robot (T, >=3) measured ee xyz, waypoints (T, 5)
    (``waypoint_labels``), segment (T, 2) (``segment_bounds``), is_press (T,) bool.

    Why: the scripted press descends in 2.2 cm steps relative to the measured tool
    (0.506 -> 0.484 -> 0.462 m), so its labels are a velocity the model must time
    exactly; sampled chunks blurred the one deepest step away and pressed 1-4 mm deep
    (too shallow to register; traced in rounds 4 and 5), or hovered over the cap. A
    constant bottom target is one mode that the tracking law reaches in two steps."""
    wp = np.array(waypoints, np.float32, copy=True)
    ee = np.asarray(robot, np.float64)[:, :3]
    mask = np.zeros(len(wp), bool)
    starts = sorted({int(s) for s, e in np.asarray(segment) if s >= 0})
    for s in starts:
        e = int(segment[s, 1])
        if not bool(is_press[s]) or e - s < 2:
            continue
        b = s + int(np.argmin(wp[s:e, 2]))
        k = b
        while (
            k >= s
            and wp[k, 2] < ee[k, 2] - _DZ_M
            and float(np.linalg.norm(wp[k, :2] - ee[k, :2])) < _DZ_M
        ):
            k -= 1
        if k == b:  # the deepest label is not a straight descent: leave it
            continue
        wp[k + 1 : b + 1, 2] = wp[b, 2] - float(depth_m)
        mask[k + 1 : b + 1] = True
    return wp, mask


def _settled(t: int, actions: np.ndarray, act: np.ndarray) -> int:
    """The step after event ``t``'s segment: the event's own follow-through (holding
    still while the fingers move, rising straight up: the lift after a grasp, the back
    off after a release or a press) still belongs to it; the segment ends where the arm
    moves sideways or down again. The executor ends a subgoal by the same rule
    (``policies/completion.py``)."""
    s = t + 1
    while (
        s < len(actions)
        and act[s]
        and float(np.linalg.norm(actions[s, :2])) < _SIDEWAYS_M
        and actions[s, 2] > -_HOLD_M
    ):
        s += 1
    return s


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


def _wrap(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def waypoint_labels(robot: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """arm_ee_delta demonstrations -> waypoint actions (T, 5): [x, y, z, yaw, gripper].

    Why: a delta is relative to the controller's *commanded* pose, which runs ahead
    of the measured one and is not observed, and while the arm travels its size is a
    clipped, time-varying function of how far it still has to go. The scripted expert
    itself steers to fixed targets (``TRACK_*``): the cup's xy at grasp height, the
    tray, the button. Those targets are what the expert decided and are a direct
    function of the objects' positions, so they are the labels: an unclipped step
    reveals its target exactly (measured + delta / gain); a clipped step heads for the
    target of the next unclipped step (the end of the same move). The gripper stays
    absolute. robot (T, 11) measured (ee xyz, yaw first), actions (T, 5)."""
    robot = np.asarray(robot, np.float64)
    actions = np.asarray(actions, np.float64)
    steps = actions.shape[0]
    out = np.zeros((steps, 5), np.float32)
    pos = robot[:, :3] + actions[:, :3] / TRACK_GAIN
    yaw = robot[:, 3] + actions[:, 3] / TRACK_GAIN
    clipped = np.linalg.norm(actions[:, :3], axis=1) >= TRACK_STEP_M - 1e-4
    yaw_clipped = np.abs(actions[:, 3]) >= TRACK_YAW_STEP_RAD - 1e-3
    for t in range(steps - 2, -1, -1):  # back-fill clipped steps from the move's end
        if clipped[t]:
            # only from the same move: its target lies along this step's direction, at
            # least a clipped step away (a move that ended on a clipped step keeps
            # measured + delta / gain, which tracks to the same clipped delta)
            err = pos[t + 1] - robot[t, :3]
            n = float(np.linalg.norm(err))
            cos = float(err @ actions[t, :3]) / max(
                n * float(np.linalg.norm(actions[t, :3])), 1e-12
            )
            if cos > 0.999 and TRACK_GAIN * n >= TRACK_STEP_M - 1e-4:
                pos[t] = pos[t + 1]
        if yaw_clipped[t]:
            e = float(_wrap(yaw[t + 1] - robot[t, 3]))
            if e * actions[t, 3] > 0 and TRACK_GAIN * abs(e) >= TRACK_YAW_STEP_RAD - 1e-3:
                yaw[t] = yaw[t + 1]
    out[:, :3] = pos
    out[:, 3] = yaw
    out[:, 4] = actions[:, 4]
    return out


def waypoints_to_deltas(waypoints: np.ndarray, robot: np.ndarray) -> np.ndarray:
    """Waypoint actions (H, 5) -> arm_ee_delta actions (H, 5) from the measured robot
    vector (ee xyz, yaw first), by the tracking law the demonstrations used; later
    actions assume the earlier ones were tracked (call it again with a fresh robot
    vector each step to close the loop)."""
    wps = np.asarray(waypoints, np.float64).reshape(-1, 5)
    robot = np.asarray(robot, np.float64).reshape(-1)
    ee, yaw = robot[:3].copy(), float(robot[3])
    out = np.zeros((wps.shape[0], 5), np.float32)
    for k, wp in enumerate(wps):
        d = TRACK_GAIN * (wp[:3] - ee)
        n = float(np.linalg.norm(d))
        if n > TRACK_STEP_M:
            d *= TRACK_STEP_M / n
        dyaw = float(
            np.clip(TRACK_GAIN * _wrap(wp[3] - yaw), -TRACK_YAW_STEP_RAD, TRACK_YAW_STEP_RAD)
        )
        out[k, :3], out[k, 3], out[k, 4] = d, dyaw, np.clip(wp[4], 0.0, 1.0)
        ee, yaw = ee + d, yaw + dyaw
    return out
