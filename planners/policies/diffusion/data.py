"""Demonstrations for ``engram train``: episodes on disk -> behaviour-cloning batches.

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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_STATE_KEYS", "Demonstrations", "Episode", "TextEmbedder", "load_episodes"]

log = logging.getLogger(__name__)

#: observation keys of ``engram sim collect`` data flattened into the state, in order
DEFAULT_STATE_KEYS = ("robot", "objects", "task")
_SIM_FORMAT = "engram-sim-demos"


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
        from engram.planners.policies.diffusion.action_expert import prepare_images

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
        from engram.planners.policies.diffusion.action_expert import prepare_images

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
