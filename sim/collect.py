"""Record scripted-expert demonstrations to disk (``engram sim collect``).

Format (version 1) of an output directory::

    meta.json                 what is in the directory (below)
    episode_000000.npz        one episode's arrays
    episode_000000.json       that episode's ground-truth log (GroundTruthLog.to_dict)
    ...

``episode_*.npz`` holds, for T steps (observation t is what the policy saw
before action t):

- ``obs.<key>``: (T, ...) every observation key of the task (``robot``,
  ``objects``, ``task``, ``audio`` for apartment tasks, and ``rgb`` (T, H, W, 3)
  uint8 / ``depth`` / ``segmentation`` with ``--images``),
- ``action``: (T, A) float32 actions the robot executed (during the show
  phase these are the environment's own, e.g. the tour),
- ``phase``: (T,) uint8, 0 = show, 1 = act (the agent's actions count),
- ``reward``: (T,) float32, ``t_s``: (T,) float64 simulation time before the step,
- ``success``: () bool, ``seed``: () int64.

``meta.json``: ``format`` ("engram-sim-demos"), ``version``, ``task``,
``control_dt_s``, ``action_space`` (name, names, units, low, high),
``observation`` (key -> shape without T, dtype), ``images``, ``camera``,
``policy``, ``success_rate`` and ``episodes``: a list of ``{file, ground_truth,
seed, steps, success, instructions, decision_time_s}``.

``load_episode(path)`` reads one episode back as a dict of arrays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "VERSION", "collect", "load_episode", "read_meta"]

FORMAT = "engram-sim-demos"
VERSION = 1


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
    """Run ``episodes`` episodes (seeds seed, seed+1, ...) and write them; returns meta."""
    from engram.runtime import registry
    from engram.sim.envs import make

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if policy not in (known := registry.known("policy")):
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(known)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"obs_images": images, "width_px": width_px, "height_px": height_px}
    if camera:
        kwargs["camera"] = camera
    env = make(task, **kwargs)
    space = env.controller.space
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "description": env.description,
        "control_dt_s": env.config.control_dt_s,
        "action_space": {
            "name": space.name,
            "names": list(space.names),
            "units": list(space.units),
            "low": list(space.low),
            "high": list(space.high),
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
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, desc=f"collect {task}", unit="episode")
    successes = 0
    try:
        for i in range(episodes):
            ep_seed = seed + i
            pol = registry.get("policy", policy)(seed=ep_seed)
            obs, info = env.reset(seed=ep_seed)
            pol.reset(env)
            rec: dict[str, list] = {f"obs.{k}": [] for k in obs}
            actions, phases, rewards, times = [], [], [], []
            while True:
                for k, v in obs.items():
                    rec[f"obs.{k}"].append(v)
                phases.append(1 if info["phase"] == "act" else 0)
                times.append(info["t_s"])
                obs, reward, terminated, truncated, info = env.step(pol.act(obs, info).actions[0])
                actions.append(info["executed_action"])
                rewards.append(reward)
                if terminated or truncated:
                    break
            success = bool(info["success"])
            successes += success
            name = f"episode_{i:06d}"
            arrays = {k: np.stack(v) for k, v in rec.items()}
            arrays.update(
                action=np.asarray(actions, np.float32),
                phase=np.asarray(phases, np.uint8),
                reward=np.asarray(rewards, np.float32),
                t_s=np.asarray(times, np.float64),
                success=np.asarray(success),
                seed=np.asarray(ep_seed, np.int64),
            )
            np.savez_compressed(out / f"{name}.npz", **arrays)
            gt = env.ground_truth()
            (out / f"{name}.json").write_text(json.dumps(gt))
            entry = {
                "file": f"{name}.npz",
                "ground_truth": f"{name}.json",
                "seed": ep_seed,
                "steps": len(actions),
                "success": success,
                "instructions": [x["text"] for x in gt["instructions"]],
                "decision_time_s": gt["decision_time_s"],
            }
            meta["episodes"].append(entry)
            if on_episode is not None:
                on_episode(entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(success=f"{successes}/{i + 1}")
    finally:
        if bar is not None:
            bar.close()
        env.close()
    meta["success_rate"] = successes / episodes
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a collection, checked for format and version."""
    path = Path(out_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no meta.json in {out_dir} (not an `engram sim collect` output)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"expected {FORMAT!r} version {VERSION}"
        )
    return meta


def load_episode(path: str | Path) -> dict[str, np.ndarray]:
    """One ``episode_*.npz`` as a dict of arrays (keys as in the module docstring)."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
