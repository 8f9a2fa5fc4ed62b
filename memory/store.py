"""The embedded on-disk store every memory persists through: SQLite (WAL) + array files.

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

Records (MemOS): ``collection``, ``record_id``, ``version`` (1, 2, ... per
record; each put of an existing id adds a version and keeps the older ones as
history unless told not to), ``kind``, ``stamp_ns``, provenance (source topic,
sequence, producer), a msgpack payload (dicts of numbers, strings, lists, bytes)
and named numpy arrays. Deletion writes a tombstone version.

Garbage: array files are append-only and SQLite keeps freed pages, so a store whose
records are rewritten again and again (every memory's checkpoint, through ``sync``)
would grow without bound; ``sync`` ends with ``collect_garbage``, which compacts the
array files and VACUUMs SQLite once more than ``max_garbage_fraction`` of their bytes
are dead, keeping the store within about twice its live data.

Schema version ``SCHEMA_VERSION`` is kept in ``meta``; ``_MIGRATIONS[v]`` upgrades
v -> v+1 inside one transaction on open. Export/import: JSONL (one record version
per line) + an ``.npz`` with the arrays, readable without Engram.

Layout of a store directory::

    store.sqlite (+ -wal, -shm)     meta, records, array_files, batches
    arrays/<collection>/<name>.<generation>.bin
    LOCK                            one writer process at a time (flock)

``message_to_record`` / ``record_to_message`` encode any runtime message as a
record (the memory system's journal uses them).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from engram.memory.base import Provenance
from engram.runtime.messages import Message, message_type

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

SCHEMA_VERSION = 2

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


class StoreError(RuntimeError):
    """The store on disk is unusable (corrupt, newer schema, bad name)."""


class StoreLocked(StoreError):
    """Another process holds the store's writer lock."""


class StoreCorrupt(StoreError):
    """The store's files are damaged (not a database, malformed, arrays cut short)."""


@dataclass
class StoreConfig:
    """Batching and durability of a ``Store``."""

    batch_records: int = 256  # commit automatically once this many records are buffered
    batch_interval_s: float = 1.0  # ... or once the oldest buffered record is this old (on put)
    durable: bool = False  # fsync arrays + synchronous=FULL: survive power loss, not only kills
    read_only: bool = False  # open for reading: no lock, no writes, no repair
    # sync() compacts array files / vacuums SQLite once more than this share of their
    # bytes is dead (superseded or deleted records): files stay within ~2x live data
    max_garbage_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.batch_records < 1:
            raise ValueError(f"StoreConfig.batch_records must be >= 1, got {self.batch_records}")
        if not 0.0 < self.max_garbage_fraction < 1.0:
            raise ValueError(
                "StoreConfig.max_garbage_fraction must be in (0, 1), "
                f"got {self.max_garbage_fraction}"
            )
        if self.batch_interval_s < 0:
            raise ValueError(
                f"StoreConfig.batch_interval_s must be >= 0, got {self.batch_interval_s}"
            )


@dataclass
class Record:
    """One version of one stored record."""

    collection: str
    record_id: str
    payload: dict[str, Any] = field(default_factory=dict)  # msgpack-able values
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # named numpy arrays
    kind: str = ""  # record type within the collection ("chunk", "fact", ...)
    stamp_ns: int = 0  # when the remembered thing happened
    provenance: Provenance = field(default_factory=Provenance)
    version: int = 0  # 0 on put: the store assigns previous + 1
    deleted: bool = False  # a tombstone
    written_ns: int = 0  # when this version was committed (set by the store)


# ---------------------------------------------------------------------------
# schema

