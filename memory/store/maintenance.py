"""Garbage: array files are append-only and SQLite keeps freed pages, so a store whose
records are rewritten again and again (every memory's checkpoint, through ``sync``)
would grow without bound; ``sync`` ends with ``collect_garbage``, which compacts the
array files and VACUUMs SQLite once more than ``max_garbage_fraction`` of their bytes
are dead, keeping the store within about twice its live data.

Also ``compact`` (rewrite the array files with only live data), ``integrity_check``,
and export / import: JSONL (one record version per line) + an ``.npz`` with the
arrays, readable without Engram.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from engram.memory.base import Provenance
from engram.memory.store.arrays import ArrayFiles
from engram.memory.store.records import (
    Record,
    StoreError,
    from_jsonable,
    jsonable,
)
from engram.memory.store.schema import RECORD_COLUMNS

__all__ = ["Maintenance"]


class Maintenance(ArrayFiles):
    """Garbage accounting, compaction, integrity checks, export and import
    (``Store`` composes it; the attributes are declared by ``ArrayFiles``)."""

    if TYPE_CHECKING:  # defined by Store

        def _tx(self) -> contextlib.AbstractContextManager[None]: ...

        def put(self, record: Record, *, keep_history: bool = True) -> None: ...

        def commit(self) -> int: ...

        def _to_record(self, row: tuple, *, with_arrays: bool = True) -> Record: ...

        def _check_writable(self) -> None: ...

    def garbage(self) -> dict[str, int]:
        """Bytes on disk and how many of them are still referenced: ``array_bytes`` /
        ``array_live_bytes`` (append-only array files), ``sqlite_bytes`` /
        ``sqlite_free_bytes`` (pages on SQLite's free list)."""
        with self._lock:
            live = 0
            for (desc_json,) in self._db.execute("SELECT arrays FROM records WHERE arrays != '{}'"):
                for spec in json.loads(desc_json).values():
                    dtype, shape = spec[2], spec[3]
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
                    for name, spec in desc.items():
                        rel, offset, dtype, shape = spec[:4]
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
                        # the checksum (5th element) travels with the unchanged bytes
                        desc[name] = [new_rel, new_sizes[new_rel], dtype, shape, *spec[4:]]
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

    def integrity_check(self) -> list[str]:
        """Problems found (empty = consistent): SQLite's own check, every array
        reference lying within its file's committed length and matching its checksum."""
        problems = [r[0] for r in self._rows("PRAGMA integrity_check", ()) if r[0] != "ok"]
        for rid, desc_json in self._rows(
            "SELECT rid, arrays FROM records WHERE arrays != '{}'", ()
        ):
            for name, spec in json.loads(desc_json).items():
                rel, offset, dtype, shape = spec[:4]
                end = offset + np.dtype(dtype).itemsize * int(np.prod(shape))
                if end > self._sizes.get(rel, -1):
                    problems.append(f"row {rid} array {name!r}: bytes {offset}..{end} past {rel}")
                elif len(spec) > 4:
                    with open(self.path / rel, "rb") as fh:
                        fh.seek(offset)
                        if zlib.crc32(fh.read(end - offset)) != spec[4]:
                            problems.append(f"row {rid} array {name!r}: checksum mismatch in {rel}")
        return problems

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
            f"SELECT {RECORD_COLUMNS}, current FROM records ORDER BY rid",
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
                    "payload": jsonable(rec.payload),
                    "arrays": keys,
                }
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                n += 1
        np.savez(str(path) + ".npz", **cast(dict[str, Any], arrays))
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
                        payload=from_jsonable(d["payload"]),
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
