"""The one small interface every memory implements.

``memory/system.py`` composes memories through this interface only: it fans a
message out to ``write`` and a ``MemoryQuery`` out to ``recall`` in parallel and
merges the ``Hit`` lists by score.

Lifecycle::

    mem.write(percept)                 # Percept, Transcript, SoundEvent, RobotState, ...
    hits = mem.recall(query)           # MemoryQuery -> ranked list[Hit]
    mem.consolidate(now_ns=...)        # merge / decay / forget; bounded capacity
    mem.save(directory); mem.load(directory)   # exact round trip

A memory ignores message types it does not handle (``accepts`` says which).
Every stored record carries ``Provenance`` (source topic, stamp, sequence) and a
version (MemOS).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engram.runtime.messages import MemoryQuery, Message

__all__ = ["Hit", "Memory", "Provenance"]


@dataclass(frozen=True)
class Provenance:
    """Where a record came from (MemOS-style): topic, capture stamp, sequence number."""

    source_topic: str = ""
    stamp_ns: int = 0
    seq: int = 0
    producer: str = ""  # node or component that wrote it

    @classmethod
    def of(cls, msg: Message, topic: str = "", producer: str = "") -> Provenance:
        return cls(source_topic=topic, stamp_ns=msg.stamp_ns, seq=msg.seq, producer=producer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit:
    """One recalled item. score: higher is better, comparable within a memory
    (the memory system normalises across memories)."""

    memory: str  # name of the memory that produced it
    score: float
    text: str = ""  # human-readable summary ("red_mug at (1.2, 0.4, 0.8)")
    stamp_ns: int = 0  # when the remembered thing was observed
    position: tuple[float, float, float] | None = None  # world metres
    record_id: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    data: dict[str, Any] = field(default_factory=dict)  # memory-specific extras (JSON-able)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form carried in a ``Recall`` message's ``hits``."""
        out = {
            "memory": self.memory,
            "score": float(self.score),
            "text": self.text,
            "stamp_ns": int(self.stamp_ns),
            "record_id": self.record_id,
            "provenance": self.provenance.to_dict(),
            "data": self.data,
        }
        if self.position is not None:
            out["position"] = [float(v) for v in self.position]
        return out


class Memory(ABC):
    """Base class of every memory (spatial, temporal, episodic, semantic, working)."""

    #: short name used in queries (``MemoryQuery.memories``) and in ``Hit.memory``
    name: ClassVar[str] = "memory"
    #: message type names this memory stores; others are ignored by ``write``
    accepts: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def write(self, msg: Message, *, topic: str = "") -> None:
        """Store what ``msg`` tells; ignore types not in ``accepts``. Raises ``ValueError``
        on bad input without changing what is stored."""

    @abstractmethod
    def recall(self, query: MemoryQuery) -> list[Hit]:
        """Up to ``query.top_k`` hits, best first."""

    def consolidate(self, *, now_ns: int | None = None) -> None:  # noqa: B027 - optional hook
        """Merge, decay, forget: keep capacity bounded. Default: nothing to do."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write everything needed to restore this memory exactly into ``directory``."""

    @abstractmethod
    def load(self, directory: str | Path) -> None:
        """Replace the contents with what ``save`` wrote."""

    def reset(self) -> None:
        """Forget everything: back to an empty memory with the same configuration. The
        memory system calls it when a checkpoint fails to load part-way."""
        raise NotImplementedError(f"{type(self).__name__} cannot reset")

    @abstractmethod
    def __len__(self) -> int:
        """Number of records held."""

    def stats(self) -> dict[str, Any]:
        """Sizes and counters for heartbeats and benchmarks."""
        return {"records": len(self)}
