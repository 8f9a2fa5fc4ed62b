"""Semantic recall scored with array expressions (``_FactColumns``) ranks exactly as the
previous per-candidate loop did (kept here as the reference): word overlap, embedding
cosine, confidence, current/superseded status, time windows, past questions, ties; and
the columns follow supersession, reinforcement, history drops and save/load."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from engram.memory.embedding import Embedders, query_vectors
from engram.memory.index import lexical_score, tokens
from engram.memory.semantic import _PAST, SemanticConfig, SemanticMemory
from engram.runtime.messages import MemoryQuery

D = 32


def _embed(text: str) -> np.ndarray:
    """A deterministic text vector: the sum of per-word random vectors (shared words ->
    similar texts), unit length."""
    v = np.zeros(D, np.float32)
    for w in text.lower().replace("_", " ").split():
        v += np.random.default_rng(zlib.crc32(w.encode())).normal(size=D).astype(np.float32)
    n = np.linalg.norm(v)
    return v / n if n else v


def _reference(mem: SemanticMemory, query: MemoryQuery) -> list[tuple[str, float]]:
    """The previous recall: a Python loop over candidate facts."""
    dims = {"text": mem._index.dim} if mem._index is not None else {}
    qv = query_vectors(query.text, query.embedding, mem.embedders, dims)
    qt = tokens(query.text)
    if not qv and not qt:
        return []
    past = bool(_PAST.search(query.text))
    window = bool(query.t0_ns or query.t1_ns)
    cands: set[str] = set()
    for t in qt:
        cands |= mem._post.get(t, set())
    emb_of: dict[str, float] = {}
    if "text" in qv and mem._index is not None and len(mem._index):
        scores, ids = mem._index.search(qv["text"], max(8 * query.top_k, 32))
        for sc, i in zip(scores[0].tolist(), ids[0].tolist()):
            if i >= 0:
                emb_of[f"f{i}"] = sc
                cands.add(f"f{i}")
    lam = mem.config.lexical_weight
    scored = []
    for fid in cands:
        f = mem._facts.get(fid)
        if f is None:
            continue
        if window:
            if query.t1_ns and f.valid_from_ns > query.t1_ns:
                continue
            if query.t0_ns and f.valid_to_ns and f.valid_to_ns < query.t0_ns:
                continue
        elif f.status != "current" and not past:
            continue
        lex = lexical_score(qt, tokens(f.text.replace("_", " ")))
        emb = min(max(emb_of.get(fid, 0.0), 0.0), 1.0)
        if "text" in qv and fid not in emb_of and mem._index is not None:
            emb = min(max(float(mem._index.get([int(fid[1:])])[0] @ qv["text"]), 0.0), 1.0)
        rel = lam * lex + (1 - lam) * emb if (qv and qt) else (emb if qv else lex)
        if rel <= 0:
            continue
        score = rel * (0.5 + 0.5 * f.confidence)
        if past and f.status == "superseded":
            score = min(1.0, score * 1.1)
        scored.append((score, f.valid_from_ns, fid))
    scored.sort(key=lambda x: (-x[0], -x[1], x[2]))
    return [(fid, score) for score, _, fid in scored[: query.top_k]]


def _filled(embed: bool) -> SemanticMemory:
    mem = SemanticMemory(
        SemanticConfig(history_max=2),  # small: history drops happen
        embedders=Embedders({"text": _embed}) if embed else None,
    )
    rng = np.random.default_rng(0)
    places = [f"table_{i}" for i in range(8)] + ["kitchen", "shelf", "drawer", "sofa"]
    things = [f"{c}_{k}" for c in ("red", "blue", "green") for k in ("mug", "book", "key", "cup")]
    for step in range(400):
        thing = things[rng.integers(len(things))]
        place = places[rng.integers(len(places))]
        conf = float(rng.choice([0.5, 0.7, 0.9, 1.0]))
        mem.assert_fact(thing, "on", place, confidence=conf, source="told", stamp_ns=step + 1)
        if step % 7 == 0:
            mem.assert_fact(thing, "color", thing.split("_")[0], stamp_ns=step + 1)
    return mem


QUERIES = [
    ("where is the red mug", 0, 0),
    ("red mug", 0, 0),
    ("where was the blue key before", 0, 0),
    ("what is on table 3", 0, 0),
    ("green cup history", 0, 0),
    ("kitchen", 100, 250),
    ("where is the red book", 50, 0),
    ("blue", 0, 300),
    ("nothing matches this", 0, 0),
]


@pytest.mark.parametrize("embed", [False, True])
def test_vectorised_recall_ranks_as_the_previous_loop(embed, tmp_path):
    mem = _filled(embed)
    assert any(f.status == "superseded" for f in mem._facts.values())
    assert mem._cols.n > len(mem._facts)  # some facts were dropped from history
    loaded = SemanticMemory(embedders=mem.embedders)
    mem.save(tmp_path / "s")
    loaded.load(tmp_path / "s")
    for m in (mem, loaded):
        for text, t0, t1 in QUERIES:
            for top_k in (1, 5, 20):
                q = MemoryQuery(text=text, top_k=top_k, t0_ns=t0, t1_ns=t1)
                got = [(h.record_id.removeprefix("fact:"), h.score) for h in m.recall(q)]
                want = _reference(m, q)
                assert [g[0] for g in got] == [w[0] for w in want], (text, t0, t1, top_k)
                assert np.allclose([g[1] for g in got], [w[1] for w in want], atol=1e-6)
    hits = mem.recall(MemoryQuery(text="where is the red mug", top_k=3))
    assert hits and all("red_mug" in h.text for h in hits[:1])
