"""Simulation: MuJoCo scenes and robots, the memory-dependent task suite, the sim node.

Public surface (resolved lazily: ``import sim`` does not import MuJoCo):

- ``make(task, **kwargs) -> SimEnv``: a Gymnasium environment of a task (``TaskSpec``
  per task in ``engram.sim.tasks``, registered under kind ``task``; gymnasium ids
  ``engram/<task>-v0`` once ``engram.sim.tasks`` is imported) or ``model`` (any MJCF file).
- ``TaskSpec``, ``make_env`` (``engram.sim.tasks.spec``).
- ``load_model(path) -> mujoco.MjModel``: any MJCF/MJB file (e.g. MuJoCo Menagerie).
- ``RgbdRenderer``, ``RenderConfig``: offscreen RGB + depth + segmentation.
- ``ACTION_SPACES``: the documented action vectors (``engram.sim.robots``).
- ``SimNode``, ``SimNodeConfig``: the bus node (``engram.sim.node``, registered as ``sim``).
- ``collect``, ``load_episode``: demonstrations on disk (``engram.sim.collect``).
- ``preload_triton``: call before torch training in a process that may render (``engram.sim._gl``
  explains the triton / Mesa LLVM clash).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ACTION_SPACES",
    "RenderConfig",
    "RgbdRenderer",
    "SimNode",
    "SimNodeConfig",
    "TaskSpec",
    "collect",
    "load_episode",
    "load_model",
    "make",
    "make_env",
    "preload_triton",
]

_LAZY: dict[str, str] = {
    "preload_triton": "engram.sim._gl",
    "ACTION_SPACES": "engram.sim.robots",
    "RenderConfig": "engram.sim.render",
    "RgbdRenderer": "engram.sim.render",
    "SimNode": "engram.sim.node",
    "SimNodeConfig": "engram.sim.node",
    "collect": "engram.sim.collect",
    "load_episode": "engram.sim.collect",
    "load_model": "engram.sim.scene",
    "make": "engram.sim.envs",
    "TaskSpec": "engram.sim.tasks.spec",
    "make_env": "engram.sim.tasks.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engram.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
