"""What memory registers (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.registry import register

register("node", "memory", "engram.memory.node:MemoryNode")
