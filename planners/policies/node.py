"""``PolicyNode``: a learned policy driving the robot on the bus (node type ``policy``).

Ports (default topics)::

    inputs   instruction  Instruction  queue(8)   a new text or episode resets the policy
             percepts     Percept      queue(16)  objects seen (label, 3D centroid, lamps)
             robot_state  RobotState   latest     proprioception; with autotick, a tick
             plan         PlanStep     queue(64)  the planner's grounded subgoals
    outputs  actions      ActionChunk             (H, A) for the robot (sim or ROS 2)
             subgoal_status PlanStep              planner mode: this node's verdict on
                                                  the subgoal it executed (see below)

Which executor moves the robot is a launch-graph choice (``launch/sim_full.yaml``,
``executor: skills | expert``): with ``skills`` the planner's skill controllers
publish the ActionChunks and this node is not in the graph; with ``expert`` the
planner only publishes grounded subgoals on ``/plan`` and this node runs the
diffusion action expert (``diffusion/policy.py``, the shipped checkpoint by default).

``mode``:

- ``planner``: the expert executes the planner's current subgoal: the newest
  ``running`` ``PlanStep`` of a motion skill (``pick``, ``lift``, ``place``, ``press``,
  ``push``) is turned into the conditioning text ``<skill> <object>``
  (``features.subgoal_text``) and its target (the ``target`` arg, else the ``on`` /
  ``object`` label's perceived position) fills the state's goal slots. Between motion
  subgoals (watching, deciding, settling) the node holds the arm still. This node
  decides when the subgoal is done (``completion.SubgoalTracker``: the rule the
  training segments were cut by) and says so on ``/subgoal_status``: a ``PlanStep``
  with the subgoal's skill and args plus ``subgoal_seq`` (the running step's seq),
  status ``succeeded`` or ``failed`` and a reason; the planner's critic then checks
  it. After reporting it holds until the planner's next subgoal. A new subgoal restarts
  the expert's progress inputs (``begin_subgoal``; a goal-frame checkpoint trained with
  them sees the rise above the subgoal's lowest point and the steps since it began).
- ``end_to_end`` (MemoryVLA style): the instruction is the conditioning text, and the
  expert's own perceptual-cognitive memory bank must carry what the show phase revealed.
  While the instruction's ``phase`` is ``show`` the node only watches: it holds the arm
  and writes each step into the bank; it acts once the same instruction comes again
  with ``act`` (the simulator sends it when the show phase ends), or at once for an
  instruction without a phase (a user's, ROS 2).

Executor guards (round 6; each from a traced failure; switches below): the step that
finishes a subgoal is held, not sent (it is already the next motion's start); a press stroke the expert begins over the cap is carried to the registering
depth and back up (``completion.PressStroke``; end to end too, for the pointed press);
a pick / lift turns the open gripper to the object's grasp yaw from its perceived
points (``grasp_yaw``; the expert's state has no object yaw); a place keeps its grip
until the tool is over the target (``place_open_within_m``); a pick after a failed
grasp opens the empty fingers first (``open_first_m``); a close commanded over the
object but too high to hold it (after the rise began, or near the object's top) is
taken down to the grasp height first (``grasp_stroke``, round 7;
``completion.GraspStroke``). The expert still chooses where
to go, when to grasp, press and release; these rules only finish or hold its motions.

The observation is built from the messages only (``features.py``'s tabletop layout):
the robot vector from ``RobotState``; per object slot of the task (the checkpoint's
``object_names``) the newest perceived centroid within ``percept_window_s`` (less the
object's centroid offset, ``object_offsets_m``: training saw body origins) and
whether the lamp is lit (``SceneMonitor``, the planner's own lamp detector); the time
since the episode's instruction. Each step the node either publishes the rest of its
current chunk (writing the step into the expert's memory, ``observe``) or, when
``execute_steps`` actions of it have run, samples a new chunk (``act``).

``executor: skills`` leaves the node idle (it loads no model and publishes nothing),
so one graph holds both executors and one word (a YAML anchor shared with the
planner's ``executor``) chooses.

``use_memory: false`` is the ablation: the same network with its bank emptied before
every chunk. ``autotick`` (default) steps on every ``RobotState``; the evaluation
harness turns it off and calls ``step()`` itself.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from engram.planners.planning.loop import MOTION_SKILLS
from engram.planners.policies.completion import (
    GraspStroke,
    GraspStrokeConfig,
    PressStroke,
    PressStrokeConfig,
    SubgoalTracker,
    turn_to_yaw,
)
from engram.planners.policies.diffusion.checkpoint import DEFAULT_CHECKPOINT
from engram.runtime.messages import ActionChunk, Instruction, Percept, PlanStep, RobotState
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = ["MODES", "MOTION_SKILLS", "PolicyNode", "PolicyNodeConfig"]

log = logging.getLogger(__name__)

MODES = ("planner", "end_to_end")


@dataclass
class PolicyNodeConfig(NodeConfig):
    """Settings of ``PolicyNode``."""

    # who moves the robot (the same switch as the planner's): "expert" = this node;
    # "skills" = the planner's controllers, and this node stays idle (loads nothing)
    executor: str = "expert"
    checkpoint: str = DEFAULT_CHECKPOINT  # a shipped checkpoint's name or a checkpoint path
    mode: str = "planner"  # planner (execute /plan subgoals) | end_to_end (instruction)
    use_memory: bool = True  # False: the bank is emptied before every chunk (ablation)
    task: str = ""  # object slots of this task ("" = the instruction's task field)
    execute_steps: int = 4  # actions of a chunk executed before the next one is sampled
    autotick: bool = True  # step() on every RobotState (off: the caller steps)
    # an object seen this long ago still counts as in view. Short: the expert was
    # trained on "visible now" (a covered cube must vanish from its slot at once; 1 s
    # of a stale "visible" prize after the cups came down broke planner-mode cups)
    percept_window_s: float = 0.15
    percept_buffer: int = 16  # percepts kept (bounded)
    device: str = "cpu"  # torch device of the expert: cpu | cuda | auto
    # planner mode: a pick / lift that begins with the fingers closed on nothing (a
    # failed grasp before it) first opens them, holding the arm still, until they are
    # this wide (0 = off): the expert was trained on picks that start open
    open_first_m: float = 0.05
    open_first_steps: int = 6  # at most this many such opening steps
    empty_grip_m: float = 0.015  # closed fingers narrower than this hold nothing
    # planner mode: a place keeps the held object until the tool is within this
    # distance (xy) of the place target (0 = off): an opening further away drops it
    place_open_within_m: float = 0.025
    # a press stroke the expert begins over the cap (a straight step down with the tool
    # within press_stroke_over_m of the cap's perceived centre) is carried to
    # press_stroke_extra_m past the registering depth, then back up to press_stroke_up_m
    # above the cap's top (``completion.PressStroke``; False: the expert's descent only)
    press_stroke: bool = True
    press_stroke_over_m: float = 0.015  # xy radius over the cap that starts a stroke (m)
    press_stroke_extra_m: float = 0.004  # depth past the registering one (m)
    press_stroke_up_m: float = 0.015  # height above the cap's top to return to (m)
    press_stroke_steps: int = 8  # control steps the downstroke gets to reach its depth
    # a pick / lift (end to end: the pointed one) turns the open gripper to the object's
    # grasp yaw, estimated from its perceived points when the subgoal began (the skills
    # executor's rule): the expert's state carries no object yaw (False: its own yaw)
    grasp_yaw: bool = True
    # planner mode: a pick / lift whose close the expert commands over the object but
    # with the fingertips less than grasp_high_m below the object's perceived top first
    # goes down, open, to the skills executor's grasp height, then closes there
    # (``completion.GraspStroke``; False: the expert's close as it comes)
    grasp_stroke: bool = True
    grasp_high_m: float = 0.02  # fingertips less than this below the top: too high (m)
    grasp_over_m: float = 0.02  # xy radius over the object's centre that counts (m)
    seed: int = 0  # seeds the expert's sampling (reproducible runs)


def robot_vector(msg: RobotState) -> np.ndarray:
    """``RobotState`` -> the env's ``robot`` observation (11,): ee xyz, yaw, opening, 6 joints."""
    if msg.world_from_ee is None:
        raise ValueError("the action expert drives an arm: RobotState has no world_from_ee")
    t = np.asarray(msg.world_from_ee, np.float64)
    yaw = math.atan2(t[1, 0], t[0, 0])
    joints = np.zeros(6, np.float32)
    q = np.asarray(msg.joint_positions, np.float32).reshape(-1)[:6]
    joints[: q.shape[0]] = q
    return np.concatenate([t[:3, 3], [yaw, msg.gripper_width_m], joints]).astype(np.float32)


