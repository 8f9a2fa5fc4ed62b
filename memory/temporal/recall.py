"""Recall (HCAM, "mental time travel"): score every chunk summary against the
query (cosine per embedding space + word overlap), keep the ``top_chunks`` best,
then score the items *inside* only those chunks (frame and object embeddings,
labels, text) and return the best items. Cost: O(chunks) + O(items in the top
chunks), not O(items).

TWM (temporal working memory): ``select_segments`` returns the segments most
relevant to a query under a budget (a number of segments and/or of items),
optionally diversified (MMR), each refined to its most relevant items, in time
order.

A query's text may ask a time question (``engram.memory.temporal.questions``).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from engram.memory.base import Hit, Provenance
from engram.memory.embedding import query_vectors
from engram.memory.index import l2n, lexical_score, tokens
from engram.memory.temporal.questions import TimeQuestions, parse_time_intent
from engram.memory.temporal.records import LABEL_STRIDE, OBJ_STRIDE, Chunk, Item, Segment
from engram.runtime.messages import MemoryQuery

__all__ = ["TemporalRecall"]


class TemporalRecall(TimeQuestions):
    """Scores chunks and items; ``recall`` and ``select_segments``."""

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
                np.maximum.at(emb, oidx.ids // LABEL_STRIDE, s)
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
                    s = oidx.get(first * OBJ_STRIDE + k_in) @ q
                    group_max = np.maximum.reduceat(s, starts)
                    # first object reaching its item's maximum
                    at_max = s >= np.repeat(group_max, counts_a)
                    arg = np.minimum.reduceat(np.where(at_max, k_in, OBJ_STRIDE), starts)
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
    def _in_window(item: Item, query: MemoryQuery) -> bool:
        if query.t0_ns and item.end_ns < query.t0_ns:
            return False
        return not (query.t1_ns and item.stamp_ns > query.t1_ns)

    @staticmethod
    def _near_ok(hit: Hit, query: MemoryQuery) -> bool:
        if query.near is None or query.radius_m <= 0 or hit.position is None:
            return True
        return float(np.linalg.norm(np.asarray(hit.position) - query.near)) <= query.radius_m

    def _rel_s(self, stamp_ns: int) -> float:
        return (stamp_ns - (self._t0_ns or 0)) / 1e9

    def _item_hit(self, item: Item, score: float, best_obj: int = -1) -> Hit:
        position: tuple[float, float, float] | None = item.position
        text = f"t={self._rel_s(item.stamp_ns):.1f}s {item.text}"
        data: dict[str, Any] = {
            "kind": item.kind,
            "chunk_id": item.chunk_id,
            "end_ns": item.end_ns,
            "labels": list(item.labels),
        }
        if best_obj >= 0 and best_obj < len(item.object_positions):
            position = cast(tuple[float, float, float], tuple(item.object_positions[best_obj]))
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

    def _segment(self, ch: Chunk, score: float, item_ids: list[int]) -> Segment:
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
