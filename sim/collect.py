"""Record scripted-expert demonstrations as a LeRobotDataset v3 (``engram sim collect``).

The output directory is a LeRobotDataset in the documented v3.0 layout
(``codebase_version`` "v3.0": https://huggingface.co/blog/lerobot-datasets-v3), so
LeRobot's own loaders and policies read it and Engram's trainer reads LeRobot data::

    meta/info.json                               schema, fps, path templates (+ "engram")
    meta/stats.json                              per-feature mean / std / min / max / count
    meta/tasks.parquet                           task (instruction text) -> task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode (length, offsets, tasks)
    data/chunk-000/file-000.parquet              one row per frame, all episodes

Written with pyarrow, not the ``lerobot`` package: lerobot pins an older torch than
this project's, so it cannot share the environment (``../shared/DEPENDENCIES.md``).

Frame columns (frame t is what the policy saw before action t):

- ``observation.state`` (S,) float32: ``robot``, ``objects`` (flattened) and ``task``
  concatenated; each also on its own as ``observation.robot``, ``observation.objects``
  (N*5: per tracked object [visible, x, y, z, yaw], names in ``info.engram.object_names``)
  and ``observation.task`` ([phase, time in episode (s), task extras]);
- ``observation.image`` (``--images``): the task camera's RGB, dtype ``image`` (PNG
  bytes in the parquet, LeRobot's non-video image storage);
- ``action`` (A,) float32: what the robot executed (show phase: the env's own);
- ``observation.phase`` int64 (0 show, 1 act), ``next.reward`` float32, ``next.done``
  bool, ``next.success`` bool (the episode's outcome, on every frame);
- LeRobot's bookkeeping: ``timestamp`` (s), ``frame_index``, ``episode_index``,
  ``index`` (global), ``task_index`` (the instruction in effect at that frame:
  instructions can change mid-episode, e.g. a question after a tour).

``info.json`` adds an ``engram`` block: task, action space (name, names, units, low,
high), object names, observation shapes, policy, success rate and per-episode
ground-truth file names (``ground_truth/episode_N.json``: ``GroundTruthLog``).

``read_meta(root)`` reads ``info.json`` (checked); ``load_episode(root, i)`` one
episode's columns as arrays.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CODEBASE_VERSION", "collect", "load_episode", "object_offsets", "read_meta"]

CODEBASE_VERSION = "v3.0"  # LeRobotDataset format version written here
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_CHUNKS_SIZE = 1000  # LeRobot's default files per chunk folder


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _feature(dtype: str, shape: tuple[int, ...], names: Any = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "names": names}


def _stats(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, np.float64).reshape(len(values), -1)
    return {
        "mean": v.mean(0).tolist(),
        "std": v.std(0).tolist(),
        "min": v.min(0).tolist(),
        "max": v.max(0).tolist(),
        "count": [len(v)],
    }


def _offsets(env: Any) -> dict[str, list[float]]:
    """Per tracked object: the centre of its geometry's bounding box minus its body
    origin (m, world frame, as it stands now). ``observation.objects`` gives body
    origins (a cup's is at its rim-down base); perception reports the centre of what
    it sees, so a learned policy fed percepts subtracts this."""
    from engram.sim._gl import import_mujoco

    mujoco = import_mujoco()
    u = env.unwrapped
    m, d = u.model, u.data
    mujoco.mj_forward(m, d)
    out: dict[str, list[float]] = {}
    for name in getattr(u, "tracked", []):
        body = u._body(name)
        lo, hi = [], []
        for g in np.flatnonzero(m.geom_bodyid == body):
            rot = d.geom_xmat[g].reshape(3, 3)
            centre = d.geom_xpos[g] + rot @ m.geom_aabb[g, :3]
            half = np.abs(rot) @ m.geom_aabb[g, 3:]
            lo.append(centre - half)
            hi.append(centre + half)
        if lo:
            mid = (np.min(lo, 0) + np.max(hi, 0)) / 2 - u.body_pos(name)
            out[name] = [round(float(v), 4) for v in mid]
    return out


def object_offsets(task: str) -> dict[str, list[float]]:
    """``_offsets`` of ``task``'s tracked objects (an episode reset at seed 0)."""
    from engram.sim.envs import make

    env = make(task)
    try:
        env.reset(seed=0)
        return _offsets(env)
    finally:
        env.close()


def collect(
    task: str,
    episodes: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    policy: str = "expert",
    images: bool = False,
    width_px: int = 128,
    height_px: int = 96,
    camera: str | None = None,
    progress: bool = True,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes (seeds seed, seed+1, ...) and write them as one
    LeRobotDataset v3 under ``out_dir``; returns ``info.json``'s ``engram`` block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engram.runtime import registry
    from engram.sim.envs import make

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if policy not in (known := registry.known("policy")):
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(known)}")
    out = Path(out_dir)
    if (out / "meta" / "info.json").exists():
        raise ValueError(f"{out} already holds a dataset; choose a new --out")
    kwargs: dict[str, Any] = {"obs_images": images, "width_px": width_px, "height_px": height_px}
    if camera:
        kwargs["camera"] = camera
    env = make(task, **kwargs)
    space = env.controller.space
    fps = round(1.0 / env.config.control_dt_s)
    cols: dict[str, list[Any]] = {}
    ep_rows: list[dict[str, Any]] = []
    tasks: dict[str, int] = {}
    engram: dict[str, Any] = {
        "task": task,
        "description": env.description,
        "control_dt_s": env.config.control_dt_s,
        "action_space": {
            "name": space.name,
            "names": list(space.names),
            "units": list(space.units),
            "low": list(map(float, space.low)),
            "high": list(map(float, space.high)),
        },
        "observation": {
            k: {"shape": list(s.shape), "dtype": str(s.dtype)}
            for k, s in env.observation_space.spaces.items()
        },
        "images": images,
        "camera": env.camera if images else None,
        "policy": policy,
        "episodes": [],
    }
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, desc=f"collect {task}", unit="episode")
    successes, index = 0, 0
    try:
        for i in range(episodes):
            ep_seed = seed + i
            pol = registry.get("policy", policy)(seed=ep_seed)
            obs, info = env.reset(seed=ep_seed)
            engram.setdefault("object_names", list(info.get("object_names", [])))
            engram.setdefault("object_offsets_m", _offsets(env))
            pol.reset(env)
            frames: list[dict[str, Any]] = []
            while True:
                frames.append({"obs": obs, "phase": info["phase"], "t": info["t_s"]})
                obs, reward, terminated, truncated, info = env.step(pol.act(obs, info).actions[0])
                frames[-1]["action"] = np.asarray(info["executed_action"], np.float32)
                frames[-1]["reward"] = float(reward)
                if terminated or truncated:
                    break
            success = bool(info["success"])
            successes += success
            gt = env.ground_truth()
            gt_name = f"ground_truth/episode_{i:06d}.json"
            (out / gt_name).write_text(json.dumps(gt))
            timeline = sorted((float(x["t"]), str(x["text"])) for x in gt["instructions"])
            for _, text in timeline:
                tasks.setdefault(text, len(tasks))
            starts = np.array([t for t, _ in timeline] or [0.0])
            t0 = frames[0]["t"]
            for f_i, fr in enumerate(frames):
                o = fr["obs"]
                which = max(0, int(np.searchsorted(starts, fr["t"] + 1e-9, side="right")) - 1)
                text = timeline[which][1] if timeline else env.description
                tasks.setdefault(text, len(tasks))
                robot = np.asarray(o["robot"], np.float32).reshape(-1)
                objects = np.asarray(o["objects"], np.float32).reshape(-1)
                extras = np.asarray(o["task"], np.float32).reshape(-1)
                row = {
                    "observation.state": np.concatenate([robot, objects, extras]),
                    "observation.robot": robot,
                    "observation.objects": objects,
                    "observation.task": extras,
                    "action": fr["action"],
                    "observation.phase": int(fr["phase"] == "act"),
                    "next.reward": fr["reward"],
                    "next.done": f_i == len(frames) - 1,
                    "next.success": success,
                    "timestamp": float(np.float32(fr["t"] - t0)),
                    "frame_index": f_i,
                    "episode_index": i,
                    "index": index,
                    "task_index": tasks[text],
                }
                if images:
                    row["observation.image"] = {"bytes": _png(o["rgb"]), "path": None}
                for k, v in row.items():
                    cols.setdefault(k, []).append(v)
                index += 1
            ep_rows.append(
                {
                    "episode_index": i,
                    "tasks": [t for _, t in timeline] or [env.description],
                    "length": len(frames),
                    "data/chunk_index": 0,
                    "data/file_index": 0,
                    "dataset_from_index": index - len(frames),
                    "dataset_to_index": index,
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                    "seed": ep_seed,
                    "success": success,
                }
            )
            entry = {
                "episode_index": i,
                "ground_truth": gt_name,
                "seed": ep_seed,
                "steps": len(frames),
                "success": success,
                "instructions": [t for _, t in timeline],
                "decision_time_s": gt["decision_time_s"],
            }
            engram["episodes"].append(entry)
            if on_episode is not None:
                on_episode(entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(success=f"{successes}/{i + 1}")
    finally:
        if bar is not None:
            bar.close()
        env.close()
    engram["success_rate"] = successes / episodes

    def fixed(name: str) -> Any:
        arr = np.stack(cols[name]).astype(np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])

    vector_keys = ("observation.state", "observation.robot", "observation.objects")
    vector_keys += ("observation.task", "action")
    table: dict[str, Any] = {k: fixed(k) for k in vector_keys}
    table["observation.phase"] = pa.array(cols["observation.phase"], pa.int64())
    table["next.reward"] = pa.array(cols["next.reward"], pa.float32())
    table["next.done"] = pa.array(cols["next.done"], pa.bool_())
    table["next.success"] = pa.array(cols["next.success"], pa.bool_())
    table["timestamp"] = pa.array(cols["timestamp"], pa.float32())
    for k in ("frame_index", "episode_index", "index", "task_index"):
        table[k] = pa.array(cols[k], pa.int64())
    if images:
        table["observation.image"] = pa.array(
            cols["observation.image"], pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        )
    (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), out / DATA_PATH.format(chunk_index=0, file_index=0))
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(ep_rows), out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    )
    # LeRobot reads tasks.parquet with pandas: the task text is the index, task_index a column
    import pandas as pd

    pd.DataFrame(
        {"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task")
    ).to_parquet(out / "meta" / "tasks.parquet")
    dims = {k: len(cols[k][0]) for k in vector_keys}
    names = engram["action_space"]["names"]
    features = {
        k: _feature("float32", (dims[k],), names if k == "action" else None) for k in vector_keys
    }
    features["observation.phase"] = _feature("int64", (1,))
    features["next.reward"] = _feature("float32", (1,))
    features["next.done"] = _feature("bool", (1,))
    features["next.success"] = _feature("bool", (1,))
    features["timestamp"] = _feature("float32", (1,))
    for k in ("frame_index", "episode_index", "index", "task_index"):
        features[k] = _feature("int64", (1,))
    if images:
        features["observation.image"] = _feature(
            "image", (height_px, width_px, 3), ["height", "width", "channels"]
        )
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "engram_" + space.name,
        "total_episodes": episodes,
        "total_frames": index,
        "total_tasks": len(tasks),
        "chunks_size": _CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
        "engram": engram,
    }
    stats = {k: _stats(np.stack(cols[k])) for k in vector_keys}
    for k in ("observation.phase", "next.reward", "timestamp", "frame_index", "episode_index"):
        stats[k] = _stats(np.asarray(cols[k])[:, None])
    (out / "meta" / "stats.json").write_text(json.dumps(stats))
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return engram


