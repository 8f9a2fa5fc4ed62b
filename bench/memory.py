"""Memory benchmark: ingest rate, query latency at scale, parallel vs sequential fan-out,
bytes per record on disk.

Cases (measured in the same run):

- **ingest**: synthetic but realistic percepts (512-d image embedding from a few rooms,
  4 objects with fixed appearance and place, 256 world points, a transcript every 25
  frames) into all memories (spatial, temporal, episodic, semantic, working) through
  ``MemorySystem.submit`` (lanes on the default, CPU-derived number of workers,
  journaled); peer: the same memories written
  one after another in one thread, in alternating blocks of 50 messages so that a busy
  machine's load falls on both alike; second peer: the previous path (the spatial
  memory's numpy kernels instead of the compiled ones, 1 worker), also journaled.
  Beside it, the spatial write's CPU per percept (thread time, load-independent): the
  fused insert vs the per-stage path, and how much of it runs without the GIL.
- **fan-out**: recall latency of the filled system asking every memory in parallel
  (``MemorySystem.recall``) vs one after another (``parallel=False``), and the same for
  four memories whose recall is real vector work (an exact ``VectorIndex`` of 5e4-2e5
  vectors each), both with the system's default workers (``workers`` in the row) and
  the calling thread taking a share. BLAS runs one thread (the system's default), so
  the comparison is about the fan-out, not BLAS's own threads. ``plain_threads_p50_ms``
  is the same four searches on a bare 4-thread ``ThreadPoolExecutor``: what this
  machine gives threads at all.
  ``best_speedup_on_this_machine`` is ``min(cpus, sum / max)`` of the per-memory recall
  times (Amdahl: neither more cores than the machine has nor a memory faster than the
  slowest one): on 2 cores no fan-out can be faster than 0.5x sequential.
  ``share_of_best_speedup`` is how much of that the measured p50 reached. Recalls that
  hold the GIL (pure-Python scoring of a few hundred records) cannot overlap at all; the
  system runs those inline in the caller (``MemorySystemConfig.inline_below_ms``).

All timed pairs run interleaved, the order rotating per query (``interleaved_ms``), so
neither the warm caches of the second call on a query nor a burst of load favours a side.
- **semantic**: recall latency of the semantic memory (words + text embedding) at 2e3 /
  1e4 facts, scored with array expressions; peer: the previous per-candidate loop
  (``tests/memory/test_semantic_recall.py``), interleaved, with how many rankings agree.
- **index**: ``VectorIndex`` query latency p50/p99 at 1e4, 1e5, 1e6 vectors (384-d,
  1000 overlapping clusters: a query's nearest neighbour has cosine ~0.5, like
  sentence embeddings; quick: 1e4, 6e4): exact BLAS search below 50k
  vectors, FAISS IVF above, with recall@10 against exact search; peer: exact search
  (one BLAS matmul + argpartition) on the same data.
- **temporal**: hierarchical recall of an object by its appearance in the temporal
  memory at 1e4 / 1e5 percepts (quick: 1e3, 5e3): latency and top-1 accuracy; peer: a
  flat scan scoring every object vector of every frame (what HCAM avoids).
- **disk**: bytes per record after a checkpoint (per memory: its checkpoint directory
  over its records) and journal bytes per message.

Usage: ``python bench/memory.py [--quick]``; prints one JSON object (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, interleaved_ms, percentile, result  # noqa: E402

from engram.memory.index import IndexConfig, VectorIndex, recall_at_k  # noqa: E402
from engram.runtime.messages import MemoryQuery, Percept, Transcript  # noqa: E402

D_IMG, D_TXT = 512, 384


# ---------------------------------------------------------------------------
# data


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class World:
    """Rooms with objects at fixed places; a camera walking through them."""

    def __init__(self, seed: int = 0) -> None:
        rng = self.rng = np.random.default_rng(seed)
        self.rooms = _unit(rng.normal(size=(6, D_IMG)))
        self.names = [f"object_{i}" for i in range(30)]
        self.looks = _unit(rng.normal(size=(30, D_IMG)))
        self.places = rng.uniform(-5, 5, size=(30, 3)).astype(np.float32)
        self.places[:, 2] = rng.uniform(0.3, 1.5, 30)
        self.text_vecs = _unit(rng.normal(size=(40, D_TXT)))

    def percept(self, i: int) -> Percept:
        rng = self.rng
        room = (i // 200) % 6
        objs = (room * 5 + np.arange(4) + (i // 50) % 2) % 30
        cam = np.eye(4)
        cam[:3, 3] = [np.cos(i / 100) * 3, np.sin(i / 100) * 3, 1.2]
        pts = (self.places[objs][rng.integers(0, 4, 256)] + rng.normal(0, 0.1, (256, 3))).astype(
            np.float32
        )
        return Percept(
            stamp_ns=i * 100_000_000,
            world_from_camera=cam,
            # consecutive frames of a room: cosine ~0.95, like real CLIP embeddings
            embedding=_unit(self.rooms[room] + 0.014 * rng.normal(size=D_IMG)),
            object_ids=objs.astype(np.int32),
            object_labels=[self.names[o] for o in objs],
            object_confidences=np.full(4, 0.9, np.float32),
            object_boxes=np.tile(np.array([[0, 0, 40, 40]], np.int32), (4, 1)),
            object_centroids=self.places[objs],
            object_extents=np.full((4, 3), 0.2, np.float32),
            object_embeddings=_unit(self.looks[objs] + 0.01 * rng.normal(size=(4, D_IMG))),
            points=pts,
            point_object_ids=np.repeat(objs.astype(np.int32), 64),
        )

    def transcript(self, i: int) -> Transcript:
        k = (i // 25) % 40
        return Transcript(
            stamp_ns=i * 100_000_000,
            start_ns=i * 100_000_000,
            end_ns=i * 100_000_000 + 10**9,
            text=f"the {self.names[k % 30]} is on the table number {k}",
            speaker="ann",
            embedding=self.text_vecs[k],
        )

    def stream(self, n: int):
        for i in range(n):
            yield self.percept(i), "/percepts"
            if i % 25 == 0:
                yield self.transcript(i), "/transcripts"


def _memories():
    from engram.memory.system import default_memories
    from engram.memory.temporal import TemporalConfig, TemporalMemory
    from engram.memory.working import WorkingConfig, WorkingMemory

    mems = [m for m in default_memories() if m.name not in ("working", "temporal")]
    mems.insert(1, TemporalMemory(TemporalConfig()))
    mems.append(WorkingMemory(WorkingConfig(dim=D_IMG, capacity=16, write_fused=False)))
    return mems


QUERIES = [
    "object_3",
    "where is object_12",
    "when was object_7 last seen",
    "object_20 on the table",
    "what happened before object_3",
]


def _query(world: World, i: int) -> MemoryQuery:
    k = i % len(QUERIES)
    return MemoryQuery(
        text=QUERIES[k],
        embedding=world.looks[(i * 7) % 30] if i % 2 else None,
        top_k=10,
    )


# ---------------------------------------------------------------------------
# cases


def bench_spatial_write(msgs: list) -> list[dict]:
    """CPU per percept of the spatial write: the fused insert (one frame in three compiled
    calls without the GIL) vs the per-stage path (numpy glue between the compiled
    kernels), in alternating blocks of 50 percepts, thread CPU time (so other processes'
    load does not count). ``nogil_ms`` is the part in the fused path's compiled calls:
    what the other memory lanes can overlap with; the rest holds the GIL."""
    import engram.memory.spatial.fused as fused
    from engram.memory.spatial import SpatialMemory

    percepts = [(m, t) for m, t in msgs if isinstance(m, Percept)]
    new, old = SpatialMemory(), SpatialMemory()
    old.octree.fused = False
    nogil = [0]
    kernels = {k: getattr(fused, k) for k in ("_frame_codes", "_frame_carve", "_frame_apply")}

    def timed(fn):
        def call(*a):
            t0 = time.thread_time_ns()
            try:
                return fn(*a)
            finally:
                nogil[0] += time.thread_time_ns() - t0

        return call

    new.write(percepts[0][0], topic=percepts[0][1])  # compiles or loads the kernels
    old.write(percepts[0][0], topic=percepts[0][1])
    t_new = t_old = 0
    try:
        for k, fn in kernels.items():
            setattr(fused, k, timed(fn))
        for b in range(1, len(percepts), 50):
            chunk = percepts[b : b + 50]
            t0 = time.thread_time_ns()
            for m, t in chunk:
                new.write(m, topic=t)
            t_new += time.thread_time_ns() - t0
            t0 = time.thread_time_ns()
            for m, t in chunk:
                old.write(m, topic=t)
            t_old += time.thread_time_ns() - t0
    finally:
        for k, fn in kernels.items():
            setattr(fused, k, fn)
    n = len(percepts) - 1
    return [
        result(
            f"spatial write CPU per percept ({n} percepts, 256 points each)",
            "cpu_ms",
            t_new / n / 1e6,
            "lower",
            peer="per-stage path: numpy glue between the compiled kernels",
            peer_value=t_old / n / 1e6,
            nogil_ms=round(nogil[0] / n / 1e6, 4),
            gil_held_ms=round((t_new - nogil[0]) / n / 1e6, 4),
        )
    ]


def bench_ingest_and_fanout(n: int, n_queries: int, root: Path) -> list[dict]:
    from engram.memory.system import MemorySystem, MemorySystemConfig

    out = []
    world = World()
    msgs = list(world.stream(n))
    n_percepts = sum(1 for m, _ in msgs if isinstance(m, Percept))
    # engram: parallel lanes + journal; peer: the same memories one after another in
    # one thread, no journal. Measured in alternating blocks so that the load of a busy
    # machine falls on both alike.
    import engram.memory.spatial.octree as octree

    def use_compiled(on: bool) -> None:  # the spatial kernels: numba, or the numpy path
        octree._KERNELS[:] = [] if on else [None]

    cfg = MemorySystemConfig(root=str(root), checkpoint_every=0, input_queue=512)  # auto workers
    system = MemorySystem(_memories(), config=cfg)  # also limits BLAS to 1 thread
    # the previous path (peer): numpy spatial kernels, 1 worker (the old 2-core default)
    old_cfg = MemorySystemConfig(
        root=str(root.parent / f"{root.name}-old"), checkpoint_every=0, input_queue=512, workers=1
    )
    old_system = MemorySystem(_memories(), config=old_cfg)
    seq_mems = _memories()
    for m in seq_mems:  # warm-up (torch, first allocations)
        if msgs[0][0].TYPE in m.accepts:
            m.write(msgs[0][0], topic=msgs[0][1])
    use_compiled(False)
    old_system.write(msgs[0][0], topic=msgs[0][1])
    use_compiled(True)
    system.write(msgs[0][0], topic=msgs[0][1])  # (compiles or loads the kernels)
    # as a launch graph's process does once its nodes are built (runtime/child.py,
    # _freeze_startup_heap): the start-up heap leaves the full collections
    import gc

    gc.collect()
    gc.freeze()
    t_seq = t_par = t_old = 0.0
    block = 50
    for b in range(1, len(msgs), block):
        chunk = msgs[b : b + block]
        t0 = time.perf_counter()
        for msg, topic in chunk:
            for m in seq_mems:
                if msg.TYPE in m.accepts:
                    m.write(msg, topic=topic)
        t_seq += time.perf_counter() - t0
        use_compiled(False)
        t0 = time.perf_counter()
        for msg, topic in chunk:
            old_system.submit(msg, topic=topic, timeout_s=None)
        old_system.flush()
        t_old += time.perf_counter() - t0
        use_compiled(True)
        t0 = time.perf_counter()
        for msg, topic in chunk:
            system.submit(msg, topic=topic, timeout_s=None)
        system.flush()
        t_par += time.perf_counter() - t0
    old_system.close(checkpoint=False)
    out += bench_spatial_write(msgs)
    out.append(
        result(
            f"ingest {n_percepts} percepts (+ transcripts) into 5 memories (spatial, temporal, "
            "episodic, semantic, working), journaled",
            "percepts_per_s",
            (n_percepts - 1) / t_par,
            "higher",
            peer="sequential writes, one thread, no journal",
            peer_value=(n_percepts - 1) / t_seq,
            workers=cfg.workers,
        )
    )
    out.append(
        result(
            f"ingest {n_percepts} percepts into 5 memories, journaled, vs the previous path",
            "percepts_per_s",
            (n_percepts - 1) / t_par,
            "higher",
            peer="previous path: numpy spatial kernels, 1 worker, journaled",
            peer_value=(n_percepts - 1) / t_old,
            workers=cfg.workers,
        )
    )
    for name, st in system.stats()["memories"].items():
        lat = st["latency"]["write"]
        out.append(
            result(f"write latency of the {name} memory", "p50_latency_ms", lat["p50_ms"], "lower")
        )
    # fan-out: the same queries to all memories, parallel vs one after another
    world_q = World(1)
    times, _ = interleaved_ms(
        {"parallel": system.recall, "sequential": lambda q: system.recall(q, parallel=False)},
        [_query(world_q, i) for i in range(n_queries)],
    )
    per = {
        name: round(st["latency"]["recall"].get("p50_ms", 0.0), 3)
        for name, st in system.stats()["memories"].items()
    }
    out += _fanout_rows(
        f"recall fan-out to the 5 memories after {n_percepts} percepts",
        times["parallel"],
        times["sequential"],
        list(per.values()),
        per_memory_p50_ms=per,
    )
    # disk
    journal_bytes = system._journal.disk_bytes()
    journal_msgs = system._journal.count("journal")
    t0 = time.perf_counter()
    system.checkpoint()
    ckpt_s = time.perf_counter() - t0
    out.append(
        result(
            "journal bytes per message (percept: 512-d embedding, 4 objects, 256 points)",
            "bytes_per_record",
            journal_bytes / max(journal_msgs, 1),
            "lower",
        )
    )
    for m in system.memories:
        cur = (root / "memories" / m.name / "CURRENT").read_text().strip()
        files = (root / "memories" / m.name / cur).rglob("*")
        size = sum(p.stat().st_size for p in files if p.is_file())
        if m.name == "working":  # mostly the bank's attention/gate weights, not entries
            out.append(
                result(f"working checkpoint (weights + {len(m)} entries)", "bytes", size, "lower")
            )
            continue
        out.append(
            result(
                f"{m.name} checkpoint bytes per record ({len(m)} records)",
                "bytes_per_record",
                size / max(len(m), 1),
                "lower",
            )
        )
    out.append(result("checkpoint of all 5 memories", "seconds", ckpt_s, "lower"))
    system.close(checkpoint=False)
    return out


class _VectorMemory:
    """A minimal memory around one exact ``VectorIndex`` (GIL-free search work)."""

    accepts = ()

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name = name
        self.index = VectorIndex(x.shape[1], config=IndexConfig(exact_max=10**9))
        self.index.add(np.arange(len(x)), x)

    def recall(self, query: MemoryQuery) -> list:
        from engram.memory.base import Hit

        scores, ids = self.index.search(query.embedding, query.top_k)
        return [Hit(self.name, float(s), record_id=str(i)) for s, i in zip(scores[0], ids[0])]


def bench_vector_fanout(n_per_memory: int, n_queries: int) -> list[dict]:
    from engram.memory.base import Memory
    from engram.memory.system import MemorySystem, MemorySystemConfig

    class VectorMemory(_VectorMemory, Memory):  # the real interface
        def write(self, msg, *, topic=""):  # noqa: ANN001, ANN202
            return None

        def save(self, directory):  # noqa: ANN001, ANN202
            return None

        def load(self, directory):  # noqa: ANN001, ANN202
            return None

        def __len__(self) -> int:
            return len(self.index)

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(500, D_TXT)).astype(np.float32)
    mems = [VectorMemory(f"v{k}", _clustered(n_per_memory, D_TXT, rng, centres)) for k in range(4)]
    from concurrent.futures import ThreadPoolExecutor

    system = MemorySystem(mems, config=MemorySystemConfig())  # default (CPU-derived) workers
    raw_pool = ThreadPoolExecutor(4)  # what the machine gives plain threads, no Engram
    queries = [
        MemoryQuery(embedding=_clustered(1, D_TXT, rng, centres)[0], top_k=10)
        for _ in range(n_queries)
    ]
    times, outs = interleaved_ms(
        {
            "parallel": system.recall,
            "sequential": lambda q: system.recall(q, parallel=False),
            "plain_threads": lambda q: list(
                raw_pool.map(lambda m: m.index.search(q.embedding, 10), mems)
            ),
        },
        queries,
    )
    for a, b in zip(outs["parallel"], outs["sequential"]):
        assert [h.record_id for h in a] == [h.record_id for h in b]
    per_memory = [system.stats()["memories"][m.name]["latency"]["recall"]["p50_ms"] for m in mems]
    system.close()
    raw_pool.shutdown()
    return _fanout_rows(
        f"recall fan-out to 4 vector-search memories ({n_per_memory:.0e} x {D_TXT}-d exact each)",
        times["parallel"],
        times["sequential"],
        per_memory,
        plain_threads_p50_ms=round(percentile(times["plain_threads"], 50), 3),
        workers=system.config.workers,
    )


def _latency_rows(
    case: str, ours_ms: list[float], peer_ms: list[float], peer: str, **extra
) -> list[dict]:
    """p50 and p99 latency rows of one case against its peer (``extra`` on the p50 row)."""
    return [
        result(
            case,
            f"p{q}_latency_ms",
            percentile(ours_ms, q),
            "lower",
            peer=peer,
            peer_value=percentile(peer_ms, q),
            **(extra if q == 50 else {}),
        )
        for q in (50, 99)
    ]


def _fanout_rows(
    case: str, par_ms: list[float], seq_ms: list[float], per_memory_ms: list[float], **extra
) -> list[dict]:
    """p50 and p99 rows of a parallel-vs-sequential fan-out, with the best speed-up this
    machine allows: ``min(cpus, sum / max)`` of the per-memory recall times (Amdahl: the
    slowest memory bounds it, and so do the cores), and how much of it was reached."""
    cpus = os.cpu_count() or 1
    best = min(float(cpus), sum(per_memory_ms) / max(max(per_memory_ms), 1e-9))
    speedup = percentile(seq_ms, 50) / max(percentile(par_ms, 50), 1e-9)
    return _latency_rows(
        case,
        par_ms,
        seq_ms,
        "sequential fan-out",
        best_speedup_on_this_machine=round(best, 3),
        share_of_best_speedup=round(speedup / best, 3),
        **extra,
    )


def _clustered(n: int, d: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = centres[rng.integers(0, len(centres), m)] + 1.2 * rng.normal(size=(m, d)).astype(
            np.float32
        )
        out[s : s + m] = _unit(x)
    return out


def bench_index(sizes: list[int], n_queries: int) -> list[dict]:
    out = []
    d = D_TXT
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, d)).astype(np.float32)
    for n in sizes:
        x = _clustered(n, d, rng, centres)
        q = _clustered(n_queries, d, rng, centres)
        idx = VectorIndex(d, config=IndexConfig())
        t0 = time.perf_counter()
        for s in range(0, n, 50_000):
            idx.add(np.arange(s, min(n, s + 50_000)), x[s : s + 50_000])
        build_s = time.perf_counter() - t0
        if n >= 1_000_000:
            q = q[: max(20, n_queries // 4)]  # the exact peer takes ~0.1-0.5 s per query here

        def exact(qi: np.ndarray, x: np.ndarray = x) -> np.ndarray:  # the peer: brute force
            scores = x @ qi
            top = np.argpartition(-scores, 10)[:10]
            return top[np.argsort(-scores[top])]

        times, outs = interleaved_ms(
            {"index": lambda qi, idx=idx: idx.search(qi, 10), "exact": exact}, q
        )
        approx_ids = [ids[0] for _, ids in outs["index"]]
        rec = recall_at_k(np.array(approx_ids), np.array(outs["exact"]), 10)
        backend = idx.stats()["backend"]
        case = f"vector index, {n:.0e} x {d}-d, backend {backend}"
        out += _latency_rows(
            case, times["index"], times["exact"], "exact brute force (numpy matmul + argpartition)"
        )
        out.append(result(case, "recall_at_10", rec, "higher"))
        out.append(result(case, "build_seconds", build_s, "lower"))
        del x, idx, exact
    return out


def bench_temporal(sizes: list[int], n_queries: int) -> list[dict]:
    from engram.memory.temporal import TemporalMemory

    out = []
    for n in sizes:
        world = World(2)
        mem = TemporalMemory()
        for i in range(n):
            p = world.percept(i)
            mem.write(p.replace(points=None, point_object_ids=None))
        obj = mem._obj_index["image"]

        def flat_scan(emb: np.ndarray, obj=obj) -> int:  # noqa: ANN001 - peer: scan every object vector
            return int(obj.ids[int(np.argmax(obj.vectors @ emb))])

        targets = [(i * 7) % 30 for i in range(n_queries)]
        embs = [_unit(world.looks[t] + 0.02 * world.rng.normal(size=D_IMG)) for t in targets]
        times, outs = interleaved_ms(
            {
                "hcam": lambda e, m=mem: m.recall(MemoryQuery(embedding=e, top_k=5)),
                "flat": flat_scan,
            },
            embs,
        )
        right = sum(
            bool(h) and h[0].data.get("object") == world.names[t]
            for h, t in zip(outs["hcam"], targets)
        )
        flat_right = sum(
            mem._items[b // 1024].labels[b % 1024] == world.names[t]
            for b, t in zip(outs["flat"], targets)
        )
        case = f"temporal memory (HCAM) recall of an object, {n:.0e} percepts x 4 objects"
        peer = "flat scan of all object vectors"
        out.append(_latency_rows(case, times["hcam"], times["flat"], peer)[0])
        out.append(
            result(
                case,
                "top1_accuracy",
                right / n_queries,
                "higher",
                peer=peer,
                peer_value=flat_right / n_queries,
            )
        )
    return out


def bench_semantic(n_facts: int, n_queries: int) -> list[dict]:
    """Semantic recall (array-scored, ``_FactColumns``) vs the previous per-candidate
    loop (``tests/memory/test_semantic_recall.py:_reference``, the peer), same memory,
    interleaved; facts ``thing_i on table_j`` with hashed word vectors as text embeddings."""
    from engram.memory.embedding import Embedders
    from engram.memory.semantic import SemanticMemory
    from tests.memory.test_semantic_recall import _embed, _reference

    mem = SemanticMemory(embedders=Embedders({"text": _embed}))
    rng = np.random.default_rng(5)
    for i in range(n_facts):
        mem.assert_fact(
            f"thing_{i % (n_facts // 3)}", "on", f"table_{rng.integers(300)}", stamp_ns=i + 1
        )
    texts = ["where is thing 5", "table 12", "what was on table 7 before", "thing", "the blue cup"]
    queries = [MemoryQuery(text=texts[i % len(texts)], top_k=10) for i in range(n_queries)]
    times, outs = interleaved_ms(
        {"vectorised": mem.recall, "loop": lambda q: _reference(mem, q)}, queries
    )
    same = sum(
        [h.record_id.removeprefix("fact:") for h in a] == [fid for fid, _ in b]
        for a, b in zip(outs["vectorised"], outs["loop"])
    )
    return _latency_rows(
        f"semantic recall (words + text embedding), {len(mem)} facts",
        times["vectorised"],
        times["loop"],
        "previous per-candidate Python loop",
        same_ranking=f"{same}/{n_queries}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 1 minute)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="engram-bench-memory-"))
    try:
        results = []
        if args.quick:
            results += bench_ingest_and_fanout(200, 40, root / "sys")
            results += bench_vector_fanout(50_000, 30)
            results += bench_semantic(2_000, 50)
            results += bench_index([10_000, 60_000], 100)
            results += bench_temporal([1_000, 5_000], 50)
        else:
            results += bench_ingest_and_fanout(3000, 200, root / "sys")
            results += bench_vector_fanout(200_000, 100)
            results += bench_semantic(10_000, 200)
            results += bench_index([10_000, 100_000, 1_000_000], 200)
            results += bench_temporal([10_000, 100_000], 200)
        emit("memory", results)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
