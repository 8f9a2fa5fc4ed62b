"""What the simulation registers (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.command import Command
from engram.runtime.registry import register

register("node", "sim", "engram.sim.node:SimNode")

# `engram` subcommands
register(
    "command",
    "sim",
    Command("engram.sim.cli", "simulation tools: list tasks, run or collect demonstrations"),
)

register(
    "command",
    "train-encoder",
    Command(
        "engram.sim.train_encoder",
        "train the simulation's image-text encoder on object crops rendered in MuJoCo",
    ),
)

# tasks (kind "task"): each module of engram.sim.tasks defines its TaskSpec as SPEC
for _task in (
    "cups", "button_sequence", "put_back", "count", "fetch_seen", "where_heard", "spoken_keys",
):  # fmt: skip
    register("task", _task, f"engram.sim.tasks.{_task}:SPEC")
