"""Demonstrations for ``engram train``: episodes on disk -> behaviour-cloning batches.

Two sources, found under ``DIR``, ``DIR/<task>`` (``--task all`` or ``a,b``: each task's
folder):

1. LeRobotDataset v3 (``meta/info.json`` with ``codebase_version`` v3.0, frames in
   ``data/chunk-*/file-*.parquet``, instructions in ``meta/tasks.parquet``): what
   ``engram sim collect`` writes (``sim/collect.py``) and what LeRobot's tools write.
   Engram's tabletop collections (``observation.robot``, ``observation.objects``,
   ``observation.task`` and ``info.engram.object_names``) are turned into the shared
   tabletop layout of ``features.py`` (one state width for every task, so one model
   learns them all), with each act-phase step's hindsight subgoal (planner mode);
   other LeRobot data uses ``observation.state`` as it is. ``observation.image``
   gives the images when training with images. Only act-phase steps
   (``observation.phase`` 1; all steps when there is no such column) are training
   targets; show-phase steps are still observed, so they are in later steps' memory.
2. Plain ``.npz`` (small synthetic sets, tests): ``obs_state`` (T, S) float32,
   ``actions`` (T, A), ``instruction`` str, optional ``images`` (T, h, w, 3) uint8,
   ``instruction_embedding`` (E,), ``success``, ``action_space`` str, ``dt_s``.

Instructions and subgoals are embedded with MiniLM (384-d, ``perception/text.py``)
unless the episode carries ``instruction_embedding``.

A training sample is a target step ``t`` of an episode: its observation, its
conditioning text (the instruction; or, with probability ``subgoal_fraction`` where
the step has one, its subgoal, with the subgoal's target in the state's goal slots),
the next ``H`` actions (the last action repeated past the end of the episode) and,
for the memory variant, up to ``memory_context`` earlier steps, one drawn from each of
as many equal spans of the past (show phase included; see ``_stratified``). ``augment_m`` adds Gaussian noise (metres) to the seen
objects' positions, so the expert tolerates perceived centroids.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_STATE_KEYS", "Demonstrations", "Episode", "TextEmbedder", "load_episodes"]

log = logging.getLogger(__name__)

#: kept for old callers: the keys ``engram sim collect`` data is built from
DEFAULT_STATE_KEYS = ("robot", "objects", "task")


@dataclass
class Episode:
    """One demonstration of T steps.

    state (T, S) float32, actions (T, A) float32, images (T, px, px, 3) uint8 or None,
    instructions: the distinct texts, instruction_index (T,) int64 into them,
    target (T,) bool: steps used as training targets (act phase),
    instruction_embeddings: (len(instructions), E) float32 when the file carries them,
    subgoals: distinct subgoal texts, subgoal_index (T,) int64 (-1: none), goal (T, 2)
    the subgoal's target (planner mode; ``features`` names the state layout).
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
    task: str = ""
    features: str = ""
    subgoals: list[str] = field(default_factory=list)
    subgoal_index: np.ndarray | None = None
    goal: np.ndarray | None = None
    object_names: list[str] = field(default_factory=list)
    # (T, 3) int64 per step: the subgoal's skill (features.SKILLS), object slot and
    # frame slot (features.segment_parts); -1 where none (tabletop layout only)
    pointer: np.ndarray | None = None
    # (T, 2) float32 per step: the running subgoal's progress (features.segment_progress)
    progress: np.ndarray | None = None
    # (T, 2) int64 per step: its subgoal segment's [first step, end), -1 where none
    segment: np.ndarray | None = None
    # (T,) bool per step: its label is a relabelled press descent (features.press_labels)
    press: np.ndarray | None = None

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


def _is_lerobot(folder: Path) -> bool:
    return (folder / "meta" / "info.json").is_file()


