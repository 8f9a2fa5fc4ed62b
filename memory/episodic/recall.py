"""Recall of the episodic memory: candidates by words and vectors, relevance (word
overlap and embedding cosine) scaled by retention, and reinforcement of what is
recalled (MemoryBank).

Scoring is vectorised over the candidates: one matrix product per embedding space, word
overlaps counted from the postings by set intersection, retention and the time/place
filter as array expressions, and only the best ``top_k`` (with ties) sorted in Python.
Only entity candidates that share a word with the query are scored name by name."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engram.memory.base import Hit
from engram.memory.embedding import Embedders, query_vectors
from engram.memory.episodic.ledger import RecordLedger
from engram.memory.episodic.records import PREFIX_NAMES, Rec
from engram.memory.index import lexical_score, tokens
from engram.runtime.messages import MemoryQuery

__all__ = ["EpisodicRecall"]

# lexical_score's own ``precision`` (vectorised below with the same formula)
_PRECISION: float = (lexical_score.__kwdefaults__ or {}).get("precision", 0.25)


class EpisodicRecall(RecordLedger):
    """``recall`` and the hits it returns (see the module docstring)."""

    name: ClassVar[str]
    embedders: Embedders | None

    def recall(self, query: MemoryQuery) -> list[Hit]:
        qv = query_vectors(query.text, query.embedding, self.embedders, self._dims)
        qt = tokens(query.text)
        if not qv and not qt and query.near is None and not (query.t0_ns or query.t1_ns):
            return []
        cands: set[str] = set()
        for t in qt:
            cands |= self._post.get(t, set())
        for space, q in qv.items():
            idx = self._index.get(space)
            if idx is not None and len(idx):
                _, ids = idx.search(q, max(4 * query.top_k, 16))
                for i in ids[0].tolist():
                    if i >= 0:
                        cands |= {k for k in (f"e{i}", f"v{i}", f"p{i}") if k in self._recs}
        if not qv and not qt:  # only a place or a time window
            cands = set(self._recs)
        keys = sorted(cands)  # a fixed order: the arrays below are indexed like it
        recs = [self._recs[k] for k in keys]
        if query.t0_ns or query.t1_ns or (query.near is not None and query.radius_m > 0):
            keep = self._passes_all(recs, query)
            keys = [k for k, m in zip(keys, keep.tolist()) if m]
            recs = [r for r, m in zip(recs, keep.tolist()) if m]
        if not recs:
            return []
        now = self._clock_ns
        lam, w = self.config.lexical_weight, self.config.recall_retention_weight
        emb = self._emb_scores(recs, qv) if qv else None
        lex = self._lex_scores(keys, recs, qt) if qt else None
        if emb is not None and lex is not None:
            rel = lam * lex + (1 - lam) * emb
        elif emb is not None:
            rel = emb
        elif lex is not None:
            rel = lex
        else:
            rel = np.ones(len(recs))
        # retention of every candidate at once (Rec.retention, vectorised)
        last = np.fromiter((r.last_access_ns for r in recs), np.float64, len(recs))
        strength = np.fromiter((r.strength_s for r in recs), np.float64, len(recs))
        ret = np.exp(-np.maximum(0.0, (now - last) / 1e9) / np.maximum(strength, 1e-9))
        score = rel * ((1 - w) + w * ret)
        live = np.flatnonzero(rel > 0)
        if len(live) > query.top_k:  # the top_k best, plus every tie with the k-th
            kth = np.partition(-score[live], query.top_k - 1)[query.top_k - 1]
            live = live[-score[live] <= kth]
        order = sorted(live.tolist(), key=lambda i: (-score[i], -recs[i].stamp_ns, keys[i]))
        hits = []
        for i in order[: query.top_k]:
            rec = recs[i]
            hits.append(self._hit(rec, float(score[i]), now))
            self._reinforce(rec, now)
        return hits

    def _emb_scores(self, recs: list[Rec], qv: dict[str, np.ndarray]) -> np.ndarray:
        """Best cosine of each record (its vectors, an episode's keyframes) over the query
        vectors, clipped to [0, 1]: one matrix product per space, no loop over scores."""
        emb = np.zeros(len(recs))
        for space, q in qv.items():
            rows = [i for i, r in enumerate(recs) if space in r.embs]
            if rows:
                mat = np.stack([recs[i].embs[space] for i in rows])
                if mat.shape[1] == q.size:
                    np.maximum.at(emb, rows, mat @ q)
            if space == "image":
                owners, vecs = [], []
                for i, r in enumerate(recs):
                    if r.kind == "episode":
                        for kf in r.data["keyframes"]:
                            if kf["embedding"].size == q.size:
                                owners.append(i)
                                vecs.append(kf["embedding"])
                if vecs:
                    np.maximum.at(emb, owners, np.stack(vecs) @ q)
        return np.clip(emb, 0.0, 1.0)

    def _lex_scores(self, keys: list[str], recs: list[Rec], qt: frozenset[str]) -> np.ndarray:
        """``lexical_score`` of every candidate: shared-word counts from the postings
        (set intersections), then one array expression; entities by their best name."""
        where = {k: i for i, k in enumerate(keys)}
        common = np.zeros(len(keys))
        for t in qt:
            posting = self._post.get(t)
            if posting:
                hit = [where[k] for k in (posting & where.keys())]
                common[hit] += 1
        sizes = np.fromiter((len(self._toks[k]) for k in keys), np.float64, len(keys))
        frac = common / len(qt)
        p = _PRECISION
        lex = np.where(common > 0, frac * (1.0 - p + p * common / np.maximum(sizes, 1)), 0.0)
        for i in np.flatnonzero(common > 0).tolist():  # entities: their best name (cached)
            if keys[i][0] == "e":
                lex[i] = max(lexical_score(qt, t) for t in self._names_of(recs[i]))
        return lex

    def _passes_all(self, recs: list[Rec], query: MemoryQuery) -> np.ndarray:
        """``_passes`` for every record at once (time window, place)."""
        n = len(recs)
        keep = np.ones(n, bool)
        if query.t0_ns or query.t1_ns:
            start = np.fromiter((r.stamp_ns for r in recs), np.int64, n)
            end = np.fromiter(
                (r.data.get("last_ns") or r.data.get("end_ns") or r.stamp_ns for r in recs),
                np.int64,
                n,
            )
            if query.t0_ns:
                keep &= end >= query.t0_ns
            if query.t1_ns:
                keep &= start <= query.t1_ns
        if query.near is not None and query.radius_m > 0:
            pos = np.array(
                [r.position if r.position is not None else (np.nan,) * 3 for r in recs],
                np.float64,
            ).reshape(n, 3)
            dist = np.linalg.norm(pos - np.asarray(query.near, np.float64), axis=1)
            keep &= dist <= query.radius_m  # NaN (no position) compares False
        return keep

    def _names_of(self, rec: Rec) -> tuple[frozenset[str], ...]:
        """Distinct word sets of an entity's names (label, aliases; each also with its
        kind), cached until the entity changes."""
        cached = self._name_toks.get(rec.key)
        if cached is not None and cached[0] == rec.version:
            return cached[1]
        names = (rec.data["label"], *rec.data["aliases"])
        sets = tuple({tokens(t) for n in names for t in (n, f"{n} {rec.kind}")})
        self._name_toks[rec.key] = (rec.version, sets)
        return sets

    def _passes(self, rec: Rec, query: MemoryQuery) -> bool:
        start = rec.stamp_ns
        end = rec.data.get("last_ns") or rec.data.get("end_ns") or rec.stamp_ns
        if query.t0_ns and end < query.t0_ns:
            return False
        if query.t1_ns and start > query.t1_ns:
            return False
        if query.near is not None and query.radius_m > 0:
            if rec.position is None:
                return False
            if float(np.linalg.norm(np.asarray(rec.position) - query.near)) > query.radius_m:
                return False
        return True

    def _reinforce(self, rec: Rec, now: int) -> None:
        """MemoryBank: recalling strengthens a memory and resets its clock."""
        rec.strength_s *= self.config.recall_growth
        rec.last_access_ns = max(rec.last_access_ns, now)
        rec.version += 1
        self.counters["reinforced"] += 1

    def _hit(self, rec: Rec, score: float, now: int) -> Hit:
        data = {
            "kind": rec.kind,
            "importance": rec.importance,
            "strength_s": rec.strength_s,
            "retention": round(rec.retention(now), 6),
        }
        d = rec.data
        if rec.key[0] == "e":
            data.update(
                label=d["label"],
                count=d["count"],
                last_seen_ns=d["last_ns"],
                aliases=sorted(d["aliases"]),
            )
        elif rec.key[0] == "v":
            data.update(entities=list(d["entities"]), episode=d.get("episode", ""))
        else:
            data.update(
                episode_id=d["episode_id"],
                instruction=d["instruction"],
                outcome=d["outcome"],
                steps=[{k: s[k] for k in ("skill", "status", "reason")} for s in d["steps"]],
                entities=list(d["entities"]),
                end_ns=d["end_ns"],
            )
        stamp = d.get("last_ns", rec.stamp_ns) if rec.key[0] == "e" else rec.stamp_ns
        return Hit(
            memory=self.name,
            score=score,
            text=rec.text,
            stamp_ns=stamp,
            position=rec.position,
            record_id=f"{PREFIX_NAMES[rec.key[0]]}:{rec.key}",
            provenance=rec.provenance,
            data=data,
        )