_SCHEMA_V2 = """
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
_MIGRATIONS = {1: _migrate_1_to_2}


# ---------------------------------------------------------------------------
# payload encoding


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Provenance):
        return obj.to_dict()
    raise TypeError(f"cannot store a {type(obj).__name__} in a record payload")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"$b64": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"$b64"}:
            return base64.b64decode(obj["$b64"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------
# the store


class Store:
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
        except BaseException:
            self._release_lock()
            raise

    # ---- opening --------------------------------------------------------------------------
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
                for stmt in _SCHEMA_V2.split(";"):
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
                    _MIGRATIONS[version](db)
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

    def _repair_arrays(self) -> None:
        """Truncate torn appends past the committed length; delete orphan files."""
        root = self.path / "arrays"
        for rel, size in self._sizes.items():
            p = self.path / rel
            actual = p.stat().st_size if p.exists() else -1
            if actual < size:
                raise StoreCorrupt(
                    f"{p}: array file has {max(actual, 0)} bytes but {size} were committed "
                    "(lost after a power failure without durable=True?)"
                )
            if actual > size:
                with open(p, "r+b") as fh:
                    fh.truncate(size)
        known = {str(self.path / rel) for rel in self._sizes}
        for p in root.rglob("*.bin"):
            if str(p) not in known:
                p.unlink()

    # ---- writing --------------------------------------------------------------------------
    def put(self, record: Record, *, keep_history: bool = True) -> None:
        """Buffer one record version; commits when the batch is full or old enough.

        keep_history=False drops the older versions of this record at commit.
        """
        self._check_writable()
        _check_name("collection", record.collection)
        if not isinstance(record.record_id, str) or not record.record_id:
            raise ValueError(f"Record.record_id must be a non-empty str, got {record.record_id!r}")
        for name, arr in record.arrays.items():
            _check_name(f"array name in {record.collection}/{record.record_id}", name)
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
                raise ValueError(
                    f"Record {record.collection}/{record.record_id}: array {name!r} must be a "
                    f"numeric numpy array, got {type(arr).__name__}"
                )
        blob = _pack(record.payload)  # fail now, naming the record, not at commit
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

    def _append_arrays(self, batch: list[tuple[Record, bytes, bool]]) -> list[str]:
        described: list[str] = []
        touched: set[str] = set()
        for rec, _, _ in batch:
            desc: dict[str, list[Any]] = {}
            for name, arr in rec.arrays.items():
                rel = self._array_file(rec.collection, name)
                fh = self._files.get(rel)
                if fh is None:
                    fh = self._files[rel] = open(self.path / rel, "ab")  # noqa: SIM115
                    fh.seek(0, os.SEEK_END)
                offset = self._sizes.get(rel, 0)
                data = np.ascontiguousarray(arr)
                fh.write(data.tobytes())
                self._sizes[rel] = offset + data.nbytes
                touched.add(rel)
                desc[name] = [rel, offset, data.dtype.str, list(data.shape)]
            described.append(json.dumps(desc, separators=(",", ":")) if desc else "{}")
        for rel in touched:
            fh = self._files[rel]
            fh.flush()
            if self.config.durable:
                os.fsync(fh.fileno())
        return described

    def _array_file(self, collection: str, name: str) -> str:
        rel = self._file_of.get((collection, name))
        if rel is not None:
            return rel
        prefix = f"arrays/{collection}/{name}."
        for known in self._sizes:
            if known.startswith(prefix) and known[len(prefix) :].removesuffix(".bin").isdigit():
                rel = known
        if rel is None:
            (self.path / "arrays" / collection).mkdir(parents=True, exist_ok=True)
            rel = f"{prefix}0.bin"
        self._file_of[(collection, name)] = rel
        return rel

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

    def garbage(self) -> dict[str, int]:
        """Bytes on disk and how many of them are still referenced: ``array_bytes`` /
        ``array_live_bytes`` (append-only array files), ``sqlite_bytes`` /
        ``sqlite_free_bytes`` (pages on SQLite's free list)."""
        with self._lock:
            live = 0
            for (desc_json,) in self._db.execute("SELECT arrays FROM records WHERE arrays != '{}'"):
                for _rel, _off, dtype, shape in json.loads(desc_json).values():
                    live += int(np.dtype(dtype).itemsize * int(np.prod(shape)))
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            return {
                "array_bytes": sum(self._sizes.values()),
                "array_live_bytes": live,
                "sqlite_bytes": page * pages,
                "sqlite_free_bytes": page * free,
            }

    def collect_garbage(self, *, min_bytes: int = 1 << 16) -> dict[str, bool]:
        """Compact the array files and/or VACUUM SQLite where more than
        ``config.max_garbage_fraction`` of their bytes (and at least ``min_bytes``) are
        dead, so that a store rewritten again and again (a memory's checkpoint) stays
        bounded by its live data. ``sync`` calls it. Returns what was done."""
        self._check_writable()
        self.commit()
        g = self.garbage()
        frac = self.config.max_garbage_fraction
        dead_arrays = g["array_bytes"] - g["array_live_bytes"]
        done = {"compacted": False, "vacuumed": False}
        if dead_arrays >= min_bytes and dead_arrays > frac * g["array_bytes"]:
            self.compact()
            done["compacted"] = True
        if (
            g["sqlite_free_bytes"] >= min_bytes
            and g["sqlite_free_bytes"] > frac * g["sqlite_bytes"]
        ):
            with self._lock:
                self._db.execute("VACUUM")
            done["vacuumed"] = True
        return done

    def set_meta(self, key: str, value: str) -> None:
        """A small key/value setting, written at once (commits the pending batch first)."""
        self.commit()
        with self._lock, self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def compact(self) -> dict[str, int]:
        """Rewrite array files keeping only bytes that rows still reference; returns
        bytes before/after. Crash-safe: new files get a new generation number and
        become live in one transaction; leftovers are removed on the next open."""
        self.commit()
        with self._lock:
            before = sum(self._sizes.values())
            rows = self._db.execute(
                "SELECT rid, arrays FROM records WHERE arrays != '{}'"
            ).fetchall()
            for fh in self._files.values():
                fh.close()
            self._files.clear()
            self._file_of.clear()
            self._close_readers()
            new_sizes: dict[str, int] = {}
            remap: dict[str, str] = {}
            handles: dict[str, Any] = {}
            updates: list[tuple[str, int]] = []
            try:
                for rid, desc_json in rows:
                    desc = json.loads(desc_json)
                    for name, (rel, offset, dtype, shape) in desc.items():
                        if rel not in remap:
                            stem, gen = rel.removesuffix(".bin").rsplit(".", 1)
                            remap[rel] = f"{stem}.{int(gen) + 1}.bin"
                            handles[remap[rel]] = open(self.path / remap[rel], "wb")  # noqa: SIM115
                            new_sizes[remap[rel]] = 0
                        nbytes = int(np.dtype(dtype).itemsize * int(np.prod(shape)))
                        with open(self.path / rel, "rb") as src:
                            src.seek(offset)
                            data = src.read(nbytes)
                        new_rel = remap[rel]
                        handles[new_rel].write(data)
                        desc[name] = [new_rel, new_sizes[new_rel], dtype, shape]
                        new_sizes[new_rel] += nbytes
                    updates.append((json.dumps(desc, separators=(",", ":")), rid))
                for fh in handles.values():
                    fh.flush()
                    if self.config.durable:
                        os.fsync(fh.fileno())
                    fh.close()
                with self._tx():
                    self._db.executemany("UPDATE records SET arrays=? WHERE rid=?", updates)
                    self._db.execute("DELETE FROM array_files")
                    self._db.executemany(
                        "INSERT INTO array_files VALUES (?, ?)", list(new_sizes.items())
                    )
            except BaseException:
                for fh in handles.values():
                    fh.close()
                for rel in new_sizes:
                    (self.path / rel).unlink(missing_ok=True)
                raise
            for rel in self._sizes:
                if rel not in new_sizes:
                    (self.path / rel).unlink(missing_ok=True)
            self._sizes = new_sizes
            return {"bytes_before": before, "bytes_after": sum(new_sizes.values())}

    # ---- reading --------------------------------------------------------------------------
    def _rows(self, sql: str, args: Iterable[Any]) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    _COLS = (
        "collection, record_id, version, deleted, kind, stamp_ns, source_topic, source_seq, "
        "producer, written_ns, payload, arrays"
    )

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
            payload=_unpack(blob),
            arrays=self._read_arrays(desc) if with_arrays else {},
        )

    def _read_arrays(self, desc_json: str) -> dict[str, np.ndarray]:
        if desc_json == "{}":
            return {}
        with self._lock:  # read handles are shared: seek + read must not interleave
            return self._read_arrays_locked(desc_json)

    def _read_arrays_locked(self, desc_json: str) -> dict[str, np.ndarray]:
        out = {}
        for name, (rel, offset, dtype, shape) in json.loads(desc_json).items():
            count = int(np.prod(shape)) if shape else 1
            fh = self._readers.get(rel)
            if fh is None:
                if len(self._readers) > 64:
                    self._close_readers()
                fh = self._readers[rel] = open(self.path / rel, "rb")  # noqa: SIM115
            fh.seek(offset)
            data = np.fromfile(fh, dtype=np.dtype(dtype), count=count)
            if data.size != count:
                raise StoreError(f"{self.path / rel}: short read at offset {offset}")
            out[name] = data.reshape(shape)
        return out

    def _close_readers(self) -> None:
        for fh in self._readers.values():
            fh.close()
        self._readers.clear()

    def get(self, collection: str, record_id: str, *, version: int | None = None) -> Record | None:
        """The current (or a given) version; None if absent or deleted (current)."""
        if version is None:
            rows = self._rows(
                f"SELECT {self._COLS} FROM records WHERE collection=? AND record_id=? AND current=1",
                (collection, record_id),
            )
        else:
            rows = self._rows(
                f"SELECT {self._COLS} FROM records WHERE collection=? AND record_id=? AND version=?",
                (collection, record_id, version),
            )
        if not rows:
            return None
        rec = self._to_record(rows[0])
        return None if (rec.deleted and version is None) else rec

    def history(self, collection: str, record_id: str) -> list[Record]:
        """Every stored version, oldest first (tombstones included)."""
        rows = self._rows(
            f"SELECT {self._COLS} FROM records WHERE collection=? AND record_id=? ORDER BY version",
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
        sql = f"SELECT {self._COLS} FROM records WHERE collection=? AND current=1 AND deleted=0"
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

    def load_arrays(self, collection: str, name: str) -> tuple[list[str], np.ndarray]:
        """Bulk read one fixed-shape array of every current record that has it:
        -> (record ids, (N, *shape) array), one file read per array file."""
        rows = self._rows(
            "SELECT record_id, arrays FROM records WHERE collection=? AND current=1 AND "
            "deleted=0 AND arrays LIKE ? ORDER BY rid",
            (collection, f'%"{name}"%'),
        )
        ids: list[str] = []
        spans: list[tuple[str, int, str, list[int]]] = []
        for rid, desc_json in rows:
            d = json.loads(desc_json).get(name)
            if d is None:
                continue
            ids.append(rid)
            spans.append(tuple(d))  # type: ignore[arg-type]
        if not spans:
            return [], np.zeros((0,), np.float32)
        shapes = {tuple(s[3]) for s in spans}
        dtypes = {s[2] for s in spans}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise StoreError(
                f"{collection}/{name}: arrays differ in shape/dtype, read them one by one"
            )
        shape, dtype = next(iter(shapes)), np.dtype(next(iter(dtypes)))
        item = int(np.prod(shape)) * dtype.itemsize
        out = np.empty((len(spans), *shape), dtype)
        by_file: dict[str, list[tuple[int, int]]] = {}
        for i, (rel, offset, _, _) in enumerate(spans):
            by_file.setdefault(rel, []).append((i, offset))
        for rel, items in by_file.items():
            idx = np.array([i for i, _ in items])
            offs = np.array([o for _, o in items], dtype=np.int64)
            size = self._sizes.get(rel, 0)
            if np.all(offs % item == 0):
                # The usual case: a file holding only items of this size -> gather rows.
                table = np.fromfile(self.path / rel, dtype=np.uint8, count=size - size % item)
                table = table.reshape(-1, item)
                out[idx] = table[offs // item].view(dtype).reshape(len(items), *shape)
            else:
                with open(self.path / rel, "rb") as fh:
                    for i, off in zip(idx.tolist(), offs.tolist()):
                        fh.seek(off)
                        out[i] = np.fromfile(fh, dtype=dtype, count=item // dtype.itemsize).reshape(
                            shape
                        )
        return ids, out

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

    def integrity_check(self) -> list[str]:
        """Problems found (empty = consistent): SQLite's own check plus every array
        reference lying within its file's committed length."""
        problems = [r[0] for r in self._rows("PRAGMA integrity_check", ()) if r[0] != "ok"]
        for rid, desc_json in self._rows(
            "SELECT rid, arrays FROM records WHERE arrays != '{}'", ()
        ):
            for name, (rel, offset, dtype, shape) in json.loads(desc_json).items():
                end = offset + np.dtype(dtype).itemsize * int(np.prod(shape))
                if end > self._sizes.get(rel, -1):
                    problems.append(f"row {rid} array {name!r}: bytes {offset}..{end} past {rel}")
        return problems

    # ---- export / import -------------------------------------------------------------------
    def export(self, path: str | Path) -> int:
        """Write every record version to ``path`` (JSONL) and its arrays to ``path``.npz.
        Returns the number of lines. Works on a read-only store."""
        if not self.config.read_only:
            self.commit()
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        n = 0
        rows = self._rows(
            # write order (rid): an import then rebuilds the same store, scans included
            f"SELECT {self._COLS}, current FROM records ORDER BY rid",
            (),
        )
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                rec = self._to_record(row[:-1])
                keys = {}
                for name, arr in rec.arrays.items():
                    key = f"a{n}_{name}"
                    arrays[key] = arr
                    keys[name] = key
                line = {
                    "collection": rec.collection,
                    "record_id": rec.record_id,
                    "version": rec.version,
                    "current": bool(row[-1]),
                    "deleted": rec.deleted,
                    "kind": rec.kind,
                    "stamp_ns": rec.stamp_ns,
                    "provenance": rec.provenance.to_dict(),
                    "written_ns": rec.written_ns,
                    "payload": _jsonable(rec.payload),
                    "arrays": keys,
                }
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                n += 1
        np.savez(str(path) + ".npz", **arrays)
        return n

    def import_(self, path: str | Path) -> int:
        """Add the records of an ``export`` (all versions, in order). Returns the count."""
        path = Path(path)
        npz_path = Path(str(path) + ".npz")
        if not path.exists() or not npz_path.exists():
            raise StoreError(f"import: need {path} and {npz_path}")
        n = 0
        with np.load(npz_path) as arrays, open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    d = json.loads(line)
                    prov = Provenance(**d["provenance"])
                    rec = Record(
                        collection=d["collection"],
                        record_id=d["record_id"],
                        payload=_from_jsonable(d["payload"]),
                        arrays={name: arrays[key] for name, key in d["arrays"].items()},
                        kind=d["kind"],
                        stamp_ns=int(d["stamp_ns"]),
                        provenance=prov,
                        version=int(d["version"]),
                        deleted=bool(d["deleted"]),
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise StoreError(f"import: {path}:{lineno}: bad record ({exc})") from exc
                self.put(rec)
                n += 1
        self.commit()
        return n

    # ---- lifecycle ----------------------------------------------------------------------
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


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r}: use 1-100 of [A-Za-z0-9_.-]")


# ---------------------------------------------------------------------------
# messages as records (the memory system's journal)


def message_to_record(
    msg: Message, *, collection: str, record_id: str, topic: str = "", producer: str = ""
) -> Record:
    """Any runtime message as a record: scalar fields -> payload, arrays -> arrays."""
    payload: dict[str, Any] = {"type": msg.TYPE, "schema": msg.SCHEMA, "topic": topic}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        else:
            payload[f.name] = value
    return Record(
        collection=collection,
        record_id=record_id,
        payload=payload,
        arrays=arrays,
        kind=msg.TYPE,
        stamp_ns=msg.stamp_ns,
        provenance=Provenance(
            source_topic=topic, stamp_ns=msg.stamp_ns, seq=msg.seq, producer=producer
        ),
    )


def record_to_message(record: Record) -> tuple[Message, str]:
    """Inverse of ``message_to_record``: -> (message, topic)."""
    payload = dict(record.payload)
    cls = message_type(payload.pop("type"))
    payload.pop("schema", None)
    topic = payload.pop("topic", "")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in payload.items() if k in names}
    kwargs.update({k: v for k, v in record.arrays.items() if k in names})
    return cls(**kwargs), topic
