"""Simulation: MuJoCo scenes and robots, the memory-dependent task suite, the sim node.

Public surface (resolved lazily: ``import sim`` does not import MuJoCo):

- ``make(task, **kwargs) -> SimEnv``: a Gymnasium environment; ``TASKS`` (the six
  memory tasks) and ``ENVS`` (plus ``model``: any MJCF file) map names to classes.
- ``load_model(path) -> mujoco.MjModel``: any MJCF/MJB file (e.g. MuJoCo Menagerie).
- ``RgbdRenderer``, ``RenderConfig``: offscreen RGB + depth + segmentation.
- ``ACTION_SPACES``: the documented action vectors (``engram.sim.robots``).
- ``ExpertPolicy``, ``ReactivePolicy``, ``run_episode`` (``engram.sim.policies``).
- ``SimNode``, ``SimNodeConfig``: the bus node (``engram.sim.node``, registered as ``sim``).
- ``collect``, ``load_episode``: demonstrations on disk (``engram.sim.collect``).
- ``run_demo``: one episode through the bus (``engram.sim.demo``).
- ``preload_triton``: call before torch training in a process that may render (``engram.sim._gl``
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
    "preload_triton": "engram.sim._gl",
    "ACTION_SPACES": "engram.sim.robots",
    "ENVS": "engram.sim.envs",
    "TASKS": "engram.sim.tasks",
    "ExpertPolicy": "engram.sim.policies",
    "ReactivePolicy": "engram.sim.policies",
    "RenderConfig": "engram.sim.render",
    "RgbdRenderer": "engram.sim.render",
    "SimNode": "engram.sim.node",
    "SimNodeConfig": "engram.sim.node",
    "collect": "engram.sim.collect",
    "load_episode": "engram.sim.collect",
    "load_model": "engram.sim.scene",
    "make": "engram.sim.envs",
    "run_demo": "engram.sim.demo",
    "run_episode": "engram.sim.policies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engram.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
