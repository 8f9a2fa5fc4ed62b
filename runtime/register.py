"""What the runtime's layers above the core (drivers, bridges) register.

Imported by ``engram.runtime.registry`` through the ``engram.register`` entry points.
"""

from engram.runtime.registry import register

register("node", "camera", "engram.runtime.sources:CameraSource")
register("node", "microphone", "engram.runtime.sources:MicrophoneSource")
register("node", "rerun", "engram.runtime.viz:RerunNode")
register("node", "ros2_bridge", "engram.runtime.ros2.nodes:RosBridgeNode")