def _column(table: Any, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    size = getattr(col.type, "list_size", None)
    if size is None and hasattr(col.type, "value_type"):  # variable-size lists
        return np.stack([np.asarray(x, np.float32) for x in col.to_pylist()])
    if size is not None:
        return np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(
            len(col), size
        )
    return col.to_numpy(zero_copy_only=False)


def _read_lerobot(folder: Path, task: str, image_size_px: int) -> list[Episode]:
    """Every episode of one LeRobotDataset v3 folder (see the module doc)."""
    import pyarrow.dataset as ds

    from engram.planners.policies.diffusion import features as F

    info_path = folder / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{info_path}: unreadable ({exc})") from exc
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(
            f"{info_path}: LeRobotDataset {version!r}; this reader needs v3.x "
            "(convert with lerobot's convert_dataset_v21_to_v30)"
        )
    engram = info.get("engram") or {}
    if task and engram.get("task") not in (None, task):
        raise ValueError(f"{info_path}: demonstrations of {engram.get('task')!r}, not {task!r}")
    feats = info.get("features", {})
    if "action" not in feats:
        raise ValueError(f"{info_path}: no 'action' feature; has {sorted(feats)}")
    import pandas as pd

    tasks_df = pd.read_parquet(folder / "meta" / "tasks.parquet")
    texts_by_index = {int(i): str(t) for t, i in zip(tasks_df.index, tasks_df["task_index"])}
    table = ds.dataset(str(folder / "data"), format="parquet").to_table()
    ep_index = _column(table, "episode_index").astype(np.int64)
    frame_index = _column(table, "frame_index").astype(np.int64)
    actions_all = _column(table, "action")
    tabletop = all(f"observation.{k}" in feats for k in ("robot", "objects", "task")) and bool(
        engram.get("object_names")
    )
    if not tabletop and "observation.state" not in feats:
        raise ValueError(f"{info_path}: no 'observation.state' feature; has {sorted(feats)}")
    cols = {
        k: _column(table, k)
        for k in ("observation.robot", "observation.objects", "observation.task")
        if tabletop
    }
    state_all = None if tabletop else _column(table, "observation.state")
    phase_all = (
        _column(table, "observation.phase").astype(bool)
        if "observation.phase" in feats
        else np.ones(len(ep_index), bool)
    )
    task_idx_all = _column(table, "task_index").astype(np.int64)
    success_all = _column(table, "next.success").astype(bool) if "next.success" in feats else None
    img_col = None
    if image_size_px:
        if "observation.image" not in feats:
            raise ValueError(f"{info_path}: training with images needs observation.image")
        img_col = table.column("observation.image").combine_chunks().to_pylist()
    names = list(engram.get("object_names", []))
    space = engram.get("action_space", {})
    episodes = []
    for e in np.unique(ep_index):
        rows = np.flatnonzero(ep_index == e)
        rows = rows[np.argsort(frame_index[rows])]
        actions = actions_all[rows]
        act = phase_all[rows]
        texts_idx = task_idx_all[rows]
        distinct = list(dict.fromkeys(int(x) for x in texts_idx))
        instructions = [texts_by_index.get(x, "") for x in distinct]
        instruction_index = np.array([distinct.index(int(x)) for x in texts_idx], np.int64)
        subgoals: list[str] = []
        subgoal_index = None
        goal = None
        pointer = None
        progress = segment = None
        if tabletop:
            robot = cols["observation.robot"][rows]
            objects = cols["observation.objects"][rows].reshape(len(rows), -1, 5)
            extras = cols["observation.task"][rows]
            state = np.stack(
                [
                    F.state_vector(
                        robot[t], F.objects_from_env(objects[t], extras[t]), extras[t, 1]
                    )
                    for t in range(len(rows))
                ]
            )
            labels = F.label_subgoals(robot, actions, act, objects, names)
            subgoals = list(dict.fromkeys(x[0] for x in labels if x is not None))
            subgoal_index = np.array(
                [-1 if x is None else subgoals.index(x[0]) for x in labels], np.int64
            )
            goal = np.stack(
                [np.zeros(2, np.float32) if x is None else x[1] for x in labels]
            ).astype(np.float32)
            slots = state[:, F.ROBOT_DIM : F.ROBOT_DIM + F.MAX_OBJECTS * 5].reshape(
                len(rows), F.MAX_OBJECTS, 5
            )
            skill, obj, frame, where = F.segment_parts(labels, slots, names)
            pointer = np.stack([skill, obj, frame], axis=1)
            progress = F.segment_progress(labels, robot[:, 2])
            segment = F.segment_bounds(labels)
            # a subgoal's target is its object's position where the segment starts (what
            # the planner grounds it to; the tool's offset from it at the event is part
            # of the label); a place keeps the release point (the planner's target arg)
            grounded = (frame >= 0) & (skill != F.SKILLS.index("place"))
            goal[grounded] = where[grounded]
        else:
            state = state_all[rows]
        images = None
        if img_col is not None:
            from PIL import Image

            from engram.planners.policies.diffusion.action_expert import prepare_images

            raw = np.stack([np.asarray(Image.open(io.BytesIO(img_col[r]["bytes"]))) for r in rows])
            images = prepare_images(raw[..., :3].astype(np.uint8), image_size_px)
        episodes.append(
            Episode(
                path=f"{folder}#episode_{int(e)}",
                state=np.asarray(state, np.float32),
                actions=actions,
                instructions=instructions,
                instruction_index=instruction_index,
                target=act,
                images=images,
                success=bool(success_all[rows][-1]) if success_all is not None else True,
                action_space=str(space.get("name", "")) if isinstance(space, dict) else "",
                dt_s=1.0 / float(info.get("fps", 10)),
                state_keys=("robot", "objects", "task") if tabletop else ("state",),
                task=str(engram.get("task", task)),
                features=F.FEATURES if tabletop else "",
                subgoals=subgoals,
                subgoal_index=subgoal_index,
                goal=goal,
                object_names=names,
                pointer=pointer,
                progress=progress,
                segment=segment,
            )
        )
    return episodes


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


def _read_episode(path: Path, image_size_px: int) -> Episode:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise ValueError(f"{path}: not a readable .npz episode ({exc})") from exc
    with data:
        ep = _read_plain_episode(path, data, image_size_px)
    return ep


def _check(ep: Episode) -> Episode:
    if len(ep) < 1:
        raise ValueError(f"{ep.path}: episode has no steps")
    if not (np.all(np.isfinite(ep.state)) and np.all(np.isfinite(ep.actions))):
        raise ValueError(f"{ep.path}: observations or actions contain NaN or inf")
    return ep


def _read_folder(root: Path, task: str, image_size_px: int) -> tuple[Path, list[Episode]]:
    """The episodes of ``task`` in ``root/<task>`` or ``root`` (LeRobot or .npz)."""
    for folder in (root / task, root) if task else (root,):
        if _is_lerobot(folder):
            return folder, [_check(e) for e in _read_lerobot(folder, task, image_size_px)]
        files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
        if files:
            return folder, [_check(_read_episode(f, image_size_px)) for f in files]
    where = f"{root / task} or {root}" if task else str(root)
    raise FileNotFoundError(
        f"no demonstrations (a LeRobotDataset or .npz episodes) in {where}; make some with "
        f"`engram sim collect --task {task or 'T'} --episodes N --out {root / (task or 'T')}`"
    )


def load_episodes(
    data_dir: str | Path,
    task: str = "",
    *,
    successful_only: bool = True,
    state_keys: Sequence[str] = DEFAULT_STATE_KEYS,
    image_size_px: int = 0,
) -> list[Episode]:
    """All episodes of ``task`` under ``data_dir`` (or ``data_dir/<task>``), checked.

    ``task`` may list several tasks (``a,b``) or be ``all`` (every task folder under
    ``data_dir`` holding a dataset): one multi-task set (the tabletop layout gives
    them one state width). ``image_size_px`` > 0 also loads the images, centre-cropped
    and resized to (px, px). Raises ``FileNotFoundError`` when there are none,
    ``ValueError`` naming the file and field when one is malformed or the episodes
    disagree on S, A. ``state_keys`` is unused (kept for old callers).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"demonstration folder {str(root)!r} does not exist")
    if task == "all":
        tasks = sorted(p.name for p in root.iterdir() if _is_lerobot(p))
        if not tasks:
            raise FileNotFoundError(f"--task all: no dataset folders (meta/info.json) in {root}")
    else:
        tasks = [t.strip() for t in task.split(",")] if task else [""]
    episodes: list[Episode] = []
    for name in tasks:
        folder, eps = _read_folder(root, name, image_size_px)
        if successful_only:
            kept = [ep for ep in eps if ep.success]
            if not kept:
                raise ValueError(
                    f"all {len(eps)} episodes in {folder} are failures; nothing to clone"
                )
            eps = kept
        episodes += eps
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
    if not any(ep.target.any() for ep in episodes):
        raise ValueError(f"no act-phase steps in the episodes of {root}; nothing to clone")
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
    "diffuse",
    "pointer",
    "weight",
)

TextEmbedder = Callable[[Sequence[str]], np.ndarray]  # B strings -> (B, E) float32


def _stratified(rng: np.random.Generator, t: int, k: int) -> np.ndarray:
    """k sorted distinct steps of 0..t-1, one drawn from each of k equal spans.

    Why not k uniformly random steps: at inference the bank holds its ``capacity``
    entries spread over the whole episode (it merges the most similar *adjacent* pair),
    so every stretch of the past is represented; a uniform draw of 16 out of 80 steps
    misses a 5-step light of the show phase about a third of the time, which taught
    the expert that the bank need not tell it the order."""
    if k <= 0:
        return np.zeros(0, np.int64)
    edges = np.linspace(0, t, k + 1)
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(lo + 1, np.floor(edges[1:]).astype(np.int64))
    return np.minimum(lo + (rng.random(k) * (hi - lo)).astype(np.int64), t - 1)


def _minilm_embedder() -> TextEmbedder:
    from engram.perception.encoders import make_encoder

    return make_encoder("minilm").encode_texts


class Demonstrations:
    """Behaviour-cloning samples drawn from a list of episodes (all in memory).

    ``batch(rng, B)`` -> dict of numpy arrays with the keys ``ActionExpert.loss`` reads.
    ``subgoal_fraction``: share of samples conditioned on the step's subgoal (and its
    target) instead of the instruction, where the step has one; ``augment_m``: noise
    (m) on the seen objects' positions of the tabletop layout.
    """

    def __init__(
        self,
        episodes: list[Episode],
        *,
        horizon: int,
        memory_context: int,
        text_embedder: TextEmbedder | None = None,
        subgoal_fraction: float = 0.5,
        augment_m: float = 0.0,
        frame: str = "",
        progress: bool = False,
        segment_chunks: bool = False,
        press_weight: float = 1.0,
    ) -> None:
        """``frame`` (``ActionExpertConfig.frame``): ``goal`` = subgoal samples see the
        state and their waypoint labels relative to the subgoal's target, with no
        memory; instruction samples train only the pointer (see ``batch``).
        ``progress`` (``ActionExpertConfig.subgoal_progress``, goal frame): their goal
        slots carry the running subgoal's progress (``features.subgoal_progress``).
        ``segment_chunks`` (goal frame): a subgoal sample's chunk ends with its segment
        (the last waypoint held) instead of running into the next subgoal's motion.
        ``press_weight`` (goal frame): loss weight of the chunk positions whose label is
        a press descent (``Episode.press``; 1 = none), the rest weigh 1."""
        if not episodes:
            raise ValueError("Demonstrations need at least one episode")
        self.episodes = episodes
        self.horizon = int(horizon)
        self.memory_context = int(memory_context)
        self.subgoal_fraction = float(subgoal_fraction)
        self.augment_m = float(augment_m)
        self.frame = frame if episodes[0].features and episodes[0].goal is not None else ""
        self.progress = bool(progress) and self.frame == "goal"
        # why: past a segment's end the demonstration heads for the *next* subgoal,
        # which the running subgoal's text does not say (the next button of a sequence
        # lies anywhere); those labels taught a mode that left the target before the
        # press (round 3 traces: waypoints 5-10 cm off mid-press). The executor ends a
        # subgoal by the segments' own rule and drops the rest of its chunk.
        self.segment_chunks = bool(segment_chunks) and self.frame == "goal"
        self.press_weight = float(press_weight) if self.frame == "goal" else 1.0
        if self.progress and any(ep.progress is None for ep in episodes):
            raise ValueError("progress inputs need tabletop demonstrations (subgoal segments)")
        need = sorted(
            {t for ep in episodes if ep.instruction_embeddings is None for t in ep.instructions}
            | {t for ep in episodes for t in ep.subgoals}
        )
        table: dict[str, np.ndarray] = {}
        if need:
            embed = text_embedder or _minilm_embedder()
            table = dict(zip(need, np.asarray(embed(need), dtype=np.float32)))
        # per episode: (T, E) instruction embedding of every step; subgoal ones (T, E)
        self.instruction: list[np.ndarray] = []
        self.subgoal: list[np.ndarray | None] = []
        for ep in episodes:
            vecs = (
                ep.instruction_embeddings
                if ep.instruction_embeddings is not None
                else np.stack([table[t] for t in ep.instructions])
            )
            self.instruction.append(vecs[ep.instruction_index])
            if ep.subgoals and ep.subgoal_index is not None:
                sub = np.stack([table[t] for t in ep.subgoals])
                self.subgoal.append(sub[np.maximum(ep.subgoal_index, 0)])
            else:
                self.subgoal.append(None)
        dims = {v.shape[1] for v in self.instruction}
        if len(dims) != 1:
            raise ValueError(f"instruction embeddings have different sizes {sorted(dims)}")
        self.instruction_dim = dims.pop()
        self.features = episodes[0].features
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
        self.tasks = sorted({ep.task for ep in episodes if ep.task})
        self.object_names = {ep.task: ep.object_names for ep in episodes if ep.task}

    def stats(self) -> dict[str, np.ndarray]:
        """Normalisation stats: action_min/max (A,) over target steps, state_mean/std (S,)
        (goal frame: over the relative labels, and the states in both frames)."""
        if self.frame == "goal":
            from engram.planners.policies.diffusion import features as F

            acts, rel = [], []
            for ep in self.episodes:
                has = ep.target & (ep.subgoal_index >= 0)
                a = ep.actions[has].copy()
                a[:, :2] -= ep.goal[has]
                acts.append(a)
                prog = ep.progress[has] if self.progress else None
                rel.append(F.to_goal_frame(ep.state[has], ep.goal[has], prog))
            actions = np.concatenate(acts)
            states = np.concatenate([ep.state for ep in self.episodes] + rel)
        else:
            actions = np.concatenate([ep.actions[ep.target] for ep in self.episodes])
            states = np.concatenate([ep.state for ep in self.episodes])
        std = states.std(0)
        if self.features:
            from engram.planners.policies.diffusion.features import STATE_DIM

            # the goal slots are mostly zeros in the data: give them a fixed scale
            std[STATE_DIM - 3 : STATE_DIM - 1] = 0.15
            std[STATE_DIM - 1] = 0.5
        mean = states.mean(0)
        if self.progress:
            from engram.planners.policies.diffusion.features import STATE_DIM

            # the progress inputs exist only in goal-frame samples: their own scale
            ps = np.concatenate(rel)[:, STATE_DIM - 3 : STATE_DIM - 1]
            mean[STATE_DIM - 3 : STATE_DIM - 1] = ps.mean(0)
            std[STATE_DIM - 3 : STATE_DIM - 1] = np.maximum(ps.std(0), 0.05)
        return {
            "action_min": actions.min(0),
            "action_max": actions.max(0),
            "state_mean": mean,
            "state_std": std,
        }

    def _state(self, e: int, idx: np.ndarray, with_goal: bool, rng: Any) -> np.ndarray:
        ep = self.episodes[e]
        state = ep.state[idx].copy()
        if not self.features:
            return state
        from engram.planners.policies.diffusion import features as F

        if with_goal and ep.goal is not None and self.frame != "goal":
            has = ep.subgoal_index[idx] >= 0
            state[has, F.STATE_DIM - 3 : F.STATE_DIM - 1] = ep.goal[idx][has]
            state[has, F.STATE_DIM - 1] = 1.0
        if self.augment_m > 0:
            objs = state[:, F.ROBOT_DIM : F.ROBOT_DIM + F.MAX_OBJECTS * 5].reshape(len(idx), -1, 5)
            seen = objs[:, :, :1] > 0.5
            objs[:, :, 1:4] += seen * rng.normal(0.0, self.augment_m, objs[:, :, 1:4].shape)
            state[:, F.ROBOT_DIM : F.ROBOT_DIM + F.MAX_OBJECTS * 5] = objs.reshape(len(idx), -1)
        return state

    def batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """A random batch: see ``ActionExpert.loss`` for keys and shapes."""
        picks = self._targets[rng.integers(0, self.num_samples, size=batch_size)]
        h, m = self.horizon, self.memory_context
        cols: dict[str, list[Any]] = {k: [] for k in _BATCH_KEYS}
        for e, t in picks:
            ep = self.episodes[e]
            idx = np.minimum(np.arange(t, t + h), len(ep) - 1)
            sub = self.subgoal[e]
            use_sub = (
                sub is not None
                and ep.subgoal_index is not None
                and ep.subgoal_index[t] >= 0
                and rng.random() < self.subgoal_fraction
            )
            state = self._state(e, np.array([t]), use_sub, rng)[0]
            goal_frame = self.frame == "goal"
            if goal_frame and use_sub and self.segment_chunks and ep.segment is not None:
                idx = np.minimum(idx, ep.segment[t, 1] - 1)
            actions = ep.actions[idx]
            if goal_frame and use_sub:
                from engram.planners.policies.diffusion.features import to_goal_frame

                g = ep.goal[t]
                state = to_goal_frame(state, g, ep.progress[t] if self.progress else None)
                actions = actions.copy()
                actions[:, :2] -= g
            cols["state"].append(state)
            cols["actions"].append(actions)
            cols["instruction"].append(sub[t] if use_sub else self.instruction[e][t])
            cols["step"].append(t)
            if goal_frame:
                ptr = ep.pointer[t] if ep.pointer is not None else np.full(3, -1)
                cols["diffuse"].append(bool(use_sub))
                cols["pointer"].append(np.full(3, -1) if use_sub else ptr)
                if self.press_weight != 1.0:
                    hit = ep.press[idx] if use_sub and ep.press is not None else np.zeros(h, bool)
                    cols["weight"].append(np.where(hit, self.press_weight, 1.0).astype(np.float32))
            if ep.images is not None:
                cols["image"].append(ep.images[t])
            if m:
                k = 0 if goal_frame and use_sub else min(m, int(t))
                past = _stratified(rng, int(t), k)
                padded = np.zeros(m, np.int64)
                padded[:k] = past
                cols["mem_state"].append(self._state(e, padded, use_sub, rng))
                cols["mem_step"].append(padded)
                cols["mem_mask"].append(np.arange(m) < k)
                if ep.images is not None:
                    cols["mem_image"].append(ep.images[padded])
        out = {k: np.stack(v) for k, v in cols.items() if v}
        out["step"] = out["step"].astype(np.int64)
        if "pointer" in out:
            out["pointer"] = out["pointer"].astype(np.int64)
        return out
