"""Gymnasium environments over the MuJoCo scenes, and the task registry.

Every task is a ``SimEnv`` subclass (a ``gymnasium.Env``):
``reset(*, seed, options) -> (obs, info)``, ``step(action) -> (obs, reward,
terminated, truncated, info)``, ``render()``, ``close()``, with
``observation_space`` (a ``Dict`` of ``Box``) and ``action_space`` (a ``Box``
laid out as one of ``engram.sim.robots.ACTION_SPACES``). Same seed, same episode.

An episode has two phases, reported in ``info["phase"]``:

- ``show``: the environment shows what must be remembered (a cup covers an
  object, buttons light up, tokens are shown, the base is driven on a tour,
  a sound plays). Actions are ignored; the robot holds still or follows the tour.
  ``info["executed_action"]`` is what the robot actually did.
- ``act``: the agent's actions drive the robot. ``info["decision_time_s"]`` is the
  time after which what is needed is no longer observable.

Observations (float32 unless noted):

- ``robot`` (R,): arm: [ee x, y, z (m), ee yaw (rad), gripper opening (m),
  6 joint positions (rad)]; base: [x, y (m), yaw (rad), vx, vy (m/s), yaw rate (rad/s)].
- ``objects`` (N, 5): per tracked object (``info["object_names"]`` gives the
  order) [visible, x, y, z, yaw]; pose zeroed when not visible from the task's
  camera (ray-cast visibility: in the view frustum and not occluded).
- ``task`` (K,): [phase (0 show, 1 act), time in episode (s), ...task extras]
  (e.g. lamp states).
- ``audio`` (1600,) (apartment tasks): the last 0.1 s of scene audio at 16 kHz.
- ``rgb`` (H, W, 3) uint8, ``depth`` (H, W), ``segmentation`` (H, W) int32: only
  with ``obs_images=True`` (the camera is ``config.camera`` or the task's default).

The instruction is ``info["instruction"]`` (it can change at decision time,
e.g. the question after a tour). ``env.ground_truth()`` is the per-episode log
(object positions over time, what was visible when, events such as lights,
presses and sounds, the answer and success) as a JSON-able dict.

``make(name, **kwargs)`` (kwargs are ``EnvConfig`` fields or task config fields)
builds a task's environment (``registry.known("task")`` lists the tasks, each a
``TaskSpec`` of ``engram.sim.tasks``) or ``model`` (any MJCF file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from engram.sim._gl import import_mujoco
from engram.sim.motion import yaw_of
from engram.sim.render import RenderConfig, RgbdRenderer, camera_id
from engram.sim.robots import ArmController, BaseController, CtrlController
from engram.sim.scene import load_model, load_scene

mujoco = import_mujoco()

__all__ = [
    "ApartmentEnv",
    "EnvConfig",
    "GroundTruthLog",
    "ModelEnv",
    "SimEnv",
    "TabletopEnv",
    "make",
]

_AUDIO_RATE_HZ = 16000


@dataclass
class EnvConfig:
    """Settings every environment has. Task configs subclass it."""

    control_dt_s: float = 0.1  # one env.step (one action), s; rounded to whole physics steps
    physics_dt_s: float | None = None  # MuJoCo timestep; None = the scene's own
    render_mode: str | None = (
        None  # None | "rgb_array" (render() -> rgb) | "rgbd" (-> RenderedFrame)
    )
    obs_images: bool = False  # add rgb/depth/segmentation of `camera` to observations
    camera: str | None = None  # camera for images and render(); None = task default
    width_px: int = 128  # image width for obs_images / render
    height_px: int = 96  # image height for obs_images / render
    shadows: bool = False  # shadow mapping in renders (about 5x slower)
    max_steps: int | None = None  # truncation after this many steps; None = task default


class GroundTruthLog:
    """What happened in one episode, for evaluation: JSON-able, see ``to_dict``."""

    def __init__(self, *, task: str, seed: int | None, object_names: list[str], dt_s: float):
        self.task, self.seed, self.names, self.dt_s = task, seed, list(object_names), dt_s
        self.times: list[float] = []
        self.positions: list[np.ndarray] = []  # (N, 3) per step
        self.visible: list[np.ndarray] = []  # (N,) bool per step
        self.robot: list[list[float]] = []
        self.events: list[dict[str, Any]] = []
        self.instructions: list[dict[str, Any]] = []
        self.decision_time_s: float | None = None
        self.answer: Any = None
        self.success: bool | None = None
        self.extra: dict[str, Any] = {}

    def record(self, t: float, positions: np.ndarray, visible: np.ndarray, robot: np.ndarray):
        self.times.append(round(float(t), 4))
        self.positions.append(np.asarray(positions, np.float64).copy())
        self.visible.append(np.asarray(visible, bool).copy())
        self.robot.append([round(float(v), 4) for v in robot])

    def event(self, t: float, kind: str, **data: Any) -> dict[str, Any]:
        ev = {"t": round(float(t), 4), "type": kind, **_jsonable(data)}
        self.events.append(ev)
        return ev

    def instruction(self, t: float, text: str) -> None:
        self.instructions.append({"t": round(float(t), 4), "text": text})

    def seen(self, name: str) -> list[float]:
        """Times at which object ``name`` was visible."""
        i = self.names.index(name)
        return [t for t, v in zip(self.times, self.visible) if v[i]]

    def to_dict(self) -> dict[str, Any]:
        pos = np.array(self.positions) if self.positions else np.zeros((0, len(self.names), 3))
        vis = np.array(self.visible) if self.visible else np.zeros((0, len(self.names)), bool)
        return {
            "task": self.task,
            "seed": self.seed,
            "control_dt_s": self.dt_s,
            "instructions": self.instructions,
            "decision_time_s": self.decision_time_s,
            "answer": _jsonable(self.answer),
            "success": self.success,
            "times_s": self.times,
            "objects": {
                name: {
                    "positions_m": np.round(pos[:, i], 4).tolist(),
                    "visible": vis[:, i].astype(int).tolist(),
                }
                for i, name in enumerate(self.names)
            },
            "robot": self.robot,
            "events": self.events,
            **_jsonable(self.extra),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


class SimEnv(gymnasium.Env):
    """Base of every environment: model, controller, phases, observations, log.

    Subclasses set the class attributes and implement the ``_``-hooks; memory
    tasks also implement ``expert_answer``, ``guess_answer`` and ``solve`` (used by
    ``engram.planners.policies.scripted``).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "rgbd"], "render_fps": 10}
    Config: ClassVar[type] = EnvConfig
    task_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_camera: ClassVar[str] = ""
    observer_camera: ClassVar[str] = ""  # camera whose view decides "visible"
    observer_body: ClassVar[str] = ""  # body carrying that camera (its geoms never occlude)
    default_max_steps: ClassVar[int] = 200
    #: success rate of a policy that cannot remember (guesses uniformly among the options)
    chance_success: ClassVar[float] = 0.0
    #: the decision time is the start of the act phase (else the task sets it itself)
    decision_at_act_start: ClassVar[bool] = True

    def __init__(self, config: EnvConfig | None = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        if overrides:
            names = {f.name for f in fields(cfg)}
            unknown = set(overrides) - names
            if unknown:
                raise TypeError(
                    f"{type(self).__name__}: unknown option(s) {sorted(unknown)}; "
                    f"known: {sorted(names)}"
                )
            cfg = replace(cfg, **overrides)
        if cfg.render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {cfg.render_mode!r}"
            )
        if cfg.control_dt_s <= 0:
            raise ValueError(f"control_dt_s must be > 0, got {cfg.control_dt_s}")
        self.config = cfg
        self.render_mode = cfg.render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / cfg.control_dt_s)}
        self.model = self._load_model()
        if cfg.physics_dt_s is not None:
            if cfg.physics_dt_s <= 0:
                raise ValueError(f"physics_dt_s must be > 0, got {cfg.physics_dt_s}")
            self.model.opt.timestep = cfg.physics_dt_s
        self.substeps = max(1, round(cfg.control_dt_s / self.model.opt.timestep))
        self.data = mujoco.MjData(self.model)
        self.camera = cfg.camera or self.default_camera
        if self.camera:
            camera_id(self.model, self.camera)  # ValueError naming the cameras
        self.max_steps = cfg.max_steps or self.default_max_steps
        self.controller = self._make_controller()
        self.tracked: list[str] = list(self._tracked_bodies())
        self._tracked_ids = np.array([self._body(n) for n in self.tracked], dtype=np.int64).reshape(
            -1
        )
        self._renderer: RgbdRenderer | None = None
        self._vis_cache: tuple | None = None
        self._ray_groups = np.array([1, 1, 1, 0, 0, 0], np.uint8)  # geom groups that occlude
        self._obs_renderer: RgbdRenderer | None = None
        self.steps = 0
        self.phase = "show"
        self.instruction = ""
        self.decision_time_s: float | None = None
        self.log = GroundTruthLog(
            task=self.task_name, seed=None, object_names=self.tracked, dt_s=cfg.control_dt_s
        )
        self._outcome_cache: tuple[bool, bool] = (False, False)
        self._new_events: list[dict[str, Any]] = []
        self._build()
        self.action_space = spaces.Box(
            np.array(self.controller.space.low, np.float32),
            np.array(self.controller.space.high, np.float32),
            dtype=np.float32,
        )
        self.observation_space = spaces.Dict(self._observation_spaces())

    # ---- hooks for subclasses -------------------------------------------------
    def _load_model(self):
        raise NotImplementedError

    def _make_controller(self):
        raise NotImplementedError

    def _build(self) -> None:
        """Look up ids once the model and controller exist."""

    def _tracked_bodies(self) -> list[str]:
        return []

    def _setup(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        """Lay out a new episode (after ``mj_resetData``), set ``self.instruction``."""

    def _robot_obs(self) -> np.ndarray:
        raise NotImplementedError

    def _robot_dim(self) -> int:
        raise NotImplementedError

    def _task_extras(self) -> np.ndarray:
        return np.zeros(0, np.float32)

    def _task_extras_dim(self) -> int:
        return 0

    def _scripted_action(self) -> np.ndarray:
        """What the robot does while the environment is in control (show phase)."""
        return self.controller.stop_action()

    def _pre_physics(self) -> None:
        """Per control step, before physics: animations, lights."""

    def _post_physics(self) -> None:
        """Per control step, after physics: detect events (presses, lifts ...)."""

    def _outcome(self) -> tuple[bool, bool]:
        """(terminated, success) now."""
        return False, False

    def _show_done(self) -> bool:
        """True once the show phase is over (the agent takes control)."""
        return True

    def _audio_chunk(self) -> np.ndarray | None:
        return None

    # ---- policy support (memory tasks) -----------------------------------------
    def expert_answer(self) -> Any:
        """The privileged answer (what a perfect memory would recall)."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted expert")

    def guess_answer(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> Any:
        """A guess from the current observation only (the memoryless baseline)."""
        raise NotImplementedError(f"{type(self).__name__} has no memoryless guess")

    def solve(self, answer: Callable[[], Any]) -> Iterator[np.ndarray]:
        """Actions that carry out the task given ``answer()`` (called when needed)."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted solution")

    # ---- helpers ----------------------------------------------------------------
    def _body(self, name: str) -> int:
        bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if bid < 0:
            raise ValueError(f"{type(self).__name__}: body {name!r} not in model")
        return bid

    @property
    def t(self) -> float:
        """Simulation time in the episode, seconds."""
        return float(self.data.time)

    def body_pos(self, name_or_id: str | int) -> np.ndarray:
        bid = self._body(name_or_id) if isinstance(name_or_id, str) else name_or_id
        return self.data.xpos[bid].copy()

    def body_yaw(self, name_or_id: str | int) -> float:
        bid = self._body(name_or_id) if isinstance(name_or_id, str) else name_or_id
        return yaw_of(self.data.xmat[bid])

    def set_free_pose(self, name: str, pos, yaw: float = 0.0) -> None:
        """Place a free-joint body at rest."""
        bid = self._body(name)
        jnt = self.model.body_jntadr[bid]
        if jnt < 0 or self.model.jnt_type[jnt] != mujoco.mjtJoint.mjJNT_FREE:
            raise ValueError(f"body {name!r} has no free joint")
        qa, da = self.model.jnt_qposadr[jnt], self.model.jnt_dofadr[jnt]
        self.data.qpos[qa : qa + 3] = pos
        self.data.qpos[qa + 3 : qa + 7] = yaw_quat(yaw)
        self.data.qvel[da : da + 6] = 0.0

    def event(self, kind: str, **data: Any) -> None:
        self._new_events.append(self.log.event(self.t, kind, **data))

    def set_instruction(self, text: str) -> None:
        self.instruction = text
        self.log.instruction(self.t, text)
        self.event("instruction", text=text)

    def stop_action(self) -> np.ndarray:
        return self.controller.stop_action()

    def robot_state(self) -> dict[str, Any]:
        """Fields of a ``engram.runtime.messages.RobotState`` for the current state."""
        return {
            "robot": self.task_name or "model",
            "joint_positions": self.data.qpos.copy(),
            "joint_velocities": self.data.qvel.copy(),
        }

    def world_from_mic(self) -> np.ndarray | None:
        """(4, 4) pose of the robot's microphone, if it has one."""
        return None

    # ---- visibility ---------------------------------------------------------------
    def visible_mask(self) -> np.ndarray:
        """(N,) bool: tracked objects visible from ``observer_camera`` (ray cast).

        An object is visible when its body origin or one of its first four geom
        centres lies in the camera's view frustum and the first surface a ray from
        the camera meets on the way there belongs to the object.
        """
        n = len(self.tracked)
        if not self.observer_camera or n == 0:
            return np.ones(n, bool)
        m, d = self.model, self.data
        if self._vis_cache is None:
            cam = camera_id(m, self.observer_camera)
            owner, geoms = [], []
            for i, bid in enumerate(self._tracked_ids):
                start, count = m.body_geomadr[bid], m.body_geomnum[bid]
                owner += [i] * (1 + min(count, 4))
                geoms += [-1, *range(start, start + min(count, 4))]
            tan_y = math.tan(math.radians(m.cam_fovy[cam]) / 2)
            exclude = self._body(self.observer_body) if self.observer_body else -1
            self._vis_cache = (cam, np.array(owner), np.array(geoms), tan_y, exclude)
        cam, owner, geoms, tan_y, exclude = self._vis_cache
        tan_x = tan_y * self.config.width_px / self.config.height_px
        bodies = self._tracked_ids[owner]
        points = np.where((geoms < 0)[:, None], d.xpos[bodies], d.geom_xpos[np.maximum(geoms, 0)])
        origin = d.cam_xpos[cam].copy()
        rel = points - origin
        pc = rel @ d.cam_xmat[cam].reshape(3, 3)  # GL camera frame: looks down -z
        depth = -pc[:, 2]
        inside = (
            (depth > 1e-3)
            & (np.abs(pc[:, 0]) <= depth * tan_x)
            & (np.abs(pc[:, 1]) <= depth * tan_y)
        )
        out = np.zeros(n, bool)
        geomid = np.zeros(1, np.int32)
        for k in np.flatnonzero(inside):
            i = owner[k]
            if out[i]:
                continue
            dist = mujoco.mj_ray(m, d, origin, rel[k], self._ray_groups, 1, exclude, geomid)
            if dist < 0 or dist >= 0.999 or m.geom_bodyid[geomid[0]] == bodies[k]:
                out[i] = True
        return out

    # ---- observations -------------------------------------------------------------
    def _observation_spaces(self) -> dict[str, spaces.Space]:
        cfg = self.config
        inf = np.inf
        out: dict[str, spaces.Space] = {
            "robot": spaces.Box(-inf, inf, (self._robot_dim(),), np.float32),
            "objects": spaces.Box(-inf, inf, (len(self.tracked), 5), np.float32),
            "task": spaces.Box(-inf, inf, (2 + self._task_extras_dim(),), np.float32),
        }
        if self._has_audio():
            n = round(_AUDIO_RATE_HZ * cfg.control_dt_s)
            out["audio"] = spaces.Box(-1.0, 1.0, (n,), np.float32)
        if cfg.obs_images:
            h, w = cfg.height_px, cfg.width_px
            out["rgb"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
            out["depth"] = spaces.Box(0.0, inf, (h, w), np.float32)
            out["segmentation"] = spaces.Box(-1, np.iinfo(np.int32).max, (h, w), np.int32)
        return out

    def _has_audio(self) -> bool:
        return False

    def _objects_obs(self, visible: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.tracked), 5), np.float32)
        for i, bid in enumerate(self._tracked_ids):
            if visible[i]:
                out[i, 0] = 1.0
                out[i, 1:4] = self.data.xpos[bid]
                out[i, 4] = yaw_of(self.data.xmat[bid])
        return out

    def _observe(self, visible: np.ndarray) -> dict[str, np.ndarray]:
        obs = {
            "robot": self._robot_obs().astype(np.float32),
            "objects": self._objects_obs(visible),
            "task": np.concatenate(
                [[1.0 if self.phase == "act" else 0.0, self.t], self._task_extras()]
            ).astype(np.float32),
        }
        if self._has_audio():
            chunk = self._last_audio
            obs["audio"] = chunk.astype(np.float32)
        if self.config.obs_images:
            frame = self._render_frame(obs_renderer=True)
            obs["rgb"], obs["depth"], obs["segmentation"] = (
                frame.rgb,
                frame.depth,
                frame.segmentation,
            )
        return obs

    def _info(self, executed: np.ndarray | None) -> dict[str, Any]:
        success = self._outcome_cache[1]
        return {
            "phase": self.phase,
            "t_s": self.t,
            "instruction": self.instruction,
            "success": bool(success),
            "decision_time_s": self.decision_time_s,
            "executed_action": executed
            if executed is not None
            else np.zeros(self.action_space.shape, np.float32),
            "object_names": list(self.tracked),
            "events": list(self._new_events),
        }

    # ---- gymnasium API -------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.steps = 0
        self.phase = "show"
        self.instruction = ""
        self.decision_time_s = None
        self._outcome_cache = (False, False)
        self._new_events = []
        self._last_audio = np.zeros(round(_AUDIO_RATE_HZ * self.config.control_dt_s), np.float32)
        self.log = GroundTruthLog(
            task=self.task_name,
            seed=seed,
            object_names=self.tracked,
            dt_s=self.config.control_dt_s,
        )
        self._setup(self.np_random, dict(options or {}))
        mujoco.mj_forward(self.model, self.data)
        if self._show_done():
            self._begin_act()
        visible = self.visible_mask()
        self._record(visible)
        obs = self._observe(visible)
        return obs, self._info(None)

    def _begin_act(self) -> None:
        self.phase = "act"
        if self.decision_at_act_start and self.decision_time_s is None:
            self.decision_time_s = self.t
            self.log.decision_time_s = self.t
        self.event("act_phase")

    def step(self, action):
        if self.steps >= self.max_steps or self._outcome_cache[0]:
            raise RuntimeError(
                f"{type(self).__name__}.step() after the episode ended; call reset()"
            )
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{type(self).__name__}.step: action must have shape {self.action_space.shape} "
                f"({self.controller.space.name}: {', '.join(self.controller.space.names)}), "
                f"got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{type(self).__name__}.step: action contains NaN or inf: {action}")
        self._new_events = []
        agent = self.phase == "act"
        executed = self.controller.apply(action if agent else self._scripted_action())
        self._pre_physics()
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self.steps += 1
        if self._has_audio():
            self._last_audio = self._audio_chunk()
        self._post_physics()
        if self.phase == "show" and self._show_done():
            self._begin_act()
        terminated, success = self._outcome() if self.phase == "act" else (False, False)
        self._outcome_cache = (terminated, success)
        truncated = (not terminated) and self.steps >= self.max_steps
        if terminated or truncated:
            self.log.success = bool(success)
            self.event("episode_end", success=bool(success), truncated=bool(truncated))
        visible = self.visible_mask()
        self._record(visible)
        obs = self._observe(visible)
        reward = 1.0 if (terminated and success) else 0.0
        return obs, reward, terminated, truncated, self._info(executed)

    def _record(self, visible: np.ndarray) -> None:
        positions = (
            self.data.xpos[self._tracked_ids] if len(self._tracked_ids) else np.zeros((0, 3))
        )
        self.log.record(self.t, positions, visible, self._robot_obs())

    def ground_truth(self) -> dict[str, Any]:
        """The episode's ground-truth log (see ``GroundTruthLog.to_dict``)."""
        return self.log.to_dict()

    # ---- rendering --------------------------------------------------------------------
    def _render_frame(self, *, obs_renderer: bool = False, camera: str | None = None):
        cam = camera or self.camera
        if not cam:
            raise ValueError(f"{type(self).__name__}: no camera to render (set config.camera)")
        attr = "_obs_renderer" if obs_renderer else "_renderer"
        renderer = getattr(self, attr)
        if renderer is None:
            cfg = self.config
            renderer = RgbdRenderer(
                self.model,
                RenderConfig(width_px=cfg.width_px, height_px=cfg.height_px, shadows=cfg.shadows),
            )
            setattr(self, attr, renderer)
        return renderer.render(self.data, cam)

    def render(self):
        """``rgb_array``: (H, W, 3) uint8; ``rgbd``: a ``RenderedFrame``; None without a mode."""
        if self.render_mode is None:
            return None
        frame = self._render_frame()
        return frame.rgb if self.render_mode == "rgb_array" else frame

    def render_frame(self, camera: str | None = None):
        """A ``RenderedFrame`` of ``camera`` (default: the env's) regardless of render_mode."""
        return self._render_frame(camera=camera)

    def close(self) -> None:
        for attr in ("_renderer", "_obs_renderer", "_self_filter"):  # _self_filter: camera mode
            renderer = getattr(self, attr, None)
            if renderer is not None:
                renderer.close()
                setattr(self, attr, None)


