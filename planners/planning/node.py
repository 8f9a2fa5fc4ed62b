"""``PlannerNode``: the closed-loop planner on the bus (node type ``planner``).

Ports (default topics)::

    inputs   instruction  Instruction  queue(8)   a new text or episode restarts planning
             percepts     Percept      queue(16)  the current view (objects, thumbnail)
             robot_state  RobotState   latest     proprioception; with autotick, a tick
    outputs  actions      ActionChunk             (H, A) for the robot (sim or ROS 2)
             plan         PlanStep                every subgoal status change, each
                                                  decision, each observation (-> memory)
    request  /memory/query  MemoryQuery -> Recall  (the memory node's service)

Each ``step()`` builds a ``WorldView`` from the latest percepts (within
``percept_window_s``) and robot state, and publishes what the robot should do
from now on: the rest of the current chunk, or, when it is used up, the next
chunk from the ``ClosedLoop`` (plan -> act -> critic -> replan). Publishing the
remaining actions at every step is a receding horizon: a robot that executes
only the newest chunk (``engram.sim.node.SimNode``) does the same thing whether it
waits for a chunk every step or not.

``autotick`` (default) calls ``step()`` for every ``RobotState`` as soon as a
percept at most ``fresh_percept_s`` older than it has arrived (or after
``percept_wait_s`` without one), so decisions use the current view; the
evaluation harness turns it off and calls ``step()`` itself once the whole
pipeline has settled, so that runs are reproducible.

While a task runs, lamp-like objects that light up in the percepts (see
``engram.planners.planning.skills.scene.SceneMonitor``) are reported as ``observe`` plan steps (skill
``observe``, args ``{"event": "light_on", "object": label}``), so the order of
the lights is in episodic memory when the planner asks for it.

``executor: expert`` hands the subgoals to the diffusion action expert: the node
publishes every grounded subgoal (skill + target from memory) on ``/plan`` as before
but no ActionChunks; the policy node (``engram.planners.policies.node``, node type
``policy``) executes the running motion subgoal (``loop.MOTION_SKILLS``) and decides
when it is done: it reports ``succeeded`` / ``failed`` on ``/subgoal_status`` (a
``PlanStep`` naming the running step's seq), and only then does this node settle, let
its critic check the outcome and go on. No skill controller runs for those subgoals.

``use_memory: false`` is the ablation: no recall (the planner sees the current
view only) and no lifelong learning; plan steps are still published.
``planner: llm`` with ``reasoner_url`` uses ``engram.planners.planning.reasoner.LLMPlanner``
(an OpenAI-compatible endpoint) and falls back to the rule-based planner.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from engram.planners.planning.critic import Critic, LoopConfig, LoopDetector
from engram.planners.planning.grounding import Grounding
from engram.planners.planning.loop import MOTION_SKILLS, ClosedLoop
from engram.planners.planning.memory_client import MemoryClient
from engram.planners.planning.planner import Planner
from engram.planners.planning.skills.base import SkillConfig, WorldView
from engram.planners.planning.skills.scene import SceneMonitor
from engram.runtime import registry
from engram.runtime.messages import (
    ActionChunk,
    Instruction,
    MemoryQuery,
    Percept,
    PlanStep,
    RobotState,
)
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = ["EXECUTORS", "PlannerNode", "PlannerNodeConfig", "make_planner"]

#: who turns the planner's subgoals into ActionChunks (``PlannerNodeConfig.executor``)
EXECUTORS = ("skills", "expert")

log = logging.getLogger(__name__)


@dataclass
class PlannerNodeConfig(NodeConfig):
    """Settings of ``PlannerNode``."""

    planner: str = "rule"  # a "planner" registry name: "rule" (default, no LLM) or "llm"
    use_memory: bool = True  # False: no recall, no lifelong learning (the ablation)
    memory_service: str = "/memory/query"  # topic of the memory node's query service
    query_timeout_s: float = 5.0  # a recall not answered in this time counts as empty
    autotick: bool = True  # step() on every RobotState (off: the caller steps)
    fresh_percept_s: float = 0.15  # autotick waits for a percept this close to the state ...
    percept_wait_s: float = 1.0  # ... for at most this long (wall), then steps anyway
    chunk_steps: int = 4  # most actions per chunk (H)
    hold_steps: int = 2  # length of a hold chunk (nothing to do / watching)
    settle_steps: int = 2  # hold after each subgoal before the critic looks
    dt_s: float = 0.1  # seconds per action (the robot's control period)
    percept_window_s: float = 1.0  # objects of percepts this old still count as in view
    percept_buffer: int = 16  # percepts kept (bounded)
    seed: int = 0  # seeds guesses (reproducible runs)
    max_retries: int = 2  # failures of one subgoal retried as they are
    max_subgoals: int = 40  # subgoal executions per task before giving up
    reasoner_url: str = ""  # planner "llm": base URL of an OpenAI-compatible server
    reasoner_model: str = "local"  # planner "llm": model name sent to the server
    reasoner_timeout_s: float = 30.0  # planner "llm": HTTP timeout
    # who moves the robot: "skills" (this node's skill controllers publish the chunks)
    # or "expert" (a policy node executes the grounded motion subgoals published on
    # /plan and reports on /subgoal_status when each is done)
    executor: str = "skills"
    # labels name kinds, not objects (camera mode: three cups are all "cup"): the planner
    # keys each perceived object "label#id" (the tracker's id) instead of by its label
    key_objects_by_id: bool = False


def make_planner(cfg: PlannerNodeConfig) -> Planner:
    """The planner ``cfg.planner`` names (registered under kind ``planner``)."""
    known = registry.known("planner")
    if cfg.planner not in known:
        raise ValueError(f"PlannerNodeConfig.planner: unknown {cfg.planner!r}; known: {known}")
    return registry.get("planner", cfg.planner).from_config(cfg)


class PlannerNode(Node[PlannerNodeConfig]):
    """Instruction + percepts + robot state in; action chunks and plan steps out."""

    INPUTS: ClassVar[dict[str, Input]] = {
        "instruction": Input("Instruction", policy="queue(8)"),
        "percepts": Input("Percept", policy="queue(16)"),
        "robot_state": Input("RobotState", policy="latest"),
        # executor: expert: the policy node's verdicts on the subgoals it executes
        "subgoal_status": Input("PlanStep", policy="queue(16)"),
    }
    OUTPUTS: ClassVar[dict[str, Output]] = {
        "actions": Output("ActionChunk"),
        "plan": Output("PlanStep"),
    }
    Config: ClassVar[type] = PlannerNodeConfig

    def __init__(self, config: PlannerNodeConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg: PlannerNodeConfig = self.config
        if cfg.chunk_steps < 1 or cfg.hold_steps < 1 or cfg.dt_s <= 0:
            raise ValueError("PlannerNodeConfig: chunk_steps, hold_steps >= 1 and dt_s > 0")
        if cfg.executor not in EXECUTORS:
            raise ValueError(
                f"PlannerNodeConfig.executor must be one of {EXECUTORS}, got {cfg.executor!r}"
            )
        self._lock = threading.RLock()
        self.percepts: collections.deque[Percept] = collections.deque(maxlen=cfg.percept_buffer)
        self.robot: RobotState | None = None
        self.instruction: Instruction | None = None
        self.scene = SceneMonitor(key_by_id=cfg.key_objects_by_id)
        self.memory = MemoryClient(self._ask, enabled=cfg.use_memory)
        self.grounding = Grounding(self.memory)
        self.loop = ClosedLoop(
            make_planner(cfg),
            grounding=self.grounding,
            critic=Critic(),
            loop=LoopDetector(
                LoopConfig(max_retries=cfg.max_retries, max_subgoals=cfg.max_subgoals)
            ),
            skill_config=SkillConfig(chunk_steps=cfg.chunk_steps, dt_s=cfg.dt_s),
            on_step=self._publish_step,
            seed=cfg.seed,
            settle_steps=cfg.settle_steps,
            hold_steps=cfg.hold_steps,
            external_skills=MOTION_SKILLS if cfg.executor == "expert" else (),
        )
        self._chunk: np.ndarray | None = None
        self._chunk_stamp_ns = 0
        self._episode_start_ns = 0
        self._tick_pending_since: float | None = None  # autotick waiting for a percept
        for name in ("handled", "steps", "chunks", "observations", "plans", "tasks_failed"):
            self.counters[name] = 0

    # ---- memory ---------------------------------------------------------------------------
    def _ask(self, query: MemoryQuery) -> Any:
        return self.bus.request(self.config.memory_service, query, self.config.query_timeout_s)

    def _publish_step(self, step: PlanStep) -> None:
        self.publish("plan", step)
        if step.skill == "task" and step.status == "aborted":
            self.count("tasks_failed")

    # ---- inputs ---------------------------------------------------------------------------
    def on_instruction(self, msg: Instruction) -> None:
        try:
            with self._lock:
                cur = self.instruction
                if cur is not None and cur.text == msg.text and cur.episode_id == msg.episode_id:
                    return
                if cur is None or cur.episode_id != msg.episode_id or not msg.episode_id:
                    self._episode_start_ns = msg.stamp_ns
                    self.scene.reset()
                    self.percepts.clear()
                    self._chunk = None
                self.instruction = msg
                self.loop.start(msg, episode_start_ns=self._episode_start_ns)
                self._chunk = None
                self.count("plans")
        finally:
            self.count("handled")

    def on_percepts(self, msg: Percept) -> None:
        try:
            with self._lock:
                if msg.stamp_ns < self._episode_start_ns:
                    return  # from before this episode
                self.percepts.append(msg)
                events = self.scene.update(msg)
                ins = self.instruction
                due = self._tick_pending_since is not None and self._fresh()
            for kind, label, stamp in events:
                if kind != "light_on" or ins is None:
                    continue
                self.publish(
                    "plan",
                    PlanStep(
                        stamp_ns=stamp,
                        skill="observe",
                        args={"event": kind, "object": label},
                        status="succeeded",
                        reason=f"{kind} {label}",
                        episode_id=ins.episode_id,
                    ),
                )
                self.count("observations")
            if due:
                self._autostep()
        finally:
            self.count("handled")

    def on_subgoal_status(self, msg: PlanStep) -> None:
        try:
            with self._lock:
                if not self.loop.report(msg):
                    log.debug("subgoal status for seq %s ignored", msg.args.get("subgoal_seq"))
        finally:
            self.count("handled")

    def on_robot_state(self, msg: RobotState) -> None:
        try:
            with self._lock:
                self.robot = msg
                if self.config.autotick:
                    self._tick_pending_since = time.monotonic()
                    due = self._fresh()
            if self.config.autotick and due:
                self._autostep()
        finally:
            self.count("handled")

    def _fresh(self) -> bool:
        """Is the newest percept recent enough for the newest robot state?"""
        if self.robot is None:
            return False
        newest = self.percepts[-1].stamp_ns if self.percepts else -1
        return newest >= self.robot.stamp_ns - self.config.fresh_percept_s * 1e9

    def _autostep(self) -> None:
        with self._lock:
            if self._tick_pending_since is None:
                return
            self._tick_pending_since = None
        self.step()

    def _waited_too_long(self) -> None:
        """Timer: step without a fresh percept when perception is slow or skipped frames."""
        since = self._tick_pending_since
        if since is not None and time.monotonic() - since >= self.config.percept_wait_s:
            self._autostep()

    def on_configure(self) -> None:
        if self.config.autotick:
            self.add_timer(20.0, self._waited_too_long)

    # ---- acting ---------------------------------------------------------------------------
    def world(self) -> WorldView:
        with self._lock:
            return WorldView.from_percepts(
                list(self.percepts),
                self.robot,
                max_age_s=self.config.percept_window_s,
                scene=self.scene,
                key_by_id=self.config.key_objects_by_id,
            )

    def step(self) -> ActionChunk | None:
        """Publish the actions from now on (see module doc); None before any robot state
        or instruction."""
        cfg: PlannerNodeConfig = self.config
        with self._lock:
            robot = self.robot
            if robot is None or self.instruction is None:
                return None
            now = robot.stamp_ns
            actions = None
            if self._chunk is not None:
                used = round((now - self._chunk_stamp_ns) / (cfg.dt_s * 1e9))
                if 0 <= used < len(self._chunk):
                    actions = self._chunk[used:]
            if actions is None:
                world = self.world()
                actions = self.loop.tick(world)
                self._chunk, self._chunk_stamp_ns = actions, now
                self.count("chunks")
            space = "arm_ee_delta" if robot.world_from_ee is not None else "base_velocity"
            chunk = ActionChunk(
                stamp_ns=now,
                robot=robot.robot,
                action_space=space,
                actions=np.ascontiguousarray(actions, np.float32),
                dt_s=cfg.dt_s,
                plan_step_seq=self.loop.current_seq,
            )
            self.count("steps")
        if cfg.executor == "skills":
            self.publish("actions", chunk)
        return chunk

    # ---- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        loop = self.loop
        return {
            "counters": {
                "memory_queries": self.memory.queries,
                "memory_errors": self.memory.errors,
                "critic_failures": loop.critic.failures,
                "loop_interventions": len(loop.loop.fired),
            },
            "info": {
                "status": loop.status,
                "reason": loop.reason,
                "subgoal": loop.current.skill if loop.current is not None else "",
                "task": loop.plan.task if loop.plan is not None else "",
                "use_memory": self.config.use_memory,
            },
        }
