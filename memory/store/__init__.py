"""The embedded on-disk store every memory persists through: SQLite (WAL) + array files.

Records are versioned (MemOS) with provenance, a msgpack payload and named numpy
arrays; a process kill loses at most the uncommitted batch. See ``store`` for why
this design and the loss bound.

Modules: ``store`` (``Store``), ``config`` (``StoreConfig``), ``records`` (``Record``,
errors, payload encoding, messages as records), ``schema`` (tables and migrations),
``arrays`` (the array files), ``maintenance`` (garbage, compaction, integrity,
export / import).
"""

from engram.memory.store.config import StoreConfig
from engram.memory.store.records import (
    Record,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    message_to_record,
    record_to_message,
)
from engram.memory.store.schema import SCHEMA_VERSION
from engram.memory.store.store import Store

__all__ = [
    "SCHEMA_VERSION",
    "Record",
    "Store",
    "StoreConfig",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "message_to_record",
    "record_to_message",
]
