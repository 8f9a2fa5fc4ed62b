"""The robot's local outbox: what the fleet store has not yet acknowledged.

Why an outbox: the robot must keep working while the fleet store is unreachable
(network gone, server restarting). Changed rows are first committed to a local
SQLite file, in the same transaction as the fingerprints that say they were
captured; the pusher sends them in order and deletes an entry only after Milvus
acknowledged its upsert (or delete). So:

- a row is *staged* (survives a robot crash when ``outbox`` is a file) before the
  fleet sees it, and stays staged while the store is down;
- an entry is keyed by (collection, primary key): a record changed ten times while
  the store is down is sent once, as its latest version;
- an acknowledgement deletes the entry only if it was not re-staged meanwhile
  (``seq`` check), so a newer version is never dropped;
- primary keys are ``robot_id/memory/record_id`` and the store upserts: a row sent
  twice (acknowledgement lost with the connection) is still one row. Nothing
  acknowledged is lost, nothing is duplicated.

Plain ``sqlite3`` (not ``engram.memory.store.Store``): the outbox is a keyed queue
with in-place replacement and conditional deletes, which the versioned record store
does not do; SQLite's WAL gives the crash atomicity.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgpack

__all__ = ["Entry", "Outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  key TEXT PRIMARY KEY, seq INTEGER NOT NULL, op TEXT NOT NULL, coll TEXT NOT NULL,
  pk TEXT NOT NULL, row BLOB
);
CREATE INDEX IF NOT EXISTS outbox_seq ON outbox(seq);
CREATE TABLE IF NOT EXISTS known (
  memory TEXT NOT NULL, record_id TEXT NOT NULL, fp TEXT NOT NULL, coll TEXT NOT NULL,
  PRIMARY KEY (memory, record_id)
);
"""

Entry = tuple[str, int, str, str, str, dict[str, Any] | None]  # key, seq, op, coll, pk, row


class Outbox:
    """A keyed, ordered queue of upserts and deletes for the fleet store (thread-safe)."""

    def __init__(self, path: str | Path = "", *, robot_id: str, durable: bool = False) -> None:
        self.robot_id = robot_id
        self.path = str(path) if path else ":memory:"
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()
        self._seq = int(row[0])

    def known(self, memory: str) -> dict[str, str]:
        """record_id -> fingerprint of what was last staged for ``memory``."""
        with self._lock:
            cur = self._db.execute("SELECT record_id, fp FROM known WHERE memory=?", (memory,))
            return dict(cur.fetchall())

    def stage(
        self,
        memory: str,
        upserts: list[tuple[str, str, str, dict[str, Any]]],
        gone: set[str],
    ) -> int:
        """In one transaction: queue ``upserts`` (record_id, fingerprint, collection, row) and deletes of the records of ``memory`` in ``gone``; remember the
        fingerprints. A record that moved collection is also deleted from the old one.
        Returns the number of entries queued."""
        n = 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                old = {
                    rid: coll
                    for rid, coll in db.execute(
                        "SELECT record_id, coll FROM known WHERE memory=?", (memory,)
                    )
                }
                for rid, fp, coll, row in upserts:
                    pk = self.pk(memory, rid)
                    prev = old.get(rid)
                    if prev is not None and prev != coll:
                        self._queue("delete", prev, pk, None)
                        n += 1
                    self._queue("upsert", coll, pk, row)
                    db.execute(
                        "INSERT OR REPLACE INTO known VALUES (?, ?, ?, ?)", (memory, rid, fp, coll)
                    )
                    n += 1
                for rid in gone:
                    coll = old.get(rid)
                    if coll is None:
                        continue
                    self._queue("delete", coll, self.pk(memory, rid), None)
                    db.execute("DELETE FROM known WHERE memory=? AND record_id=?", (memory, rid))
                    n += 1
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return n

    def pk(self, memory: str, record_id: str) -> str:
        """The primary key of a record in the fleet store: ``robot_id/memory/record_id``."""
        return f"{self.robot_id}/{memory}/{record_id}"

    def _queue(self, op: str, coll: str, pk: str, row: dict[str, Any] | None) -> None:
        self._seq += 1
        blob = None if row is None else msgpack.packb(row, use_bin_type=True)
        self._db.execute(
            "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
            (f"{coll}|{pk}", self._seq, op, coll, pk, blob),
        )

    def take(self, n: int) -> list[Entry]:
        """The ``n`` oldest entries (not removed: ``ack`` them once the store has them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, seq, op, coll, pk, row FROM outbox ORDER BY seq LIMIT ?", (n,)
            ).fetchall()
        return [
            (k, s, op, c, pk, None if b is None else msgpack.unpackb(b, raw=False))
            for k, s, op, c, pk, b in rows
        ]

    def ack(self, entries: list[Entry]) -> None:
        """Forget entries the store acknowledged (unless re-staged since: seq differs)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "DELETE FROM outbox WHERE key=? AND seq=?", [(e[0], e[1]) for e in entries]
            )
            self._db.execute("COMMIT")

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
