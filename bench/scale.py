"""Scale-out benchmark: episodes on Ray, the fleet store on Milvus Lite.

Cases (measured in the same run):

- **episodes**: episodes per minute of ``engram eval`` episodes (``where_heard``, quick
  config, with memory; full run) run as Ray tasks on a local Ray (``ray.init``) with 1
  and 2 workers, peer: the same seeds one after another in this process (what
  ``engram eval`` does without ``--ray``), run before and after the Ray runs, the
  better of the two (the load of a shared machine drifts). ``--quick`` runs a stand-in episode instead
  (a seeded, fixed amount of numpy work, ~1 s on an idle core): the fan-out's overhead and speed-up
  without the minutes a real episode takes. The best possible ratio is ``min(workers,
  cpus)``; Ray's start is reported apart (``ray_start_s``), not in the rate.
- **store**: insert rate and recall latency p50/p99 of the fleet store (Milvus Lite in
  this process, a ``.db`` path; 384-d rows in the fleet schema, FLAT index: exact
  search) at 10^5 rows (``--rows``; quick: 5x10^3; flushed before recall), peer: Engram's own SQLite + FAISS
  store (``engram.memory.store.Store`` records with the vector as an array, and
  ``VectorIndex``: exact below 5e4 vectors, FAISS IVF above), each recall returning
  the top 10 with their records.
- **fleet**: recall latency (top 10, rows of the other robots) on a Milvus Lite server
  process (``python -m milvus_lite server``, what several robot processes share) while
  4 simulated robots push rows at once (64-row upserts as fast as the server takes
  them), peer: the same recalls with no robot writing.

- **vectors**: FAISS IVF at 10^6 clustered 384-d vectors (``--vectors``; quick 10^5; the
  issue's 10^7 with ``--vectors 10000000 --nlist 4096``: a 7.8 GB index on disk, ~9 GB of
  RAM while it is built), vectors regenerated chunk by chunk from seeds (no float file),
  an HNSW coarse quantizer, codes ``--index fp16`` (default: half floats, no re-ranking
  needed), ``sq8`` or ``pq`` (``--pq-bytes``, optional exact ``--rerank`` on a float
  file), the index searched memory-mapped with one thread, every ``--nprobe`` value on
  the same index: recall@10 and p50/p99; peer: exact brute force (per query, all queries
  in one pass over the chunks).
- **day**: a simulated day of recording (``--hours``, default 24; ``--rate-hz``, default 1)
  through the temporal and episodic memories: percepts/s, resident memory growth after
  each hour, disk bytes per hour, recall p50 at the end.

Usage: ``python bench/scale.py [--quick] [--rows N] [--episodes N] [--vectors N] [--hours H]``; prints one JSON
object (bench/README.md). Run it with nothing else loading the CPUs for the episode
ratio to mean anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, percentile, result  # noqa: E402

DIM = 384


def standin_episode(seed: int) -> float:
    """A CPU-bound stand-in episode (a fixed amount of numpy work, ~1 s on one idle
    core), seeded: its result depends only on the seed."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(160, 160))
    acc = 0.0
    for _ in range(1000):
        a = np.tanh(a @ a.T / 160.0)
        acc += float(a[0, 0])
    return acc


def real_episode(seed: int) -> bool:
    from engram.planners.evaluation.pipeline import EvalConfig
    from engram.planners.evaluation.tasks import evaluate_tasks

    res = evaluate_tasks(
        ["where_heard"], episodes=1, seed=seed, conditions=(True,),
        config=EvalConfig.quick(), progress=False,
    )  # fmt: skip
    return bool(res["tasks"]["where_heard"]["memory"]["successes"])


