"""Vector search behind one interface, and lexical matching.

``VectorIndex`` holds (N, D) float32 vectors with int64 ids and answers
inner-product top-k queries (cosine similarity for the L2-normalised embeddings
Engram uses):

- up to ``IndexConfig.exact_max`` vectors: exact search, one BLAS matmul
  ``(N, D) @ (D, Q)`` plus ``argpartition``;
- above it: FAISS (``faiss-cpu``, imported lazily), IVF-Flat (default; trained
  once on the data when the threshold is crossed and again when the index has
  grown ``rebuild_growth`` times) or HNSW-Flat. Recall@10 against exact search is
  measured in ``tests/memory/test_index.py`` and ``bench/memory.py``.

Up to ``exact_max`` the float32 matrix is the store. Above it FAISS holds the vectors
(IVF-Flat's lists with a direct map, HNSW behind ``IndexIDMap2``) and the matrix is
dropped: a large index costs its vectors once, not twice. ``get``, ``vectors``,
candidate-subset and ``exact`` searches then read the vectors back from FAISS
(``reconstruct_batch``; exact copies of what was added), as does a retraining. numpy's
BLAS, ``argpartition`` and FAISS release the GIL, so searches in different memories run
in parallel threads.

Embedding spaces and the injected text encoders are in ``engram.memory.embedding``.

``tokens`` and ``lexical_score`` give a cheap word-overlap score used beside the
embeddings ("red mug" matches the label ``red_mug``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "IndexConfig",
    "VectorIndex",
    "all_finite",
    "l2n",
    "lexical_score",
    "recall_at_k",
    "tokens",
]


@dataclass
class IndexConfig:
    """How a ``VectorIndex`` searches."""

    exact_max: int = 50_000  # up to this many vectors: exact BLAS search; above: FAISS
    kind: str = "ivf"  # FAISS index above the threshold: "ivf" (IVF-Flat) or "hnsw" (HNSW-Flat)
    ivf_lists_per_sqrt_n: float = 1.0  # IVF: number of lists = this * sqrt(N) at training
    ivf_nprobe: int = 24  # IVF: lists visited per query
    ivf_train_max: int = 100_000  # IVF: at most this many vectors used to train the quantizer
    rebuild_growth: float = 4.0  # IVF: retrain when N has grown this many times since training
    hnsw_m: int = 32  # HNSW: neighbours per node
    hnsw_ef_construction: int = 64  # HNSW: build-time beam width
    hnsw_ef_search: int = 160  # HNSW: query-time beam width
    faiss_threads: int = 1  # OpenMP threads FAISS may use per call (parallelism comes from fan-out)

    def __post_init__(self) -> None:
        if self.kind not in ("ivf", "hnsw"):
            raise ValueError(f"IndexConfig.kind must be 'ivf' or 'hnsw', got {self.kind!r}")
        if self.exact_max < 0:
            raise ValueError(f"IndexConfig.exact_max must be >= 0, got {self.exact_max}")


def l2n(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero): (..., D) -> (..., D) float32.

    The norm is what ``np.linalg.norm(x, axis=-1, keepdims=True)`` computes for real
    input (``sqrt(add.reduce(x * x, axis))``, its own special case), bit for bit, without
    its argument handling: ~3 us less per call, and ingest makes ~10 calls per percept."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norm, 1e-12)


def all_finite(a: np.ndarray) -> bool:
    """``bool(np.all(np.isfinite(a)))`` through the array's own ``all`` method: the same
    answer without ``np.all``'s dispatch (~1 us less; ingest checks ~10 arrays per
    percept). (A sum-based test would be cheaper still, but a finite array whose sum
    overflows makes numpy warn.)"""
    return bool(np.isfinite(a).all())


_PAD_MAX = 1024  # search pads missing results with -1 up to this many columns, never more


class VectorIndex:
    """Top-k inner-product search over (N, D) float32 vectors keyed by int64 ids.

    ``add`` upserts (an existing id is replaced), ``remove`` deletes,
    ``search((Q, D) or (D,), k)`` returns ``(scores (Q, k), ids (Q, k))`` best first,
    padded with ``-inf`` / ``-1`` when fewer than k vectors exist. ``candidates``
    restricts a search to given ids (exact over that subset). Not thread-safe for
    concurrent writers: the memory system gives each memory one lane.
    """

    def __init__(self, dim: int, *, config: IndexConfig | None = None) -> None:
        if int(dim) < 1:
            raise ValueError(f"VectorIndex: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.config = config or IndexConfig()
        self._vecs = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._n = 0
        self._row: dict[int, int] = {}
        # FAISS side: labels are "slots" (ever increasing); slot -> row via _slot_row.
        self._faiss: Any = None  # a faiss index above the threshold
        self._slot_of_row = np.zeros(0, np.int64)
        self._slot_row: dict[int, int] = {}
        self._next_slot = 0
        self._dead_slots = 0
        self._trained_n = 0

    # ---- size / access ------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._row

    @property
    def ids(self) -> np.ndarray:
        """(N,) int64 ids in row order (a view: copy before mutating the index)."""
        return self._ids[: self._n]

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 vectors in row order (a view; above ``exact_max`` a copy read
        back from FAISS)."""
        if self._faiss is None:
            return self._vecs[: self._n]
        return self._stored(np.arange(self._n))

    def _stored(self, rows: np.ndarray) -> np.ndarray:
        """(M,) rows -> (M, D) float32: from the matrix, or from FAISS above the threshold."""
        if self._faiss is None:
            return self._vecs[rows]
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._faiss.reconstruct_batch(np.ascontiguousarray(self._slot_of_row[rows]))

    @property
    def uses_faiss(self) -> bool:
        return self._faiss is not None

    def get(self, ids: Iterable[int]) -> np.ndarray:
        """(M,) ids -> (M, D) vectors; ``KeyError`` for an unknown id."""
        keys = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
        row = self._row
        return self._stored(np.asarray([row[i] for i in keys], np.int64))

    # ---- writes -------------------------------------------------------------------------
    def add(self, ids: np.ndarray | Iterable[int], vectors: np.ndarray) -> None:
        """Insert or replace: (M,) int ids, (M, D) float vectors (a (D,) vector for M=1)."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim == 1:
            vecs = vecs[None]
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise ValueError(f"VectorIndex.add: vectors must be (M, {self.dim}), got {vecs.shape}")
        if len(ids) != len(vecs):
            raise ValueError(f"VectorIndex.add: {len(ids)} ids for {len(vecs)} vectors")
        if not all_finite(vecs):
            raise ValueError("VectorIndex.add: vectors contain NaN or inf")
        id_list = ids.tolist()
        if len(id_list) > 1 and len(set(id_list)) != len(id_list):
            raise ValueError("VectorIndex.add: duplicate ids in one call")
        existing = [i for i, x in enumerate(id_list) if x in self._row]
        if existing:
            self.remove(ids[existing])
        self._reserve(self._n + len(ids))
        start = self._n
        if self._faiss is None:
            self._vecs[start : start + len(ids)] = vecs
        self._ids[start : start + len(ids)] = ids
        for k, x in enumerate(id_list):
            self._row[x] = start + k
        self._n += len(ids)
        if self._faiss is not None:
            self._faiss_add(np.arange(start, self._n), vecs)
        self._maybe_switch()

    def remove(self, ids: np.ndarray | Iterable[int]) -> int:
        """Delete ids (unknown ones are ignored); returns how many were removed."""
        removed = 0
        arr = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids))
        for x in np.atleast_1d(arr).astype(np.int64).tolist():
            row = self._row.pop(int(x), None)
            if row is None:
                continue
            removed += 1
            last = self._n - 1
            if self._faiss is not None:
                slot = int(self._slot_of_row[row])
                self._slot_row.pop(slot, None)
                self._dead_slots += 1
                if row != last:
                    moved_slot = int(self._slot_of_row[last])
                    self._slot_of_row[row] = moved_slot
                    self._slot_row[moved_slot] = row
            if row != last:
                if self._faiss is None:
                    self._vecs[row] = self._vecs[last]
                self._ids[row] = self._ids[last]
                self._row[int(self._ids[row])] = row
            self._n -= 1
        if self._faiss is not None:
            if self._n <= self.config.exact_max // 2:  # back to exact search
                vecs = self._stored(np.arange(self._n))
                self._faiss = None
                self._vecs = np.zeros((len(self._ids), self.dim), np.float32)
                self._vecs[: self._n] = vecs
            elif self._dead_slots > 0.2 * max(self._n, 1):
                self._build_faiss()
        return removed

    def clear(self) -> None:
        self.__init__(self.dim, config=self.config)

    # ---- search -------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        candidates: np.ndarray | Iterable[int] | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) or (D,) queries -> (scores (Q, k), ids (Q, k)), best first; a ``k`` larger
        than the vectors searched pads with -inf / -1, up to ``max(vectors, 1024)`` columns:
        a huge ``k`` (``top_k=10**9`` from a query) costs what the index holds, never more.

        candidates: restrict to these ids (exact search over that subset).
        exact: force exact search even above the FAISS threshold.
        """
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"VectorIndex.search: queries must be (Q, {self.dim}), got {q.shape}")
        k = int(k)
        if k < 1:
            raise ValueError(f"VectorIndex.search: k must be >= 1, got {k}")
        if candidates is not None:
            cand = np.asarray(
                list(candidates) if not isinstance(candidates, np.ndarray) else candidates,
                dtype=np.int64,
            )
            rows = np.fromiter(
                (self._row[int(c)] for c in cand.tolist() if int(c) in self._row), np.int64
            )
            return self._exact(q, min(k, max(len(rows), _PAD_MAX)), rows)
        k = min(k, max(self._n, _PAD_MAX))
        if self._faiss is None or exact:
            return self._exact(q, k, None)
        return self._faiss_search(q, k)

    def _exact(
        self, q: np.ndarray, k: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        nq = len(q)
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        if self._faiss is None:
            mat = self._vecs[: self._n] if rows is None else self._vecs[rows]
        else:  # read back from FAISS (a copy of the rows searched)
            mat = self._stored(np.arange(self._n) if rows is None else rows)
        ids = self._ids[: self._n] if rows is None else self._ids[rows]
        n = len(mat)
        if n == 0:
            return out_s, out_i
        kk = min(k, n)
        if nq == 1:  # the common case: 1-D selection is much cheaper than take_along_axis
            s1 = mat @ q[0]  # (N,): BLAS, releases the GIL
            top = np.argpartition(-s1, kk - 1)[:kk] if kk < n else np.arange(n)
            top = top[np.argsort(-s1[top], kind="stable")]
            out_s[0, :kk] = s1[top]
            out_i[0, :kk] = ids[top]
            return out_s, out_i
        scores = q @ mat.T  # (Q, N): BLAS, releases the GIL
        if kk < n:
            part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(n), (nq, n))
        top = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        out_s[:, :kk] = np.take_along_axis(top, order, axis=1)
        out_i[:, :kk] = ids[np.take_along_axis(part, order, axis=1)]
        return out_s, out_i

    # ---- FAISS --------------------------------------------------------------------------
    def _maybe_switch(self) -> None:
        cfg = self.config
        if self._faiss is None:
            if self._n > cfg.exact_max:
                self._build_faiss()
        elif cfg.kind == "ivf" and self._n > cfg.rebuild_growth * max(self._trained_n, 1):
            self._build_faiss()

    def _build_faiss(self) -> None:
        import faiss  # lazy: heavy import

        cfg = self.config
        faiss.omp_set_num_threads(max(1, cfg.faiss_threads))
        n = self._n
        vecs = self._stored(np.arange(n))  # from the matrix, or the old index (retraining)
        if cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.hnsw_ef_construction
            index.hnsw.efSearch = cfg.hnsw_ef_search
            index = faiss.IndexIDMap2(index)  # keeps id -> vector: reconstruct by slot
        else:
            nlist = int(np.clip(cfg.ivf_lists_per_sqrt_n * np.sqrt(n), 8, 65536))
            quant = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quant, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            take = min(n, max(cfg.ivf_train_max, 40 * nlist))
            sample = vecs[rng.choice(n, size=take, replace=False)] if take < n else vecs
            index.train(np.ascontiguousarray(sample))
            index.nprobe = min(cfg.ivf_nprobe, nlist)
            # reconstruct by slot (DirectMap is in faiss, not in its type stubs)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)  # pyright: ignore[reportAttributeAccessIssue]
        self._faiss = index
        self._vecs = np.zeros((0, self.dim), np.float32)  # FAISS holds them now
        self._trained_n = n
        self._slot_of_row = np.zeros(len(self._ids), np.int64)
        self._slot_row = {}
        self._next_slot = 0
        self._dead_slots = 0
        self._faiss_add(np.arange(n), vecs)

    def _faiss_add(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        if len(rows) == 0:
            return
        slots = np.arange(self._next_slot, self._next_slot + len(rows), dtype=np.int64)
        self._next_slot += len(rows)
        if len(self._slot_of_row) < len(self._ids):
            grown = np.zeros(len(self._ids), np.int64)
            grown[: len(self._slot_of_row)] = self._slot_of_row
            self._slot_of_row = grown
        self._slot_of_row[rows] = slots
        for s, r in zip(slots.tolist(), rows.tolist()):
            self._slot_row[s] = r
        self._faiss.add_with_ids(np.ascontiguousarray(vecs, np.float32), slots)

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Over-fetch to make up for removed (dead) slots still in the FAISS index.
        extra = min(self._dead_slots, 4 * k)
        d, labels = self._faiss.search(np.ascontiguousarray(q), k + extra)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for qi in range(len(q)):
            j = 0
            for score, slot in zip(d[qi].tolist(), labels[qi].tolist()):
                row = self._slot_row.get(slot)
                if row is None:
                    continue
                out_s[qi, j] = score
                out_i[qi, j] = self._ids[row]
                j += 1
                if j == k:
                    break
        return out_s, out_i

    # ---- storage growth -----------------------------------------------------------------
    def _reserve(self, n: int) -> None:
        """Room for ``n`` ids (and, below the FAISS threshold, ``n`` vectors)."""
        if n > len(self._ids):
            ids = np.zeros(max(n, int(len(self._ids) * 1.5) + 64), np.int64)
            ids[: self._n] = self._ids[: self._n]
            self._ids = ids
        if self._faiss is None and len(self._vecs) < len(self._ids):
            vecs = np.zeros((len(self._ids), self.dim), np.float32)
            vecs[: self._n] = self._vecs[: self._n]
            self._vecs = vecs

    def stats(self) -> dict[str, object]:
        return {
            "vectors": self._n,
            "dim": self.dim,
            "backend": (f"faiss-{self.config.kind}" if self._faiss is not None else "exact"),
            "matrix_bytes": int(self._vecs.nbytes),  # the float32 copy (0 above the threshold)
        }


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k: (Q, >=k) x2 -> float."""
    hits = 0
    for a, e in zip(approx_ids[:, :k], exact_ids[:, :k]):
        truth = {int(x) for x in e if x >= 0}
        hits += len(truth & {int(x) for x in a if x >= 0}) / max(len(truth), 1)
    return hits / max(len(exact_ids), 1)


# ---------------------------------------------------------------------------
# lexical matching

_SPLIT = re.compile(r"[^a-z0-9]+")
_STOP = frozenset(
    "a an the is are was were be been of in on at to for from with by and or it its this that "
    "what where when which who whom how did do does i you we they he she me my your our their "
    "there here any some last first seen see saw before after between ago now then".split()
)


@functools.lru_cache(maxsize=8192)
def tokens(text: str) -> frozenset[str]:
    """Content words of ``text``, lower case, no numbers; ``red_mug`` gives {red, mug}."""
    return frozenset(
        t for t in _SPLIT.split(text.lower()) if t and t not in _STOP and not t.isdigit()
    )


def lexical_score(query: frozenset[str], item: frozenset[str], *, precision: float = 0.25) -> float:
    """Word overlap in [0, 1]: the fraction of the query's content words found in the
    item, scaled down by up to ``precision`` when the item has many other words (so
    "red_mug" beats "red_mug, table, chair" for "red mug")."""
    if not query or not item:
        return 0.0
    common = len(query & item)
    if not common:
        return 0.0
    return (common / len(query)) * (1.0 - precision + precision * common / len(item))