class PolicyNode(Node[PolicyNodeConfig]):
    """Percepts + robot state + instruction + subgoals in; action chunks out."""

    INPUTS: ClassVar[dict[str, Input]] = {
        "instruction": Input("Instruction", policy="queue(8)"),
        "percepts": Input("Percept", policy="queue(16)"),
        "robot_state": Input("RobotState", policy="latest"),
        "plan": Input("PlanStep", policy="queue(64)"),
    }
    OUTPUTS: ClassVar[dict[str, Output]] = {
        "actions": Output("ActionChunk"),
        "subgoal_status": Output("PlanStep"),
    }
    Config: ClassVar[type] = PolicyNodeConfig

    def __init__(self, config: PolicyNodeConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg: PolicyNodeConfig = self.config
        if cfg.mode not in MODES:
            raise ValueError(f"PolicyNodeConfig.mode must be one of {MODES}, got {cfg.mode!r}")
        if cfg.execute_steps < 1:
            raise ValueError("PolicyNodeConfig.execute_steps must be >= 1")
        if cfg.executor not in ("skills", "expert"):
            raise ValueError(
                f"PolicyNodeConfig.executor must be 'skills' or 'expert', got {cfg.executor!r}"
            )
        from engram.planners.planning.skills.scene import SceneMonitor
        from engram.planners.policies.diffusion.policy import ActionExpertPolicy
        from engram.planners.policies.diffusion.rollout import TextCache

        self.active = cfg.executor == "expert"
        self.policy: Any = None
        if self.active:
            self.policy = ActionExpertPolicy.load(
                cfg.checkpoint, device=cfg.device, use_memory=cfg.use_memory
            )
        if self.active and not self.policy.config.features:
            raise ValueError(
                f"{cfg.checkpoint}: not a tabletop-layout expert (trained on other data); "
                "the policy node builds the tabletop observation"
            )
        self.text = TextCache()
        self.scene = SceneMonitor()
        self._lock = threading.RLock()
        self.percepts: collections.deque[Percept] = collections.deque(maxlen=cfg.percept_buffer)
        self.robot: RobotState | None = None
        self.instruction: Instruction | None = None
        self.subgoal: PlanStep | None = None
        self.tracker = SubgoalTracker()
        self._last_seen: dict[str, np.ndarray] = {}  # label -> last centroid this episode
        self._last_top: dict[str, float] = {}  # label -> last perceived top z this episode
        self._last_half: dict[str, float] = {}  # label -> last perceived xy half-width, m
        self._last_bottom: dict[str, float] = {}  # label -> last perceived bottom z, m
        # (subgoal seq, (top z, bottom z, centre xy) of its object when it began)
        self._grasp_obj: tuple[int, Any] = (-1, None)
        self._last_points: dict[str, np.ndarray] = {}  # label -> last perceived points (N, 2)
        self._grasp_yaw: tuple[int, float | None] = (-1, None)  # (subgoal key, yaw)
        self._goal: tuple[int, Any] = (-1, None)  # (subgoal seq, its target [x, y])
        self._tracking = False  # the running subgoal is being tracked (not yet reported)
        self._open_first = 0  # steps left of a pick's opening preamble (0 = none)
        self.stroke = PressStroke(
            PressStrokeConfig(
                over_m=cfg.press_stroke_over_m,
                extra_m=cfg.press_stroke_extra_m,
                up_m=cfg.press_stroke_up_m,
                steps=cfg.press_stroke_steps,
            )
        )
        self.grasp = GraspStroke(
            GraspStrokeConfig(over_m=cfg.grasp_over_m, high_m=cfg.grasp_high_m)
        )
        self._reported: set[int] = set()  # seqs of subgoals already reported
        self._episode_start_ns = 0
        self._queue: list[np.ndarray] = []
        self._step = 0
        self._gripper = 0.0
        for name in ("handled", "steps", "chunks", "holds", "subgoals", "reports"):
            self.counters[name] = 0

    def on_configure(self) -> None:
        if self.active:
            self.text("")  # load the text encoder now, not at the first control step

    # ---- inputs ---------------------------------------------------------------------------
    def on_instruction(self, msg: Instruction) -> None:
        try:
            with self._lock:
                cur = self.instruction
                if cur is not None and cur.text == msg.text and cur.episode_id == msg.episode_id:
                    if msg.phase != cur.phase:
                        self.instruction = msg  # the same task, now in another phase
                    return
                if cur is None or cur.episode_id != msg.episode_id or not msg.episode_id:
                    self._episode_start_ns = msg.stamp_ns
                    if self.policy is not None:
                        self.policy.reset(seed=self.config.seed)
                    self.scene.reset()
                    self.percepts.clear()
                    self._last_seen.clear()
                    self._last_top.clear()
                    self._last_half.clear()
                    self._last_bottom.clear()
                    self._last_points.clear()
                    self._grasp_obj = (-1, None)
                    self.grasp.reset()
                    self._grasp_yaw = (-1, None)
                    self._goal = (-1, None)
                    self.subgoal = None
                    self._tracking = False
                    self._open_first = 0
                    self._reported.clear()
                    self._step = 0
                    self._gripper = 0.0
                self.instruction = msg
                self._queue = []
        finally:
            self.count("handled")

    def on_percepts(self, msg: Percept) -> None:
        try:
            with self._lock:
                if msg.stamp_ns >= self._episode_start_ns:
                    self.percepts.append(msg)
                    self.scene.update(msg)
                    ext = msg.object_extents
                    for i, (label, c) in enumerate(zip(msg.object_labels, msg.object_centroids)):
                        if label in self._last_seen or len(self._last_seen) < 256:  # bounded
                            self._last_seen[label] = np.asarray(c, np.float32)
                            if i < len(ext) and float(ext[i][2]) > 0:  # no depth: extent 0
                                self._last_top[label] = float(c[2] + ext[i][2] / 2)
                                self._last_half[label] = float(max(ext[i][:2])) / 2
                                self._last_bottom[label] = float(c[2] - ext[i][2] / 2)
                    pts, pid = msg.points, msg.point_object_ids
                    if pts is not None and pid is not None and len(pid) == len(pts):
                        for oid, label in zip(msg.object_ids, msg.object_labels):
                            mine = np.asarray(pts)[np.asarray(pid) == oid]
                            if len(mine) >= 8 and label in self._last_seen:
                                self._last_points[label] = np.asarray(mine[:512, :2], np.float32)
        finally:
            self.count("handled")

    def on_plan(self, msg: PlanStep) -> None:
        try:
            with self._lock:
                if msg.skill in ("observe", "episode", "task", "decision"):
                    return
                cur = self.subgoal
                if msg.status == "running":
                    if msg.seq in self._reported:
                        return  # done here; the planner is settling / checking it
                    if cur is None or cur.seq != msg.seq or cur.skill != msg.skill:
                        self._queue = []  # a new subgoal: sample afresh
                        self.count("subgoals")
                        self._tracking = False
                        self._open_first = (
                            self.config.open_first_steps if msg.skill in ("pick", "lift") else 0
                        )
                        self.grasp.reset()
                        if self.policy is not None:
                            self.policy.begin_subgoal()  # its progress inputs restart
                    self.subgoal = msg
                elif cur is not None and msg.skill == cur.skill:
                    self.subgoal = None  # finished (succeeded / failed / aborted)
                    self._queue = []
        finally:
            self.count("handled")

    def on_robot_state(self, msg: RobotState) -> None:
        try:
            with self._lock:
                self.robot = msg
            if self.config.autotick:
                self.step()
        finally:
            self.count("handled")

    # ---- observation ----------------------------------------------------------------------
    def _task(self) -> str:
        cfg, ins = self.config, self.instruction
        task = cfg.task or (ins.task if ins is not None else "")
        names = self.policy.config.object_names
        if task not in names:
            raise ValueError(
                f"policy node: task {task!r} is not one the expert was trained on "
                f"({', '.join(sorted(names))}); set the node's task param"
            )
        return task

    def positions(self, window_s: float | None = None) -> dict[str, np.ndarray]:
        """label -> newest perceived centroid (3,) within ``window_s`` (default
        ``percept_window_s``)."""
        out: dict[str, np.ndarray] = {}
        if self.robot is None:
            return out
        window = self.config.percept_window_s if window_s is None else window_s
        oldest = self.robot.stamp_ns - window * 1e9
        for p in self.percepts:
            if p.stamp_ns < oldest:
                continue
            for label, c in zip(p.object_labels, p.object_centroids):
                out[label] = np.asarray(c, np.float32)
        return out

    def observation(self, goal: Any = None) -> dict[str, Any]:
        """The expert's observation (``state``: the tabletop layout) from the messages."""
        from engram.planners.policies.diffusion import features as F

        assert self.robot is not None
        task = self._task()
        names = self.policy.config.object_names[task]
        offsets = self.policy.config.object_offsets_m.get(task, {})
        pos = self.positions()
        slots = np.zeros((len(names), 5), np.float32)
        for i, label in enumerate(names):
            if label in pos:
                slots[i, 0] = 1.0
                # perceived centroid -> the position convention the state was trained on
                slots[i, 1:4] = pos[label] - np.asarray(offsets.get(label, (0, 0, 0)), np.float32)
                slots[i, 4] = float(label in self.scene.lit)
        time_s = max(0.0, (self.robot.stamp_ns - self._episode_start_ns) / 1e9)
        state = F.state_vector(robot_vector(self.robot), slots, time_s, goal)
        return {"state": state, "step": self._step, "stamp_ns": self.robot.stamp_ns}

    def conditioning(self) -> tuple[str, Any] | None:
        """(text, goal [x, y] | None) the expert is conditioned on now; None = hold."""
        from engram.planners.policies.diffusion import features as F

        assert self.instruction is not None
        if self.config.mode == "end_to_end":
            if self.instruction.phase == "show":
                return None  # watch (and remember) until the instruction says act
            return self.instruction.text, None
        sg = self.subgoal
        if sg is None or sg.skill not in MOTION_SKILLS or sg.seq in self._reported:
            return None
        label = str(sg.args.get("object", ""))
        # the target is fixed when the subgoal starts, as in training (a segment's target
        # is one point); later views of the object are partly hidden by the arm
        if self._goal[0] != sg.seq or self._goal[1] is None:
            seen = {**self._last_seen, **self.positions()}
            # perceived centroids -> the positions training's targets were (body origins)
            offsets = self.policy.config.object_offsets_m.get(self._task(), {})
            seen = {
                k: np.asarray(v, np.float32) - np.asarray(offsets.get(k, (0, 0, 0)), np.float32)
                for k, v in seen.items()
            }
            self._goal = (sg.seq, F.goal_from_plan(sg.args, seen))
        return F.subgoal_text(sg.skill, label), self._goal[1]

    # ---- acting ---------------------------------------------------------------------------
    def step(self) -> ActionChunk | None:
        """Publish the actions from now on; None before a robot state and an instruction."""
        cfg: PolicyNodeConfig = self.config
        report: PlanStep | None = None
        with self._lock:
            robot, ins = self.robot, self.instruction
            if robot is None or ins is None or not self.active:
                return None
            cond = self.conditioning()
            dt = self.policy.config.dt_s
            if cond is not None and self._opening_first(robot):
                # a pick after a failed grasp: open the empty fingers first (held still)
                obs = self.observation(cond[1])
                self.policy.observe(obs, instruction_embedding=self.text(cond[0]))
                self._queue = []
                self._gripper = 0.0
                actions = np.array([[0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
                self.count("holds")
            elif cond is None:
                # nothing to execute: hold still, still writing the step into memory
                obs = self.observation()
                self.policy.observe(obs, instruction_embedding=self.text(ins.text))
                self._queue = []
                actions = np.array([[0.0, 0.0, 0.0, 0.0, self._gripper]], np.float32)
                self.count("holds")
            else:
                text, goal = cond
                obs = self.observation(goal)
                emb = self.text(text)
                if not self._queue:
                    # end to end, a goal-frame expert embeds the subgoal it points at
                    chunk = self.policy.act(
                        obs,
                        instruction_embedding=emb,
                        raw=True,
                        text=self.text,
                        task_name=self._task(),
                    )
                    self._queue = list(chunk.actions[: cfg.execute_steps])
                    self.count("chunks")
                else:
                    self.policy.observe(obs, instruction_embedding=emb)
                # the rest of the chunk, tracked from the pose measured now (waypoints)
                actions = self.policy.to_controller(np.stack(self._queue), robot_vector(robot))
                if cfg.mode == "planner":
                    actions = self._gate_release(actions, robot_vector(robot))
                    actions = self._turn_to_grasp(actions, robot_vector(robot))
                    if cfg.grasp_stroke and self.subgoal is not None:
                        actions = self.grasp.apply(
                            actions,
                            robot_vector(robot),
                            self.subgoal.skill,
                            self._grasp_object(),
                            self._gripper,
                            finger_half_m=self.tracker.config.finger_half_length_m,
                        )
                    if cfg.press_stroke and self._tracking:
                        actions = self.stroke.apply(actions, robot_vector(robot), self.tracker)
                else:  # end to end: the pointed subgoal's guards
                    if cfg.press_stroke:
                        actions = self.policy.guard(actions, robot_vector(robot))
                    actions = self._turn_to_grasp(actions, robot_vector(robot))
                    pointed = self.policy.committed
                    if cfg.grasp_stroke and pointed is not None:
                        # as in planner mode (round 8 trace, end to end cups seed 805:
                        # the expert closed on the way down and the fingers sat on the
                        # rim, 2 cm above the grasp height, until the episode ran out)
                        actions = self.grasp.apply(
                            actions,
                            robot_vector(robot),
                            pointed[0],
                            self._grasp_object(),
                            self._gripper,
                            finger_half_m=self.tracker.config.finger_half_length_m,
                        )
                self._queue.pop(0)
                prev_grip = self._gripper
                self._gripper = float(actions[0, 4]) if actions.shape[1] > 4 else 0.0
                # (planner mode: only follows the subgoal's lowest point, never True)
                done = self.policy.executed(actions[0], robot_vector(robot))
                if cfg.mode == "planner":
                    report = self._track(actions[0], robot_vector(robot), prev_grip)
                    if report is not None:
                        # the step that finished the subgoal is not sent: it already
                        # starts the next motion (round 6 trace, button_sequence seed
                        # 100: a press judged done as the expert turned down again, and
                        # that 4 cm descent, still sent, pressed the button twice)
                        actions = np.array([[0.0, 0.0, 0.0, 0.0, self._gripper]], np.float32)
                elif done:
                    self._queue = []  # end to end: the pointed subgoal is done
                    self._grasp_obj = (-1, None)  # the next one fixes its own object
                    self.grasp.reset()
                    actions = np.array([[0.0, 0.0, 0.0, 0.0, self._gripper]], np.float32)
            self._step += 1
            out = ActionChunk(
                stamp_ns=robot.stamp_ns,
                robot=robot.robot,
                action_space=self.policy.config.action_space or "arm_ee_delta",
                actions=np.ascontiguousarray(actions, np.float32),
                dt_s=dt,
                plan_step_seq=self.subgoal.seq if self.subgoal is not None else 0,
            )
            self.count("steps")
        self.publish("actions", out)
        if report is not None:
            self.publish("subgoal_status", report)
        return out

    def _opening_first(self, robot: RobotState) -> bool:
        """Planner mode: this step belongs to a pick's opening preamble (see
        ``open_first_m``); counts it down."""
        cfg: PolicyNodeConfig = self.config
        if self._open_first <= 0 or cfg.mode != "planner" or cfg.open_first_m <= 0:
            return False
        width = float(robot.gripper_width_m)
        # only fingers commanded closed on nothing (a held object keeps its grasp)
        start = self._open_first == cfg.open_first_steps
        if start and not (self._gripper >= 0.5 and width < cfg.empty_grip_m):
            self._open_first = 0
            return False
        if width >= cfg.open_first_m and not start:
            self._open_first = 0
            return False
        self._open_first -= 1
        return True

    def _turn_to_grasp(self, actions: np.ndarray, robot: np.ndarray) -> np.ndarray:
        """A pick / lift's open gripper turns to the object's grasp yaw (see
        ``grasp_yaw``). Why: round 6 traces (cups seeds 104, 109): the expert came down
        at 45 degrees to a square cup, its fingers landed on the cup's top and it
        pushed there for 30-50 steps until the 90-step episode ran out."""
        from engram.planners.planning.skills.base import estimate_yaw

        cfg: PolicyNodeConfig = self.config
        if cfg.mode == "planner":
            sg = self.subgoal
            if sg is None:
                return actions
            skill, label, key = sg.skill, str(sg.args.get("object", "")), sg.seq
        else:  # end to end: the subgoal the expert's pointer committed to
            pointed = self.policy.committed
            if pointed is None:
                return actions
            skill, label, key = pointed[0], pointed[1], id(pointed)
        if not cfg.grasp_yaw or skill not in ("pick", "lift"):
            return actions
        if actions.shape[1] < 5 or float(actions[0, 4]) >= 0.5:
            return actions  # closing / holding: the grasp is made
        if self._grasp_yaw[0] != key:  # fixed when the subgoal starts (as its target)
            pts = self._last_points.get(label)
            yaw = None if pts is None else estimate_yaw(pts)
            self._grasp_yaw = (key, yaw)
        yaw = self._grasp_yaw[1]
        if yaw is None:
            return actions
        out = np.array(actions, np.float32, copy=True)
        out[:, 3] = turn_to_yaw(yaw, float(robot[3]))
        return out

    def _grasp_object(self) -> tuple[float, float | None, np.ndarray] | None:
        """The running pick / lift's object (planner mode: the subgoal's; end to end: the
        one the pointer committed to) as perceived when it began: (top z, bottom z,
        centre xy); None when not seen with depth."""
        if self.config.mode == "planner":
            sg = self.subgoal
            if sg is None:
                return None
            key, label = sg.seq, str(sg.args.get("object", ""))
        else:
            pointed = self.policy.committed
            if pointed is None:
                return None
            key, label = 0, pointed[1]  # (forgotten when the pointed subgoal ends)
        if self._grasp_obj[0] != key:  # fixed at the start: the arm hides it later
            top, c = self._last_top.get(label), self._last_seen.get(label)
            obj = None
            if top is not None and c is not None:
                obj = (top, self._last_bottom.get(label), np.asarray(c[:2], np.float64))
            self._grasp_obj = (key, obj)
        return self._grasp_obj[1]

    def _gate_release(self, actions: np.ndarray, robot: np.ndarray) -> np.ndarray:
        """A place's opening command waits until the tool is over the target (see
        ``place_open_within_m``): the held object's gripper stays closed until then."""
        cfg: PolicyNodeConfig = self.config
        sg, goal = self.subgoal, self._goal[1]
        if (
            cfg.place_open_within_m <= 0
            or sg is None
            or sg.skill != "place"
            or goal is None
            or actions.shape[1] < 5
            or self._gripper < 0.5  # not holding: nothing to keep
        ):
            return actions
        far = float(np.linalg.norm(robot[:2] - np.asarray(goal, np.float64)[:2]))
        if far <= cfg.place_open_within_m:
            return actions
        out = np.array(actions, np.float32, copy=True)
        out[:, 4] = np.maximum(out[:, 4], 1.0)
        return out

    def _track(self, action: np.ndarray, robot: np.ndarray, prev_grip: float) -> PlanStep | None:
        """Follow the running subgoal (``prev_grip``: the gripper command before this
        step); its report when this step finished it."""
        sg = self.subgoal
        assert sg is not None
        if not self._tracking:
            # a press is judged by its depth below the cap's perceived top (the skills
            # executor's critic reads the same): the cap when perceived apart, else the button
            label = str(sg.args.get("object", ""))
            key = f"{label}_cap" if f"{label}_cap" in self._last_top else label
            top, cap = self._last_top.get(key), self._last_seen.get(key)
            self.tracker.start(
                sg.skill,
                robot,
                gripper=prev_grip,
                cap_top_z=top,
                cap_xy=None if cap is None else cap[:2],
                cap_over_m=max(0.012, self._last_half.get(key, 0.0) + 0.005),
            )
            self._tracking = True
            self.stroke.reset()
        verdict = self.tracker.update(action, robot)
        if verdict is None:
            return None
        status, reason = verdict
        self._reported.add(sg.seq)
        self._tracking = False
        self._queue = []
        self.count("reports")
        return PlanStep(
            stamp_ns=self.robot.stamp_ns if self.robot is not None else 0,
            skill=sg.skill,
            args={**sg.args, "subgoal_seq": sg.seq},
            status=status,
            attempt=sg.attempt,
            reason=reason,
            episode_id=sg.episode_id,
        )

    def health(self) -> dict[str, Any]:
        sg = self.subgoal
        return {
            "info": {
                "mode": self.config.mode,
                "phase": self.instruction.phase if self.instruction is not None else "",
                "use_memory": self.config.use_memory,
                "checkpoint": self.config.checkpoint,
                "subgoal": sg.skill if sg is not None else "",
                "pointed": (
                    " ".join(self.policy.pointed[:3])
                    if self.policy is not None and self.policy.pointed
                    else ""
                ),
            }
        }
