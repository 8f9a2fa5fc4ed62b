"""A tiny tabletop action expert trained for a few steps on real `engram sim collect`
data (LeRobotDataset v3): what the policy-node, checkpoint and evaluation tests load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._synthetic import tiny_config


def constant_embedder(texts):
    return np.ones((len(texts), 384), np.float32)


_CACHE: dict[tuple[str, ...], Path] = {}


def tiny_tabletop_checkpoint(root: Path | None = None, tasks=("cups", "count")) -> Path:
    """Collect 2 episodes of each task under ``root/data``, train 2 steps -> checkpoint.
    Without ``root`` one checkpoint per task set is made once per test session (in a
    temporary folder) and shared: these tests check plumbing, not skill."""
    import tempfile

    from engram.planners.policies.diffusion.train import train
    from engram.sim.collect import collect

    if root is None:
        key = tuple(tasks)
        if key not in _CACHE:
            _CACHE[key] = tiny_tabletop_checkpoint(Path(tempfile.mkdtemp(prefix="expert-")), tasks)
        return _CACHE[key]

    for task in tasks:
        collect(task, 2, root / "data" / task, seed=5, progress=False)
    return train(
        ",".join(tasks),
        root / "data",
        out_dir=root / "ckpt",
        steps=2,
        device="cpu",
        expert_config=tiny_config(horizon=4),
        text_embedder=constant_embedder,
        progress=False,
    )
