"""Bookkeeping of the episodic records: keys, the word postings and vector indexes
that find them, new events and the merge log."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from engram.memory.base import Provenance
from engram.memory.episodic.config import EpisodicConfig
from engram.memory.episodic.records import Rec
from engram.memory.index import VectorIndex, tokens

__all__ = ["RecordLedger"]


class RecordLedger:
    """Adds, indexes and removes records of an ``EpisodicMemory`` (which composes it);
    the state it keeps is set up by ``EpisodicMemory.reset``."""

    config: EpisodicConfig
    _recs: dict[str, Rec]
    _post: dict[str, set[str]]
    _toks: dict[str, frozenset[str]]
    _name_toks: dict[str, tuple[int, tuple[frozenset[str], ...]]]
    _index: dict[str, VectorIndex]
    _dims: dict[str, int]
    _by_label: dict[tuple[str, str], set[str]]
    _tracks: collections.OrderedDict[tuple[str, int], str]
    _next: int
    _clock_ns: int
    _open_episode: str | None
    merge_log: collections.deque[dict[str, Any]]
    _next_log: int
    counters: dict[str, int]

    def _new_key(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}{self._next}"

    @staticmethod
    def _num(key: str) -> int:
        return int(key[1:])

    def _strength0(self, importance: float) -> float:
        return self.config.base_strength_s * (1.0 + self.config.importance_gain * importance)

    def _add(self, rec: Rec) -> Rec:
        self._recs[rec.key] = rec
        self._index_rec(rec)
        return rec

    def _index_rec(self, rec: Rec) -> None:
        self._name_toks.pop(rec.key, None)
        self._toks[rec.key] = self._rec_tokens(rec)
        for t in self._toks[rec.key]:
            self._post.setdefault(t, set()).add(rec.key)
        for space, vec in rec.embs.items():
            self._vindex(space, vec.size).add([self._num(rec.key)], vec)
        if rec.key[0] == "e":
            self._by_label.setdefault((rec.kind, rec.data["label"]), set()).add(rec.key)

    def _unindex(self, rec: Rec) -> None:
        self._name_toks.pop(rec.key, None)
        for t in self._toks.pop(rec.key, frozenset()):
            posting = self._post.get(t)
            if posting is not None:
                posting.discard(rec.key)
                if not posting:
                    del self._post[t]
        for space in rec.embs:
            self._index[space].remove([self._num(rec.key)])
        if rec.key[0] == "e":
            self._by_label.get((rec.kind, rec.data["label"]), set()).discard(rec.key)

    def _remove(self, key: str) -> None:
        rec = self._recs.pop(key)
        self._unindex(rec)

    @staticmethod
    def _rec_tokens(rec: Rec) -> frozenset[str]:
        if rec.key[0] == "e":  # an entity is found by its names, not its description
            return tokens(" ".join((rec.kind, rec.data["label"], *rec.data["aliases"])))
        return tokens(f"{rec.text} {rec.kind.replace('_', ' ')}")

    def _vindex(self, space: str, dim: int) -> VectorIndex:
        idx = self._index.get(space)
        if idx is None:
            self._dims.setdefault(space, dim)
            idx = self._index[space] = VectorIndex(dim, config=self.config.index)
        elif idx.dim != dim:
            raise ValueError(
                f"embedding of dimension {dim} for space {space!r} of dimension {idx.dim}"
            )
        return idx

    def _check_dim(self, space: str, dim: int, what: str) -> None:
        have = self._dims.get(space)
        if have is not None and have != dim:
            raise ValueError(f"{what}: dimension {dim} differs from the {have} of space {space!r}")

    def _event(
        self,
        kind: str,
        text: str,
        stamp_ns: int,
        prov: Provenance,
        *,
        position: tuple[float, float, float] | None = None,
        entities: list[str] | None = None,
        emb: dict[str, np.ndarray] | None = None,
    ) -> Rec:
        imp = self.config.importance.get(kind, 0.3)
        data: dict[str, Any] = {"entities": entities or []}
        if self._open_episode is not None:
            data["episode"] = self._open_episode
        return self._add(
            Rec(
                key=self._new_key("v"),
                kind=kind,
                text=text,
                stamp_ns=stamp_ns,
                importance=imp,
                strength_s=self._strength0(imp),
                last_access_ns=stamp_ns,
                provenance=prov,
                position=position,
                data=data,
                embs=emb or {},
            )
        )

    def _log(self, action: str, **fields: Any) -> dict[str, Any]:
        self._next_log += 1
        entry = {"log_id": self._next_log, "action": action, "stamp_ns": self._clock_ns, **fields}
        self.merge_log.append(entry)
        return entry
