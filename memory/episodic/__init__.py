"""Episodic memory: episodes, events and entities (M3-Agent), with a forgetting curve (MemoryBank).

Records:

- *Entities* (M3-Agent's entity-centric memory): objects (from ``Percept``
  objects), people and voices (a ``Transcript``'s speaker), sounds
  (``SoundEvent`` labels), places (``observe_place``). Each has a label and its
  aliases, a running-mean embedding per space (image for objects, audio for
  sounds), a count, first/last seen stamps and its last position.
- *Events*: an entity first seen or moved, something said or heard, a plan
  step that succeeded or failed, an episode's end.
- *Episodes*: one task attempt: the ``Instruction``, the ``PlanStep`` statuses
  (the plan and the actions taken), the outcome, up to ``keyframes_per_episode``
  keyframes (stamp, labels, image embedding) and the entities involved.

Modules: ``memory`` (the ``EpisodicMemory`` class, writing, persistence), ``config``,
``records`` (the record type and its snapshots), ``ledger`` (indexing of records),
``entities`` (entity resolution and merges), ``forgetting`` (forgetting curve and
consolidation), ``recall``.
"""

from engram.memory.episodic.config import EpisodicConfig
from engram.memory.episodic.memory import EpisodicMemory

__all__ = ["EpisodicConfig", "EpisodicMemory"]
