"""The memory system: one facade over several memories, updated and queried in parallel.

RoboMemory's point: spatial, temporal, episodic and semantic memories (plus
MemoryVLA's working memory) are updated and queried *in parallel*, so adding a
memory does not add its latency to every step.

Lanes. Each memory gets a *lane*: a bounded FIFO of tasks (writes, recalls,
saves) run one at a time, in order, on a shared ``ThreadPoolExecutor`` of
``workers`` threads. So a memory never runs two tasks at once (memories need
not be thread-safe), sees messages in order, and a recall queued after a write
sees that write; different memories run concurrently. Where their work is
numpy / torch / FAISS / SQLite on large arrays, which release the GIL, the
threads really overlap (four exact searches over 5e4-2e5 vectors: 0.55x of
sequential on 2 cores, where 0.5x is the bound); the per-record Python scoring
of small memories holds the GIL and does not overlap (see Recall).
A full lane blocks the dispatcher (backpressure), never grows.

Input. ``submit(msg, topic=...)`` puts a message on a bounded input queue
(``input_queue`` deep; when full it waits up to ``timeout_s`` and then drops the
message, counted in ``stats()["dropped"]``); one dispatcher thread fans each
message out to the lanes of the memories that accept its type. Messages that are
already waiting together (a backlog) go to each lane as one task of up to 16 (and at
most ``lane_depth``), each still applied, timed and error-isolated on its own: a
future, a lane hand-off and a pool wake-up per message and memory cost ~0.4 ms of CPU
per percept in GIL hand-overs (a continuous journaled stream of 800-1500 percepts on 2
busy cores: 13-36% less CPU per percept, 16-32% more percepts/s; ``bench/memory.py
--quick``, short 50-message blocks: 4-11% more). ``write`` does the same synchronously
and waits until every memory has applied it.

Recall. ``recall(query)`` sends the query to the memories named in
``query.memories`` (all when empty) in parallel, waits up to
``recall_timeout_s`` for those in lanes, and merges their hits. A memory whose recalls take less
than ``inline_below_ms`` (smoothed) is asked in the calling thread while the
others work in their lanes (when its lane is idle): such a recall is mostly
Python (it holds the GIL), so running it in another thread only adds GIL
hand-overs (measured on 2 busy cores: five ~1 ms recalls took 4.2 ms in
parallel threads, 2.5 ms one after another). Recalls that do real vector work
(BLAS, FAISS: GIL released) are the ones worth running in parallel; they are
shared out, longest first, between the pool's ``workers`` threads and the
calling thread (``_recall_plan``), so the caller works instead of waiting.
Merging: each memory's scores are kept if
they lie in [0, 1] (all of Engram's memories score relevance in [0, 1]) or
else replaced by a rank score ``1 - rank / n``; then hits are ranked by that
score (ties: the better per-memory rank first, then the memory's position
in the system). Each hit keeps its source memory and provenance and gets
``data["raw_score"]``. ``recall(query, parallel=False)`` asks the memories one
after another in the calling thread (the sequential baseline; same result).

Latency. Per memory and operation (write, recall, save) the last 1024
durations give p50 / p95 / p99 in ``stats()``.

Threads. ``workers`` defaults to one fewer than the CPUs, so that the caller
(recalls it runs inline, the submitting node) keeps a core, but at least 2 on a
2-CPU machine and at most 4. Since the spatial write runs in compiled kernels without the GIL
(``memory/spatial/kernels.py``), 2 workers beat 1 on 2 cores (alternating 50-message
blocks, other jobs loading the cores: 1000 percepts 195 vs 169 and 145 vs 116
percepts/s, 1500 percepts 214 vs 171 and 291 vs 256). Before them, the measurement below
favoured 1.
More threads than cores make things slower, not faster, because most memory
work is short numpy calls between stretches of Python: each call drops and
retakes the GIL, and with more runnable threads than cores every retake
waits (measured on 2 cores, 600 percepts into the five memories: 283
percepts/s with 1 worker, 215-231 with 2, 174-191 with 5; the spatial
write's p50 went from 2.5 to 5.6 ms). Vector search over large indexes, which
stays in C without the GIL, is where parallelism pays, and there the calling
thread takes its share (``bench/memory.py``: four exact searches over 2e5
vectors, one worker plus the caller, 0.55x of sequential on 2 cores).

Parallelism comes from the lanes, so BLAS's own thread pool is
limited to ``blas_threads`` (default 1, process-wide, via threadpoolctl): with
both, threads oversubscribe the cores, and OpenBLAS waking its sleeping
threads adds milliseconds to every small matmul (measured here: a temporal
recall took 12 ms with 2 BLAS threads on a busy 2-core machine, 1.9 ms with 1).
``gil_switch_interval_s`` optionally shortens Python's GIL switch interval
(default 5 ms), which bounds how long a Python-bound memory can delay another
memory's return from a GIL-free numpy call.

Persistence (``root`` set): a journal plus checkpoints, and recovery from damaged
ones: ``engram.memory.recovery`` (``MemorySystem`` composes its ``Persistence``).
Execution lanes and latency windows: ``engram.memory.lanes``.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.memory.base import Hit, Memory
from engram.memory.embedding import Embedders
from engram.memory.lanes import Lane
from engram.memory.recovery import JOURNAL, Persistence
from engram.memory.store import Store, message_to_record
from engram.runtime import registry
from engram.runtime.messages import MAX_QUERY_CHARS, MAX_TOP_K, MemoryQuery, Message
from engram.runtime.registry import RegistryError

__all__ = [
    "DEFAULT_MEMORIES",
    "MemorySystem",
    "MemorySystemConfig",
    "default_memories",
    "merge_hits",
]

log = logging.getLogger(__name__)

# Most messages the dispatcher hands a lane as one task when they wait together (a
# backlog; also at most ``lane_depth``, so a lane still holds at most that many).
_DISPATCH_BATCH = 16


@dataclass
class MemorySystemConfig:
    """Parallelism, queues and persistence of the ``MemorySystem``."""

    workers: int = 0  # threads shared by the memory lanes; 0 = auto: cpus - 1, 2 to 4 (Threads)
    lane_depth: int = 64  # tasks waiting per memory; a full lane blocks the dispatcher
    input_queue: int = 256  # messages waiting for dispatch (submit); full -> wait, then drop
    recall_timeout_s: float = 5.0  # a memory slower than this is left out of a recall
    root: str = ""  # persistence directory ("" = in memory only)
    journal_batch: int = 64  # journal commit every this many messages ...
    journal_interval_s: float = 0.5  # ... or when the oldest uncommitted one is this old
    checkpoint_every: int = 10_000  # messages between automatic checkpoints (0 = manual)
    durable: bool = False  # fsync journal and checkpoints (power loss, not only kills)
    latency_window: int = 1024  # latency samples kept per memory and operation
    inline_below_ms: float = 3.0  # recalls cheaper than this (smoothed) run in the caller
    blas_threads: int = 1  # process-wide BLAS threads (threadpoolctl); 0 = leave as is
    gil_switch_interval_s: float = 0.0  # sys.setswitchinterval for the process; 0 = leave as is

    def __post_init__(self) -> None:
        if self.workers == 0:
            cpus = os.cpu_count() or 2
            self.workers = 1 if cpus < 2 else max(2, min(4, cpus - 1))
        if self.workers < 1 or self.lane_depth < 1 or self.input_queue < 1:
            raise ValueError(
                "MemorySystemConfig: workers (0 = auto), lane_depth, input_queue must be >= 1"
            )


def merge_hits(results: Sequence[tuple[str, list[Hit]]], top_k: int) -> list[Hit]:
    """Merge per-memory hit lists (in the system's memory order) into one ranking.

    Scores in [0, 1] are kept; a memory whose scores fall outside gets rank scores
    ``1 - rank / n``. Ties: better per-memory rank, then memory order.
    """
    merged = []
    for order, (_name, hits) in enumerate(results):
        if not hits:
            continue
        raw = [float(h.score) for h in hits]
        unit = all(0.0 <= s <= 1.0 for s in raw)
        n = len(hits)
        for rank, h in enumerate(hits):
            norm = raw[rank] if unit else 1.0 - rank / n
            h.data = dict(h.data, raw_score=raw[rank])
            h.score = norm
            merged.append((-norm, rank, order, h))
    merged.sort(key=lambda x: x[:3])
    return [h for *_, h in merged[:top_k]]


#: the standard memories (registry names, kind "memory"), in the system's order: the
#: order breaks ties when hits are merged
DEFAULT_MEMORIES = ("spatial", "temporal", "episodic", "semantic", "working")


def default_memories(
    embedders: Embedders | None = None, *, include: Sequence[str] | None = None
) -> list[Memory]:
    """The memories registered under kind "memory", built as ``cls(embedders=...)``.

    Without ``include``: the standard set ``DEFAULT_MEMORIES`` (one that cannot be
    imported is left out with a warning). ``include`` picks registered names: the
    standard ones in the standard order, then the others as given."""
    known = registry.known("memory")
    if include is None:
        names = [n for n in DEFAULT_MEMORIES if n in known]
    else:
        unknown = sorted(set(include) - set(known))
        if unknown:
            raise ValueError(f"default_memories: unknown memory name(s) {unknown}; known: {known}")
        names = [n for n in DEFAULT_MEMORIES if n in include]
        names += [n for n in dict.fromkeys(include) if n not in DEFAULT_MEMORIES]
    out: list[Memory] = []
    for name in names:
        try:
            cls = registry.get("memory", name)
        except RegistryError as exc:
            if include is not None:
                raise
            log.warning("memory %s not available: %s", name, exc)
            continue
        out.append(cls(embedders=embedders))
    return out


class MemorySystem(Persistence):
    """Parallel facade over memories. See the module docstring.

    ``MemorySystem(memories, workers=2, root="runs/mem")``; use as a context manager
    or call ``close()`` (which drains, checkpoints and stops the threads).
    """

    def __init__(
        self,
        memories: Sequence[Memory] | None = None,
        *,
        workers: int | None = None,
        config: MemorySystemConfig | None = None,
        embedders: Embedders | None = None,
        root: str | Path | None = None,
    ) -> None:
        cfg = config or MemorySystemConfig()
        if workers is not None:
            cfg = MemorySystemConfig(**{**cfg.__dict__, "workers": int(workers)})
        if root is not None:
            cfg = MemorySystemConfig(**{**cfg.__dict__, "root": str(root)})
        self.config = cfg
        self.embedders = embedders
        _tune_process(cfg)
        mems = list(memories) if memories is not None else default_memories(embedders)
        names = [m.name for m in mems]
        if len(set(names)) != len(names):
            raise ValueError(f"MemorySystem: memory names must be unique, got {names}")
        for m in mems:
            if not isinstance(m, Memory):
                raise TypeError(f"MemorySystem: {m!r} is not a engram.memory.base.Memory")
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="memory")
        self._lanes = [Lane(m, self._pool, cfg.lane_depth, cfg.latency_window) for m in mems]
        self._by_name = {lane.name: lane for lane in self._lanes}
        # Bounded by _slots (a slot is taken before the put, so put never blocks in the lock).
        self._inq: queue.Queue[tuple[int, Message, str]] = queue.Queue()
        self._slots = threading.BoundedSemaphore(cfg.input_queue)
        self._submit_lock = threading.Lock()
        self._dispatched_jseq = 0
        self._dispatch_lock = threading.Lock()
        self._jseq = 0
        self._since_checkpoint = 0
        self._journal: Store | None = None
        self._journal_committed = 0
        self.counters = {"submitted": 0, "dropped": 0, "dispatched": 0, "recalls": 0, "replayed": 0}
        self.load_errors: dict[str, str] = {}  # what could not be loaded on open, and why
        self._closed = False
        self._stop = threading.Event()
        if cfg.root:
            self._open_persistence(Path(cfg.root))
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="memory-dispatch", daemon=True
        )
        self._dispatcher.start()

    # ---- memories -----------------------------------------------------------------------
    @property
    def memories(self) -> list[Memory]:
        return [lane.memory for lane in self._lanes]

    @property
    def names(self) -> list[str]:
        return [lane.name for lane in self._lanes]

    def __getitem__(self, name: str) -> Memory:
        try:
            return self._by_name[name].memory
        except KeyError:
            raise KeyError(f"no memory {name!r}; memories: {self.names}") from None

    def _lanes_for(self, names: Sequence[str]) -> list[Lane]:
        if not names:
            return list(self._lanes)
        unknown = [n for n in names if n not in self._by_name]
        if unknown:
            raise ValueError(f"MemoryQuery.memories: unknown {unknown}; memories: {self.names}")
        return [lane for lane in self._lanes if lane.name in names]

    # ---- writing ------------------------------------------------------------------------
    def submit(self, msg: Message, *, topic: str = "", timeout_s: float | None = 1.0) -> bool:
        """Queue ``msg`` for all memories (journaled first when persistent). Returns False
        (and counts a drop) when the input queue stayed full for ``timeout_s``."""
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"MemorySystem.submit: expected a Message, got {type(msg).__name__}")
        if not self._slots.acquire(timeout=timeout_s):
            self.counters["dropped"] += 1
            return False
        with self._submit_lock:
            self._jseq += 1
            self._inq.put((self._jseq, msg, topic))
            self._journal_put(self._jseq, msg, topic)
            self.counters["submitted"] += 1
        return True

    def write(self, msg: Message, *, topic: str = "") -> dict[str, str]:
        """Apply ``msg`` to every memory now (in parallel) and wait. Returns
        ``{memory: error}`` for memories that rejected it (empty when all took it)."""
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"MemorySystem.write: expected a Message, got {type(msg).__name__}")
        self.flush()
        with self._submit_lock:
            self._jseq += 1
            jseq = self._jseq
            self._journal_put(jseq, msg, topic)
            self.counters["submitted"] += 1
            futures = self._dispatch([(jseq, msg, topic)])
        errors = {}
        for name, fut in futures:
            err = fut.result()
            if err:
                errors[name] = err
        return errors

    def _journal_put(self, jseq: int, msg: Message, topic: str) -> None:
        if self._journal is None:
            return
        self._journal.put(
            message_to_record(msg, collection=JOURNAL, record_id=f"{jseq:016d}", topic=topic)
        )
        if self._journal.pending == 0:
            self._committed(jseq)

    def _dispatch(self, batch: list[tuple[int, Message, str]]) -> list[tuple[str, Future]]:
        """Hand (jseq, message, topic) items, in order, to the lanes of the memories that
        accept them: one lane task per memory for all of its items (a backlog the
        dispatcher found waiting together costs one future, one lane hand-off and one
        pool wake-up per memory and batch), each message still applied, timed, counted
        and error-isolated on its own. Returns (memory, future) per lane task: for one
        message, its error string ("" = applied)."""
        futures = []
        with self._dispatch_lock:
            for lane in self._lanes:
                acc = lane.memory.accepts
                mine = [item for item in batch if not acc or item[1].TYPE in acc]
                if len(mine) == 1:
                    futures.append((lane.name, lane.submit(self._apply_task(lane, *mine[0]))))
                elif mine:
                    task = self._apply_batch_task(lane, mine)
                    futures.append((lane.name, lane.submit(task, weight=len(mine))))
            self._dispatched_jseq = max(self._dispatched_jseq, batch[-1][0])
            self.counters["dispatched"] += len(batch)
            self._since_checkpoint += len(batch)
        return futures

    def _apply(self, lane: Lane, jseq: int, msg: Message, topic: str) -> str:
        t0 = time.perf_counter()
        err = ""
        try:
            lane.memory.write(msg, topic=topic)
        except Exception as exc:  # noqa: BLE001 - a bad message must not stop the lane
            lane.errors += 1
            err = f"{type(exc).__name__}: {exc}"
            log.warning("memory %s rejected %s seq %d: %s", lane.name, msg.TYPE, msg.seq, err)
        lane.latency["write"].add(time.perf_counter() - t0)
        lane.applied_jseq = max(lane.applied_jseq, jseq)
        return err

    def _apply_task(self, lane: Lane, jseq: int, msg: Message, topic: str) -> Callable[[], str]:
        return lambda: self._apply(lane, jseq, msg, topic)

    def _apply_batch_task(
        self, lane: Lane, items: list[tuple[int, Message, str]]
    ) -> Callable[[], list[str]]:
        return lambda: [self._apply(lane, jseq, msg, topic) for jseq, msg, topic in items]

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._inq.get(timeout=0.1)]
            except queue.Empty:
                self._idle_tick()
                continue
            cfg = self.config
            # what else is already waiting, up to a checkpoint boundary (exact as before)
            most = min(_DISPATCH_BATCH, cfg.lane_depth)  # a lane never holds more than its depth
            if cfg.root and cfg.checkpoint_every:
                most = max(1, min(most, cfg.checkpoint_every - self._since_checkpoint))
            while len(batch) < most:
                try:
                    batch.append(self._inq.get_nowait())
                except queue.Empty:
                    break
            for _ in batch:
                self._slots.release()
            try:
                self._dispatch(batch)
                if (
                    cfg.root
                    and cfg.checkpoint_every
                    and self._since_checkpoint >= cfg.checkpoint_every
                ):
                    self.checkpoint(_from_dispatcher=True)
            except Exception:  # noqa: BLE001 - keep ingesting
                log.error("memory dispatch failed:\n%s", traceback.format_exc())
            finally:
                for _ in batch:
                    self._inq.task_done()

    def _idle_tick(self) -> None:
        if self._journal is not None:
            with self._submit_lock:
                self._journal.commit_if_due()
                if self._journal.pending == 0:
                    self._committed(self._jseq)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted message has been applied by every memory."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._inq.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        for lane in self._lanes:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not lane.idle(left):
                return False
        return True

    # ---- recall -------------------------------------------------------------------------
    def recall(self, query: MemoryQuery, *, parallel: bool = True) -> list[Hit]:
        """Merged, ranked hits of the relevant memories (see the module docstring)."""
        self._check_open()
        if not isinstance(query, MemoryQuery):
            raise TypeError(
                f"MemorySystem.recall: expected a MemoryQuery, got {type(query).__name__}"
            )
        # MemoryQuery refuses these at construction; a query changed after it is refused
        # here too, before any memory allocates top_k results (10**9 took 17 GB once)
        if not isinstance(query.top_k, int) or not 1 <= query.top_k <= MAX_TOP_K:
            raise ValueError(
                f"MemorySystem.recall: top_k must be 1..{MAX_TOP_K}, got {query.top_k!r}"
            )
        if not isinstance(query.text, str) or len(query.text) > MAX_QUERY_CHARS:
            raise ValueError(
                f"MemorySystem.recall: question over {MAX_QUERY_CHARS} characters "
                f"({len(query.text)})"
            )
        lanes = self._lanes_for(query.memories)
        self.counters["recalls"] += 1
        results: list[tuple[str, list[Hit]]] = []
        if parallel:
            futs = {
                lane.name: lane.submit(self._recall_task(lane, query))
                for lane in self._recall_plan(lanes)
            }
            inline: dict[str, list[Hit] | None] = {}
            for lane in lanes:
                if lane.name in futs:
                    continue
                try:
                    out = lane.run_inline(self._recall_task(lane, query))
                except Exception:  # noqa: BLE001 - one memory failing leaves the others
                    lane.errors += 1
                    log.warning("memory %s recall failed:\n%s", lane.name, traceback.format_exc())
                    out = None
                if out is Lane._BUSY:  # writes pending: queue behind them
                    futs[lane.name] = lane.submit(self._recall_task(lane, query))
                else:
                    inline[lane.name] = out
            done, _ = wait(list(futs.values()), timeout=self.config.recall_timeout_s)
            for lane in lanes:
                if lane.name in inline:
                    hits = inline[lane.name]
                    if hits is not None:
                        results.append((lane.name, hits))
                    continue
                fut = futs[lane.name]
                if fut in done and fut.exception() is None:
                    results.append((lane.name, fut.result()))
                else:
                    lane.errors += 1
                    why = "timed out" if fut not in done else repr(fut.exception())
                    log.warning("memory %s recall failed: %s", lane.name, why)
        else:
            self.flush()
            for lane in lanes:
                try:
                    results.append((lane.name, self._recall_task(lane, query)()))
                except Exception:  # noqa: BLE001 - one memory failing leaves the others
                    lane.errors += 1
                    log.warning("memory %s recall failed:\n%s", lane.name, traceback.format_exc())
        return merge_hits(results, query.top_k)

    def _recall_plan(self, lanes: list[Lane]) -> list[Lane]:
        """The lanes whose recall goes to the pool; the rest run in the calling thread.

        Cheap recalls (smoothed time under ``inline_below_ms``) always run here: a thread
        handoff costs more than they do. The others are shared out longest first, each
        to whichever is least loaded so far (LPT scheduling): one of the ``workers`` pool
        threads or this thread, which would otherwise only wait. With one worker and
        four equal searches, two run here and two in the pool."""
        cheap = self.config.inline_below_ms
        here = sum(lane.recall_ewma_ms for lane in lanes if lane.recall_ewma_ms < cheap)
        pool = [0.0] * self.config.workers
        out = []
        heavy = sorted(
            (lane for lane in lanes if lane.recall_ewma_ms >= cheap),
            key=lambda lane: -lane.recall_ewma_ms,
        )
        for lane in heavy:
            slot = min(range(len(pool)), key=pool.__getitem__)
            if pool[slot] <= here:
                pool[slot] += lane.recall_ewma_ms
                out.append(lane)
            else:
                here += lane.recall_ewma_ms
        return out

    def _recall_task(self, lane: Lane, query: MemoryQuery) -> Callable[[], list[Hit]]:
        def task() -> list[Hit]:
            t0 = time.perf_counter()
            try:
                return list(lane.memory.recall(query))
            finally:
                dt = time.perf_counter() - t0
                lane.latency["recall"].add(dt)
                lane.recall_ewma_ms += 0.2 * (dt * 1e3 - lane.recall_ewma_ms)

        return task

    def consolidate(self, *, now_ns: int | None = None) -> None:
        """Run every memory's consolidation (in its lane, in parallel) and wait."""
        futs = [
            lane.submit(lambda m=lane.memory: m.consolidate(now_ns=now_ns)) for lane in self._lanes
        ]
        for f in futs:
            f.result()

    # ---- health -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        per = {}
        for lane in self._lanes:
            # A memory is not thread-safe: read its stats only while its lane is idle,
            # else report the last ones read.
            try:
                mstats = lane.run_inline(lane.memory.stats)
            except Exception as exc:  # noqa: BLE001 - stats must not fail the heartbeat
                mstats = {"error": repr(exc)}
            if mstats is Lane._BUSY:
                mstats = dict(lane.last_stats, stale=True)
            else:
                lane.last_stats = mstats
            per[lane.name] = {
                "queued": lane.queued,
                "errors": lane.errors,
                "applied_jseq": lane.applied_jseq,
                "latency": {op: lat.summary() for op, lat in lane.latency.items()},
                "memory": mstats,
            }
        return {
            **self.counters,
            "input_queued": self._inq.qsize(),
            "journal_committed": self._journal_committed,
            "load_errors": dict(self.load_errors),
            "memories": per,
        }

    # ---- lifecycle ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MemorySystem is closed")

    def close(self, *, checkpoint: bool = True) -> None:
        """Drain, checkpoint (when persistent), stop the threads."""
        if self._closed:
            return
        try:
            self.flush(timeout_s=30.0)
            if self.config.root and checkpoint:
                self.checkpoint()
        finally:
            self._closed = True
            self._stop.set()
            self._dispatcher.join(timeout=5.0)
            self._pool.shutdown(wait=True)
            if self._journal is not None:
                with self._submit_lock:
                    self._journal.commit()
                    self._committed(self._jseq)
                self._journal.close()

    def __enter__(self) -> MemorySystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tune_process(cfg: MemorySystemConfig) -> None:
    """Process-wide threading settings (see the module docstring, "Threads")."""
    if cfg.blas_threads > 0:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl is in the full install
            log.warning("threadpoolctl missing: BLAS keeps its own thread count")
        else:
            threadpool_limits(cfg.blas_threads, user_api="blas")
    if cfg.gil_switch_interval_s > 0:
        sys.setswitchinterval(cfg.gil_switch_interval_s)
