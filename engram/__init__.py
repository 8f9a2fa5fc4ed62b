"""Engram: a streaming runtime for embodied agents with memory.

The distribution installs this one top-level name. Its subpackages live in the
repository's top-level folders (the design card's layout) and are mapped here by
``pyproject.toml`` (``[tool.setuptools.package-dir]``)::

    engram.runtime      core: messages, codec, buses, Node, registry, launcher (+ drivers,
                        bridges and applications above the core)
    engram.perception   encoders, geometry, objects + tracking, audio, perception node
    engram.memory       spatial, temporal, episodic, semantic, working; store; system
    engram.planners     planning, policies, evaluation
    engram.sim          MuJoCo scenes, robots, environments, tasks, sim node

Layers point down only (applications -> planners -> memory -> perception -> core);
``tests/test_architecture.py`` runs the import-linter contracts that say so.
"""

__version__ = "0.1.0"
