"""Temporal memory: a timeline cut into chunks, HCAM recall, TWM segment selection.

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

Recall (HCAM, "mental time travel"): score every chunk summary against the
query (cosine per embedding space + word overlap), keep the ``top_chunks`` best,
then score the items *inside* only those chunks (frame and object embeddings,
labels, text) and return the best items. Cost: O(chunks) + O(items in the top
chunks), not O(items).

TWM (temporal working memory): ``select_segments`` returns the segments most
relevant to a query under a budget (a number of segments and/or of items),
optionally diversified (MMR), each refined to its most relevant items, in time
order.

Time questions: ``between(t0, t1)``, ``last_seen(x)``, ``first_seen(x)``,
``before(x)``, ``after(x)``, ``order([x, y, ...])``. Through ``recall`` a query's
text selects them: "when was the red mug last seen" (``last``), "... first ...",
"what happened before the bell" (``before``), "after ...", and ``t0_ns``/``t1_ns``
restrict to a window.

Capacity (short-term compressed into long-term): above ``max_items`` detailed
items, the oldest chunks are *compressed*: their items are dropped and only the
summary stays (it still answers coarse recall and time questions). Above
``max_chunks`` chunks, two adjacent compressed chunks are merged: among the
oldest 64, the pair covering the fewest items (old summaries coarsen evenly).
"""

from __future__ import annotations

import bisect
import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.memory.base import Hit, Memory, Provenance
from engram.memory.index import (
    Embedders,
    IndexConfig,
    VectorIndex,
    l2n,
    lexical_score,
    query_vectors,
    tokens,
)
from engram.memory.store import Record, Store
from engram.runtime.messages import MemoryQuery, Message, Percept, SoundEvent, Transcript

__all__ = ["Segment", "TemporalConfig", "TemporalMemory", "parse_time_intent"]

_OBJ_STRIDE = 1024  # object vector id = item_id * _OBJ_STRIDE + k (k < _OBJ_STRIDE)
_LABEL_STRIDE = 4096  # chunk label-summary id = chunk_id * _LABEL_STRIDE + slot


@dataclass
class TemporalConfig:
    """Chunking, capacity and scoring of the ``TemporalMemory``."""

    chunk_max_s: float = 10.0  # close a chunk once it spans this many seconds
    chunk_max_items: int = 64  # ... or holds this many items
    change_min_cos: float = 0.8  # a percept less similar than this to the chunk mean starts one
    label_min_jaccard: float = (
        0.34  # ... or one whose labels overlap the last percept's less (0: off)
    )
    max_items: int = 100_000  # detailed items kept; above, the oldest chunks are compressed
    max_chunks: int = 20_000  # chunks kept; above, the oldest compressed chunks are merged
    top_chunks: int = 3  # HCAM: chunks whose items are searched per query
    lexical_weight: float = 0.5  # share of word overlap in a score (the rest: embedding cosine)
    match_min_score: float = 0.45  # time questions: an item must score this much to count as "X"
    max_texts_per_chunk: int = 8  # transcript / sound texts kept in a chunk summary
    index: IndexConfig = field(default_factory=IndexConfig)  # vector search settings

    def __post_init__(self) -> None:
        if self.chunk_max_items < 1 or self.max_items < 1 or self.top_chunks < 1:
            raise ValueError("TemporalConfig: chunk_max_items, max_items, top_chunks must be >= 1")
        if not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError(
                f"TemporalConfig.lexical_weight must be in [0, 1], got {self.lexical_weight}"
            )


@dataclass
class Segment:
    """A chunk of the timeline as TWM / ``between`` return it."""

    chunk_id: int
    start_ns: int
    end_ns: int
    score: float  # relevance to the query (1.0 when no query)
    text: str  # summary: labels with counts, what was said or heard
    item_ids: list[int]  # the chunk's most relevant items (all, without a query), time order
    n_items: int  # items the chunk covered (also when compressed)
    compressed: bool = False


@dataclass(slots=True)
class _Item:
    item_id: int
    kind: str  # "percept" | "transcript" | "sound"
    stamp_ns: int
    end_ns: int
    text: str
    labels: tuple[str, ...]
    toks: frozenset[str]
    chunk_id: int
    space: str  # space of the item vector ("" = none)
    n_objects: int
    position: tuple[float, float, float] | None
    object_positions: list[list[float]]
    provenance: Provenance


@dataclass(slots=True)
class _Chunk:
    chunk_id: int
    start_ns: int
    end_ns: int
    item_ids: list[int] = field(default_factory=list)
    n_items: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    obj_labels: list[str] = field(default_factory=list)  # slot -> label
    obj_sums: list[np.ndarray] = field(default_factory=list)  # slot -> summed object embeddings
    toks: set[str] = field(default_factory=set)
    closed: bool = False
    compressed: bool = False
    version: int = 1
    last_labels: frozenset[str] = frozenset()

    def summary(self, space: str) -> np.ndarray | None:
        s = self.sums.get(space)
        return None if s is None else l2n(s)