# ---------------------------------------------------------------------------------------
# tabletop (arm) and apartment (mobile base) families


class TabletopEnv(SimEnv):
    """The arm at the table. ``keep_bodies`` lists the scene objects the task uses."""

    keep_bodies: ClassVar[tuple[str, ...]] = ()
    default_camera: ClassVar[str] = "scene"
    observer_camera: ClassVar[str] = "scene"
    table_z_m: ClassVar[float] = 0.40  # table top height

    def _load_model(self):
        model = load_scene("tabletop", keep=self.keep_bodies)
        return model

    def _make_controller(self):
        return ArmController(self.model, self.data)

    def _robot_dim(self) -> int:
        return 11

    def _robot_obs(self) -> np.ndarray:
        c = self.controller
        return np.concatenate([c.ee_pos(), [c.ee_yaw(), c.gripper_width()], c.joint_positions()])

    def _reset_arm(self) -> None:
        self.controller.reset()

    def robot_state(self) -> dict[str, Any]:
        """Arm: joint_* = 6 arm joints then the 2 finger slides (m); EE pose; opening."""
        c = self.controller
        base = np.eye(4)
        bid = self._body("arm_base")
        base[:3, :3] = self.data.xmat[bid].reshape(3, 3)
        base[:3, 3] = self.data.xpos[bid]
        q = np.concatenate([c.joint_positions(), self.data.qpos[c.finger_qadr]])
        dq = np.concatenate(
            [c.joint_velocities(), self.data.qvel[self.model.jnt_dofadr[self._finger_joints()]]]
        )
        return {
            "robot": "arm",
            "joint_positions": q,
            "joint_velocities": dq,
            "world_from_base": base,
            "world_from_ee": c.world_from_ee(),
            "gripper_width_m": c.gripper_width(),
        }

    def _finger_joints(self) -> list[int]:
        return [
            mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n)
            for n in self.controller.config.fingers
        ]


