"""Schema version ``SCHEMA_VERSION`` is kept in ``meta``; ``MIGRATIONS[v]`` upgrades
v -> v+1 inside one transaction on open.

The tables: ``meta``, ``records`` (one row per record version), ``array_files``
(committed length of each array file), ``batches``.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "RECORD_COLUMNS", "SCHEMA_V2", "SCHEMA_VERSION"]


SCHEMA_VERSION = 2

SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
  rid INTEGER PRIMARY KEY AUTOINCREMENT,
  collection TEXT NOT NULL,
  record_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  current INTEGER NOT NULL DEFAULT 1,
  deleted INTEGER NOT NULL DEFAULT 0,
  kind TEXT NOT NULL DEFAULT '',
  stamp_ns INTEGER NOT NULL DEFAULT 0,
  source_topic TEXT NOT NULL DEFAULT '',
  source_seq INTEGER NOT NULL DEFAULT 0,
  producer TEXT NOT NULL DEFAULT '',
  written_ns INTEGER NOT NULL,
  batch INTEGER NOT NULL DEFAULT 0,
  payload BLOB NOT NULL,
  arrays TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS records_key ON records(collection, record_id, version);
CREATE INDEX IF NOT EXISTS records_current ON records(collection, current, rid);
CREATE TABLE IF NOT EXISTS array_files (path TEXT PRIMARY KEY, committed_bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  batch INTEGER PRIMARY KEY, committed_ns INTEGER NOT NULL, records INTEGER NOT NULL
);
"""


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """v1 had no ``producer`` column and no ``batches`` table."""
    conn.execute("ALTER TABLE records ADD COLUMN producer TEXT NOT NULL DEFAULT ''")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS batches (batch INTEGER PRIMARY KEY, "
        "committed_ns INTEGER NOT NULL, records INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS records_current ON records(collection, current, rid)")


#: from-version -> function upgrading the open connection to from-version + 1
MIGRATIONS = {1: _migrate_1_to_2}

#: the ``records`` columns a ``Record`` is read from, in ``Store._to_record``'s order
RECORD_COLUMNS = (
    "collection, record_id, version, deleted, kind, stamp_ns, source_topic, source_seq, "
    "producer, written_ns, payload, arrays"
)
