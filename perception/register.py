"""What perception registers (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.registry import register

register("node", "perception", "engram.perception.node:PerceptionNode")
register("encoder", "clip", "engram.perception.clip:ClipEncoder")
register("encoder", "minilm", "engram.perception.text:MiniLMEncoder")
