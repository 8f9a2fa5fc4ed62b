"""What memory registers (``engram.runtime.registry``; loaded through the
``engram.register`` entry points).

Memories (kind ``"memory"``) are classes constructed as ``cls(config=None, *,
embedders=None)``; ``engram.memory.system.default_memories`` builds them from here.
"""

from engram.runtime.command import Command
from engram.runtime.registry import register

register("node", "memory", "engram.memory.node:MemoryNode")

register("memory", "spatial", "engram.memory.spatial.memory:SpatialMemory")
register("memory", "temporal", "engram.memory.temporal:TemporalMemory")
register("memory", "episodic", "engram.memory.episodic:EpisodicMemory")
register("memory", "semantic", "engram.memory.semantic:SemanticMemory")
register("memory", "working", "engram.memory.working:WorkingMemory")

# `engram` subcommands
register(
    "command",
    "memory",
    Command("engram.memory.cli", "look into a memory store on disk: info, ask, export, import"),
)