class ApartmentEnv(SimEnv):
    """The mobile base in the apartment; rooms, doors, slots and speakers come from sites."""

    default_camera: ClassVar[str] = "head"
    observer_camera: ClassVar[str] = "head"
    observer_body: ClassVar[str] = "base"

    def _load_model(self):
        return load_scene("apartment")

    def _make_controller(self):
        return BaseController(self.model, self.data)

    def _robot_dim(self) -> int:
        return 6

    def _robot_obs(self) -> np.ndarray:
        return np.concatenate([self.controller.pose(), self.controller.velocity()])

    def _has_audio(self) -> bool:
        return True

    def robot_state(self) -> dict[str, Any]:
        """Base: joint_* = [x, y, yaw] and their rates; world_from_base."""
        return {
            "robot": "base",
            "joint_positions": self.controller.pose(),
            "joint_velocities": self.controller.velocity(),
            "world_from_base": self.controller.world_from_base(),
        }

    def world_from_mic(self) -> np.ndarray | None:
        sid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "mic")
        if sid < 0:
            return None
        out = np.eye(4)
        out[:3, :3] = self.data.site_xmat[sid].reshape(3, 3)
        out[:3, 3] = self.data.site_xpos[sid]
        return out


# ---------------------------------------------------------------------------------------
# any MJCF model


