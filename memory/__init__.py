"""Engram's memories and the system that runs them in parallel.

Public surface (imported lazily on first access, so ``import memory`` stays light):

- ``Memory``, ``Hit``, ``Provenance`` (``engram.memory.base``): the interface every memory implements.
- ``MemorySystem``, ``MemorySystemConfig``, ``default_memories``, ``merge_hits``
  (``engram.memory.system``): the parallel facade (lanes: ``engram.memory.lanes``;
  journal + checkpoints: ``engram.memory.recovery``). ``default_memories`` builds the
  memories registered under kind "memory" (``engram.memory.register``).
- ``MemoryNode``, ``MemoryNodeConfig`` (``engram.memory.node``): the system on the bus.
- ``TemporalMemory``, ``TemporalConfig``, ``Segment`` (``engram.memory.temporal``): timeline,
  HCAM recall, TWM segment selection, time questions.
- ``EpisodicMemory``, ``EpisodicConfig`` (``engram.memory.episodic``): episodes, events,
  entities, forgetting curve.
- ``SemanticMemory``, ``SemanticConfig``, ``Fact`` (``engram.memory.semantic``): facts with
  history; ``MemoryGuard``, ``GuardConfig``, ``Decision`` (``engram.memory.guard``).
- ``WorkingMemory``, ``WorkingConfig``, ``PerceptualCognitiveBank`` (``engram.memory.working``):
  MemoryVLA's bank (torch, imported when used).
- ``SpatialMemory``, ``SpatialConfig`` (``engram.memory.spatial``).
- ``Store``, ``StoreConfig``, ``Record`` (``engram.memory.store``): the on-disk store.
- ``VectorIndex``, ``IndexConfig`` (``engram.memory.index``): vector search.
- ``Embedders``, ``TextEncoder``, ``load_text_embedder``, ``load_text_encoder``
  (``engram.memory.embedding``): embedding spaces and the injected text encoders
  (encoders are found by name in the registry: memory does not depend on perception).
- ``check_memory`` (``engram.memory.testing``): the memory contract checker.
- ``Answerer``, ``Answer``, ``parse_intent``, ``NameTable`` (``engram.memory.answer``): a
  question in plain words -> an answer with its evidence, or "I have not seen that".
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Memory": "engram.memory.base",
    "Hit": "engram.memory.base",
    "Provenance": "engram.memory.base",
    "MemorySystem": "engram.memory.system",
    "MemorySystemConfig": "engram.memory.system",
    "default_memories": "engram.memory.system",
    "merge_hits": "engram.memory.system",
    "MemoryNode": "engram.memory.node",
    "MemoryNodeConfig": "engram.memory.node",
    "TemporalMemory": "engram.memory.temporal",
    "TemporalConfig": "engram.memory.temporal",
    "Segment": "engram.memory.temporal",
    "EpisodicMemory": "engram.memory.episodic",
    "EpisodicConfig": "engram.memory.episodic",
    "SemanticMemory": "engram.memory.semantic",
    "SemanticConfig": "engram.memory.semantic",
    "Fact": "engram.memory.semantic",
    "MemoryGuard": "engram.memory.guard",
    "GuardConfig": "engram.memory.guard",
    "Decision": "engram.memory.guard",
    "WorkingMemory": "engram.memory.working",
    "WorkingConfig": "engram.memory.working",
    "PerceptualCognitiveBank": "engram.memory.working",
    "SpatialMemory": "engram.memory.spatial",
    "SpatialConfig": "engram.memory.spatial",
    "Store": "engram.memory.store",
    "StoreConfig": "engram.memory.store",
    "Record": "engram.memory.store",
    "VectorIndex": "engram.memory.index",
    "IndexConfig": "engram.memory.index",
    "Embedders": "engram.memory.embedding",
    "TextEncoder": "engram.memory.embedding",
    "load_text_embedder": "engram.memory.embedding",
    "load_text_encoder": "engram.memory.embedding",
    "check_memory": "engram.memory.testing",
    "Answerer": "engram.memory.answer",
    "Answer": "engram.memory.answer",
    "parse_intent": "engram.memory.answer",
    "NameTable": "engram.memory.answer",
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
