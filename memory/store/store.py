"""``Store``: the embedded on-disk store every memory persists through: SQLite (WAL) +
array files.

Why SQLite in WAL mode plus append-only array files (and not LanceDB):

- SQLite ships with Python, is a single file, and its WAL journal makes every
  commit atomic: a process killed at any instant reopens to the last committed
  transaction, with no recovery code of ours. Readers never block the writer.
- Arrays (embeddings, token banks, point clouds) go to append-only binary files,
  one per (collection, array name), and rows hold ``(file, offset, dtype, shape)``.
  Rows stay ~100 bytes, so metadata pages stay dense; loading N embeddings is one
  ``np.fromfile`` plus a gather, not N row fetches; files can be memory-mapped.
- Crash rule: arrays are appended and flushed *before* the SQLite transaction that
  references them, and that same transaction records each file's committed length
  (``array_files``). On open, bytes past the committed length (a torn, uncommitted
  append) are truncated. So the store is always consistent after a crash.
- LanceDB (also installable here) brings pyarrow, writes a new manifest/version per
  write (thousands of small files at percept rates unless batched and compacted)
  and gives us less control over what a kill loses. Versioning is easy to add on
  SQLite (a ``version`` column and a ``current`` flag), and so is the rest.

Loss bound: records are buffered in memory and committed in batches. A process
killed with SIGKILL loses at most the uncommitted batch: fewer than
``StoreConfig.batch_records`` records, and none older than ``batch_interval_s``
seconds at the time of the last ``put`` (the batch is committed when either limit
is reached; ``commit()`` forces it). Committed data survives a process kill with
``durable=False`` (the OS keeps written pages); ``durable=True`` adds fsync of
array files and ``synchronous=FULL`` so that it also survives power loss.

Layout of a store directory::

    store.sqlite (+ -wal, -shm)     meta, records, array_files, batches
    arrays/<collection>/<name>.<generation>.bin
    LOCK                            one writer process at a time (flock)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engram.memory.base import Provenance
from engram.memory.store.config import StoreConfig
from engram.memory.store.maintenance import Maintenance
from engram.memory.store.records import (
    Record,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    check_name,
    pack,
    unpack,
)
from engram.memory.store.schema import MIGRATIONS, RECORD_COLUMNS, SCHEMA_V2, SCHEMA_VERSION

__all__ = ["Store"]


class Store(Maintenance):
    """A directory holding versioned records with arrays. See the module docstring.

    Thread-safe (one internal lock). One writer process at a time (``StoreLocked``).
    Use as a context manager or call ``close()`` (which commits the pending batch).
    """

    def __init__(self, path: str | Path, *, config: StoreConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or StoreConfig()
        self._lock = threading.RLock()
        self._pending: list[tuple[Record, bytes, bool]] = []  # record, packed payload, history
        self._pending_since = 0.0
        self._files: dict[str, Any] = {}  # relpath -> open append handle
        self._sizes: dict[str, int] = {}  # relpath -> committed bytes
        self._file_of: dict[tuple[str, str], str] = {}  # (collection, array name) -> relpath
        self._readers: dict[str, Any] = {}  # relpath -> open read handle
        self._lock_fd: int | None = None
        self._hold = 0  # > 0 inside transaction(): no automatic commits
        self._closed = False
        self.commits = 0
        ro = self.config.read_only
        if ro and not (self.path / "store.sqlite").exists():
            raise StoreError(f"no store at {self.path} (store.sqlite missing)")
        if not ro:
            (self.path / "arrays").mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        try:
            uri = f"file:{self.path / 'store.sqlite'}" + ("?mode=ro" if ro else "")
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            if not ro:
                self._db.execute("PRAGMA journal_mode=WAL")
                sync = "FULL" if self.config.durable else "NORMAL"
                self._db.execute(f"PRAGMA synchronous={sync}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._open_schema()
            self._sizes = dict(self._db.execute("SELECT path, committed_bytes FROM array_files"))
            if not ro:
                self._repair_arrays()
        except sqlite3.DatabaseError as exc:
            self._release_lock()
            with contextlib.suppress(Exception):
                self._db.close()
            raise StoreCorrupt(
                f"store {self.path}: {self.path / 'store.sqlite'} is corrupt ({exc})"
            ) from None
        except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            # a file replaced by a directory (or the reverse): damage, not a crash
            self._release_lock()
            with contextlib.suppress(Exception):
                self._db.close()
            raise StoreCorrupt(f"store {self.path}: {exc}") from None
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self) -> None:
        import fcntl

        fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"store {self.path} is open for writing in another process") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _open_schema(self) -> None:
        db = self._db
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            if self.config.read_only:
                raise StoreError(f"{self.path}: not an Engram store (no meta table)")
            with self._tx():
                for stmt in SCHEMA_V2.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?), ('created_ns', ?)",
                    (str(SCHEMA_VERSION), str(time.time_ns())),
                )
            return
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this Engram's "
                f"{SCHEMA_VERSION}; upgrade Engram"
            )
        if version < SCHEMA_VERSION:
            if self.config.read_only:
                raise StoreError(f"{self.path}: schema {version} needs migration; open writable")
            with self._tx():
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version](db)
                    version += 1
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),)
                )

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def put(self, record: Record, *, keep_history: bool = True) -> None:
        """Buffer one record version; commits when the batch is full or old enough.

        keep_history=False drops the older versions of this record at commit.
        """
        self._check_writable()
        check_name("collection", record.collection)
        if not isinstance(record.record_id, str) or not record.record_id:
            raise ValueError(f"Record.record_id must be a non-empty str, got {record.record_id!r}")
        for name, arr in record.arrays.items():
            check_name(f"array name in {record.collection}/{record.record_id}", name)
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
                raise ValueError(
                    f"Record {record.collection}/{record.record_id}: array {name!r} must be a "
                    f"numeric numpy array, got {type(arr).__name__}"
                )
        blob = pack(record.payload)  # fail now, naming the record, not at commit
        with self._lock:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((record, blob, keep_history))
            full = len(self._pending) >= self.config.batch_records
            old = time.monotonic() - self._pending_since >= self.config.batch_interval_s
            held = self._hold > 0
        if (full or old) and not held:
            self.commit()

    def put_many(self, records: Iterable[Record], *, keep_history: bool = True) -> None:
        for r in records:
            self.put(r, keep_history=keep_history)

    def delete(self, collection: str, record_id: str, *, provenance: Provenance | None = None):
        """Write a tombstone version (history is kept)."""
        self.put(Record(collection, record_id, deleted=True, provenance=provenance or Provenance()))

    def commit_if_due(self) -> int:
        """Commit the pending batch if its oldest record is ``batch_interval_s`` old (call
        this from an idle loop so a partial batch is not held forever)."""
        with self._lock:
            due = (
                self._pending
                and not self._hold
                and time.monotonic() - self._pending_since >= self.config.batch_interval_s
            )
        return self.commit() if due else 0

    def commit(self) -> int:
        """Write the buffered batch (arrays first, then one SQLite transaction). Returns its size."""
        with self._lock:
            self._check_writable()
            batch, self._pending = self._pending, []
            if not batch:
                return 0
            before = dict(self._sizes)
            try:
                rows = self._append_arrays(batch)
                self._write_rows(batch, rows)
            except BaseException:
                self._sizes = before
                for rel, fh in self._files.items():
                    fh.flush()
                    fh.truncate(before.get(rel, 0))
                raise
            self.commits += 1
            return len(batch)

    def _write_rows(self, batch: list[tuple[Record, bytes, bool]], arrays: list[str]) -> None:
        db = self._db
        now = time.time_ns()
        with self._tx():
            batch_id = db.execute("SELECT COALESCE(MAX(batch), 0) + 1 FROM batches").fetchone()[0]
            for (rec, blob, keep_history), desc in zip(batch, arrays):
                cur = db.execute(
                    "SELECT MAX(version) FROM records WHERE collection=? AND record_id=?",
                    (rec.collection, rec.record_id),
                ).fetchone()[0]
                cur = int(cur or 0)
                version = rec.version if rec.version > cur else cur + 1
                if rec.version and rec.version <= cur:
                    # Stale explicit versions are renumbered, never overwrite history.
                    version = cur + 1
                if cur:
                    if keep_history:
                        db.execute(
                            "UPDATE records SET current=0 WHERE collection=? AND record_id=? "
                            "AND current=1",
                            (rec.collection, rec.record_id),
                        )
                    else:
                        db.execute(
                            "DELETE FROM records WHERE collection=? AND record_id=?",
                            (rec.collection, rec.record_id),
                        )
                p = rec.provenance
                db.execute(
                    "INSERT INTO records (collection, record_id, version, current, deleted, kind, "
                    "stamp_ns, source_topic, source_seq, producer, written_ns, batch, payload, "
                    "arrays) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rec.collection,
                        rec.record_id,
                        version,
                        int(rec.deleted),
                        rec.kind,
                        int(rec.stamp_ns),
                        p.source_topic,
                        int(p.seq),
                        p.producer,
                        now,
                        batch_id,
                        blob,
                        desc,
                    ),
                )
            db.executemany(
                "INSERT OR REPLACE INTO array_files VALUES (?, ?)", list(self._sizes.items())
            )
            db.execute("INSERT INTO batches VALUES (?, ?, ?)", (batch_id, now, len(batch)))

    def clear(self, collection: str) -> int:
        """Delete every version of every record in ``collection`` (no history). Commits."""
        self.commit()
        with self._lock, self._tx():
            n = self._db.execute("DELETE FROM records WHERE collection=?", (collection,)).rowcount
        return n

    def delete_where(
        self,
        collection: str,
        *,
        max_stamp_ns: int | None = None,
        max_record_id: str | None = None,
        kind: str = "",
    ) -> int:
        """Delete all versions of records in ``collection`` (optionally of ``kind``, with
        ``stamp_ns <= max_stamp_ns``, with ``record_id <= max_record_id`` in string order).
        Commits. Array bytes are reclaimed by ``compact``."""
        self.commit()
        sql = "DELETE FROM records WHERE collection=?"
        args: list[Any] = [collection]
        if max_stamp_ns is not None:
            sql += " AND stamp_ns<=?"
            args.append(int(max_stamp_ns))
        if max_record_id is not None:
            sql += " AND record_id<=?"
            args.append(max_record_id)
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        with self._lock, self._tx():
            return self._db.execute(sql, args).rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold every put inside the block for one commit at its end (all or nothing on a
        crash). On an exception the held records are dropped, nothing is written."""
        self.commit()
        with self._lock:
            self._hold += 1
        try:
            yield
        except BaseException:
            with self._lock:
                self._hold -= 1
                if not self._hold:
                    self._pending.clear()
            raise
        with self._lock:
            self._hold -= 1
        if not self._hold:
            self.commit()

    def sync(
        self, collection: str, records: Iterable[Record], *, keep_history: bool = True
    ) -> dict[str, int]:
        """Make ``collection``'s current records equal ``records`` (a full snapshot), in one
        transaction.

        Writes a new version only for records whose ``version`` differs from the stored
        current one; stored records that are missing get a tombstone (or, with
        ``keep_history=False``, are removed with their older versions, as are the older
        versions of rewritten records). Returns counts.
        """
        self.commit()
        stored = {
            rid: (ver, deleted)
            for rid, ver, deleted in self._db.execute(
                "SELECT record_id, version, deleted FROM records WHERE collection=? AND current=1",
                (collection,),
            )
        }
        seen: set[str] = set()
        written = 0
        with self.transaction():
            for rec in records:
                if rec.collection != collection:
                    raise ValueError(f"sync({collection!r}) got a record of {rec.collection!r}")
                seen.add(rec.record_id)
                ver, deleted = stored.get(rec.record_id, (0, 0))
                if rec.version and rec.version == ver and not deleted:
                    continue
                self.put(rec, keep_history=keep_history)
                written += 1
            gone = [rid for rid, (_, deleted) in stored.items() if rid not in seen and not deleted]
            if keep_history:
                for rid in gone:
                    self.delete(collection, rid)
        if not keep_history and gone:
            with self._lock, self._tx():
                self._db.executemany(
                    "DELETE FROM records WHERE collection=? AND record_id=?",
                    [(collection, rid) for rid in gone],
                )
        self.collect_garbage()
        return {"written": written, "deleted": len(gone), "unchanged": len(seen) - written}

    def set_meta(self, key: str, value: str) -> None:
        """A small key/value setting, written at once (commits the pending batch first)."""
        self.commit()
        with self._lock, self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def _rows(self, sql: str, args: Iterable[Any]) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def _to_record(self, row: tuple, *, with_arrays: bool = True) -> Record:
        (coll, rid, ver, deleted, kind, stamp, topic, seq, producer, written, blob, desc) = row
        return Record(
            collection=coll,
            record_id=rid,
            version=int(ver),
            deleted=bool(deleted),
            kind=kind,
            stamp_ns=int(stamp),
            provenance=Provenance(
                source_topic=topic, stamp_ns=int(stamp), seq=int(seq), producer=producer
            ),
            written_ns=int(written),
            payload=unpack(blob),
            arrays=self._read_arrays(desc) if with_arrays else {},
        )

    def get(self, collection: str, record_id: str, *, version: int | None = None) -> Record | None:
        """The current (or a given) version; None if absent or deleted (current)."""
        if version is None:
            rows = self._rows(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE collection=? AND record_id=? AND current=1",
                (collection, record_id),
            )
        else:
            rows = self._rows(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE collection=? AND record_id=? AND version=?",
                (collection, record_id, version),
            )
        if not rows:
            return None
        rec = self._to_record(rows[0])
        return None if (rec.deleted and version is None) else rec

    def history(self, collection: str, record_id: str) -> list[Record]:
        """Every stored version, oldest first (tombstones included)."""
        rows = self._rows(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE collection=? AND record_id=? ORDER BY version",
            (collection, record_id),
        )
        return [self._to_record(r) for r in rows]

    def scan(
        self,
        collection: str,
        *,
        kind: str = "",
        with_arrays: bool = True,
        after_stamp_ns: int | None = None,
    ) -> Iterator[Record]:
        """Current, non-deleted records of a collection in insertion order."""
        sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE collection=? AND current=1 AND deleted=0"
        args: list[Any] = [collection]
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        if after_stamp_ns is not None:
            sql += " AND stamp_ns>?"
            args.append(int(after_stamp_ns))
        sql += " ORDER BY rid"
        for row in self._rows(sql, args):
            yield self._to_record(row, with_arrays=with_arrays)

    def scan_checked(self, collection: str) -> Iterator[tuple[Record, str]]:
        """Like ``scan`` (with arrays), for recovery: a record whose payload or arrays are
        damaged (checksum, short read, bad msgpack) comes back as ``(record without
        arrays, problem)`` instead of ending the scan; good ones as ``(record, "")``.
        Rows are read in pages of 1024, so memory stays bounded on a long journal."""
        sql = (
            f"SELECT {RECORD_COLUMNS}, rid FROM records WHERE collection=? AND current=1 "
            "AND deleted=0 AND rid>? ORDER BY rid LIMIT 1024"
        )
        after = -1
        while True:
            rows = self._rows(sql, (collection, after))
            if not rows:
                return
            buffers = self._page_buffers([row[11] for row in rows])  # one read per file
            for row in rows:
                after = row[-1]
                try:
                    rec = self._to_record(row[:-1], with_arrays=False)
                    rec.arrays = self._read_arrays_from(row[11], buffers)
                    yield rec, ""
                except (StoreError, ValueError, TypeError, KeyError) as exc:
                    coll, rid, ver = row[0], row[1], row[2]
                    yield Record(collection=coll, record_id=rid, version=int(ver)), str(exc)

    def count(self, collection: str | None = None, *, all_versions: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM records WHERE 1=1"
        args: list[Any] = []
        if not all_versions:
            sql += " AND current=1 AND deleted=0"
        if collection is not None:
            sql += " AND collection=?"
            args.append(collection)
        return int(self._rows(sql, args)[0][0])

    def collections(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT collection FROM records ORDER BY 1", ())]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else default

    @property
    def schema_version(self) -> int:
        return int(self.get_meta("schema_version", "0") or 0)

    @property
    def pending(self) -> int:
        """Records buffered but not yet committed (what a kill now would lose)."""
        return len(self._pending)

    def disk_bytes(self) -> int:
        """Bytes on disk: SQLite file, WAL, array files."""
        total = 0
        for p in self.path.rglob("*"):
            if p.is_file() and p.name != "LOCK":
                total += p.stat().st_size
        return total

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if self.config.read_only:
            raise StoreError(f"store {self.path} was opened read-only")

    def close(self) -> None:
        if self._closed:
            return
        try:
            if not self.config.read_only:
                self.commit()
        finally:
            for fh in self._files.values():
                fh.close()
            self._files.clear()
            self._close_readers()
            self._db.close()
            self._closed = True
            self._release_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, records={self.count()}, pending={self.pending})"
