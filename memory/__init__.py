"""Engram's memories and the system that runs them in parallel.

Public surface (imported lazily on first access, so ``import memory`` stays light):

- ``Memory``, ``Hit``, ``Provenance`` (``memory.base``): the interface every memory implements.
- ``MemorySystem``, ``MemorySystemConfig``, ``default_memories``, ``merge_hits``
  (``memory.system``): the parallel facade with journal + checkpoints.
- ``MemoryNode``, ``MemoryNodeConfig`` (``memory.node``): the system on the bus.
- ``TemporalMemory``, ``TemporalConfig``, ``Segment`` (``memory.temporal``): timeline,
  HCAM recall, TWM segment selection, time questions.
- ``EpisodicMemory``, ``EpisodicConfig`` (``memory.episodic``): episodes, events,
  entities, forgetting curve.
- ``SemanticMemory``, ``SemanticConfig``, ``Fact`` (``memory.semantic``): facts with
  history; ``MemoryGuard``, ``GuardConfig``, ``Decision`` (``memory.guard``).
- ``WorkingMemory``, ``WorkingConfig``, ``PerceptualCognitiveBank`` (``memory.working``):
  MemoryVLA's bank (torch, imported when used).
- ``SpatialMemory``, ``SpatialConfig`` (``memory.spatial``).
- ``Store``, ``StoreConfig``, ``Record`` (``memory.store``): the on-disk store.
- ``VectorIndex``, ``IndexConfig``, ``Embedders``, ``load_text_embedder``
  (``memory.index``): vector search and embedding spaces.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Memory": "memory.base",
    "Hit": "memory.base",
    "Provenance": "memory.base",
    "MemorySystem": "memory.system",
    "MemorySystemConfig": "memory.system",
    "default_memories": "memory.system",
    "merge_hits": "memory.system",
    "MemoryNode": "memory.node",
    "MemoryNodeConfig": "memory.node",
    "TemporalMemory": "memory.temporal",
    "TemporalConfig": "memory.temporal",
    "Segment": "memory.temporal",
    "EpisodicMemory": "memory.episodic",
    "EpisodicConfig": "memory.episodic",
    "SemanticMemory": "memory.semantic",
    "SemanticConfig": "memory.semantic",
    "Fact": "memory.semantic",
    "MemoryGuard": "memory.guard",
    "GuardConfig": "memory.guard",
    "Decision": "memory.guard",
    "WorkingMemory": "memory.working",
    "WorkingConfig": "memory.working",
    "PerceptualCognitiveBank": "memory.working",
    "SpatialMemory": "memory.spatial",
    "SpatialConfig": "memory.spatial",
    "Store": "memory.store",
    "StoreConfig": "memory.store",
    "Record": "memory.store",
    "VectorIndex": "memory.index",
    "IndexConfig": "memory.index",
    "Embedders": "memory.index",
    "load_text_embedder": "memory.index",
}

__all__ = sorted(_PUBLIC)  # noqa: PLE0605


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
