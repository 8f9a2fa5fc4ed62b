"""The memory-dependent task suite: one module per task, each with its ``SPEC``.

Tabletop (arm): ``cups``, ``button_sequence``, ``put_back``, ``count``.
Apartment (mobile base): ``fetch_seen``, ``where_heard``.
Each module's docstring gives the task's phases, decision time, success
criterion and chance rate; ``engram.sim.tasks.spec`` says what a ``TaskSpec`` holds.
The tasks are registered under kind ``task`` (``engram.sim.register``); importing
this package also registers each with gymnasium as ``engram/<task>-v0``
(``gymnasium.make("engram/cups-v0", width_px=64)``). Importing it loads no simulator.
"""

from __future__ import annotations

import functools
from typing import Any

from engram.runtime import registry

__all__ = ["register_gymnasium"]


def _make_task_env(name: str, **config: Any) -> Any:
    from engram.sim.tasks.spec import make_env

    return make_env(name, **config)


def register_gymnasium() -> list[str]:
    """Register every known task with gymnasium (idempotent); the ids registered."""
    import gymnasium

    ids = []
    for name in registry.known("task"):
        gym_id = f"engram/{name}-v0"
        if gym_id not in gymnasium.registry:
            gymnasium.register(gym_id, entry_point=functools.partial(_make_task_env, name))
        ids.append(gym_id)
    return ids


register_gymnasium()
