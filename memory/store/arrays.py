"""The store's array files: appended before the SQLite transaction that references
them, truncated back to their committed length on open (torn appends), read back
by (file, offset, dtype, shape) and checked against the CRC-32 stored with them.

A record's ``arrays`` column describes each array as ``[file, offset, dtype, shape, crc32]``
(records written before checksums have no fifth element and are read unchecked). Bytes
changed in an array file (a disk error, random writes) fail the check when read:
``StoreCorrupt`` naming the file, offset and array, never silently wrong data.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engram.memory.store.config import StoreConfig
from engram.memory.store.records import (
    Record,
    StoreCorrupt,
    StoreError,
)

__all__ = ["ArrayFiles"]


class ArrayFiles:
    """Appending, repairing and reading array files (``Store`` composes it)."""

    path: Path
    config: StoreConfig
    _lock: threading.RLock
    _db: sqlite3.Connection
    _files: dict[str, Any]
    _sizes: dict[str, int]
    _file_of: dict[tuple[str, str], str]
    _readers: dict[str, Any]

    if TYPE_CHECKING:  # defined by Store

        def _rows(self, sql: str, args: Iterable[Any]) -> list[tuple]: ...

    def _repair_arrays(self) -> None:
        """Truncate torn appends past the committed length; delete orphan files."""
        root = self.path / "arrays"
        for rel, size in self._sizes.items():
            p = self.path / rel
            if p.exists() and not p.is_file():
                raise StoreCorrupt(f"{p}: array file is not a regular file")
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
                # the array's own buffer: the bytes ``tobytes()`` would copy, not copied
                raw = data.data.cast("B") if data.size else b""
                fh.write(raw)
                self._sizes[rel] = offset + data.nbytes
                touched.add(rel)
                desc[name] = [rel, offset, data.dtype.str, list(data.shape), zlib.crc32(raw)]
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

    def _read_arrays(self, desc_json: str) -> dict[str, np.ndarray]:
        if desc_json == "{}":
            return {}
        with self._lock:  # read handles are shared: seek + read must not interleave
            return self._read_arrays_locked(desc_json)

    def _read_arrays_locked(self, desc_json: str) -> dict[str, np.ndarray]:
        out = {}
        for name, spec in json.loads(desc_json).items():
            rel, offset, dtype, shape = spec[:4]
            count = int(np.prod(shape)) if shape else 1
            fh = self._readers.get(rel)
            if fh is None:
                if len(self._readers) > 64:
                    self._close_readers()
                fh = self._readers[rel] = open(self.path / rel, "rb")  # noqa: SIM115
            fh.seek(offset)
            data = np.fromfile(fh, dtype=np.dtype(dtype), count=count)
            if data.size != count:
                raise StoreCorrupt(f"{self.path / rel}: short read at offset {offset}")
            if len(spec) > 4 and zlib.crc32(data.data) != spec[4]:
                raise StoreCorrupt(
                    f"{self.path / rel}: array {name!r} at offset {offset} fails its checksum "
                    "(the file was changed or damaged)"
                )
            out[name] = data.reshape(shape)
        return out

    def _page_buffers(
        self, descs: list[str], limit: int = 64 << 20
    ) -> dict[str, tuple[int, bytes]]:
        """For a page of records (their ``arrays`` JSON): each array file's byte span that
        covers all of them, read at once (one read per file instead of one per array),
        for spans up to ``limit`` bytes: -> {file: (start offset, bytes)}."""
        spans: dict[str, list[int]] = {}
        for desc_json in descs:
            if desc_json == "{}":
                continue
            try:
                specs = json.loads(desc_json).values()
                for spec in specs:
                    rel, offset, dtype, shape = spec[:4]
                    end = offset + np.dtype(dtype).itemsize * math.prod(shape)
                    lo_hi = spans.setdefault(rel, [offset, end])
                    lo_hi[0], lo_hi[1] = min(lo_hi[0], offset), max(lo_hi[1], end)
            except (ValueError, TypeError, KeyError):
                continue  # that record's own read reports it
        out: dict[str, tuple[int, bytes]] = {}
        with self._lock:
            for rel, (lo, hi) in spans.items():
                if hi - lo > limit:
                    continue
                try:
                    with open(self.path / rel, "rb") as fh:
                        fh.seek(lo)
                        out[rel] = (lo, fh.read(hi - lo))
                except OSError:
                    continue
        return out

    def _read_arrays_from(
        self, desc_json: str, buffers: dict[str, tuple[int, bytes]]
    ) -> dict[str, np.ndarray]:
        """``_read_arrays`` served from ``_page_buffers`` where they cover an array (copies:
        no array keeps a page's buffer alive), from the files otherwise."""
        if desc_json == "{}":
            return {}
        out = {}
        for name, spec in json.loads(desc_json).items():
            rel, offset, dtype, shape = spec[:4]
            buf = buffers.get(rel)
            dt = np.dtype(dtype)
            count = math.prod(shape)
            if (
                buf is None
                or offset < buf[0]
                or offset + count * dt.itemsize > buf[0] + len(buf[1])
            ):
                out.update(self._read_arrays(json.dumps({name: spec})))
                continue
            raw = buf[1][offset - buf[0] : offset - buf[0] + count * dt.itemsize]
            if len(spec) > 4 and zlib.crc32(raw) != spec[4]:
                raise StoreCorrupt(
                    f"{self.path / rel}: array {name!r} at offset {offset} fails its checksum "
                    "(the file was changed or damaged)"
                )
            out[name] = np.frombuffer(raw, dtype=dt, count=count).reshape(shape).copy()
        return out

    def _close_readers(self) -> None:
        for fh in self._readers.values():
            fh.close()
        self._readers.clear()

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
        crcs: list[int | None] = []
        for rid, desc_json in rows:
            d = json.loads(desc_json).get(name)
            if d is None:
                continue
            ids.append(rid)
            spans.append(tuple(d[:4]))  # type: ignore[arg-type]
            crcs.append(d[4] if len(d) > 4 else None)
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
        for i, crc in enumerate(crcs):
            if crc is not None and zlib.crc32(np.ascontiguousarray(out[i]).data) != crc:
                rel, offset = spans[i][0], spans[i][1]
                raise StoreCorrupt(
                    f"{self.path / rel}: array {name!r} at offset {offset} fails its checksum "
                    "(the file was changed or damaged)"
                )
        return ids, out
