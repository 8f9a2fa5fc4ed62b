"""ROS 2 interop: conversions, the bridge node (rclpy or Cyclone DDS), bag replay.

Public surface:

- ``engram.runtime.bridges.ros2.convert``: pure-Python conversions between ROS 2 messages
  (rosbags, rclpy or DDS objects, read by attribute) and Engram messages: images, camera
  info, audio, commands, language and memory questions.
- ``engram.runtime.bridges.ros2.rostypes``: type providers ``RosTypes`` (``RosbagsTypes``,
  ``RclpyTypes``), type names, stamps and headers, ``ConversionError``.
- ``engram.runtime.bridges.ros2.geometry``: poses, transforms, odometry, tf and the
  ``TransformTree`` that chains it.
- ``engram.runtime.bridges.ros2.assembler``: ``FrameAssembler`` joins colour, depth, camera
  info and poses into ``Frame``.
- ``engram.runtime.bridges.ros2.transport``: ``RosTransport``, the ROS side of a bridge.
- ``engram.runtime.bridges.ros2.nodes``: ``RosBridgeNode`` (launch graphs: ``type: ros2_bridge``)
  with ``BridgeConfig``; transports ``RclpyTransport`` (rclpy, imported lazily) and
  ``engram.runtime.bridges.ros2.dds.DdsTransport``; ``main`` is the ``ros2 run engram
  bridge`` script.
- ``engram.runtime.bridges.ros2.dds``: ROS 2 topics over Cyclone DDS without rclpy
  (``DdsTransport``, ``DdsTypes``, ``TYPES``; ``python -m engram.runtime.bridges.ros2.dds
  echo|pub``). Imports cyclonedds.
- ``engram.runtime.bridges.ros2.bag``: ``read_bag`` and ``replay_bag`` for ROS 2 bags
  (sqlite3, MCAP), ``BagTopicMap``, ``BagReplayConfig``; ``engram replay`` reaches it
  through the registry (kind ``replayer``).

Importing this package imports nothing else.
"""
