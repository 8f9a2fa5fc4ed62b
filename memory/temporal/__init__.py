"""Temporal memory: a timeline cut into chunks, HCAM recall, TWM segment selection.

Every ``Percept``, ``Transcript`` and ``SoundEvent`` becomes a timeline item; items
are grouped into chunks with summaries (``chunking``); recall scores chunk summaries,
then the items of the best chunks only (HCAM), and TWM selects segments under a
budget (``recall``); time questions ("when was X last seen", "what happened before
Y") are answered from the timeline (``questions``).

Modules: ``memory`` (the ``TemporalMemory`` class: writing, persistence), ``config``,
``records`` (items, chunks, segments), ``chunking`` (chunks and capacity), ``recall``
(HCAM and TWM), ``questions`` (time questions).
"""

from engram.memory.temporal.config import TemporalConfig
from engram.memory.temporal.memory import TemporalMemory
from engram.memory.temporal.questions import parse_time_intent
from engram.memory.temporal.records import Segment

__all__ = ["Segment", "TemporalConfig", "TemporalMemory", "parse_time_intent"]
