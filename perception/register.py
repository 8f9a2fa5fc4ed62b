"""What perception registers (``engram.runtime.registry``; loaded through the
``engram.register`` entry points)."""

from engram.runtime.command import Command
from engram.runtime.registry import register

register("node", "perception", "engram.perception.node:PerceptionNode")
register("encoder", "clip", "engram.perception.clip:ClipEncoder")
register("encoder", "minilm", "engram.perception.text:MiniLMEncoder")
register("encoder", "sim_clip", "engram.perception.sim_clip:SimClipEncoder")

# `engram` subcommands
register(
    "command",
    "transcribe",
    Command("engram.perception.transcribe", "transcribe an audio file (Silero + faster-whisper)"),
)
