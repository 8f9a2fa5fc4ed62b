"""Start the Engram graph and the ROS 2 bridge: ``ros2 launch engram engram.launch.py``.

Two processes:

- ``engram launch <graph> --bus <bus>``: the Engram graph (perception, memories,
  planner; ``config/graph.yaml`` by default), which serves the ZeroMQ bus broker;
- ``bridge`` (``engram.runtime.bridges.ros2.nodes:main``): the ROS 2 node joining ROS topics and that
  bus; its parameters come from ``config/bridge.yaml`` plus ``bus_url``.

Arguments: ``graph:=``, ``bus:=`` (default ``tcp://127.0.0.1:5550``), ``params:=``,
``engram:=`` (the engram command, e.g. a virtual environment's ``bin/engram``).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("engram")
    graph = LaunchConfiguration("graph")
    bus = LaunchConfiguration("bus")
    params = LaunchConfiguration("params")
    engram = LaunchConfiguration("engram")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "graph",
                default_value=PathJoinSubstitution([share, "config", "graph.yaml"]),
                description="Engram launch graph (YAML) to run beside the bridge",
            ),
            DeclareLaunchArgument(
                "bus",
                default_value="tcp://127.0.0.1:5550",
                description="Engram bus URL shared by the graph and the bridge",
            ),
            DeclareLaunchArgument(
                "params",
                default_value=PathJoinSubstitution([share, "config", "bridge.yaml"]),
                description="ROS parameters of the bridge node",
            ),
            DeclareLaunchArgument(
                "engram", default_value="engram", description="the engram command line"
            ),
            ExecuteProcess(
                cmd=[engram, "launch", graph, "--bus", bus],
                name="engram_graph",
                output="screen",
            ),
            Node(
                package="engram",
                executable="bridge",
                name="engram_bridge",
                output="screen",
                parameters=[params, {"bus_url": bus}],
            ),
        ]
    )
