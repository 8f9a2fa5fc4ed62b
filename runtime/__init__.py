"""Engram runtime: messages, wire codec, buses, nodes, launcher, recorder, CLI.

Public surface: ``engram.runtime.messages`` (message types), ``engram.runtime.bus`` (``Bus``,
``Policy``, ``make_bus``), ``engram.runtime.node`` (``Node``, ``Input``, ``Output``,
``Service``). Importing this package loads no heavy dependency.
"""
