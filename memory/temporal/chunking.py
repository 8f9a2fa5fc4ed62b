"""Chunks of the temporal memory's timeline, and its capacity.

What it stores: every ``Percept`` (whole-image embedding, object labels,
object embeddings and centroids, camera position), ``Transcript`` (text, text
embedding) and ``SoundEvent`` (label, spectral embedding) becomes a timeline
*item*. Items are grouped into *chunks* (segments): a chunk is closed when it is
``chunk_max_s`` long or holds ``chunk_max_items`` items, or when the content
changes: a percept whose image embedding has cosine below ``change_min_cos`` to
the chunk's running mean, or whose object labels overlap the previous percept's
by less than ``label_min_jaccard``. Each chunk keeps a summary: one mean
embedding per space (L2-normalised), one mean object embedding per object
label (so a single object seen once in a long chunk still has its own key),
its label counts, the words of its texts, and its time span.

Capacity (short-term compressed into long-term): above ``max_items`` detailed
items, the oldest chunks are *compressed*: their items are dropped and only the
summary stays (it still answers coarse recall and time questions). Above
``max_chunks`` chunks, two adjacent compressed chunks are merged: among the
oldest 64, the pair covering the fewest items (old summaries coarsen evenly).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import ClassVar

import numpy as np

from engram.memory.embedding import Embedders
from engram.memory.index import VectorIndex, l2n
from engram.memory.temporal.config import TemporalConfig
from engram.memory.temporal.records import LABEL_STRIDE, OBJ_STRIDE, Chunk, Item

_NO_FAISS = 2**62  # exact_max that is never reached

__all__ = ["Chunking"]


class TemporalState:
    """The attributes ``TemporalMemory.reset`` sets up, declared once for the classes
    that ``TemporalMemory`` composes (``Chunking``, ``TimeQuestions`` / ``TemporalRecall``)."""

    config: TemporalConfig
    embedders: Embedders | None
    name: ClassVar[str]
    _items: dict[int, Item]
    _chunks: dict[int, Chunk]
    _chunk_order: list[int]
    _detailed: collections.deque[int]
    _open: Chunk | None
    _dims: dict[str, int]
    _item_index: dict[str, VectorIndex]
    _obj_index: dict[str, VectorIndex]
    _chunk_index: dict[str, VectorIndex]
    _chunk_obj_index: dict[str, VectorIndex]
    _tok_items: dict[str, list[int]]
    _tok_chunks: dict[str, set[int]]
    _next_item: int
    _next_chunk: int
    _t0_ns: int | None
    _timeline: list[tuple[int, int]] | None
    _dead_postings: int
    counters: dict[str, int]


class Chunking(TemporalState):
    """Appends items to chunks, closes, compresses and merges chunks (see the module
    docstring); the state is set up by ``TemporalMemory.reset``."""

    def _check_dim(self, space: str, dim: int, what: str) -> None:
        have = self._dims.get(space)
        if have is not None and have != dim:
            raise ValueError(f"{what}: dimension {dim} differs from the {have} of space {space!r}")

    def _index(self, table: dict[str, VectorIndex], space: str, dim: int) -> VectorIndex:
        idx = table.get(space)
        if idx is None:
            self._dims.setdefault(space, dim)
            # Exact only: this memory reads its vectors by id (``get``) and scans chunk
            # summaries with one matmul (``vectors``); it never calls ``search``. A FAISS
            # index above ``exact_max`` would only hold a second copy of every vector (a
            # day at 1 percept/s: 2.35 GB resident with it, bench/scale.py) and retrain.
            cfg = dataclasses.replace(self.config.index, exact_max=_NO_FAISS)
            idx = table[space] = VectorIndex(dim, config=cfg)
        return idx

    def _append(self, item: Item, vec: np.ndarray | None, objs: np.ndarray | None) -> None:
        cfg = self.config
        self._next_item += 1
        if self._t0_ns is None:
            self._t0_ns = item.stamp_ns
        chunk = self._open
        label_set = frozenset(item.labels) if item.kind == "percept" else frozenset()
        cut = chunk is None
        if chunk is not None:
            if item.stamp_ns - chunk.start_ns > cfg.chunk_max_s * 1e9:
                cut = True
            elif len(chunk.item_ids) >= cfg.chunk_max_items:
                cut = True
            elif item.kind == "percept" and vec is not None and chunk.counts.get("image"):
                if float(chunk.summary("image") @ vec) < cfg.change_min_cos:
                    cut = True
            if (
                not cut
                and cfg.label_min_jaccard > 0
                and label_set
                and chunk.last_labels
                and len(label_set & chunk.last_labels) / len(label_set | chunk.last_labels)
                < cfg.label_min_jaccard
            ):
                cut = True
        if cut:
            if chunk is not None:
                self._close(chunk)
            chunk = self._open = Chunk(self._next_chunk, item.stamp_ns, item.end_ns)
            self._next_chunk += 1
            self._chunks[chunk.chunk_id] = chunk
            self._chunk_order.append(chunk.chunk_id)
        assert chunk is not None
        item.chunk_id = chunk.chunk_id
        self._items[item.item_id] = item
        chunk.item_ids.append(item.item_id)
        chunk.n_items += 1
        chunk.start_ns = min(chunk.start_ns, item.stamp_ns)
        chunk.end_ns = max(chunk.end_ns, item.end_ns)
        chunk.version += 1
        if label_set:
            chunk.last_labels = label_set
        for lab in item.labels:
            chunk.label_counts[lab] = chunk.label_counts.get(lab, 0) + 1
        if item.kind != "percept" and len(chunk.texts) < cfg.max_texts_per_chunk:
            chunk.texts.append(item.text)
        for t in item.toks:
            self._tok_items.setdefault(t, []).append(item.item_id)
            if t not in chunk.toks:
                chunk.toks.add(t)
                self._tok_chunks.setdefault(t, set()).add(chunk.chunk_id)
        if vec is not None:
            self._index(self._item_index, item.space, vec.size).add([item.item_id], vec)
            chunk.sums[item.space] = chunk.sums.get(item.space, 0) + vec
            chunk.counts[item.space] = chunk.counts.get(item.space, 0) + 1
        if objs is not None:
            ids = item.item_id * OBJ_STRIDE + np.arange(len(objs))
            self._index(self._obj_index, item.space or "image", objs.shape[1]).add(ids, objs)
            for k, lab in enumerate(item.labels[: len(objs)]):
                if lab in chunk.obj_labels:
                    chunk.obj_sums[chunk.obj_labels.index(lab)] += objs[k]
                elif len(chunk.obj_labels) < LABEL_STRIDE:
                    chunk.obj_labels.append(lab)
                    chunk.obj_sums.append(objs[k].astype(np.float32).copy())
        self._timeline = None
        self._enforce_capacity()

    def _close(self, chunk: Chunk) -> None:
        chunk.closed = True
        self._detailed.append(chunk.chunk_id)
        self._upsert_summary(chunk)

    def _upsert_summary(self, chunk: Chunk) -> None:
        for space, s in chunk.sums.items():
            self._index(self._chunk_index, space, s.size).add([chunk.chunk_id], l2n(s))
        if chunk.obj_sums:
            base = chunk.chunk_id * LABEL_STRIDE
            ids = base + np.arange(len(chunk.obj_sums))
            vecs = l2n(np.stack(chunk.obj_sums))
            idx = self._index(self._chunk_obj_index, "image", vecs.shape[1])
            idx.add(ids, vecs)

    def _enforce_capacity(self) -> None:
        cfg = self.config
        while len(self._items) > cfg.max_items and self._detailed:
            ch = self._chunks.get(self._detailed.popleft())
            if ch is not None and not ch.compressed:
                self._compress(ch)
        order = self._chunk_order
        while len(self._chunks) > cfg.max_chunks:
            # among the oldest compressed chunks, merge the adjacent pair covering the fewest
            # items, so that old summaries coarsen evenly instead of one absorbing all
            best = None
            for i in range(min(len(order) - 1, 64)):
                a, b = self._chunks[order[i]], self._chunks[order[i + 1]]
                if not (a.compressed and b.compressed):
                    break
                if best is None or a.n_items + b.n_items < best[0]:
                    best = (a.n_items + b.n_items, i)
            if best is None:
                break
            i = best[1]
            self._merge(self._chunks[order[i]], self._chunks[order[i + 1]])
            order.pop(i + 1)

    def _compress(self, ch: Chunk) -> None:
        """Drop a chunk's items, keep its summary (short-term -> long-term)."""
        for iid in ch.item_ids:
            item = self._items.pop(iid)
            if item.space:
                self._item_index[item.space].remove([iid])
            if item.n_objects:
                idx = self._obj_index[item.space or "image"]
                idx.remove(iid * OBJ_STRIDE + np.arange(item.n_objects))
            self._dead_postings += len(item.toks)
        ch.item_ids = []
        ch.compressed = True
        ch.version += 1
        self.counters["compressed"] += 1
        if self._dead_postings > 4 * max(len(self._items), 1000):
            self._rebuild_postings()

    def _merge(self, a: Chunk, b: Chunk) -> None:
        """Fold compressed chunk ``b`` into the preceding compressed chunk ``a``."""
        a.end_ns = max(a.end_ns, b.end_ns)
        a.start_ns = min(a.start_ns, b.start_ns)
        a.n_items += b.n_items
        for lab, n in b.label_counts.items():
            a.label_counts[lab] = a.label_counts.get(lab, 0) + n
        a.texts = (a.texts + b.texts)[: self.config.max_texts_per_chunk]
        for space, s in b.sums.items():
            a.sums[space] = a.sums.get(space, 0) + s
            a.counts[space] = a.counts.get(space, 0) + b.counts[space]
        for lab, osum in zip(b.obj_labels, b.obj_sums):
            if lab in a.obj_labels:
                a.obj_sums[a.obj_labels.index(lab)] += osum
            elif len(a.obj_labels) < LABEL_STRIDE:
                a.obj_labels.append(lab)
                a.obj_sums.append(osum)
        if b.obj_sums:
            self._chunk_obj_index["image"].remove(
                b.chunk_id * LABEL_STRIDE + np.arange(len(b.obj_sums))
            )
        for t in b.toks:
            self._tok_chunks[t].discard(b.chunk_id)
            if t not in a.toks:
                a.toks.add(t)
                self._tok_chunks.setdefault(t, set()).add(a.chunk_id)
        for idx in self._chunk_index.values():
            idx.remove([b.chunk_id])
        del self._chunks[b.chunk_id]
        a.version += 1
        self._upsert_summary(a)

    def _rebuild_postings(self) -> None:
        self._tok_items = {}
        for iid in sorted(self._items):
            for t in self._items[iid].toks:
                self._tok_items.setdefault(t, []).append(iid)
        self._dead_postings = 0

    def consolidate(self, *, now_ns: int | None = None) -> None:
        """Close the open chunk if it is older than ``chunk_max_s`` at ``now_ns``; enforce capacity."""
        ch = self._open
        if ch is not None and now_ns is not None:
            if now_ns - ch.start_ns > self.config.chunk_max_s * 1e9:
                self._close(ch)
                self._open = None
        self._enforce_capacity()
