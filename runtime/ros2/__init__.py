"""ROS 2 interop: conversions, the bridge node (rclpy or Cyclone DDS), bag replay.

Public surface:

- ``engram.runtime.ros2.convert``: pure-Python conversions between ROS 2 messages
  (rosbags, rclpy or DDS objects, read by attribute) and Engram messages; type
  providers ``RosbagsTypes``/``RclpyTypes``; ``FrameAssembler`` joins colour, depth,
  camera info and poses into ``Frame``; ``TransformTree`` for tf chains.
- ``engram.runtime.ros2.nodes``: ``RosBridgeNode`` (launch graphs: ``type: ros2_bridge``)
  with ``BridgeConfig``; transports ``RclpyTransport`` (rclpy, imported lazily) and
  ``engram.runtime.ros2.dds.DdsTransport``; ``main`` is the ``ros2 run engram bridge`` script.
- ``engram.runtime.ros2.dds``: ROS 2 topics over Cyclone DDS without rclpy (``DdsTransport``,
  ``DdsTypes``, ``TYPES``; ``python -m engram.runtime.ros2.dds echo|pub``). Imports cyclonedds.
- ``engram.runtime.ros2.bag``: ``read_bag`` and ``replay_bag`` for ROS 2 bags (sqlite3, MCAP),
  ``BagTopicMap``, ``BagReplayConfig``.

Importing this package imports nothing else.
"""
