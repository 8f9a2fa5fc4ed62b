"""``ActionExpertPolicy``: the learned diffusion action expert as a ``Policy``
(``engram.planners.policies.base``; registered as policy ``action_expert``; the scripted
expert of the simulator is ``engram.planners.policies.scripted.ExpertPolicy``).

Lifecycle::

    policy = ActionExpertPolicy.load("~/.cache/engram/experts/T")  # folder or checkpoint.pt
    policy.reset(seed=0)                                  # new episode: empty memory bank
    policy.observe(obs, instruction_embedding=emb)        # a step that needs no chunk
    chunk = policy.act(obs, instruction_embedding=emb)    # ActionChunk, actions (H, A)
    policy.save("out/")                                   # checkpoint a later load reads

Observation dict (what ``sim/`` and the runtime hand over each decision):

    ``state``     (S,) float   low-dim observation, as in training; or, when the expert
                  was trained on ``engram sim collect`` data, the environment's own keys
                  (``config.state_keys``: ``robot``, ``objects``, ``task``), flattened and
                  concatenated here exactly as the training loader did
    ``image``     (h, w, 3) uint8 (or ``rgb``), when the expert was trained with images;
                  centre-cropped and resized to the training size
    ``step``      int, optional: control step within the episode (the memory entry's
                  timestep); without it each ``act`` / ``observe`` call counts as the next
                  step, so call ``observe`` on the steps that need no new chunk (the show
                  phase, or while a chunk executes) and ``act`` when one is needed
    ``stamp_ns``  int, optional: copied into the ``ActionChunk``
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engram.planners.policies.base import Policy
from engram.runtime.messages import ActionChunk

log = logging.getLogger(__name__)

__all__ = ["ActionExpertPolicy"]


class ActionExpertPolicy(Policy):
    """The memory-conditioned diffusion action expert as a ``Policy``.

    ``act`` encodes the observation, retrieves from and then writes to the working-memory
    bank (unless the expert was built with ``use_memory=False``) and samples one chunk
    with DDIM (``sampler="ddpm"`` for full ancestral sampling).
    """

    name: ClassVar[str] = "action_expert"

    def __init__(
        self,
        expert: Any,
        *,
        task: str = "",
        sampler: str = "ddim",
        num_steps: int | None = None,
        checkpoint: dict[str, Any] | None = None,
        cpu_threads: int | None = 1,
        use_memory: bool = True,
        noise_scale: float = 1.0,
    ) -> None:
        """``sampler``: ``ddim`` (``num_steps`` or the config's ddim_steps) or ``ddpm``.

        ``cpu_threads``: on a CPU device, set torch's intra-op threads (process-wide) to
        this many; None leaves them. The default 1 is deliberate: at batch 1 these small
        networks gain nothing from more threads, and on a busy 2-core machine torch's
        default of 2 made ``act`` 15x slower (OpenMP workers spinning, bench/policy.py).
        """
        if cpu_threads is not None and expert.device == "cpu" and cpu_threads > 0:
            import torch

            if torch.get_num_threads() != cpu_threads:
                log.info("torch intra-op threads: %d (process-wide)", cpu_threads)
                torch.set_num_threads(cpu_threads)
        self.expert = expert
        self.config = expert.config
        self.task = task
        # False: the same network with its memory bank emptied before every chunk and
        # nothing observed (the no-memory peer of a model trained with memory)
        self.use_memory = bool(use_memory)
        self.sampler = sampler
        self.num_steps = num_steps
        self._checkpoint = checkpoint or {}
        self._generator: Any = None
        self._next_step = 0
        # goal frame: scale of the DDIM start noise (0 = the deterministic sample from
        # zero noise; see ``noise_scale`` in the checkpoint card for the measured choice)
        self.noise_scale = float(noise_scale)
        # end-to-end pointer (goal frame): where each slot was last seen this episode,
        # and the subgoal it chose last (skill, object, frame slot, target [x, y])
        self._slot_xy: np.ndarray | None = None
        self._slot_z: np.ndarray | None = None  # and at what height (body origins)
        self.pointed: tuple[str, str, str, np.ndarray] | None = None
        self._pointed_key: tuple[int, int, int] | None = None
        # end to end, the pointed subgoal is kept until ``executed`` sees it finish
        # (the completion rule of planner mode, ``completion.SubgoalTracker``)
        self._committed = False
        self._tracker: Any = None
        self._stroke: Any = None  # end to end: ``completion.PressStroke`` of a pointed press
        # end to end: a pointed press that failed (too shallow) is tried again, this many
        # times, before the pointer chooses anew (the planner retries one likewise)
        self.press_retries = 2
        self._retries = 0
        # end to end: away from the pointed cap the tool keeps this far above touching a
        # cap top (``_keep_above_caps``); < 0 = off
        self.cap_clearance_m = 0.01
        self._cap: dict[str, Any] = {}  # the pointed press's cap (tracker start kwargs)
        self._grip = 0.0
        self._robot: np.ndarray | None = None
        # goal frame with progress inputs: the running subgoal as [key, step it began,
        # lowest tool height since] (None: the next goal pass starts a new one)
        self._sub: list[Any] | None = None
        self.reset()

    # ---------------------------------------------------------------- lifecycle

    def reset(self, env: Any = None, *, seed: int | None = None) -> None:
        """New episode: empty memory bank, sampling reseeded (None: seed 0); ``env`` unused."""
        import torch

        self.expert.reset_memory()
        self.expert.eval()
        self._generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        self._next_step = 0
        self._slot_xy = None
        self._slot_z = None
        self.pointed = None
        self._pointed_key = None
        self._committed = False
        self._grip = 0.0
        self._sub = None

    def begin_subgoal(self) -> None:
        """A new subgoal begins (planner mode; the env harness and the policy node call
        it): its progress inputs restart at the next chunk. Without the call a new
        subgoal is still noticed when its text or target changes, but not a repeat of
        the same one (pressing one button twice)."""
        self._sub = None

    def _note_height(self, z_m: float) -> None:
        if self._sub is not None:
            self._sub[2] = min(self._sub[2], float(z_m))

    def _progress(self, state: np.ndarray, instr: Any, goal: np.ndarray, step: int) -> Any:
        """The running subgoal's progress inputs (2,) (None without them)."""
        if not self.config.subgoal_progress:
            return None
        from engram.planners.policies.diffusion.features import subgoal_progress

        key = (tuple(np.round(goal, 4).tolist()), hash(instr.cpu().numpy().tobytes()))
        z = float(state[2])
        if self._sub is None or self._sub[0] != key:
            self._sub = [key, int(step), z]
        self._note_height(z)
        return subgoal_progress(z, self._sub[2], int(step) - self._sub[1])

    def act(
        self,
        observation: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
        *,
        instruction_embedding: np.ndarray | None = None,
        memory: Any = None,
        raw: bool = False,
        text: Any = None,
        task_name: str = "",
        **context: Any,
    ) -> ActionChunk:
        """``memory``: a working-memory bank to read and write instead of the expert's own
        (``memory/working.py``); ignored when ``use_memory`` is False.

        A goal-frame expert (``config.frame == "goal"``) with ``observation["goal"]``
        [x, y] (planner mode) samples its chunk relative to that target, without memory.
        Without a goal (end to end) it first reads its memory bank with the instruction
        and points at the next subgoal (skill, object slot, frame slot of
        ``task_name``'s objects; ``self.pointed``), then runs the goal pass on
        ``<skill> <object>`` (embedded with ``text``: str -> (E,)) and that slot's
        position.

        A waypoint expert's chunk is turned into the controller's actions from the
        observed robot pose (``to_controller``) unless ``raw``: then the chunk holds the
        waypoints, for callers that convert one step at a time from fresh robot states
        (the policy node, the env rollout)."""
        import torch

        cfg = self.config
        state, image, instr, step = self._inputs(observation, instruction_embedding)
        if not self.use_memory:
            self.expert.reset_memory()
            memory = None
        goal = observation.get("goal")
        if goal is None and cfg.frame == "goal" and float(state[0, -1]) > 0.5:
            goal = state[0, -3:-1].cpu().numpy()  # a prepared tabletop state with its goal
        with torch.inference_mode():
            if cfg.frame == "goal":
                self._see_slots(state)
                self._robot = state[0, : _robot_dim()].cpu().numpy()
                if goal is None:
                    fused: list[Any] = []
                    self.expert.online_condition(
                        state, image, instr, step=step, bank=memory, fused=fused
                    )
                    goal, emb = self._point(fused, text, task_name)
                    instr = torch.from_numpy(
                        _vector(emb, cfg.instruction_dim, "subgoal embedding")
                    )[None].to(state.device)
                out = self._goal_chunk(state, image, instr, step, goal)
            else:
                cond = self.expert.online_condition(state, image, instr, step=step, bank=memory)
                actions = self.expert.sample(
                    cond, sampler=self.sampler, num_steps=self.num_steps, generator=self._generator
                )
                out = actions[0].float().cpu().numpy()
        if cfg.action_mode == "waypoint" and not raw:
            out = self.to_controller(out, state[0, : _robot_dim()].cpu().numpy())
        stamp = observation.get("stamp_ns")
        extra = {} if stamp is None else {"stamp_ns": int(stamp)}
        return ActionChunk(
            actions=out,
            action_space=cfg.action_space,
            dt_s=cfg.dt_s,
            **extra,
        )

    def _goal_chunk(self, state: Any, image: Any, instr: Any, step: int, goal: Any) -> np.ndarray:
        """The goal-frame pass: waypoints (H, A) in the world frame."""
        import torch

        from engram.planners.policies.diffusion.features import to_goal_frame

        g = np.asarray(goal, np.float32).reshape(-1)[:2]
        s = state[0].cpu().numpy()
        rel = to_goal_frame(s, g, self._progress(s, instr, g, step))
        rel_t = torch.from_numpy(rel)[None].to(state.device)
        cond = self.expert.online_condition(rel_t, image, instr, step=step, memory=False)
        noise = None
        if self.noise_scale != 1.0:
            cfg = self.config
            noise = self.noise_scale * torch.randn(
                (1, cfg.horizon, cfg.action_dim), generator=self._generator
            ).to(cond.device)
        actions = self.expert.sample(
            cond,
            sampler=self.sampler,
            num_steps=self.num_steps,
            generator=self._generator,
            noise=noise,
        )
        out = actions[0].float().cpu().numpy()
        out[:, :2] += g
        return out

    def _see_slots(self, state: Any) -> None:
        from engram.planners.policies.diffusion.features import MAX_OBJECTS, ROBOT_DIM

        s = state[0].cpu().numpy() if hasattr(state, "cpu") else np.asarray(state)
        objs = s[ROBOT_DIM : ROBOT_DIM + MAX_OBJECTS * 5].reshape(MAX_OBJECTS, 5)
        if self._slot_xy is None or self._slot_z is None:
            self._slot_xy = np.full((MAX_OBJECTS, 2), np.nan, np.float32)
            self._slot_z = np.full(MAX_OBJECTS, np.nan, np.float32)
        vis = objs[:, 0] > 0.5
        self._slot_xy[vis] = objs[vis, 1:3]
        self._slot_z[vis] = objs[vis, 3]

    def _point(self, fused: list[Any], text: Any, task_name: str) -> tuple[np.ndarray, Any]:
        """The pointer's choice -> (target [x, y], the subgoal text's embedding)."""
        from engram.planners.policies.diffusion.features import subgoal_text

        cfg = self.config
        if not cfg.pointer_slots:
            raise ValueError("this goal-frame expert has no pointer: pass observation['goal']")
        if text is None:
            raise ValueError("end-to-end acting needs text= (subgoal text -> embedding)")
        names = cfg.object_names.get(task_name or self.task)
        if names is None:
            raise ValueError(
                f"end-to-end acting needs task_name, one of {sorted(cfg.object_names)}; "
                f"got {task_name!r}"
            )
        if self._committed and self.pointed is not None:
            skill, obj, _, xy = self.pointed
            return xy, text(subgoal_text(skill, obj))
        skill_l, obj_l, frame_l = (
            x[0].float().cpu().numpy() for x in self.expert.pointer_logits(*fused)
        )
        n = len(names)
        assert self._slot_xy is not None
        known = np.isfinite(self._slot_xy[:n, 0])
        k = int(np.argmax(skill_l))
        o = int(np.argmax(obj_l[:n]))
        f_scores = np.where(known, frame_l[:n], -np.inf)
        f = int(np.argmax(f_scores)) if known.any() else o
        key = (k, o, f)
        if key != self._pointed_key or self.pointed is None:
            xy = self._slot_xy[f] if known.any() else np.zeros(2, np.float32)
            self._pointed_key = key
            self.pointed = (cfg.pointer_skills[k], names[o], names[f], xy.copy())
        skill, obj, frame, xy = self.pointed
        from engram.planners.policies.completion import (
            PressStroke,
            PressStrokeConfig,
            SubgoalTracker,
        )
        from engram.planners.policies.diffusion.features import CAP_RADIUS_M, CAP_TOP_M

        self._tracker = self._tracker or SubgoalTracker()
        cap: dict[str, Any] = {}
        f = names.index(frame) if frame in names else -1
        if skill == "press" and f >= 0 and self._slot_z is not None:
            if np.isfinite(self._slot_z[f]):
                # the pointed cap's top (its body origin + the cap's 8 mm, as the oracle
                # harness passes it): the press is judged by its depth, and a stroke
                # begun over the cap is carried through (``PressStroke``)
                # its depth counts from every step with the tool over the cap, as in
                # planner mode (the cap's half-width + 5 mm; round 7 trace, end to end
                # button_sequence seed 107: a press 1.9 cm off the centre registered, the
                # default 1.2 cm judged it 5.5 mm deep, and the retry pressed it twice)
                cap = {
                    "cap_top_z": float(self._slot_z[f]) + CAP_TOP_M,
                    "cap_xy": xy.copy(),
                    "cap_over_m": CAP_RADIUS_M + 0.005,
                }
        self._tracker.start(skill, self._robot, gripper=self._grip, **cap)
        # a stroke starts anywhere over the cap (its radius), not only within 1.5 cm of
        # the centre: round 7 trace, end to end button_sequence seed 107, the expert
        # hovered 1.6 cm off the centre for 8 steps; the pointer, which reads progress
        # from the clock (its choices on scripted demonstrations delayed by 10 steps
        # skip a button), then skipped the second button
        self._stroke = self._stroke or PressStroke(PressStrokeConfig(over_m=CAP_RADIUS_M))
        self._stroke.reset()
        self._cap, self._retries = cap, 0
        self._committed = True
        self.begin_subgoal()
        return xy, text(subgoal_text(skill, obj))

    @property
    def committed(self) -> tuple[str, str, str, np.ndarray] | None:
        """End to end: the pointed subgoal being executed (skill, object, frame slot,
        target [x, y]); None between subgoals or in planner mode."""
        return self.pointed if self._committed else None

    def guard(self, actions: np.ndarray, robot: np.ndarray) -> np.ndarray:
        """End to end with a pointer: the controller actions (H, A) to send, with a
        press stroke the expert began over the pointed cap carried through
        (``completion.PressStroke``); otherwise ``actions`` unchanged. Call it before
        ``executed``."""
        if not self._committed or self._tracker is None or self._stroke is None:
            return actions
        actions = self._stroke.apply(actions, robot, self._tracker)
        return self._keep_above_caps(actions, robot)

    def _keep_above_caps(self, actions: np.ndarray, robot: np.ndarray) -> np.ndarray:
        """A pointed press: away from the pointed cap (farther than its radius + 5 mm)
        the tool does not go lower than ``cap_clearance_m`` above touching a cap top, so
        it cannot press another button on its way.

        Why: round 8 traces, end to end button_sequence (seeds 101-136, the pointer
        trained with re-timed samples): after the second press the pointer chose the
        third button, and the expert's first chunk toward it stepped down where the arm
        was, 2 cm above the button just pressed, and pressed it again (14 of 40
        failures). The press's own descent, over its cap, is not limited."""
        # (``guard`` calls it with a tracker and a stroke)
        assert self._tracker is not None and self._stroke is not None
        cap = self._tracker.cap
        if self.cap_clearance_m < 0 or cap is None or self._tracker.skill != "press":
            return actions
        if self._stroke.phase:  # the pointed cap's own stroke is under way
            return actions
        from engram.planners.policies.diffusion.features import CAP_RADIUS_M

        top, cap_xy = cap
        r = np.asarray(robot, np.float64).reshape(-1)
        if float(np.linalg.norm(r[:2] - cap_xy)) <= CAP_RADIUS_M + 0.005:
            return actions
        floor = top + self._tracker.config.finger_half_length_m + self.cap_clearance_m
        if actions.ndim != 2 or actions.shape[1] < 3 or r[2] + actions[0, 2] >= floor:
            return actions
        out = np.array(actions, np.float32, copy=True)
        out[0, 2] = min(0.0, floor - r[2])  # down to the floor at most; below it, hold
        return out

    def executed(self, action: np.ndarray, robot: np.ndarray) -> bool:
        """The controller action (A,) just sent and the robot vector measured with it
        (every control step; it also follows the running subgoal's lowest point for the
        progress inputs). End to end with a pointer: True when that finished the pointed
        subgoal, or ended a too-shallow press that is tried again (``press_retries``):
        the caller then drops the rest of its chunk (and holds this step), and the next
        ``act`` points anew, or repeats the press; otherwise always False."""
        a = np.asarray(action, np.float32).reshape(-1)
        self._note_height(float(np.asarray(robot, np.float32).reshape(-1)[2]))
        done = False
        if self._committed and self._tracker is not None:
            verdict = self._tracker.update(a, robot)
            if verdict is not None:
                done = True
                again = verdict[0] == "failed" and self._tracker.skill == "press" and self._cap
                if again and self._retries < self.press_retries:
                    # the same press again (round 6 trace, end to end button_sequence
                    # seed 17: a shallow press of the right button ended it, and the
                    # pointer moved on to the next button with this one unpressed)
                    self._retries += 1
                    self._tracker.start("press", robot, gripper=self._grip, **self._cap)
                    if self._stroke is not None:
                        self._stroke.reset()
                    self.begin_subgoal()
                else:
                    self._committed = False
        self._grip = float(a[4]) if a.shape[0] > 4 else 0.0
        return done

    def to_controller(self, actions: np.ndarray, robot: np.ndarray) -> np.ndarray:
        """The expert's actions (H, A) -> the controller's (``action_space``), given the
        measured robot vector (ee xyz, yaw, ...): waypoints are tracked with
        ``features.waypoints_to_deltas``; delta actions are returned as they are."""
        if self.config.action_mode != "waypoint":
            return np.asarray(actions, np.float32)
        from engram.planners.policies.diffusion.features import waypoints_to_deltas

        return waypoints_to_deltas(actions, robot)

    def observe(
        self,
        observation: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
        *,
        instruction_embedding: np.ndarray | None = None,
        memory: Any = None,
        **context: Any,
    ) -> None:
        """A control step that needs no new chunk (the show phase, or while a chunk is
        executing): only write it into the memory bank. Nothing to do without memory."""
        import torch

        state, image, instr, step = self._inputs(observation, instruction_embedding)
        if self.config.frame == "goal":
            self._see_slots(state)
            self._note_height(float(state[0, 2]))
        if self.config.use_memory and self.use_memory:
            with torch.inference_mode():
                self.expert.observe(state, image, instr, step=step, bank=memory)

    def _inputs(
        self, observation: Mapping[str, Any], instruction_embedding: Any
    ) -> tuple[Any, Any, Any, int]:
        """Observation dict -> state (1, S), image (1, px, px, 3) | None, instruction
        (1, E) tensors and the control step (from ``step`` or counted)."""
        import torch

        cfg = self.config
        if not isinstance(observation, Mapping):
            raise TypeError(f"observation must be a dict, got {type(observation).__name__}")
        if instruction_embedding is None:
            instruction_embedding = observation.get("instruction_embedding")
        if instruction_embedding is None:
            raise ValueError("act needs instruction_embedding (E,) float32 (MiniLM of the subgoal)")
        dev = self.expert.device
        instr = torch.from_numpy(
            _vector(instruction_embedding, cfg.instruction_dim, "instruction_embedding")
        )[None].to(dev)
        state = image = None
        if cfg.state_dim:
            state = torch.from_numpy(_state(observation, cfg))[None].to(dev)
        if cfg.image_size_px:
            image = torch.from_numpy(_image(observation, cfg.image_size_px))[None].to(dev)
        step = observation.get("step")
        step = self._next_step if step is None else int(step)
        if step < 0:
            raise ValueError(f"observation 'step' must be >= 0, got {step}")
        self._next_step = step + 1
        return state, image, instr, step

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """Write everything ``load`` needs (``<path>/checkpoint.pt`` or ``path`` itself when
        it ends in .pt); returns the file written."""
        from engram.planners.policies.diffusion.checkpoint import (
            CHECKPOINT_FORMAT,
            CHECKPOINT_NAME,
            save_checkpoint,
        )

        path = Path(path).expanduser()
        if path.suffix != ".pt":
            path = path / CHECKPOINT_NAME
        m = self.expert.module
        payload = {
            **self._checkpoint,
            "format": CHECKPOINT_FORMAT,
            "task": self.task,
            "config": self.config.to_dict(),
            "model": self.expert.state_dict(),
            "normalization": {
                k: getattr(m, k).detach().cpu().numpy()
                for k in ("action_min", "action_max", "state_mean", "state_std")
            },
        }
        return save_checkpoint(path, payload)

    @classmethod
    def load(
        cls, path: str | Path, *, device: str = "auto", weights: str = "ema", **kwargs: Any
    ) -> ActionExpertPolicy:
        """``path``: a checkpoint file or folder, or a shipped checkpoint's name
        (``tabletop``). ``weights``: ``ema`` (the moving average, when the checkpoint has
        one) or ``raw`` (the optimiser's current weights). A checkpoint whose config or
        weights do not match this code raises ``ValueError`` saying so."""
        from engram.planners.policies.diffusion.action_expert import (
            ActionExpert,
            ActionExpertConfig,
            resolve_device,
        )
        from engram.planners.policies.diffusion.checkpoint import check_config, load_checkpoint

        device = resolve_device(device)
        payload = load_checkpoint(path, device=device)
        source = payload.get("source", path)
        check_config(payload.get("config"), source)
        config = ActionExpertConfig.from_dict(payload["config"])
        expert = ActionExpert(config, device=device)
        if weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        state = payload.get("ema") if weights == "ema" else None
        try:
            expert.load_state_dict(state if state is not None else payload["model"])
        except RuntimeError as exc:  # shapes / names differ from this code's network
            raise ValueError(
                f"{source}: checkpoint weights do not match this code's network "
                f"({str(exc).splitlines()[0]}); train anew with `engram train`"
            ) from exc
        keep = {k: v for k, v in payload.items() if k not in ("model", "ema", "optimizer")}
        return cls(expert, task=str(payload.get("task", "")), checkpoint=keep, **kwargs)


def _robot_dim() -> int:
    from engram.planners.policies.diffusion.features import ROBOT_DIM

    return ROBOT_DIM


def _vector(value: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} values, got shape {np.shape(value)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _state(observation: Mapping[str, Any], cfg: Any) -> np.ndarray:
    if "state" in observation:
        return _vector(observation["state"], cfg.state_dim, "state")
    if cfg.features:
        from engram.planners.policies.diffusion import features as F

        if cfg.features != F.FEATURES:
            raise ValueError(f"expert state layout {cfg.features!r}; this code has {F.FEATURES!r}")
        missing = [k for k in ("robot", "objects", "task") if k not in observation]
        if missing:
            raise ValueError(f"observation needs robot, objects and task; missing {missing}")
        extras = np.asarray(observation["task"], np.float32).reshape(-1)
        slots = F.objects_from_env(observation["objects"], extras)
        flat = F.state_vector(
            observation["robot"], slots, float(extras[1]), observation.get("goal")
        )
        return _vector(flat, cfg.state_dim, "state (tabletop layout)")
    if not cfg.state_keys:
        raise ValueError(f"observation needs 'state' ({cfg.state_dim},); has {sorted(observation)}")
    missing = [k for k in cfg.state_keys if k not in observation]
    if missing:
        raise ValueError(
            f"observation needs 'state' or the keys {list(cfg.state_keys)}; missing {missing}"
        )
    flat = np.concatenate(
        [np.asarray(observation[k], np.float32).reshape(-1) for k in cfg.state_keys]
    )
    return _vector(flat, cfg.state_dim, "state (from " + "+".join(cfg.state_keys) + ")")


def _image(observation: Mapping[str, Any], size_px: int) -> np.ndarray:
    from engram.planners.policies.diffusion.action_expert import prepare_images

    value = observation.get("image", observation.get("rgb"))
    if value is None:
        raise ValueError("observation needs 'image' (or 'rgb'): (h, w, 3) uint8")
    arr = np.asarray(value)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"observation 'image' must be (h, w, 3) uint8, got {arr.shape} {arr.dtype}"
        )
    return prepare_images(arr[None], size_px)[0]
