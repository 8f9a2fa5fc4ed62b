"""What the planners register (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.registry import register

register("node", "planner", "engram.planners.node:PlannerNode")