@dataclass
class ModelEnvConfig(EnvConfig):
    """``EnvConfig`` plus the model to load."""

    model_path: str = ""  # MJCF/MJB file; "" = our arm (sim/assets/arm.xml)


class ModelEnv(SimEnv):
    """Any MJCF model (e.g. a MuJoCo Menagerie robot): raw ``ctrl`` actions, no task.

    Observations: ``robot`` = [qpos, qvel] (nq + nv,), ``objects`` empty, ``task`` =
    [1, time]. Never terminates; truncates at ``max_steps``.
    """

    Config = ModelEnvConfig
    task_name = "model"
    description = "any MJCF model by path: raw actuator controls, no task"
    default_max_steps = 1000

    def _load_model(self):
        from engram.sim.scene import ASSETS_DIR

        path = self.config.model_path or str(ASSETS_DIR / "arm.xml")
        return load_model(path)

    def _make_controller(self):
        return CtrlController(self.model, self.data)

    def _build(self) -> None:
        if not self.camera and self.model.ncam > 0:
            self.camera = mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_CAMERA, 0) or ""

    def _robot_dim(self) -> int:
        return self.model.nq + self.model.nv

    def _robot_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel])

    def _setup(self, rng, options) -> None:
        if self.model.nkey > 0:
            mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        mujoco.mj_forward(self.model, self.data)
        self.controller.reset()
        self.set_instruction(options.get("instruction", ""))


def make(name: str, **kwargs: Any) -> SimEnv:
    """Build the environment of task ``name`` (registered under kind ``task``), or
    ``model`` (``ModelEnv``: any MJCF file)."""
    if name == "model":
        return ModelEnv(**kwargs)
    from engram.sim.tasks.spec import make_env

    return make_env(name, **kwargs)