_INTENT_BEFORE = re.compile(r"\b(before|prior to|preceding)\b(.*)$", re.I)
_INTENT_AFTER = re.compile(r"\b(after|following|since)\b(.*)$", re.I)
_INTENT_LAST = re.compile(r"\b(last|latest|most recent(ly)?|recently)\b", re.I)
_INTENT_FIRST = re.compile(r"\b(first|earliest)\b", re.I)


def parse_time_intent(text: str) -> tuple[str, str]:
    """-> (intent, subject): intent in {"before", "after", "last", "first", ""}.

    "what happened before the bell rang" -> ("before", "the bell rang");
    "when was the red mug last seen" -> ("last", "when was the red mug last seen").
    """
    for intent, pattern in (("before", _INTENT_BEFORE), ("after", _INTENT_AFTER)):
        m = pattern.search(text)
        if m and m.group(2).strip():
            return intent, m.group(2).strip()
    if _INTENT_LAST.search(text):
        return "last", text
    if _INTENT_FIRST.search(text):
        return "first", text
    return "", text


class TemporalMemory(Memory):
    """A chunked timeline with hierarchical (HCAM) recall. See the module docstring."""

    name = "temporal"
    accepts = ("Percept", "Transcript", "SoundEvent")
    #: save(dir) into a copy of its previous save only writes what changed (store.sync)
    incremental_save = True

    def __init__(
        self, config: TemporalConfig | None = None, *, embedders: Embedders | None = None
    ) -> None:
        self.config = config or TemporalConfig()
        self.embedders = embedders
        self._reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
        self._reset()

    def _reset(self) -> None:
        self._items: dict[int, _Item] = {}
        self._chunks: dict[int, _Chunk] = {}
        self._chunk_order: list[int] = []  # chunk ids in time (creation) order
        self._detailed: collections.deque[int] = collections.deque()  # closed, not compressed
        self._open: _Chunk | None = None
        self._dims: dict[str, int] = {}
        self._item_index: dict[str, VectorIndex] = {}
        self._obj_index: dict[str, VectorIndex] = {}
        self._chunk_index: dict[str, VectorIndex] = {}
        self._chunk_obj_index: dict[str, VectorIndex] = {}  # per-label object means of chunks
        self._tok_items: dict[str, list[int]] = {}
        self._tok_chunks: dict[str, set[int]] = {}
        self._next_item = 0
        self._next_chunk = 0
        self._t0_ns: int | None = None
        self._timeline: list[tuple[int, int]] | None = None  # sorted (stamp, item_id) cache
        self._dead_postings = 0
        self.counters = {"written": 0, "items_scored": 0, "chunks_scored": 0, "compressed": 0}

    # ---- writing ------------------------------------------------------------------------
    def write(self, msg: Message, *, topic: str = "") -> None:
        if isinstance(msg, Percept):
            labels = tuple(msg.object_labels)
            text = ("saw " + ", ".join(labels)) if labels else "saw nothing labelled"
            emb, objs = msg.embedding, msg.object_embeddings
            pos = tuple(float(v) for v in msg.world_from_camera[:3, 3])
            obj_pos = msg.object_centroids.astype(float).tolist()
            kind, start, end = "percept", msg.stamp_ns, msg.stamp_ns
            space = "image"
        elif isinstance(msg, Transcript):
            labels = (msg.speaker,) if msg.speaker else ()
            text = f"{msg.speaker}: {msg.text}" if msg.speaker else msg.text
            emb, objs, obj_pos = msg.embedding, None, []
            pos = (
                tuple(float(v) for v in msg.world_from_robot[:3, 3])
                if msg.world_from_robot is not None
                else None
            )
            kind, start, end = "transcript", msg.start_ns or msg.stamp_ns, msg.end_ns
            space = "text"
        elif isinstance(msg, SoundEvent):
            labels = (msg.label,) if msg.label else ()
            text = f"heard {msg.label or 'a sound'} ({msg.peak_hz:.0f} Hz, {msg.energy_db:.0f} dB)"
            emb, objs, obj_pos = msg.embedding, None, []
            pos = (
                tuple(float(v) for v in msg.world_from_robot[:3, 3])
                if msg.world_from_robot is not None
                else None
            )
            kind, start, end = "sound", msg.start_ns or msg.stamp_ns, msg.end_ns
            space = "audio"
        else:
            return
        # Validate everything before changing state.
        if emb is not None and emb.size:
            self._check_dim(space, emb.size, f"{msg.TYPE}.embedding")
        if objs is not None and len(objs):
            self._check_dim(space, objs.shape[1], f"{msg.TYPE}.object_embeddings")
            if len(objs) >= _OBJ_STRIDE:
                raise ValueError(f"Percept.object_embeddings: at most {_OBJ_STRIDE - 1} objects")
        item = _Item(
            item_id=self._next_item,
            kind=kind,
            stamp_ns=int(start),
            end_ns=int(max(end, start)),
            text=text,
            labels=labels,
            toks=tokens(" ".join((text, *labels))),
            chunk_id=-1,
            space=space if emb is not None and emb.size else "",
            n_objects=0 if objs is None else len(objs),
            position=pos,  # type: ignore[arg-type]
            object_positions=obj_pos,
            provenance=Provenance.of(msg, topic),
        )
        vec = l2n(emb.reshape(-1)) if item.space else None
        self._append(item, vec, None if objs is None or not len(objs) else l2n(objs))
        self.counters["written"] += 1

    def _check_dim(self, space: str, dim: int, what: str) -> None:
        have = self._dims.get(space)
        if have is not None and have != dim:
            raise ValueError(f"{what}: dimension {dim} differs from the {have} of space {space!r}")

    def _index(self, table: dict[str, VectorIndex], space: str, dim: int) -> VectorIndex:
        idx = table.get(space)
        if idx is None:
            self._dims.setdefault(space, dim)
            idx = table[space] = VectorIndex(dim, config=self.config.index)
        return idx

    def _append(self, item: _Item, vec: np.ndarray | None, objs: np.ndarray | None) -> None:
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
            chunk = self._open = _Chunk(self._next_chunk, item.stamp_ns, item.end_ns)
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
            ids = item.item_id * _OBJ_STRIDE + np.arange(len(objs))
            self._index(self._obj_index, item.space or "image", objs.shape[1]).add(ids, objs)
            for k, lab in enumerate(item.labels[: len(objs)]):
                if lab in chunk.obj_labels:
                    chunk.obj_sums[chunk.obj_labels.index(lab)] += objs[k]
                elif len(chunk.obj_labels) < _LABEL_STRIDE:
                    chunk.obj_labels.append(lab)
                    chunk.obj_sums.append(objs[k].astype(np.float32).copy())
        self._timeline = None
        self._enforce_capacity()

    def _close(self, chunk: _Chunk) -> None:
        chunk.closed = True
        self._detailed.append(chunk.chunk_id)
        self._upsert_summary(chunk)

    def _upsert_summary(self, chunk: _Chunk) -> None:
        for space, s in chunk.sums.items():
            self._index(self._chunk_index, space, s.size).add([chunk.chunk_id], l2n(s))
        if chunk.obj_sums:
            base = chunk.chunk_id * _LABEL_STRIDE
            ids = base + np.arange(len(chunk.obj_sums))
            vecs = l2n(np.stack(chunk.obj_sums))
            idx = self._index(self._chunk_obj_index, "image", vecs.shape[1])
            idx.add(ids, vecs)

    # ---- capacity -----------------------------------------------------------------------
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

    def _compress(self, ch: _Chunk) -> None:
        """Drop a chunk's items, keep its summary (short-term -> long-term)."""
        for iid in ch.item_ids:
            item = self._items.pop(iid)
            if item.space:
                self._item_index[item.space].remove([iid])
            if item.n_objects:
                idx = self._obj_index[item.space or "image"]
                idx.remove(iid * _OBJ_STRIDE + np.arange(item.n_objects))
            self._dead_postings += len(item.toks)
        ch.item_ids = []
        ch.compressed = True
        ch.version += 1
        self.counters["compressed"] += 1
        if self._dead_postings > 4 * max(len(self._items), 1000):
            self._rebuild_postings()

    def _merge(self, a: _Chunk, b: _Chunk) -> None:
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
            elif len(a.obj_labels) < _LABEL_STRIDE:
                a.obj_labels.append(lab)
                a.obj_sums.append(osum)
        if b.obj_sums:
            self._chunk_obj_index["image"].remove(
                b.chunk_id * _LABEL_STRIDE + np.arange(len(b.obj_sums))
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

    # ---- scoring ------------------------------------------------------------------------
    def _combine(
        self, emb: np.ndarray, lex: np.ndarray, has_emb: bool, has_lex: bool
    ) -> np.ndarray:
        lam = self.config.lexical_weight
        emb = np.clip(emb, 0.0, 1.0)
        if has_emb and has_lex:
            return lam * lex + (1.0 - lam) * emb
        return emb if has_emb else lex

    def _chunk_scores(
        self, qv: dict[str, np.ndarray], qt: frozenset[str], t0_ns: int = 0, t1_ns: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """All live chunks -> (chunk ids (C,), scores (C,)), time window applied."""
        n = self._next_chunk
        emb = np.zeros(n, np.float32)
        for space, q in qv.items():
            idx = self._chunk_index.get(space)
            if idx is not None and len(idx):
                s = idx.vectors @ q  # (C,) BLAS
                ids = idx.ids
                emb[ids] = np.maximum(emb[ids], s)
            oidx = self._chunk_obj_index.get(space)
            if oidx is not None and len(oidx):
                s = oidx.vectors @ q
                np.maximum.at(emb, oidx.ids // _LABEL_STRIDE, s)
            if self._open is not None:
                summ = self._open.summary(space)
                cid = self._open.chunk_id
                if summ is not None:
                    emb[cid] = max(emb[cid], float(summ @ q))
                if space == "image" and self._open.obj_sums:
                    osums = l2n(np.stack(self._open.obj_sums))
                    if osums.shape[1] == q.size:
                        emb[cid] = max(emb[cid], float(np.max(osums @ q)))
        lex = np.zeros(n, np.float32)
        for t in qt:
            posting = self._tok_chunks.get(t)
            if posting:
                lex[np.fromiter(posting, np.int64, len(posting))] += 1.0
        if qt:
            lex /= len(qt)
        live = np.fromiter(self._chunks, np.int64, len(self._chunks))
        if t0_ns or t1_ns:
            starts = np.array([self._chunks[c].start_ns for c in live.tolist()], np.int64)
            ends = np.array([self._chunks[c].end_ns for c in live.tolist()], np.int64)
            keep = np.ones(len(live), bool)
            if t0_ns:
                keep &= ends >= t0_ns
            if t1_ns:
                keep &= starts <= t1_ns
            live = live[keep]
        self.counters["chunks_scored"] += len(live)
        scores = self._combine(emb[live], lex[live], bool(qv), bool(qt))
        return live, scores

    def _item_scores(
        self, item_ids: list[int], qv: dict[str, np.ndarray], qt: frozenset[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """-> (scores (M,), best object index per item (M,), -1 = the frame itself)."""
        m = len(item_ids)
        emb = np.zeros(m, np.float32)
        best_obj = np.full(m, -1, np.int64)
        pos_of = {iid: i for i, iid in enumerate(item_ids)}
        for space, q in qv.items():
            idx = self._item_index.get(space)
            if idx is not None:
                have = [i for i in item_ids if self._items[i].space == space]
                if have:
                    s = idx.get(have) @ q
                    rows = np.array([pos_of[i] for i in have])
                    emb[rows] = np.maximum(emb[rows], s)
            oidx = self._obj_index.get(space)
            if oidx is not None:
                # every object vector of the items in this space, scored in one matmul;
                # then the best object of each item (groups are contiguous)
                rows_o, counts = [], []
                for i in item_ids:
                    item = self._items[i]
                    if item.n_objects and (item.space or "image") == space:
                        rows_o.append(pos_of[i])
                        counts.append(item.n_objects)
                if rows_o:
                    counts_a = np.asarray(counts)
                    starts = np.cumsum(counts_a) - counts_a
                    first = np.repeat(np.asarray([item_ids[r] for r in rows_o]), counts_a)
                    k_in = np.arange(counts_a.sum()) - np.repeat(starts, counts_a)
                    s = oidx.get(first * _OBJ_STRIDE + k_in) @ q
                    group_max = np.maximum.reduceat(s, starts)
                    # first object reaching its item's maximum
                    at_max = s >= np.repeat(group_max, counts_a)
                    arg = np.minimum.reduceat(np.where(at_max, k_in, _OBJ_STRIDE), starts)
                    rows_a = np.asarray(rows_o)
                    better = group_max > emb[rows_a]
                    emb[rows_a[better]] = group_max[better]
                    best_obj[rows_a[better]] = arg[better]
        lex = np.array(
            [lexical_score(qt, self._items[i].toks) for i in item_ids], np.float32
        ).reshape(m)
        if qt:  # matched by words, not by appearance: the object whose label was asked for
            for r in np.flatnonzero((lex > 0) & (best_obj < 0)).tolist():
                item = self._items[item_ids[r]]
                for k, label in enumerate(item.labels[: len(item.object_positions)]):
                    if qt & tokens(label.replace("_", " ")):
                        best_obj[r] = k
                        break
        self.counters["items_scored"] += m
        return self._combine(emb, lex, bool(qv), bool(qt)), best_obj

    def _query(self, text: str, embedding: np.ndarray | None) -> tuple[dict, frozenset[str]]:
        return query_vectors(text, embedding, self.embedders, self._dims), tokens(text)

    # ---- recall -------------------------------------------------------------------------
    def recall(self, query: MemoryQuery) -> list[Hit]:
        intent, subject = parse_time_intent(query.text)
        qv, qt = self._query(subject, query.embedding)
        if not qv and not qt and not (query.t0_ns or query.t1_ns):
            return []
        if intent in ("before", "after") and (qv or qt):
            return self._before_after(intent, qv, qt, n=query.top_k)
        hits: list[Hit] = []
        if intent in ("last", "first") and (qv or qt):
            hit = self._seen(qv, qt, last=intent == "last", t0_ns=query.t0_ns, t1_ns=query.t1_ns)
            if hit is not None:
                hits.append(hit)
        if not qv and not qt:  # only a time window: the segments in it
            for seg in self.between(query.t0_ns, query.t1_ns)[: query.top_k]:
                hits.append(self._segment_hit(seg))
            return hits
        hits += self._hcam(qv, qt, query)
        seen: set[str] = set()
        out = []
        for h in hits:
            if h.record_id not in seen:
                seen.add(h.record_id)
                out.append(h)
        return out[: query.top_k]

    def _hcam(self, qv: dict, qt: frozenset[str], query: MemoryQuery) -> list[Hit]:
        ids, scores = self._chunk_scores(qv, qt, query.t0_ns, query.t1_ns)
        if not len(ids):
            return []
        k = min(self.config.top_chunks, len(ids))
        top = np.argsort(-scores, kind="stable")[:k]
        hits: list[Hit] = []
        detail: list[int] = []
        chunk_score: dict[int, float] = {}
        for j in top.tolist():
            ch = self._chunks[int(ids[j])]
            chunk_score[ch.chunk_id] = float(scores[j])
            if ch.compressed or not ch.item_ids:
                hits.append(self._segment_hit(self._segment(ch, float(scores[j]), [])))
            else:
                detail.extend(ch.item_ids)
        if query.t0_ns or query.t1_ns:
            detail = [i for i in detail if self._in_window(self._items[i], query)]
        if detail:
            s, best_obj = self._item_scores(detail, qv, qt)
            # One hit per (chunk, text): a scene that did not change over twenty frames
            # is one answer, not twenty; the hit says how many frames and when.
            kept: dict[tuple[int, str], Hit] = {}
            for r in np.argsort(-s, kind="stable").tolist():
                if s[r] <= 0:
                    break
                item = self._items[detail[r]]
                same = kept.get((item.chunk_id, item.text))
                if same is not None:
                    same.data["frames"] += 1
                    span = same.data["span_ns"]
                    span[0], span[1] = min(span[0], item.stamp_ns), max(span[1], item.end_ns)
                    continue
                if len(kept) >= query.top_k:
                    continue  # only counting repeats of the kept ones now
                hit = self._item_hit(item, float(s[r]), int(best_obj[r]))
                hit.data["chunk_score"] = chunk_score[item.chunk_id]
                hit.data["frames"] = 1
                hit.data["span_ns"] = [item.stamp_ns, item.end_ns]
                if self._near_ok(hit, query):
                    kept[(item.chunk_id, item.text)] = hit
            hits.extend(kept.values())
        hits.sort(key=lambda h: (-h.score, h.stamp_ns))
        return hits

    @staticmethod
    def _in_window(item: _Item, query: MemoryQuery) -> bool:
        if query.t0_ns and item.end_ns < query.t0_ns:
            return False
        return not (query.t1_ns and item.stamp_ns > query.t1_ns)

    @staticmethod
    def _near_ok(hit: Hit, query: MemoryQuery) -> bool:
        if query.near is None or query.radius_m <= 0 or hit.position is None:
            return True
        return float(np.linalg.norm(np.asarray(hit.position) - query.near)) <= query.radius_m

    # ---- hits ---------------------------------------------------------------------------
    def _rel_s(self, stamp_ns: int) -> float:
        return (stamp_ns - (self._t0_ns or 0)) / 1e9

    def _item_hit(self, item: _Item, score: float, best_obj: int = -1) -> Hit:
        position = item.position
        text = f"t={self._rel_s(item.stamp_ns):.1f}s {item.text}"
        data: dict[str, Any] = {
            "kind": item.kind,
            "chunk_id": item.chunk_id,
            "end_ns": item.end_ns,
            "labels": list(item.labels),
        }
        if best_obj >= 0 and best_obj < len(item.object_positions):
            position = tuple(item.object_positions[best_obj])  # type: ignore[assignment]
            data["object"] = item.labels[best_obj] if best_obj < len(item.labels) else ""
        return Hit(
            memory=self.name,
            score=score,
            text=text,
            stamp_ns=item.stamp_ns,
            position=position,
            record_id=f"item:{item.item_id}",
            provenance=item.provenance,
            data=data,
        )

    def _segment(self, ch: _Chunk, score: float, item_ids: list[int]) -> Segment:
        top = sorted(ch.label_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        parts = [", ".join(f"{lab} x{n}" for lab, n in top)] if top else []
        parts += [f'"{t}"' for t in ch.texts[:3]]
        text = f"t={self._rel_s(ch.start_ns):.1f}-{self._rel_s(ch.end_ns):.1f}s " + (
            "; ".join(parts) or "(nothing labelled)"
        )
        return Segment(
            chunk_id=ch.chunk_id,
            start_ns=ch.start_ns,
            end_ns=ch.end_ns,
            score=score,
            text=text,
            item_ids=item_ids,
            n_items=ch.n_items,
            compressed=ch.compressed,
        )

    def _segment_hit(self, seg: Segment) -> Hit:
        return Hit(
            memory=self.name,
            score=seg.score,
            text=seg.text,
            stamp_ns=seg.start_ns,
            record_id=f"chunk:{seg.chunk_id}",
            provenance=Provenance(source_topic="", stamp_ns=seg.start_ns),
            data={
                "kind": "segment",
                "chunk_id": seg.chunk_id,
                "end_ns": seg.end_ns,
                "n_items": seg.n_items,
                "compressed": seg.compressed,
            },
        )

    # ---- TWM ----------------------------------------------------------------------------
    def select_segments(
        self,
        query: MemoryQuery | str,
        *,
        budget_segments: int | None = 3,
        budget_items: int | None = None,
        budget_tokens: int | None = None,
        items_per_segment: int | None = None,
        diversity: float = 0.0,
    ) -> list[Segment]:
        """TWM: the segments most relevant to ``query`` within a budget, in time order.

        budget_segments: at most this many segments. budget_items / budget_tokens: the
        chosen segments' items (a compressed segment counts 1) / words of their texts
        (what a downstream model would read) may sum to at most this; a segment that
        does not fit is skipped for the next best. items_per_segment: keep only each
        segment's best items (segment refinement; the budgets count what is kept).
        diversity in [0, 1]: MMR penalty on similarity to segments already chosen.
        """
        if isinstance(query, str):
            query = MemoryQuery(text=query)
        qv, qt = self._query(query.text, query.embedding)
        ids, scores = self._chunk_scores(qv, qt, query.t0_ns, query.t1_ns)
        if not len(ids):
            return []
        chosen: list[Segment] = []
        spent_items = spent_tokens = 0
        remaining = list(np.argsort(-scores, kind="stable").tolist())
        while remaining:
            if budget_segments is not None and len(chosen) >= budget_segments:
                break
            best_j, best_val = None, -np.inf
            for j in remaining[: 64 if diversity > 0 else 1]:
                val = float(scores[j])
                if diversity > 0 and chosen:
                    val -= diversity * max(
                        self._chunk_sim(int(ids[j]), seg.chunk_id) for seg in chosen
                    )
                if val > best_val:
                    best_j, best_val = j, val
            assert best_j is not None
            remaining.remove(best_j)
            ch = self._chunks[int(ids[best_j])]
            items = list(ch.item_ids)
            if items and items_per_segment is not None and (qv or qt):
                s, _ = self._item_scores(items, qv, qt)
                keep = sorted(np.argsort(-s, kind="stable")[:items_per_segment].tolist())
                items = [items[r] for r in keep]
            seg = self._segment(ch, float(scores[best_j]), items)
            n_items = len(items) if items else 1
            n_tokens = (
                sum(len(self._items[i].text.split()) for i in items)
                if items
                else len(seg.text.split())
            )
            if budget_items is not None and spent_items + n_items > budget_items:
                continue
            if budget_tokens is not None and spent_tokens + n_tokens > budget_tokens:
                continue
            spent_items += n_items
            spent_tokens += n_tokens
            chosen.append(seg)
        chosen.sort(key=lambda seg: seg.start_ns)
        return chosen

    def _chunk_sim(self, a: int, b: int) -> float:
        ca, cb = self._chunks[a], self._chunks[b]
        best = 0.0
        for space in ca.sums.keys() & cb.sums.keys():
            best = max(best, float(ca.summary(space) @ cb.summary(space)))  # type: ignore[operator]
        return best

    # ---- time questions -----------------------------------------------------------------
    def between(self, t0_ns: int, t1_ns: int) -> list[Segment]:
        """Segments overlapping [t0_ns, t1_ns] (0 = open end), in time order."""
        out = []
        for cid in self._chunk_order:
            ch = self._chunks.get(cid)
            if ch is None or (t0_ns and ch.end_ns < t0_ns) or (t1_ns and ch.start_ns > t1_ns):
                continue
            out.append(self._segment(ch, 1.0, list(ch.item_ids)))
        out.sort(key=lambda s: s.start_ns)
        return out

    def last_seen(self, what: str | np.ndarray, *, t1_ns: int = 0) -> Hit | None:
        """The latest item matching ``what`` (text or embedding), or None."""
        qv, qt = self._what(what)
        return self._seen(qv, qt, last=True, t1_ns=t1_ns)

    def first_seen(self, what: str | np.ndarray, *, t0_ns: int = 0) -> Hit | None:
        """The earliest item matching ``what`` (text or embedding), or None."""
        qv, qt = self._what(what)
        return self._seen(qv, qt, last=False, t0_ns=t0_ns)

    def _what(self, what: str | np.ndarray) -> tuple[dict, frozenset[str]]:
        if isinstance(what, np.ndarray):
            return self._query("", what.astype(np.float32))
        return self._query(what, None)

    def _seen(
        self, qv: dict, qt: frozenset[str], *, last: bool, t0_ns: int = 0, t1_ns: int = 0
    ) -> Hit | None:
        """Chunks that match at all, newest (oldest) first; the newest (oldest) matching item."""
        thr = self.config.match_min_score
        ids, scores = self._chunk_scores(qv, qt, t0_ns, t1_ns)
        cands = [
            self._chunks[int(c)]
            for c, s in zip(ids.tolist(), scores.tolist())
            if s >= thr * 0.5  # a summary dilutes a single matching frame: be lenient
        ]
        cands.sort(key=lambda ch: ch.end_ns if last else ch.start_ns, reverse=last)
        for ch in cands:
            if ch.compressed or not ch.item_ids:
                seg = self._segment(ch, float(scores[list(ids).index(ch.chunk_id)]), [])
                if seg.score >= thr:
                    return self._segment_hit(seg)
                continue
            items = [i for i in ch.item_ids if self._in_range(self._items[i], t0_ns, t1_ns)]
            if not items:
                continue
            s, best_obj = self._item_scores(items, qv, qt)
            ok = [r for r in range(len(items)) if s[r] >= thr]
            if not ok:
                continue
            pick = (max if last else min)(ok, key=lambda r: (self._items[items[r]].stamp_ns, r))
            hit = self._item_hit(self._items[items[pick]], float(s[pick]), int(best_obj[pick]))
            hit.data["intent"] = "last" if last else "first"
            return hit
        return None

    @staticmethod
    def _in_range(item: _Item, t0_ns: int, t1_ns: int) -> bool:
        return not ((t0_ns and item.end_ns < t0_ns) or (t1_ns and item.stamp_ns > t1_ns))

    def before(self, what: str | np.ndarray, *, n: int = 3) -> list[Hit]:
        """Up to ``n`` items just before the event best matching ``what``, nearest first."""
        qv, qt = self._what(what)
        return self._before_after("before", qv, qt, n=n)

    def after(self, what: str | np.ndarray, *, n: int = 3) -> list[Hit]:
        """Up to ``n`` items just after the event best matching ``what``, nearest first."""
        qv, qt = self._what(what)
        return self._before_after("after", qv, qt, n=n)

    def _before_after(self, intent: str, qv: dict, qt: frozenset[str], *, n: int) -> list[Hit]:
        event = self._hcam(qv, qt, MemoryQuery(top_k=1))
        if not event or not event[0].record_id.startswith("item:"):
            return []
        ev = self._items[int(event[0].record_id.split(":")[1])]
        timeline = self._sorted_timeline()
        pos = bisect.bisect_left(timeline, (ev.stamp_ns, ev.item_id))
        step = -1 if intent == "before" else 1
        j = pos + step
        out: list[Hit] = []
        last_text = None
        while 0 <= j < len(timeline) and len(out) < n:
            item = self._items[timeline[j][1]]
            j += step
            if item.text == last_text or item.text == ev.text:
                continue  # repeated frames of the same scene say nothing new
            last_text = item.text
            hit = self._item_hit(item, event[0].score * (1.0 - 0.05 * len(out)))
            hit.data.update({"intent": intent, "event": event[0].record_id})
            out.append(hit)
        return out

    def _sorted_timeline(self) -> list[tuple[int, int]]:
        if self._timeline is None:
            self._timeline = sorted((it.stamp_ns, iid) for iid, it in self._items.items())
        return self._timeline

    def order(self, whats: list[str], *, which: str = "first") -> list[tuple[str, int]]:
        """Sort things by when they were first (or last) seen: -> [(what, stamp_ns)], earliest
        first; things never seen are left out."""
        if which not in ("first", "last"):
            raise ValueError(f"order: which must be 'first' or 'last', got {which!r}")
        found = []
        for w in whats:
            hit = self.first_seen(w) if which == "first" else self.last_seen(w)
            if hit is not None:
                found.append((w, hit.stamp_ns))
        found.sort(key=lambda x: x[1])
        return found

    # ---- persistence --------------------------------------------------------------------
    def _records(self) -> Any:
        meta = {
            "dims": self._dims,
            "next_item": self._next_item,
            "next_chunk": self._next_chunk,
            "t0_ns": self._t0_ns,
            "open": None if self._open is None else self._open.chunk_id,
            "chunk_order": self._chunk_order,
            "counters": self.counters,
        }
        yield Record(self.name, "meta", payload=meta, kind="meta", version=0)
        for ch in self._chunks.values():
            yield Record(
                self.name,
                f"c{ch.chunk_id}",
                kind="chunk",
                stamp_ns=ch.start_ns,
                version=ch.version,
                payload={
                    "start_ns": ch.start_ns,
                    "end_ns": ch.end_ns,
                    "item_ids": ch.item_ids,
                    "n_items": ch.n_items,
                    "label_counts": ch.label_counts,
                    "texts": ch.texts,
                    "counts": ch.counts,
                    "toks": sorted(ch.toks),
                    "closed": ch.closed,
                    "compressed": ch.compressed,
                    "last_labels": sorted(ch.last_labels),
                    "obj_labels": ch.obj_labels,
                },
                arrays={
                    **{f"sum_{k}": np.asarray(v, np.float32) for k, v in ch.sums.items()},
                    **(
                        {"obj_sums": np.stack(ch.obj_sums).astype(np.float32)}
                        if ch.obj_sums
                        else {}
                    ),
                },
            )
        for item in self._items.values():
            arrays = {}
            if item.space:
                arrays["emb"] = self._item_index[item.space].get([item.item_id])[0]
            if item.n_objects:
                idx = self._obj_index[item.space or "image"]
                arrays["obj"] = idx.get(item.item_id * _OBJ_STRIDE + np.arange(item.n_objects))
            yield Record(
                self.name,
                f"i{item.item_id}",
                kind="item",
                stamp_ns=item.stamp_ns,
                provenance=item.provenance,
                version=1,
                payload={
                    "item_id": item.item_id,
                    "kind": item.kind,
                    "end_ns": item.end_ns,
                    "text": item.text,
                    "labels": list(item.labels),
                    "chunk_id": item.chunk_id,
                    "space": item.space,
                    "n_objects": item.n_objects,
                    "position": item.position,
                    "object_positions": item.object_positions,
                },
                arrays=arrays,
            )

    def save(self, directory: str | Path) -> None:
        with Store(directory) as store:
            store.sync(self.name, self._records(), keep_history=False)

    def load(self, directory: str | Path) -> None:
        with Store(directory) as store:
            meta_rec = store.get(self.name, "meta")
            if meta_rec is None:
                raise ValueError(f"{directory}: no temporal memory saved there")
            self._reset()
            meta = meta_rec.payload
            self._dims = {k: int(v) for k, v in meta["dims"].items()}
            self._next_item, self._next_chunk = meta["next_item"], meta["next_chunk"]
            self._t0_ns = meta["t0_ns"]
            self._chunk_order = list(meta["chunk_order"])
            self.counters.update(meta["counters"])
            item_vecs: dict[str, tuple[list[int], list[np.ndarray]]] = {}
            obj_vecs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
            for rec in store.scan(self.name, kind="chunk"):
                p = rec.payload
                ch = _Chunk(
                    chunk_id=int(rec.record_id[1:]),
                    start_ns=p["start_ns"],
                    end_ns=p["end_ns"],
                    item_ids=list(p["item_ids"]),
                    n_items=p["n_items"],
                    label_counts=dict(p["label_counts"]),
                    texts=list(p["texts"]),
                    sums={k[4:]: v for k, v in rec.arrays.items() if k.startswith("sum_")},
                    obj_labels=list(p["obj_labels"]),
                    obj_sums=[v.copy() for v in rec.arrays.get("obj_sums", [])],
                    counts={k: int(v) for k, v in p["counts"].items()},
                    toks=set(p["toks"]),
                    closed=p["closed"],
                    compressed=p["compressed"],
                    version=rec.version,
                    last_labels=frozenset(p["last_labels"]),
                )
                self._chunks[ch.chunk_id] = ch
                for t in ch.toks:
                    self._tok_chunks.setdefault(t, set()).add(ch.chunk_id)
                if ch.closed:
                    self._upsert_summary(ch)
            if meta["open"] is not None:
                self._open = self._chunks[meta["open"]]
            self._detailed.extend(
                cid
                for cid in self._chunk_order
                if cid in self._chunks
                and self._chunks[cid].closed
                and not self._chunks[cid].compressed
            )
            # in item order, whatever order the store holds them in (an imported copy)
            scanned = sorted(store.scan(self.name, kind="item"), key=lambda r: r.payload["item_id"])
            for rec in scanned:
                p = rec.payload
                item = _Item(
                    item_id=p["item_id"],
                    kind=p["kind"],
                    stamp_ns=rec.stamp_ns,
                    end_ns=p["end_ns"],
                    text=p["text"],
                    labels=tuple(p["labels"]),
                    toks=tokens(" ".join((p["text"], *p["labels"]))),
                    chunk_id=p["chunk_id"],
                    space=p["space"],
                    n_objects=p["n_objects"],
                    position=None if p["position"] is None else tuple(p["position"]),
                    object_positions=p["object_positions"],
                    provenance=rec.provenance,
                )
                self._items[item.item_id] = item
                if item.space:
                    ids, vecs = item_vecs.setdefault(item.space, ([], []))
                    ids.append(item.item_id)
                    vecs.append(rec.arrays["emb"])
                if item.n_objects:
                    oids, ovecs = obj_vecs.setdefault(item.space or "image", ([], []))
                    oids.append(item.item_id * _OBJ_STRIDE + np.arange(item.n_objects))
                    ovecs.append(rec.arrays["obj"])
            for space, (ids, vecs) in item_vecs.items():
                self._index(self._item_index, space, vecs[0].size).add(ids, np.stack(vecs))
            for space, (oids, ovecs) in obj_vecs.items():
                self._index(self._obj_index, space, ovecs[0].shape[1]).add(
                    np.concatenate(oids), np.concatenate(ovecs)
                )
            self._rebuild_postings()

    # ---- sizes --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items) + sum(1 for c in self._chunks.values() if c.compressed)

    def stats(self) -> dict[str, Any]:
        return {
            "records": len(self),
            "items": len(self._items),
            "chunks": len(self._chunks),
            "compressed_chunks": sum(1 for c in self._chunks.values() if c.compressed),
            **self.counters,
        }
