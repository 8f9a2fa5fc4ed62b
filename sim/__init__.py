"""Simulation: MuJoCo scenes and robots, the memory-dependent task suite, the sim node.

Public surface (resolved lazily: ``import sim`` does not import MuJoCo):

- ``make(task, **kwargs) -> SimEnv``: a Gymnasium environment; ``TASKS`` (the six
  memory tasks) and ``ENVS`` (plus ``model``: any MJCF file) map names to classes.
- ``load_model(path) -> mujoco.MjModel``: any MJCF/MJB file (e.g. MuJoCo Menagerie).
- ``RgbdRenderer``, ``RenderConfig``: offscreen RGB + depth + segmentation.
- ``ACTION_SPACES``: the documented action vectors (``sim.robots``).
- ``ExpertPolicy``, ``ReactivePolicy``, ``run_episode`` (``sim.policies``).
- ``SimNode``, ``SimNodeConfig``: the bus node (``sim.node``, registered as ``sim``).
- ``collect``, ``load_episode``: demonstrations on disk (``sim.collect``).
- ``run_demo``: one episode through the bus (``sim.demo``).
- ``preload_triton``: call before torch training in a process that may render (``sim._gl``
  explains the triton / Mesa LLVM clash).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ACTION_SPACES",
    "ENVS",
    "TASKS",
    "ExpertPolicy",
    "ReactivePolicy",
    "RenderConfig",
    "RgbdRenderer",
    "SimNode",
    "SimNodeConfig",
    "collect",
    "load_episode",
    "load_model",
    "make",
    "preload_triton",
    "run_demo",
    "run_episode",
]

_LAZY: dict[str, str] = {
    "preload_triton": "sim._gl",
    "ACTION_SPACES": "sim.robots",
    "ENVS": "sim.envs",
    "TASKS": "sim.tasks",
    "ExpertPolicy": "sim.policies",
    "ReactivePolicy": "sim.policies",
    "RenderConfig": "sim.render",
    "RgbdRenderer": "sim.render",
    "SimNode": "sim.node",
    "SimNodeConfig": "sim.node",
    "collect": "sim.collect",
    "load_episode": "sim.collect",
    "load_model": "sim.scene",
    "make": "sim.envs",
    "run_demo": "sim.demo",
    "run_episode": "sim.policies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
