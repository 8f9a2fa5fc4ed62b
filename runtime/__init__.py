"""Engram runtime: messages, wire codec, buses, nodes, launcher, recorder, CLI.

Public surface: ``runtime.messages`` (message types), ``runtime.bus`` (``Bus``,
``Policy``, ``make_bus``), ``runtime.node`` (``Node``, ``Input``, ``Output``,
``Service``). Importing this package loads no heavy dependency.
"""
