"""What the simulation registers (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.registry import register

register("node", "sim", "engram.sim.node:SimNode")
