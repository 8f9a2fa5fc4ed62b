#!/bin/bash
# Source ROS 2 Jazzy and the engram workspace, then run the command (default: the launch file).
# The bridge node runs on ROS's python3; Engram's light core and pyzmq live in /opt/ros-venv
# (a venv over the system site packages), put on its path here.
set -e
source /opt/ros/jazzy/setup.bash
source /opt/ros_ws/install/setup.bash
ROS_VENV_SITE=$(echo /opt/ros-venv/lib/python3*/site-packages)
export PYTHONPATH="${ROS_VENV_SITE}${PYTHONPATH:+:${PYTHONPATH}}"
exec "$@"