def bench_episodes(n: int, quick: bool) -> list[dict]:
    from engram.planners.evaluation.distributed import map_episodes, ray_session

    fn = standin_episode if quick else real_episode
    calls = [(s,) for s in range(n)]
    t0 = time.monotonic()
    seq = map_episodes(fn, calls, progress=False)
    seq_min = (time.monotonic() - t0) / 60
    rows = []
    par_mins: dict[int, float] = {}
    same: dict[int, bool] = {}
    starts: dict[int, float] = {}
    for workers in (1, 2):
        t0 = time.monotonic()
        with ray_session("local", workers):  # what `engram eval --ray local` starts
            start_s = time.monotonic() - t0
            if quick:  # warm the workers; a real run pays their start like the sequential
                map_episodes(fn, calls[:1], address="local", workers=workers, progress=False)
            t0 = time.monotonic()
            par = map_episodes(fn, calls, address="local", workers=workers, progress=False)
            par_min = (time.monotonic() - t0) / 60
        par_mins[workers] = par_min
        same[workers] = [r.get("value") for r in par] == [r.get("value") for r in seq]
        starts[workers] = start_s
    # the sequential run again, after: on a shared machine the load drifts, and the
    # better of the two sequential rates is the peer (the fan-out is not flattered)
    t0 = time.monotonic()
    map_episodes(fn, calls, progress=False)
    seq_min = min(seq_min, (time.monotonic() - t0) / 60)
    for workers, par_min in par_mins.items():
        rows.append(
            result(
                f"{'stand-in' if quick else 'where_heard quick'} episodes, Ray local, "
                f"{workers} worker(s), {n} episodes",
                "episodes_per_min",
                n / par_min,
                "higher",
                peer="sequential, this process (best of a run before and after)",
                peer_value=n / seq_min,
                workers=workers,
                cpus=os.cpu_count(),
                ray_start_s=round(starts[workers], 2),
                same_results_as_sequential=same[workers],
            )
        )
    return rows


def _vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.normal(size=(1000, DIM)).astype(np.float32)
    v = centers[rng.integers(0, 1000, n)] + 0.8 * rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rows(vecs: np.ndarray, start: int, robot: str) -> list[dict]:
    return [
        {
            "pk": f"{robot}/temporal/i{start + i}",
            "robot_id": robot,
            "memory": "temporal",
            "record_id": f"i{start + i}",
            "kind": "item",
            "stamp_ns": (start + i) * 100_000_000,
            "text": f"saw object_{(start + i) % 977}",
            "meta": {"position": [0.1 * (i % 50), 0.2, 0.0], "labels": [f"object_{i % 977}"]},
            "vec": v.tolist(),
        }
        for i, v in enumerate(vecs)
    ]


