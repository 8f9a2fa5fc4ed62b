"""What the runtime registers: the layers above the core
(drivers, bridges, apps), so that the core names none of them.

Imported by ``engram.runtime.registry`` through the ``engram.register`` entry points.
"""

from engram.runtime.command import Command
from engram.runtime.registry import register

register("node", "camera", "engram.runtime.drivers.camera:CameraSource")
register("node", "microphone", "engram.runtime.drivers.microphone:MicrophoneSource")
register("node", "lerobot", "engram.runtime.drivers.lerobot:LeRobotDriver")
register("node", "rerun", "engram.runtime.bridges.rerun:RerunNode")
register("node", "ros2_bridge", "engram.runtime.bridges.ros2.nodes:RosBridgeNode")
register("node", "web", "engram.runtime.apps.web.hub:LiveHub")

# what engram.runtime.replay hands a ROS 2 bag to
register("replayer", "ros2", "engram.runtime.bridges.ros2.bag:replay_bag")

# `engram` subcommands (engram.runtime.apps.cli lists every registered one)
register(
    "command",
    "demo",
    Command(
        "engram.runtime.apps.demo", "run the main job: a MuJoCo episode through the full pipeline"
    ),
)
register(
    "command",
    "launch",
    Command("engram.runtime.launcher", "start (or --check) a declarative launch graph (YAML)"),
)
register(
    "command", "record", Command("engram.runtime.recorder", "record bus topics to an MCAP file")
)
register(
    "command",
    "replay",
    Command("engram.runtime.apps.replay", "replay an MCAP recording or a ROS 2 bag onto the bus"),
)
register(
    "command", "keys", Command("engram.runtime.keys", "make a ZeroMQ CURVE key pair for a node")
)
register(
    "command", "live", Command("engram.runtime.apps.live", "live webcam/mic demo with a web page")
)