def read_meta(root: str | Path) -> dict[str, Any]:
    """``meta/info.json`` of a dataset ``engram sim collect`` wrote (checked), with its
    ``engram`` block's keys (task, action_space, object_names, episodes, ...) on top."""
    path = Path(root) / "meta" / "info.json"
    if not path.is_file():
        raise FileNotFoundError(f"no meta/info.json in {root} (not a LeRobotDataset)")
    try:
        info = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise ValueError(
            f"{path}: LeRobotDataset {info.get('codebase_version')!r}, expected "
            f"{CODEBASE_VERSION!r} (convert it with lerobot's convert_dataset_v21_to_v30)"
        )
    return {**info.get("engram", {}), "info": info}


def load_episode(root: str | Path, episode_index: int) -> dict[str, np.ndarray]:
    """One episode's frame columns as arrays (T, ...); images decoded to (T, H, W, 3)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(str(Path(root) / "data"), format="parquet").to_table(
        filter=pc.field("episode_index") == int(episode_index)
    )
    if table.num_rows == 0:
        raise ValueError(f"{root}: no frames of episode {episode_index}")
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name == "observation.image":
            from PIL import Image

            out[name] = np.stack(
                [np.asarray(Image.open(io.BytesIO(x["bytes"]))) for x in col.to_pylist()]
            )
        elif isinstance(col.type, type(col.type)) and hasattr(col.type, "list_size"):
            out[name] = np.asarray(col.flatten().to_numpy(), np.float32).reshape(
                len(col), col.type.list_size
            )
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    order = np.argsort(out["frame_index"])
    return {k: v[order] for k, v in out.items()}
