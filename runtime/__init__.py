"""Engram runtime.

The core (imports no domain package and nothing below): ``messages``, ``codec``, ``bus``
(``Bus``, ``QueuePolicy``, ``make_bus``), ``zmq_bus`` / ``zmq_broker`` / ``zmq_curve``
(ZeroMQ transport), ``node`` (``Node``, ``Input``, ``Output``, ``Service``), ``config``,
``registry``, ``command``, ``graph`` / ``launcher`` / ``supervisor`` / ``child`` (launch
graphs), ``recorder`` / ``replay``, ``testing``, ``keys``, ``demo_nodes``.

Above the core: ``drivers`` (camera, microphone), ``bridges`` (Rerun, ROS 2) and ``apps``
(the ``engram`` CLI, ``engram demo``, ``engram live`` and its web page, ``engram replay``).
Importing this package loads no heavy dependency.
"""
