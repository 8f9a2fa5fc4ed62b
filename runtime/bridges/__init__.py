"""Bridges between the Engram bus and other systems.

- ``engram.runtime.bridges.rerun``: ``RerunNode`` / ``RerunLogger`` (Rerun recordings and
  viewers) and the ``--rerun [FILE.rrd]`` helpers of the command line.
- ``engram.runtime.bridges.ros2``: ROS 2 conversions, the bridge node (rclpy or Cyclone
  DDS) and bag replay.

Importing this package imports nothing else.
"""
