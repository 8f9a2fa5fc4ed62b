"""Recall of the episodic memory: candidates by words and vectors, relevance (word
overlap and embedding cosine) scaled by retention, and reinforcement of what is
recalled (MemoryBank)."""

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
        now = self._clock_ns
        lam, w = self.config.lexical_weight, self.config.recall_retention_weight
        filtered = bool(
            query.t0_ns or query.t1_ns or (query.near is not None and query.radius_m > 0)
        )
        scored = []
        for key in cands:
            rec = self._recs[key]
            if filtered and not self._passes(rec, query):
                continue
            emb = 0.0
            for space, q in qv.items():
                v = rec.embs.get(space)
                if v is not None:
                    emb = max(emb, float(v @ q))
                if rec.kind == "episode" and space == "image":
                    for kf in rec.data["keyframes"]:
                        if kf["embedding"].size == q.size:
                            emb = max(emb, float(kf["embedding"] @ q))
            emb = min(max(emb, 0.0), 1.0)
            if key[0] == "e":  # an entity matches by its best name (label or alias)
                lex = max(lexical_score(qt, t) for t in self._names_of(rec))
            else:
                lex = lexical_score(qt, self._toks[key])
            if qv and qt:
                rel = lam * lex + (1 - lam) * emb
            elif qv:
                rel = emb
            elif qt:
                rel = lex
            else:
                rel = 1.0
            if rel <= 0:
                continue
            score = rel * ((1 - w) + w * rec.retention(now))
            scored.append((score, rec.stamp_ns, key))
        scored.sort(key=lambda x: (-x[0], -x[1], x[2]))
        hits = []
        for score, _, key in scored[: query.top_k]:
            rec = self._recs[key]
            hits.append(self._hit(rec, score, now))
            self._reinforce(rec, now)
        return hits

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
