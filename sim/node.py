"""``SimNode``: a MuJoCo task episode on the bus.

Outputs (default topics):

- ``/frames`` ``Frame``: RGB, depth (m), segmentation (body ids, -1 = static world),
  intrinsics and ``world_from_camera`` (OpenCV convention) at ``camera_rate_hz``
  of simulation time; ``labels`` maps ids to body names.
- ``/robot_state`` ``RobotState`` at ``state_rate_hz``.
- ``/audio`` ``AudioChunk``: scene audio (16 kHz mono, one chunk per control step,
  ``world_from_mic`` = where the robot's microphone was) for tasks that have it.
- ``/instruction`` ``Instruction`` at the start of each episode and whenever the
  task's instruction changes (e.g. the question after a tour), with the task's phase
  (``show`` / ``act``); again, same text, when the show phase ends.
- ``/sim/executed_actions`` ``ActionChunk`` (H = 1): what the robot actually did
  each control step (for recording demonstrations from the bus).

Input ``/actions`` ``ActionChunk``: ``action_space`` must be the task's (see
``engram.sim.robots.ACTION_SPACES``) and ``actions`` (H, A) with the matching A; other
chunks are rejected and counted, never fatal. A chunk's action i is executed
at ``t_received + i * dt_s`` (sampled at each control step); a newer chunk
replaces the current one. The first accepted chunk of an episode hands control
to its sender for the rest of that episode. The watchdog stops the robot
(``stop_action``: arm holds its pose, base stops) when the current chunk is
used up or no chunk arrived for ``watchdog_timeout_s`` (so set it longer than
the sender's chunk period), and keeps it stopped until the next chunk.

Until then ``driver`` acts: ``expert`` (the scripted expert, privileged state),
``reactive`` (the memoryless baseline), or ``stop``/``actions`` (stand still).

Clocks: ``lockstep`` runs as fast as the CPU allows and stamps messages with
simulation time (deterministic for a given seed when driven by the expert;
``wait_for_actions_s`` makes it wait for an external controller's next chunk);
``realtime`` paces steps to the wall clock and stamps with ``time.time_ns()``.
The watchdog measures time on the same clock.

External pacing (``engram eval``'s lockstep harness, ``planners/evaluation/pipeline.py``):
``SimNode(config, pace=fn, on_episode_end=fn)``, or ``set_hooks(pace=fn, on_episode_end=fn)``
before ``start``. The simulation thread calls ``pace()`` at every control step, after
that step's sensor messages are published and before its action is chosen, so a
harness can let the rest of the graph catch up and have its controller publish the
step's chunk (``wait_for_chunk`` waits for it); ``on_episode_end(report, env)`` runs
when an episode ends, before the next one starts. An exception in either ends the run (``error``). ``request_stop()`` ends
the run from any thread, these callbacks included; ``stamp_ns()`` is the node's
clock as message stamps carry it. ``hide_show_frames`` keeps the show phase off the
camera topic.

MuJoCo is imported only when the node starts (in its simulation thread, which
also owns the GL context).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.messages import ActionChunk, AudioChunk, Frame, Instruction, RobotState
from engram.runtime.node import Input, Node, NodeConfig, Output
from engram.sim.robots import ROBOT_PART_LABELS

__all__ = ["SimNode", "SimNodeConfig"]

log = logging.getLogger(__name__)

CLOCKS = ("lockstep", "realtime")
DRIVERS = ("expert", "reactive", "stop", "actions")
PERCEPTION_MODES = ("ground_truth", "camera")


@dataclass
class SimNodeConfig(NodeConfig):
    """Settings of ``SimNode``."""

    task: str = "cups"  # a registered task (registry.known("task")) or "model"
    seed: int = 0  # seed of the first episode; episode i uses seed + i
    episodes: int = 1  # episodes to run; 0 = run new episodes until stopped
    model_path: str = ""  # for task "model": the MJCF file to simulate
    camera: str = ""  # camera to publish; "" = the task's default
    camera_rate_hz: float = 10.0  # Frame rate in simulation time; 0 = no frames
    state_rate_hz: float = 10.0  # RobotState rate in simulation time; 0 = none
    audio: bool = True  # publish AudioChunk when the task has scene audio
    width_px: int = 640  # Frame width
    height_px: int = 480  # Frame height
    shadows: bool = False  # shadow mapping (about 5x slower rendering)
    physics_dt_s: float = 0.0  # MuJoCo timestep; 0 = the scene's own
    control_dt_s: float = 0.1  # one control step (actions are sampled at this period)
    clock: str = "lockstep"  # "lockstep" (fast, sim-time stamps) | "realtime" (wall clock)
    watchdog_timeout_s: float = 1.0  # stop the robot when no chunk arrived for this long
    wait_for_actions_s: float = 0.0  # lockstep: wait this long (wall) for a chunk when idle
    driver: str = "expert"  # acts until a chunk arrives: expert | reactive | stop | actions
    max_steps: int = 0  # steps per episode; 0 = the task's default
    ground_truth_dir: str = ""  # write <task>_<seed>.json ground truth per episode; "" = no
    hide_show_frames: bool = False  # publish no Frame during the task's show phase
    # "ground_truth": Frames carry the simulator's segmentation and body names (identity and
    # labels for free); "camera": RGB-D and the camera pose only, as a real camera gives, so
    # perception must find, track and name objects itself (ground truth stays with the scorer)
    perception: str = "ground_truth"
    # camera mode: drop the depth pixels on the robot's own body (its geometry posed by the
    # joint state, as ROS's robot_self_filter does; engram.sim.self_filter)
    self_filter: bool = True


class SimNode(Node[SimNodeConfig]):
    """Runs task episodes and publishes sensors; executes ``ActionChunk``s. See module doc."""

    Config = SimNodeConfig
    INPUTS = {"actions": Input("ActionChunk", policy="latest")}
    OUTPUTS = {
        "frames": Output("Frame"),
        "robot_state": Output("RobotState"),
        "audio": Output("AudioChunk"),
        "instruction": Output("Instruction"),
        "executed_actions": Output("ActionChunk", topic="/sim/executed_actions"),
    }

    def __init__(
        self,
        config: SimNodeConfig | None = None,
        *,
        pace: Callable[[], None] | None = None,
        on_episode_end: Callable[[dict[str, Any], Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``pace()``: called in the simulation thread before each step's action is
        chosen; ``on_episode_end(report, env)``: after each episode (see module doc).
        ``kwargs``: ``Node``'s (name, bus, topics)."""
        super().__init__(config, **kwargs)
        cfg = self.config
        if cfg.clock not in CLOCKS:
            raise ValueError(f"SimNodeConfig.clock must be one of {CLOCKS}, got {cfg.clock!r}")
        if cfg.driver not in DRIVERS:
            raise ValueError(f"SimNodeConfig.driver must be one of {DRIVERS}, got {cfg.driver!r}")
        if cfg.perception not in PERCEPTION_MODES:
            raise ValueError(
                f"SimNodeConfig.perception must be one of {PERCEPTION_MODES}, "
                f"got {cfg.perception!r}"
            )
        for name in ("camera_rate_hz", "state_rate_hz", "watchdog_timeout_s", "wait_for_actions_s"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"SimNodeConfig.{name} must be >= 0, got {getattr(cfg, name)}")
        if cfg.episodes < 0:
            raise ValueError(f"SimNodeConfig.episodes must be >= 0, got {cfg.episodes}")
        self._chunk_lock = threading.Lock()
        self._chunk_cond = threading.Condition(self._chunk_lock)
        self._pending: ActionChunk | None = None
        self._pace = pace
        self._on_episode_end = on_episode_end
        self._sim_offset_s = 0.0  # simulation time of earlier episodes (monotonic stamps)
        self.done = threading.Event()
        self.reports: list[dict[str, Any]] = []
        self.error: str = ""
        self.env = None
        self._status: dict[str, Any] = {"task": cfg.task, "episode": 0, "phase": "", "step": 0}

    def set_hooks(
        self,
        *,
        pace: Callable[[], None] | None = None,
        on_episode_end: Callable[[dict[str, Any], Any], None] | None = None,
    ) -> None:
        """Set ``pace`` and ``on_episode_end`` (see the module doc) on a node built from a
        launch graph, before ``start``."""
        self._pace = pace
        self._on_episode_end = on_episode_end

    # ---- bus input ------------------------------------------------------------------------
    def on_actions(self, msg: ActionChunk) -> None:
        with self._chunk_cond:
            self._pending = msg
            self._chunk_cond.notify_all()

    # ---- lifecycle ---------------------------------------------------------------------------
    def on_start(self) -> None:
        self.done.clear()
        self._spawn(f"{self.name}:sim", self._run)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until all episodes ran (True) or ``timeout_s`` passed (False)."""
        return self.done.wait(timeout_s)

    def status(self) -> dict[str, Any]:
        """Task, episode index, seed, phase and step of the running episode."""
        return dict(self._status)

    def request_stop(self) -> None:
        """End the run: no further step or episode. Returns at once, so unlike ``stop()``
        it may be called from the simulation thread (``pace``, ``on_episode_end``)."""
        with self._chunk_cond:
            self._stop.set()
            self._chunk_cond.notify_all()

    def wait_for_chunk(self, timeout_s: float) -> bool:
        """Block until a received ``ActionChunk`` waits to be executed (True), or
        ``timeout_s`` (wall) passed or the node is stopping (False). Does not take it."""
        deadline = time.monotonic() + timeout_s
        with self._chunk_cond:
            # short slices so that stop() is not held up by a long wait
            while self._pending is None and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._chunk_cond.wait(min(left, 0.05))
            return self._pending is not None

    def stamp_ns(self) -> int:
        """The node's clock as its messages are stamped: lockstep, simulation time in ns
        since the first episode began (continuing across episodes); realtime, wall-clock
        ``time.time_ns()``."""
        env = self.env
        if self.config.clock == "lockstep":
            return round((self._sim_offset_s + (env.t if env is not None else 0.0)) * 1e9)
        return time.time_ns()

    def health(self) -> dict[str, Any]:
        return {"info": self.status()}

    # ---- simulation thread ---------------------------------------------------------------------
    def _make_env(self):
        from engram.sim.envs import make

        cfg = self.config
        kwargs: dict[str, Any] = {
            "control_dt_s": cfg.control_dt_s,
            "width_px": cfg.width_px,
            "height_px": cfg.height_px,
            "shadows": cfg.shadows,
        }
        if cfg.physics_dt_s > 0:
            kwargs["physics_dt_s"] = cfg.physics_dt_s
        if cfg.camera:
            kwargs["camera"] = cfg.camera
        if cfg.max_steps > 0:
            kwargs["max_steps"] = cfg.max_steps
        if cfg.task == "model":
            kwargs["model_path"] = cfg.model_path
        return make(cfg.task, **kwargs)

    def _run(self) -> None:
        try:
            self.env = env = self._make_env()
        except Exception as exc:  # a bad config must not kill the process
            self.error = f"cannot create task {self.config.task!r}: {exc}"
            log.error("node %s: %s", self.name, self.error)
            self.count("handler_errors")
            self.done.set()
            return
        self._sim_offset_s = 0.0
        self._wall_start = time.monotonic()
        try:
            episode = 0
            while not self._stop.is_set():
                if self.config.episodes and episode >= self.config.episodes:
                    break
                report = self._episode(env, self.config.seed + episode, episode)
                if report is None:  # stopped
                    break
                self.reports.append(report)
                episode += 1
        except Exception as exc:
            self.error = f"simulation error: {exc}"
            self.count("handler_errors")
            log.exception("node %s: simulation error", self.name)
        finally:
            env.close()
            self.done.set()

    def _clock_s(self, env) -> float:
        """Seconds on the node's clock (sim time across episodes, or wall time)."""
        if self.config.clock == "lockstep":
            return self._sim_offset_s + env.t
        return time.monotonic() - self._wall_start

    def _driver(self):
        from engram.runtime import registry

        name = "stop" if self.config.driver == "actions" else self.config.driver
        return registry.get("policy", name)(seed=self.config.seed)

    def _episode(self, env, seed: int, index: int) -> dict[str, Any] | None:
        cfg = self.config
        obs, info = env.reset(seed=seed)
        policy = self._driver()
        policy.reset(env)
        space = env.controller.space
        robot = env.robot_state()["robot"]
        external = False  # an accepted chunk took control this episode
        chunk: ActionChunk | None = None
        chunk_t0 = 0.0
        last_chunk_clock = -np.inf
        if index > 0:
            with self._chunk_cond:
                self._pending = None  # chunks from a previous episode do not carry over
        episode_id = f"{env.task_name}-{seed}"
        instruction = phase = ""
        next_frame = next_state = 0.0
        t_begin = time.monotonic()
        steps = watchdog_stops = rejected = 0
        self._status.update(episode=index, seed=seed, phase=info["phase"], step=0)
        while True:
            if self._stop.is_set():
                return None
            new_text = info["instruction"] != instruction
            if new_text or (info["phase"] != phase and info["instruction"]):
                # the text, and again (same text and episode) when the show phase ends:
                # a policy acting end to end watches until the phase says "act" (no
                # text yet: nothing to announce, as before the phase was sent)
                instruction, phase = info["instruction"], info["phase"]
                self.publish(
                    "instruction",
                    Instruction(
                        stamp_ns=self.stamp_ns(),
                        text=instruction,
                        task=env.task_name,
                        episode_id=episode_id,
                        phase=phase if phase in Instruction.PHASES else "",
                    ),
                )
            now = env.t
            if cfg.state_rate_hz > 0 and now >= next_state - 1e-9:
                self.publish("robot_state", self._robot_state(env))
                next_state = now + 1.0 / cfg.state_rate_hz
            if cfg.camera_rate_hz > 0 and env.camera and now >= next_frame - 1e-9:
                if cfg.hide_show_frames and env.phase == "show":
                    self.count("frames_hidden")  # not even rendered
                else:
                    self.publish("frames", self._frame(env))
                    self.count("frames")
                next_frame = now + 1.0 / cfg.camera_rate_hz
            # ---- choose the action ------------------------------------------------------
            if self._pace is not None:
                self._pace()
            clock = self._clock_s(env)
            waiting = (external or cfg.driver == "actions") and (
                chunk is None or self._index(chunk, chunk_t0, clock) >= chunk.actions.shape[0]
            )
            incoming = self._take_chunk(wait=waiting)
            if incoming is not None:
                problem = self._check_chunk(incoming, space)
                if problem:
                    rejected += 1
                    self.count("chunks_rejected")
                    log.warning("node %s: rejected ActionChunk: %s", self.name, problem)
                else:
                    chunk, chunk_t0, last_chunk_clock = incoming, clock, clock
                    external = True
                    self.count("chunks_accepted")
            if external:
                action = None
                if chunk is not None and clock - last_chunk_clock <= cfg.watchdog_timeout_s + 1e-9:
                    i = self._index(chunk, chunk_t0, clock)
                    if i < chunk.actions.shape[0]:
                        action = chunk.actions[i]
                if action is None:
                    action = env.stop_action()
                    watchdog_stops += 1
                    self.count("watchdog_stops")
            else:
                action = policy.act(obs, info).actions[0]
            # ---- step ----------------------------------------------------------------------
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            self._status.update(phase=info["phase"], step=steps)
            self.publish(
                "executed_actions",
                ActionChunk(
                    stamp_ns=self.stamp_ns(),
                    robot=robot,
                    action_space=space.name,
                    actions=np.asarray(info["executed_action"], np.float32)[None],
                    dt_s=cfg.control_dt_s,
                ),
            )
            if cfg.audio and "audio" in obs:
                self.publish("audio", self._audio(env, obs["audio"]))
            if cfg.clock == "realtime":
                delay = (t_begin + env.t) - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return None
            if terminated or truncated:
                break
        if cfg.state_rate_hz > 0:
            self.publish("robot_state", self._robot_state(env))
        gt_path = ""
        if cfg.ground_truth_dir:
            path = Path(cfg.ground_truth_dir) / f"{env.task_name}_{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(env.ground_truth()))
            gt_path = str(path)
        report = {
            "task": env.task_name,
            "seed": seed,
            "success": bool(info["success"]),
            "truncated": bool(truncated),
            "steps": steps,
            "sim_time_s": round(env.t, 3),
            "wall_time_s": round(time.monotonic() - t_begin, 3),
            "decision_time_s": info["decision_time_s"],
            "instruction": instruction,
            "external_control": external,
            "watchdog_stops": watchdog_stops,
            "chunks_rejected": rejected,
            "ground_truth": gt_path,
        }
        if self._on_episode_end is not None:
            self._on_episode_end(report, env)
        self._sim_offset_s += env.t
        return report

    @staticmethod
    def _index(chunk: ActionChunk, t0: float, clock: float) -> int:
        """Index of the chunk's action due at ``clock`` (chunk accepted at ``t0``)."""
        return int(np.floor((clock - t0) / chunk.dt_s + 1e-6))

    def _take_chunk(self, *, wait: bool) -> ActionChunk | None:
        """The newest pending chunk. In lockstep with ``wait_for_actions_s`` > 0, when
        ``wait`` (an external controller is due to send one), wait for it first."""
        cfg = self.config
        if wait and cfg.clock == "lockstep" and cfg.wait_for_actions_s > 0:
            self.wait_for_chunk(cfg.wait_for_actions_s)
        with self._chunk_cond:
            msg, self._pending = self._pending, None
        return msg

    @staticmethod
    def _check_chunk(chunk: ActionChunk, space) -> str:
        if chunk.action_space and chunk.action_space != space.name:
            return f"action_space {chunk.action_space!r}, this task takes {space.name!r}"
        if chunk.actions.ndim != 2 or chunk.actions.shape[1] != space.dim:
            return (
                f"actions shape {chunk.actions.shape}, expected (H, {space.dim}) "
                f"for {space.name} ({', '.join(space.names)})"
            )
        if chunk.actions.shape[0] == 0:
            return "empty chunk (H = 0)"
        return ""

    # ---- messages ------------------------------------------------------------------------------
    def _robot_state(self, env) -> RobotState:
        fields = env.robot_state()
        return RobotState(stamp_ns=self.stamp_ns(), **fields)

    def _frame(self, env) -> Frame:
        f = env.render_frame()
        if self.config.perception == "camera":
            from engram.sim.self_filter import self_filter_depth

            return Frame(
                stamp_ns=self.stamp_ns(),
                camera=f.camera,
                rgb=f.rgb,
                # the robot's self-filter (its own geometry posed by qpos): no depth on it
                depth=self_filter_depth(env, f) if self.config.self_filter else f.depth,
                intrinsics=f.intrinsics,
                world_from_camera=f.world_from_camera,
            )
        return Frame(
            stamp_ns=self.stamp_ns(),
            camera=f.camera,
            rgb=f.rgb,
            depth=f.depth,
            segmentation=f.segmentation,
            intrinsics=f.intrinsics,
            world_from_camera=f.world_from_camera,
            labels=f.labels,
            robot_labels=sorted(ROBOT_PART_LABELS & set(f.labels.values())),
        )

    def _audio(self, env, pcm: np.ndarray) -> AudioChunk:
        dt_ns = round(env.config.control_dt_s * 1e9)
        return AudioChunk(
            stamp_ns=max(0, self.stamp_ns() - dt_ns),
            source=f"sim/{env.task_name}",
            pcm=np.asarray(pcm, np.float32),
            sample_rate_hz=16000,
            world_from_mic=env.world_from_mic(),
        )
