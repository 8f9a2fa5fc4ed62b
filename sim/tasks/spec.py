"""What a task is, in one place: ``TaskSpec`` (registered under kind ``task``).

Each task module of ``engram.sim.tasks`` defines its environment, its planner recipe
and a ``SPEC = TaskSpec(...)``; ``engram.sim.register`` registers it
(``register("task", "cups", "engram.sim.tasks.cups:SPEC")``). Adding a task is one new
module plus that line. Readers: ``registry.known("task")`` lists the tasks,
``registry.get("task", name)`` returns the spec, ``make_env(name, **config)`` builds
the environment, the rule planner imports ``spec.recipe``, the evaluation reads
``kind``, ``chance``, ``lifelong`` and ``sound_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engram.runtime import registry

__all__ = ["TaskSpec", "make_env", "task_spec"]


@dataclass(frozen=True)
class TaskSpec:
    """A task's knowledge: environment, recognised instructions, planner recipe."""

    name: str  # registry name, e.g. "cups"
    env: str  # "module:Class" of the gymnasium env
    kind: str  # "tabletop" | "apartment" (camera size, audio on/off in eval)
    chance: float  # success rate of a memoryless guess (default config)
    instruction_patterns: tuple[str, ...]  # regexes recognising the task's instruction
    recipe: str  # "module:Class" of the planner recipe for this task
    sound_names: tuple[str, ...] = ()  # names of the sounds the task plays (memory QA)
    lifelong: bool = False  # part of the lifelong evaluation

    @property
    def gym_id(self) -> str:
        """The gymnasium id (``engram/<name>-v0``)."""
        return f"engram/{self.name}-v0"


def task_spec(name: str) -> TaskSpec:
    """The registered ``TaskSpec`` of task ``name`` (``RegistryError`` lists the known)."""
    return registry.get("task", name)


def make_env(name: str, **config: Any) -> Any:
    """The environment of task ``name``; ``config``: ``EnvConfig`` or task config fields."""
    return registry.load(task_spec(name).env)(**config)