def bench_store(n: int, queries: int, tmp: Path) -> list[dict]:
    from engram.memory.base import Provenance
    from engram.memory.fleet.milvus import MilvusFleetStore
    from engram.memory.index import VectorIndex
    from engram.memory.store import Record, Store

    rng = np.random.default_rng(0)
    vecs = _vectors(n, rng)
    qs = _vectors(queries, np.random.default_rng(1))
    batch = 2000
    # Milvus Lite, in this process
    (tmp / "lite").mkdir()
    mil = MilvusFleetStore(str(tmp / "lite" / "fleet.db"), timeout_s=600)
    coll = f"engram_text_{DIM}"
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        mil.upsert(coll, _rows(vecs[s : s + batch], s, f"r{(s // batch) % 4}"))
    mil.flush(coll)  # sealed segments: Milvus Lite scans unflushed rows in Python
    mil_ins = n / (time.perf_counter() - t0)
    mil.search(coll, qs[0].tolist(), expr="", limit=10)  # loads
    mil_ms = []
    for q in qs:
        t0 = time.perf_counter()
        hits = mil.search(coll, q.tolist(), expr='robot_id != "r0"', limit=10)
        mil_ms.append((time.perf_counter() - t0) * 1e3)
        assert len(hits) == 10
    mil.close()
    # SQLite + FAISS: Engram's Store (records + arrays) and VectorIndex
    t0 = time.perf_counter()
    index = VectorIndex(DIM)
    robots = np.empty(n, dtype=np.int64)
    with Store(tmp / "sqlite") as store:
        for s in range(0, n, batch):
            chunk = vecs[s : s + batch]
            for i, row in enumerate(_rows(chunk, s, f"r{(s // batch) % 4}")):
                store.put(
                    Record(
                        "fleet",
                        row["pk"].replace("/", "."),
                        payload={k: row[k] for k in ("robot_id", "memory", "kind", "text", "meta")},
                        arrays={"vec": chunk[i]},
                        kind="item",
                        stamp_ns=row["stamp_ns"],
                        provenance=Provenance(producer=row["robot_id"]),
                    ),
                    keep_history=False,
                )
                robots[s + i] = (s // batch) % 4
            index.add(np.arange(s, s + len(chunk)), chunk)
        store.commit()
        sql_ins = n / (time.perf_counter() - t0)
        sql_ms = []
        for q in qs:
            t0 = time.perf_counter()
            _, ids = index.search(q, 40)
            keep = [int(i) for i in ids[0] if i >= 0 and robots[i] != 0][:10]
            recs = [store.get("fleet", f"r{robots[i]}.temporal.i{i}") for i in keep]
            sql_ms.append((time.perf_counter() - t0) * 1e3)
            assert len(recs) == 10 and all(r is not None for r in recs)
    out = [
        result(f"insert {n} rows (384-d)", "rows_per_s", mil_ins, "higher",
               peer="SQLite store + VectorIndex", peer_value=sql_ins, store="Milvus Lite"),
    ]  # fmt: skip
    for q in (50, 99):
        out.append(
            result(
                f"recall top 10 of other robots at {n} rows",
                f"p{q}_latency_ms",
                percentile(mil_ms, q),
                "lower",
                peer="SQLite store + VectorIndex (FAISS IVF)",
                peer_value=percentile(sql_ms, q),
                store="Milvus Lite",
                faiss=index.uses_faiss,
            )
        )
    return out


def bench_fleet(n_rows: int, queries: int, tmp: Path) -> list[dict]:
    from engram.memory.fleet.lite import LiteServer
    from engram.memory.fleet.milvus import MilvusFleetStore

    rng = np.random.default_rng(2)
    coll = f"engram_text_{DIM}"
    qs = _vectors(queries, np.random.default_rng(3))
    with LiteServer(tmp / "server") as srv:
        uri = srv.uri.replace("milvus://", "http://")
        seed = MilvusFleetStore(uri, timeout_s=120)
        vecs = _vectors(n_rows, rng)
        for s in range(0, n_rows, 2000):
            seed.upsert(coll, _rows(vecs[s : s + 2000], s, f"r{s // 2000 % 4}"))
        seed.flush(coll)

        def recalls() -> list[float]:
            ms = []
            for q in qs:
                t0 = time.perf_counter()
                seed.search(coll, q.tolist(), expr='robot_id != "r0"', limit=10)
                ms.append((time.perf_counter() - t0) * 1e3)
            return ms

        recalls()  # warm
        idle = recalls()
        stop = threading.Event()
        written = [0] * 4

        def robot(k: int) -> None:
            st = MilvusFleetStore(uri, timeout_s=120)
            r = np.random.default_rng(10 + k)
            i = n_rows + k * 10_000_000
            while not stop.is_set():
                st.upsert(coll, _rows(_vectors(64, r), i, f"r{k}"))
                i += 64
                written[k] += 64
            st.close()

        threads = [threading.Thread(target=robot, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        busy = recalls()
        dt = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        seed.close()
    return [
        result(
            f"fleet recall (top 10, other robots) at {n_rows}+ rows, 4 robots writing",
            f"p{q}_latency_ms",
            percentile(busy, q),
            "lower",
            peer="same recall, no robot writing",
            peer_value=percentile(idle, q),
            rows_written_per_s=round(sum(written) / max(dt, 1e-9)),
            server="Milvus Lite server process (max_workers=1)",
        )
        for q in (50, 99)
    ]


def _rss_mb(field: str = "RssAnon") -> float:
    """Memory of this process now (MB), from /proc (Linux): ``RssAnon`` (its own heap,
    not the pages of memory-mapped files, which the kernel can drop) or ``VmRSS``."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)]
    x += np.float32(0.35) * rng.standard_normal(size=(n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


_CHUNK = 200_000


def _chunk(start: int, n: int, centres: np.ndarray) -> np.ndarray:
    """Vectors ``start .. start+n`` of the data set (``start`` a multiple of ``_CHUNK``),
    regenerated from a seed per chunk: the same floats every time, so the truth and the
    index can be built without keeping 15 GB of float32 on disk at 10^7."""
    return _clustered(n, np.random.default_rng([7, start // _CHUNK]), centres)


def bench_vectors(
    n: int,
    n_queries: int,
    tmp: Path,
    nprobes: tuple[int, ...] = (64,),
    rerank: int = 0,
    pq_bytes: int = 48,
    kind: str = "fp16",
    nlist: int = 0,
    hnsw: bool = True,
) -> list[dict]:
    """FAISS IVF over ``n`` 384-d clustered vectors, built chunk by chunk (RAM bounded by a
    chunk), written to disk and searched memory-mapped (``IO_FLAG_MMAP``), one thread.

    ``kind``: ``sq8`` (IVF with 8-bit scalar-quantised vectors: 384 B each, distances
    nearly exact, no re-ranking needed) or ``pq`` (IVF-PQ, ``pq_bytes`` per vector; with
    ``rerank`` > 0 the float32 vectors are also written to a memory-mapped file and that
    many PQ candidates are re-ranked exactly on them). ``hnsw``: the coarse quantizer is
    an HNSW graph over the ``nlist`` centroids (adding 10^7 vectors then costs
    ~log(nlist) distance computations each instead of ``nlist``). Every ``nprobes`` value
    is measured on the same index (recall@10 and p50/p99 each). Peer: exact brute force
    over the same vectors (the truth), regenerated chunk by chunk."""
    import faiss

    rng = np.random.default_rng(7)
    centres = rng.normal(size=(1000, DIM)).astype(np.float32)
    queries = _clustered(n_queries, rng, centres)
    nlist = nlist or int(min(4096, max(64, np.sqrt(n))))
    quant = f"IVF{nlist}_HNSW32" if hnsw else f"IVF{nlist}"
    code = {"sq8": "SQ8", "fp16": "SQfp16"}.get(kind, f"PQ{pq_bytes}")
    index = faiss.index_factory(DIM, f"{quant},{code}", faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(2)  # build: both cores (the process runs niced)
    rss0 = _rss_mb()
    data = None
    if rerank:
        data = np.memmap(tmp / "vectors.f32", np.float32, "w+", shape=(n, DIM))
    t0 = time.perf_counter()
    n_train = min(n, 40 * nlist, 400_000)
    index.train(
        _chunk(0, n_train, centres)
        if n_train <= _CHUNK
        else np.concatenate(
            [_chunk(s, min(_CHUNK, n_train - s), centres) for s in range(0, n_train, _CHUNK)]
        )
    )
    train_s = time.perf_counter() - t0
    # The truth, chunk by chunk while adding (bounded RAM): top 10 inner products.
    best = np.full((n_queries, 10), -1, np.int64)
    best_s = np.full((n_queries, 10), -np.inf, np.float32)
    exact_s = 0.0
    for s in range(0, n, _CHUNK):
        x = _chunk(s, min(_CHUNK, n - s), centres)
        index.add(x)
        if data is not None:
            data[s : s + len(x)] = x
        t = time.perf_counter()
        sc = x @ queries.T  # (chunk, Q)
        top = np.argpartition(-sc, 10, axis=0)[:10].T  # (Q, 10)
        cs = np.take_along_axis(sc.T, top, axis=1)
        allv = np.concatenate([best_s, cs], 1)
        alli = np.concatenate([best, top + s], 1)
        keep = np.argsort(-allv, axis=1, kind="stable")[:, :10]
        best_s, best = np.take_along_axis(allv, keep, 1), np.take_along_axis(alli, keep, 1)
        exact_s += time.perf_counter() - t
    build_s = time.perf_counter() - t0
    if data is not None:
        data.flush()
    index_path = tmp / "ivf.faiss"
    faiss.write_index(index, str(index_path))
    del index
    rss_build = _rss_mb()
    faiss.omp_set_num_threads(1)  # queries: one thread each, as a recall lane runs them
    index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP)
    rss_loaded = _rss_mb()
    ivf = faiss.extract_index_ivf(index)
    name = {"sq8": "IVF-SQ8", "fp16": "IVF-SQfp16"}.get(kind, f"IVF-PQ ({pq_bytes}x8 bit)")
    desc = (
        f"{n:.0e} x {DIM}-d vectors, FAISS {name}, nlist {nlist}"
        + (" (HNSW quantizer)" if hnsw else "")
        + ", mmap"
        + (f" + exact re-rank of {rerank}" if data is not None else "")
    )
    out = []
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        if hnsw:
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = max(64, 2 * nprobe)
        k = rerank if data is not None else 10
        for q in queries[:5]:  # warm the mapped pages of the lists touched first
            index.search(q[None], k)
        approx, lat = [], []
        for q in queries:
            t = time.perf_counter()
            _, cand = index.search(q[None], k)
            top = cand[0][cand[0] >= 0]
            if data is not None:
                top = np.sort(top)
                exact = data[top] @ q  # re-rank on the full vectors (memory-mapped)
                top = top[np.argsort(-exact, kind="stable")[:10]]
            lat.append((time.perf_counter() - t) * 1e3)
            approx.append(top[:10])
        recall = float(
            np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(approx, best)])
        )
        case = f"{desc}, nprobe {nprobe}"
        extra = {
            "recall_at_10": round(recall, 4),
            "train_s": round(train_s, 1),
            "build_s": round(build_s - exact_s, 1),
            "index_bytes": index_path.stat().st_size,
            "vector_file_bytes": (tmp / "vectors.f32").stat().st_size if data is not None else 0,
            "anon_rss_growth_mb_during_build": round(rss_build - rss0, 1),
            "anon_rss_mb_index_mapped": round(rss_loaded, 1),
            "vm_rss_mb_after_queries": round(_rss_mb("VmRSS"), 1),
            "vm_hwm_mb": round(_rss_mb("VmHWM"), 1),  # peak resident (build: the codes in RAM)
        }
        out += [
            result(
                case,
                "p50_latency_ms",
                percentile(lat, 50),
                "lower",
                peer="exact brute force (regenerated chunks, all queries at once, per query)",
                peer_value=exact_s * 1e3 / n_queries,
                **extra,
            ),
            result(case, "p99_latency_ms", percentile(lat, 99), "lower"),
            result(
                case, "recall_at_10", recall, "higher", peer="exact brute force", peer_value=1.0
            ),
        ]
    del data, index, ivf
    for f in ("vectors.f32", "ivf.faiss"):
        (tmp / f).unlink(missing_ok=True)
    return out


def bench_day(hours: float, rate_hz: float, tmp: Path) -> list[dict]:
    """A simulated recording (``hours`` of percepts at ``rate_hz``, a transcript every 25)
    through the temporal and episodic memories (their own chunking, capacity and
    compression): resident memory after each hour, bytes on disk per hour (a save at the
    end), ingest rate, recall p50 at the end."""
    import importlib.util

    from engram.memory.episodic import EpisodicMemory
    from engram.memory.temporal import TemporalConfig, TemporalMemory
    from engram.runtime.messages import MemoryQuery

    spec = importlib.util.spec_from_file_location(
        "bench_memory", Path(__file__).parent / "memory.py"
    )
    bm = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bm)  # type: ignore[union-attr]
    world = bm.World(3)
    mems = [TemporalMemory(TemporalConfig()), EpisodicMemory()]
    per_hour = int(3600 * rate_hz)
    total = int(hours * per_hour)
    rss0 = _rss_mb()
    rss, t_write = [], 0.0
    for i in range(total):
        p = world.percept(i)
        p.stamp_ns = int(i / rate_hz * 1e9)
        batch = [(p, "/percepts")]
        if i % 25 == 0:
            tr = world.transcript(i)
            tr.stamp_ns = tr.start_ns = p.stamp_ns
            tr.end_ns = p.stamp_ns + 10**9
            batch.append((tr, "/transcripts"))
        t = time.perf_counter()
        for msg, topic in batch:
            for m in mems:
                if msg.TYPE in m.accepts:
                    m.write(msg, topic=topic)
        t_write += time.perf_counter() - t
        if (i + 1) % per_hour == 0:
            rss.append(round(_rss_mb() - rss0, 1))
    lat = []
    for k in range(40):
        q = MemoryQuery(text=f"where is object_{k % 30}", embedding=world.looks[k % 30], top_k=10)
        t = time.perf_counter()
        for m in mems:
            m.recall(q)
        lat.append((time.perf_counter() - t) * 1e3)
    disk = {}
    for m in mems:
        d = tmp / f"day-{m.name}"
        m.save(d)
        disk[m.name] = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    case = f"a simulated {hours:g} h recording at {rate_hz:g} Hz ({total} percepts) through temporal + episodic"
    extra = {
        "anon_rss_growth_mb_after_each_hour": rss,
        "records": {m.name: len(m) for m in mems},
        "disk_bytes": disk,
        "disk_mb_per_hour": round(sum(disk.values()) / 2**20 / hours, 2),
    }
    return [
        result(case, "percepts_per_s", total / t_write, "higher", **extra),
        result(case, "anon_rss_growth_mb", rss[-1] if rss else _rss_mb() - rss0, "lower"),
        result(case, "recall_p50_ms_both_memories", percentile(lat, 50), "lower"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, stand-in episodes")
    ap.add_argument("--rows", type=int, default=0, help="store rows (default 1e5; quick 1e4)")
    ap.add_argument("--episodes", type=int, default=0, help="episodes (default 4; quick 4)")
    ap.add_argument(
        "--skip", default="", help="comma list of cases to skip: episodes,store,fleet,vectors,day"
    )
    ap.add_argument(
        "--vectors", type=int, default=0, help="IVF-PQ vectors (default 1e6; quick 1e5)"
    )
    ap.add_argument(
        "--nprobe", default="4,8,16", help="IVF lists visited per query (comma list: each measured)"
    )
    ap.add_argument(
        "--index", choices=("sq8", "fp16", "pq"), default="fp16", help="IVF vector codes"
    )
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default sqrt(n), <= 4096)")
    ap.add_argument("--flat-quantizer", action="store_true", help="flat coarse quantizer, not HNSW")
    ap.add_argument("--pq-bytes", type=int, default=48, help="PQ code bytes per vector")
    ap.add_argument("--rerank", type=int, default=0, help="PQ candidates re-ranked exactly (pq)")
    ap.add_argument(
        "--hours", type=float, default=0, help="recording hours (default 24; quick 0.25)"
    )
    ap.add_argument("--rate-hz", type=float, default=1.0, help="percepts per second of recording")
    args = ap.parse_args()
    rows = args.rows or (5_000 if args.quick else 100_000)
    episodes = args.episodes or 4
    skip = set(filter(None, args.skip.split(",")))
    out = []
    with tempfile.TemporaryDirectory(prefix="engram-scale-") as d:
        tmp = Path(d)
        if "store" not in skip:
            out += bench_store(rows, 30 if args.quick else 200, tmp)
        if "fleet" not in skip:
            out += bench_fleet(min(rows, 20_000), 30 if args.quick else 100, tmp)
        if "vectors" not in skip:
            out += bench_vectors(
                args.vectors or (100_000 if args.quick else 1_000_000),
                100,
                tmp,
                nprobes=tuple(int(p) for p in args.nprobe.split(",")),
                rerank=args.rerank,
                pq_bytes=args.pq_bytes,
                kind=args.index,
                nlist=args.nlist,
                hnsw=not args.flat_quantizer,
            )
        if "day" not in skip:
            out += bench_day(args.hours or (0.25 if args.quick else 24.0), args.rate_hz, tmp)
        if "episodes" not in skip:
            out += bench_episodes(episodes, args.quick)
    emit("scale", out)


if __name__ == "__main__":
    main()
