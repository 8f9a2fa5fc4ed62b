"""``engram train``: behaviour cloning of the action expert on demonstrations.

Usage::

    engram train --task T --data DIR [--out CKPT_DIR] [--steps N] [--batch-size B] [--resume]

Python: ``train(task, data_dir, out_dir=..., steps=...) -> Path`` of the checkpoint.

Demonstrations: one ``.npz`` per episode in ``DIR`` or ``DIR/<task>``, in either of
two layouts.

1. ``engram sim collect`` (``sim/collect.py``, format ``engram-sim-demos`` v1):
   ``obs.<key>`` (T, ...) observations, ``action`` (T, A), ``phase`` (T,) (0 show,
   1 act), ``t_s`` (T,), ``success``; beside each ``episode_N.npz`` its ground-truth
   ``episode_N.json`` of which only ``instructions`` (``[{t, text}]``, the instruction
   in effect from time t on) is read, and ``meta.json`` (action space, control dt).
   The state vector is the flattened ``obs.<key>`` for ``state_keys`` (default
   ``robot``, ``objects``, ``task``) concatenated in that order; ``obs.rgb`` gives
   the images when training with images. Only act-phase steps are training targets;
   show-phase steps are still observed, so they are in the memory of later steps.
2. Plain (for data from elsewhere): ``obs_state`` (T, S) float32, ``actions`` (T, A),
   ``instruction`` str, optional ``images`` (T, h, w, 3) uint8,
   ``instruction_embedding`` (E,), ``success``, ``action_space`` str, ``dt_s``.

Instructions are embedded with MiniLM (384-d, ``perception/text.py``) unless the
episode carries ``instruction_embedding``.

A training sample is a target step ``t`` of an episode: its observation, its
instruction, the next ``H`` actions (the last action repeated past the end of the
episode) and, for the memory variant, a random ordered subset of up to
``memory_context`` earlier steps (show phase included).

Checkpoints (``<out>/checkpoint.pt``, written atomically every ``--checkpoint-every``
steps and at the end) hold the model (with its normalisation stats), the exponential
moving average of its weights (``ema``, what ``ActionExpertPolicy.load`` uses), optimiser,
step, config, task, seed and loss history. ``--resume`` continues from the step
stored there. Batches and diffusion noise are drawn from generators seeded by
``(seed, step)``, so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_STATE_KEYS",
    "Demonstrations",
    "Episode",
    "TrainConfig",
    "add_arguments",
    "default_out_dir",
    "load_checkpoint",
    "load_episodes",
    "run",
    "save_checkpoint",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "engram-action-expert/1"
#: observation keys of ``engram sim collect`` data flattened into the state, in order
DEFAULT_STATE_KEYS = ("robot", "objects", "task")
_SIM_FORMAT = "engram-sim-demos"


# ----------------------------------------------------------------------------- data


@dataclass
class Episode:
    """One demonstration of T steps.

    state (T, S) float32, actions (T, A) float32, images (T, px, px, 3) uint8 or None,
    instructions: the distinct texts, instruction_index (T,) int64 into them,
    target (T,) bool: steps used as training targets (act phase),
    instruction_embeddings: (len(instructions), E) float32 when the file carries them.
    """

    path: str
    state: np.ndarray
    actions: np.ndarray
    instructions: list[str]
    instruction_index: np.ndarray
    target: np.ndarray
    images: np.ndarray | None = None
    instruction_embeddings: np.ndarray | None = None
    success: bool = True
    action_space: str = ""
    dt_s: float = 0.1
    state_keys: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def _scalar(value: Any) -> Any:
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr


def _check_images(path: Path, images: np.ndarray, steps: int, key: str) -> None:
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[0] != steps
        or images.shape[3] != 3
    ):
        raise ValueError(
            f"{path}: {key} must be (T, h, w, 3) uint8 with T = {steps}, "
            f"got {images.shape} {images.dtype}"
        )


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / "meta.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc
    if meta.get("format") != _SIM_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {_SIM_FORMAT!r}")
    return meta


def _sim_instructions(
    path: Path, meta: dict[str, Any], t_s: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Per-step instruction from the episode's ground-truth log (or meta.json)."""
    timeline: list[tuple[float, str]] = []
    log_path = path.with_suffix(".json")
    if log_path.is_file():
        try:
            timeline = [
                (float(x["t"]), str(x["text"]))
                for x in json.loads(log_path.read_text())["instructions"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{log_path}: no readable 'instructions' list ({exc})") from exc
    else:
        entry = next((e for e in meta.get("episodes", []) if e.get("file") == path.name), None)
        if entry and entry.get("instructions"):
            timeline = [(0.0, str(entry["instructions"][0]))]
    if not timeline:
        raise ValueError(f"{path}: no instruction (neither {log_path.name} nor meta.json has one)")
    timeline.sort(key=lambda x: x[0])
    texts = list(dict.fromkeys(text for _, text in timeline))
    starts = np.array([t for t, _ in timeline])
    which = np.clip(np.searchsorted(starts, t_s + 1e-9, side="right") - 1, 0, None)
    index = np.array([texts.index(timeline[i][1]) for i in which], np.int64)
    return texts, index


def _read_sim_episode(
    path: Path, data: Any, meta: dict[str, Any], state_keys: Sequence[str], image_size_px: int
) -> Episode:
    actions = np.asarray(data["action"], dtype=np.float32)
    if actions.ndim != 2:
        raise ValueError(f"{path}: action must be (T, A), got {actions.shape}")
    steps = actions.shape[0]
    parts = []
    for key in state_keys:
        name = f"obs.{key}"
        if name not in data.files:
            have = sorted(f[4:] for f in data.files if f.startswith("obs."))
            raise ValueError(f"{path}: state key {key!r} missing; observations: {have}")
        value = np.asarray(data[name], dtype=np.float32)
        if value.shape[0] != steps:
            raise ValueError(f"{path}: {name} has {value.shape[0]} steps, action {steps}")
        parts.append(value.reshape(steps, -1))
    state = np.concatenate(parts, axis=1) if parts else np.zeros((steps, 0), np.float32)
    images = None
    if image_size_px:
        if "obs.rgb" not in data.files:
            raise ValueError(f"{path}: training with images needs obs.rgb (collect with --images)")
        rgb = np.asarray(data["obs.rgb"])
        _check_images(path, rgb, steps, "obs.rgb")
        from engram.planners.action_expert import prepare_images

        images = prepare_images(rgb, image_size_px)
    phase = np.asarray(data["phase"]) if "phase" in data.files else np.ones(steps, np.uint8)
    t_s = np.asarray(data["t_s"], np.float64) if "t_s" in data.files else np.arange(steps) * 0.1
    texts, index = _sim_instructions(path, meta, t_s)
    space = meta.get("action_space", {})
    return Episode(
        path=str(path),
        state=state,
        actions=actions,
        instructions=texts,
        instruction_index=index,
        target=phase.astype(bool),
        images=images,
        success=bool(_scalar(data["success"])) if "success" in data.files else True,
        action_space=str(space.get("name", "")) if isinstance(space, dict) else str(space),
        dt_s=float(meta.get("control_dt_s", 0.1)),
        state_keys=tuple(state_keys),
    )


def _read_plain_episode(path: Path, data: Any, image_size_px: int) -> Episode:
    missing = [k for k in ("obs_state", "actions", "instruction") if k not in data.files]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; has {sorted(data.files)}")
    state = np.asarray(data["obs_state"], dtype=np.float32)
    actions = np.asarray(data["actions"], dtype=np.float32)
    if state.ndim != 2 or actions.ndim != 2:
        raise ValueError(
            f"{path}: obs_state must be (T, S) and actions (T, A), got {state.shape} and {actions.shape}"
        )
    steps = actions.shape[0]
    if state.shape[0] != steps:
        raise ValueError(
            f"{path}: obs_state has {state.shape[0]} steps, actions {steps}; they must be equal"
        )
    images = None
    if image_size_px:
        if "images" not in data.files:
            raise ValueError(f"{path}: training with images needs an 'images' field")
        raw = np.asarray(data["images"])
        _check_images(path, raw, steps, "images")
        from engram.planners.action_expert import prepare_images

        images = prepare_images(raw, image_size_px)
    emb = None
    if "instruction_embedding" in data.files:
        emb = np.asarray(data["instruction_embedding"], dtype=np.float32).reshape(1, -1)
    return Episode(
        path=str(path),
        state=state,
        actions=actions,
        instructions=[str(_scalar(data["instruction"]))],
        instruction_index=np.zeros(steps, np.int64),
        target=np.ones(steps, bool),
        images=images,
        instruction_embeddings=emb,
        success=bool(_scalar(data["success"])) if "success" in data.files else True,
        action_space=str(_scalar(data["action_space"])) if "action_space" in data.files else "",
        dt_s=float(_scalar(data["dt_s"])) if "dt_s" in data.files else 0.1,
    )


def _read_episode(
    path: Path, meta: dict[str, Any], state_keys: Sequence[str], image_size_px: int
) -> Episode:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise ValueError(f"{path}: not a readable .npz episode ({exc})") from exc
    with data:
        if "action" in data.files and any(f.startswith("obs.") for f in data.files):
            ep = _read_sim_episode(path, data, meta, state_keys, image_size_px)
        else:
            ep = _read_plain_episode(path, data, image_size_px)
    if len(ep) < 1:
        raise ValueError(f"{path}: episode has no steps")
    if not (np.all(np.isfinite(ep.state)) and np.all(np.isfinite(ep.actions))):
        raise ValueError(f"{path}: observations or actions contain NaN or inf")
    return ep


def _episode_folder(data_dir: Path, task: str) -> tuple[Path, list[Path]]:
    for folder in (data_dir / task, data_dir) if task else (data_dir,):
        files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
        if files:
            return folder, files
    return data_dir, []


def load_episodes(
    data_dir: str | Path,
    task: str = "",
    *,
    successful_only: bool = True,
    state_keys: Sequence[str] = DEFAULT_STATE_KEYS,
    image_size_px: int = 0,
) -> list[Episode]:
    """All episodes of ``task`` under ``data_dir`` (or ``data_dir/<task>``), checked.

    ``image_size_px`` > 0 also loads the images, centre-cropped and resized to
    (px, px). Raises ``FileNotFoundError`` when there are none, ``ValueError`` naming
    the file and field when one is malformed or the episodes disagree on S, A.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"demonstration folder {str(root)!r} does not exist")
    folder, files = _episode_folder(root, task)
    if not files:
        where = f"{root / task} or {root}" if task else str(root)
        raise FileNotFoundError(
            f"no .npz episodes in {where}; make some with "
            f"`engram sim collect --task {task or 'T'} --episodes N --out {root}`"
        )
    meta = _read_meta(folder)
    if meta and task and meta.get("task") not in (None, task):
        raise ValueError(
            f"{folder / 'meta.json'}: demonstrations of {meta.get('task')!r}, not {task!r}"
        )
    episodes = [_read_episode(f, meta, tuple(state_keys), image_size_px) for f in files]
    first = episodes[0]
    for ep in episodes[1:]:
        if (
            ep.state.shape[1] != first.state.shape[1]
            or ep.actions.shape[1] != first.actions.shape[1]
        ):
            raise ValueError(
                f"{ep.path}: state/action widths {ep.state.shape[1]}/{ep.actions.shape[1]} "
                f"differ from {first.path}: {first.state.shape[1]}/{first.actions.shape[1]}"
            )
    if successful_only:
        kept = [ep for ep in episodes if ep.success]
        if not kept:
            raise ValueError(
                f"all {len(episodes)} episodes in {folder} are failures; nothing to clone"
            )
        episodes = kept
    if not any(ep.target.any() for ep in episodes):
        raise ValueError(f"no act-phase steps in the episodes of {folder}; nothing to clone")
    return episodes


_BATCH_KEYS = (
    "state",
    "actions",
    "instruction",
    "step",
    "image",
    "mem_state",
    "mem_step",
    "mem_mask",
    "mem_image",
)

TextEmbedder = Callable[[Sequence[str]], np.ndarray]  # B strings -> (B, E) float32


def _minilm_embedder() -> TextEmbedder:
    from engram.perception.encoders import make_encoder

    return make_encoder("minilm").encode_texts


class Demonstrations:
    """Behaviour-cloning samples drawn from a list of episodes (all in memory).

    ``batch(rng, B)`` -> dict of numpy arrays with the keys ``ActionExpert.loss`` reads.
    """

    def __init__(
        self,
        episodes: list[Episode],
        *,
        horizon: int,
        memory_context: int,
        text_embedder: TextEmbedder | None = None,
    ) -> None:
        if not episodes:
            raise ValueError("Demonstrations need at least one episode")
        self.episodes = episodes
        self.horizon = int(horizon)
        self.memory_context = int(memory_context)
        need = sorted(
            {t for ep in episodes if ep.instruction_embeddings is None for t in ep.instructions}
        )
        table: dict[str, np.ndarray] = {}
        if need:
            embed = text_embedder or _minilm_embedder()
            table = dict(zip(need, np.asarray(embed(need), dtype=np.float32)))
        # per episode: (T, E) instruction embedding of every step
        self.instruction: list[np.ndarray] = []
        for ep in episodes:
            vecs = (
                ep.instruction_embeddings
                if ep.instruction_embeddings is not None
                else np.stack([table[t] for t in ep.instructions])
            )
            self.instruction.append(vecs[ep.instruction_index])
        dims = {v.shape[1] for v in self.instruction}
        if len(dims) != 1:
            raise ValueError(f"instruction embeddings have different sizes {sorted(dims)}")
        self.instruction_dim = dims.pop()
        # flat index of target steps: (episode, step)
        self._targets = np.concatenate(
            [
                np.stack([np.full(int(ep.target.sum()), i), np.flatnonzero(ep.target)], 1)
                for i, ep in enumerate(episodes)
            ]
        ).astype(np.int64)
        self.num_samples = len(self._targets)
        self.state_dim = int(episodes[0].state.shape[1])
        self.action_dim = int(episodes[0].actions.shape[1])
        self.image_size_px = 0 if episodes[0].images is None else int(episodes[0].images.shape[1])

    def stats(self) -> dict[str, np.ndarray]:
        """Normalisation stats: action_min/max (A,) over target steps, state_mean/std (S,)."""
        actions = np.concatenate([ep.actions[ep.target] for ep in self.episodes])
        states = np.concatenate([ep.state for ep in self.episodes])
        return {
            "action_min": actions.min(0),
            "action_max": actions.max(0),
            "state_mean": states.mean(0),
            "state_std": states.std(0),
        }

    def batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """A random batch: see ``ActionExpert.loss`` for keys and shapes."""
        picks = self._targets[rng.integers(0, self.num_samples, size=batch_size)]
        h, m = self.horizon, self.memory_context
        cols: dict[str, list[Any]] = {k: [] for k in _BATCH_KEYS}
        for e, t in picks:
            ep = self.episodes[e]
            idx = np.minimum(np.arange(t, t + h), len(ep) - 1)
            cols["state"].append(ep.state[t])
            cols["actions"].append(ep.actions[idx])
            cols["instruction"].append(self.instruction[e][t])
            cols["step"].append(t)
            if ep.images is not None:
                cols["image"].append(ep.images[t])
            if m:
                k = min(m, int(t))
                past = np.sort(rng.choice(int(t), size=k, replace=False)) if k else np.zeros(0, int)
                padded = np.zeros(m, np.int64)
                padded[:k] = past
                cols["mem_state"].append(ep.state[padded])
                cols["mem_step"].append(padded)
                cols["mem_mask"].append(np.arange(m) < k)
                if ep.images is not None:
                    cols["mem_image"].append(ep.images[padded])
        out = {k: np.stack(v) for k, v in cols.items() if v}
        out["step"] = out["step"].astype(np.int64)
        return out


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Optimisation settings of ``train`` (saved in the checkpoint)."""

    steps: int = 3000  # total optimiser steps (a resumed run stops at the same total)
    batch_size: int = 64  # samples per step
    lr: float = 3e-4  # peak AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% of lr
    grad_clip: float = 1.0  # max gradient norm (0 = no clipping)
    # decay of the exponential moving average of the weights that policies load
    # (diffusion policies sample better from it); 0 = no EMA
    ema_decay: float = 0.995
    seed: int = 0  # seeds model init, batches and diffusion noise
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    # torch intra-op threads while training on the CPU (restored afterwards); 0 = torch's
    # default. These nets are small: on a shared 2-core machine 1 thread was 5x faster
    # than 2 (OpenMP workers spin when the cores are oversubscribed).
    cpu_threads: int = 1


def default_out_dir(task: str) -> Path:
    """``$ENGRAM_CACHE/experts/<task>`` (``~/.cache/engram`` by default)."""
    root = Path(os.environ.get("ENGRAM_CACHE", Path.home() / ".cache" / "engram"))
    return root.expanduser() / "experts" / (task or "default")


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _to_torch(batch: dict[str, np.ndarray], device: str) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (or ``<dir>/checkpoint.pt``); ``ValueError`` if not ours."""
    import torch

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no action-expert checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a damaged or partly written file
        raise ValueError(
            f"{path}: cannot read this action-expert checkpoint ({type(exc).__name__}: {exc}); "
            "a damaged or partly copied file? copy it again, or train anew"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an Engram action-expert checkpoint ({CHECKPOINT_FORMAT})")
    return payload


def train(
    task: str,
    data_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    device: str = "auto",
    expert_config: Any = None,
    train_config: TrainConfig | None = None,
    text_embedder: TextEmbedder | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], bool | None] | None = None,
) -> Path:
    """Behaviour-clone an ``ActionExpert`` on the demonstrations of ``task``.

    ``expert_config`` (``ActionExpertConfig``) sets the network; its data-dependent
    sizes (state_dim, action_dim, image_size_px, instruction_dim, action_space, dt_s)
    are taken from the data. ``steps`` / ``batch_size`` override ``train_config``.
    With ``resume`` the run continues from ``<out_dir>/checkpoint.pt`` (its network
    config, seed, batch size and lr; ``steps`` may be raised to train longer).
    ``on_step(step, loss)`` is called after every step (step counts from 1); returning
    True stops the run early, after writing a checkpoint (Ctrl-C does the same).
    Returns the checkpoint path.
    """
    from engram.sim import preload_triton

    # The optimiser imports torch._dynamo, hence triton: load it before any GL context
    # maps Mesa's libLLVM (or disable it when one already has; sim/_gl.py explains).
    preload_triton()
    import torch

    from engram.planners.action_expert import resolve_device

    tcfg = train_config or TrainConfig()
    if steps is not None:
        tcfg = replace(tcfg, steps=int(steps))
    if batch_size is not None:
        tcfg = replace(tcfg, batch_size=int(batch_size))
    if tcfg.steps < 1 or tcfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {tcfg.steps}, {tcfg.batch_size}")
    out = Path(out_dir).expanduser() if out_dir is not None else default_out_dir(task)
    device = resolve_device(device)
    run = _Run(task, data_dir, out / CHECKPOINT_NAME, tcfg, device)
    run.setup(expert_config, resume=resume, text_embedder=text_embedder)
    if device != "cpu" or tcfg.cpu_threads <= 0:
        return run.loop(progress=progress, on_step=on_step)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(tcfg.cpu_threads)
    try:
        return run.loop(progress=progress, on_step=on_step)
    finally:
        torch.set_num_threads(previous_threads)


class _Run:
    """One training run: data, model, optimiser, step counter, checkpoints."""

    def __init__(self, task: str, data_dir: Any, ckpt_path: Path, tcfg: TrainConfig, device: str):
        self.task, self.data_dir, self.ckpt_path = task, data_dir, ckpt_path
        self.tcfg, self.device = tcfg, device
        self.start_step = 0
        self.history: list[float] = []

    def setup(self, expert_config: Any, *, resume: bool, text_embedder: Any) -> None:
        import torch

        from engram.planners.action_expert import ActionExpert, ActionExpertConfig

        tcfg = self.tcfg
        payload = None
        ecfg = expert_config or ActionExpertConfig()
        if resume and self.ckpt_path.is_file():
            payload = load_checkpoint(self.ckpt_path, device=self.device)
            ecfg = ActionExpertConfig.from_dict(payload["config"])
            saved = payload["train_config"]
            keep = (
                "seed",
                "batch_size",
                "lr",
                "weight_decay",
                "warmup_steps",
                "grad_clip",
                "ema_decay",
            )
            tcfg = replace(tcfg, **{k: saved[k] for k in keep if k in saved})
            self.start_step = int(payload["step"])
            self.history = list(payload.get("loss_history", []))
        elif resume:
            log.warning("--resume: no checkpoint at %s, starting from step 0", self.ckpt_path)
        episodes = load_episodes(
            self.data_dir,
            self.task,
            state_keys=ecfg.state_keys or DEFAULT_STATE_KEYS,
            image_size_px=ecfg.image_size_px,
        )
        first = episodes[0]
        if payload is None:
            ecfg = replace(
                ecfg,
                state_dim=int(first.state.shape[1]),
                action_dim=int(first.actions.shape[1]),
                state_keys=first.state_keys,
                action_space=first.action_space or ecfg.action_space,
                dt_s=first.dt_s,
            )
        self.tcfg = tcfg
        self.data = Demonstrations(
            episodes,
            horizon=ecfg.horizon,
            memory_context=ecfg.memory_context if ecfg.use_memory else 0,
            text_embedder=text_embedder,
        )
        if (self.data.state_dim, self.data.action_dim) != (ecfg.state_dim, ecfg.action_dim):
            raise ValueError(
                f"{self.ckpt_path}: checkpoint expects state/action sizes "
                f"{ecfg.state_dim}/{ecfg.action_dim}, the data has "
                f"{self.data.state_dim}/{self.data.action_dim}"
            )
        self.ecfg = ecfg = replace(ecfg, instruction_dim=self.data.instruction_dim)
        torch.manual_seed(tcfg.seed)
        self.expert = ActionExpert(ecfg, device=self.device)
        self.opt = torch.optim.AdamW(
            self.expert.module.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay
        )
        if payload is not None:
            self.expert.load_state_dict(payload["model"])
            self.opt.load_state_dict(payload["optimizer"])
        else:
            self.expert.set_normalization(**self.data.stats())
        # EMA of the parameters (buffers are taken as they are when saving)
        self.ema: dict[str, Any] = {}
        if tcfg.ema_decay > 0:
            saved_ema = payload.get("ema") if payload is not None else None
            for name, param in self.expert.module.named_parameters():
                src = saved_ema[name] if saved_ema is not None else param.detach()
                self.ema[name] = src.detach().clone().to(param.device)
        self.num_episodes = len(episodes)

    def payload(self, step: int) -> dict[str, Any]:
        m = self.expert.module
        return {
            "format": CHECKPOINT_FORMAT,
            "task": self.task,
            "config": self.ecfg.to_dict(),
            "train_config": dict(self.tcfg.__dict__),
            "model": self.expert.state_dict(),
            "ema": {**self.expert.state_dict(), **self.ema} if self.ema else None,
            "optimizer": self.opt.state_dict(),
            "step": step,
            "normalization": {
                k: getattr(m, k).detach().cpu().numpy()
                for k in ("action_min", "action_max", "state_mean", "state_std")
            },
            "loss_history": list(self.history),
            "data": {
                "dir": str(self.data_dir),
                "episodes": self.num_episodes,
                "samples": self.data.num_samples,
            },
            "saved_unix_s": time.time(),
        }

    def step(self, step: int) -> float:
        """One optimiser step; batch and noise seeded by (seed, step)."""
        import torch

        tcfg, expert = self.tcfg, self.expert
        rng = np.random.default_rng([tcfg.seed, step])
        gen = torch.Generator(device=self.device).manual_seed(tcfg.seed * 1_000_003 + step)
        batch = _to_torch(self.data.batch(rng, tcfg.batch_size), self.device)
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(step, tcfg)
        loss = expert.loss(batch, generator=gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(expert.module.parameters(), tcfg.grad_clip)
        self.opt.step()
        if self.ema:
            decay = min(tcfg.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for name, param in expert.module.named_parameters():
                    self.ema[name].lerp_(param.detach(), 1.0 - decay)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {step}")
        return value

    def loop(self, *, progress: bool, on_step: Any) -> Path:
        tcfg = self.tcfg
        if self.start_step >= tcfg.steps:
            log.info("checkpoint at step %d already reaches %d steps", self.start_step, tcfg.steps)
            return self.ckpt_path
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=tcfg.steps, initial=self.start_step, desc=f"train {self.task}", unit="step"
            )
        self.expert.train()
        running, done = None, self.start_step
        try:
            for step in range(self.start_step, tcfg.steps):
                value = self.step(step)
                self.history.append(value)
                done = step + 1
                running = value if running is None else 0.98 * running + 0.02 * value
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{running:.4f}")
                stop = bool(on_step(done, value)) if on_step is not None else False
                if done % tcfg.checkpoint_every == 0 or done == tcfg.steps or stop:
                    save_checkpoint(self.ckpt_path, self.payload(done))
                if stop:
                    break
        except KeyboardInterrupt:
            if done > self.start_step:
                save_checkpoint(self.ckpt_path, self.payload(done))
                log.warning("interrupted at step %d; checkpoint written, --resume continues", done)
            raise
        finally:
            if bar is not None:
                bar.close()
        self.expert.eval()
        return self.ckpt_path


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--task", required=True, help="task name (demonstrations of it are used)")
    parser.add_argument(
        "--data", required=True, help="folder of .npz demonstrations (from `engram sim collect`)"
    )
    parser.add_argument(
        "--out", default=None, help="checkpoint folder (default: $ENGRAM_CACHE/experts/<task>)"
    )
    parser.add_argument(
        "--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"samples per step (default {d.batch_size})",
    )
    parser.add_argument(
        "--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints"
    )
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument(
        "--no-memory", action="store_true", help="ablation: train without the memory input"
    )
    parser.add_argument("--horizon", type=int, default=None, help="actions per chunk (default 8)")
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        metavar="PX",
        help="also encode the camera images (obs.rgb; collect with --images), resized to PXxPX",
    )
    parser.add_argument(
        "--threads", type=int, default=d.cpu_threads, help="torch threads on the CPU (0 = torch's)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from engram.planners.action_expert import ActionExpertConfig

    ecfg = ActionExpertConfig(use_memory=not args.no_memory, image_size_px=max(0, args.images))
    if args.horizon:
        ecfg = replace(ecfg, horizon=args.horizon)
    tcfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=max(1, args.checkpoint_every),
        cpu_threads=max(0, args.threads),
    )
    try:
        path = train(
            args.task,
            args.data,
            out_dir=args.out,
            resume=args.resume,
            device=args.device,
            expert_config=ecfg,
            train_config=tcfg,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"engram train: {exc}")
        return 2
    print(f"checkpoint: {path}")
    return 0
