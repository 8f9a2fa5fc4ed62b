#!/bin/bash
# Source ROS 2 Jazzy and the engram workspace, then run the command (default: the launch file).
set -e
source /opt/ros/jazzy/setup.bash
source /opt/ros_ws/install/setup.bash
exec "$@"
