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
message out to the lanes of the memories that accept its type. ``write`` does
the same synchronously and waits until every memory has applied it.

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

Threads. ``workers`` defaults to one fewer than the CPUs (at least 1, at most
4): the caller (recalls it runs inline, the submitting node) keeps a core.
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

Persistence (``root`` set). Crash safety is a journal plus checkpoints:

- every accepted message is appended to a journal (``root/journal``, a
  ``engram.memory.store.Store``) under a sequence number (jseq) before it is
  dispatched; journal batches commit every ``journal_batch`` messages or
  ``journal_interval_s`` seconds (also when idle);
- ``checkpoint()`` (automatic every ``checkpoint_every`` messages, and on
  ``close``) has each memory ``save`` into ``root/memories/<name>/ckpt-<jseq>``
  inside its lane (so exactly the messages up to jseq are in it), then
  atomically points ``root/memories/<name>/CURRENT`` at it (``os.replace``) and
  deletes the checkpoints before the previous one; the journal is pruned up to
  the oldest previous checkpoint (see Damage);
- on open, each memory loads its CURRENT checkpoint and the journal entries
  after its jseq are replayed into it.

Damage (a disk error, a file cut short). Each memory keeps its previous
checkpoint beside the current one, and the journal is pruned only up to the
oldest of those previous ones (so it holds up to two checkpoint intervals). A
checkpoint that fails to load is renamed ``ckpt-<jseq>.corrupt-<time>`` (kept,
never deleted) and its memory is restored from the previous checkpoint plus the
journal, or, with none, rebuilt from the journal, which then still reaches
back to the start: nothing is lost. The other memories load as usual. A
damaged journal is set aside the same way and a new one started (what it held
after the checkpoints is lost). Each case is logged and listed in
``stats()["load_errors"]``, and the system runs on.

Loss bound: a process killed with SIGKILL loses at most the messages whose
journal batch was not committed: fewer than ``journal_batch`` messages, none
accepted more than ``journal_interval_s`` (plus one idle tick, 0.1 s) before the
kill. Not journaled: recall-time side effects (episodic reinforcement) since
the last checkpoint.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import shutil
import sqlite3
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
from engram.memory.index import Embedders
from engram.memory.store import (
    Store,
    StoreConfig,
    StoreCorrupt,
    StoreError,
    message_to_record,
    record_to_message,
)
from engram.runtime.messages import MemoryQuery, Message

__all__ = ["MemorySystem", "MemorySystemConfig", "default_memories", "merge_hits"]

log = logging.getLogger(__name__)

_JOURNAL = "journal"


@dataclass
class MemorySystemConfig:
    """Parallelism, queues and persistence of the ``MemorySystem``."""

    workers: int = 0  # threads shared by the memory lanes; 0 = auto: cpus - 1, 1 to 4 (Threads)
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
            self.workers = max(1, min(4, (os.cpu_count() or 2) - 1))
        if self.workers < 1 or self.lane_depth < 1 or self.input_queue < 1:
            raise ValueError(
                "MemorySystemConfig: workers (0 = auto), lane_depth, input_queue must be >= 1"
            )


class _Latency:
    """A window of durations (seconds) -> count and percentiles (ms)."""

    def __init__(self, window: int) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=window)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.count += 1

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {"count": self.count}
        s = sorted(self.samples)
        pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] * 1e3  # noqa: E731
        return {
            "count": self.count,
            "p50_ms": pick(0.5),
            "p95_ms": pick(0.95),
            "p99_ms": pick(0.99),
        }


class _Lane:
    """Serial execution of one memory's tasks on a shared pool (bounded FIFO)."""

    def __init__(self, memory: Memory, pool: ThreadPoolExecutor, depth: int, window: int) -> None:
        self.memory = memory
        self.name = memory.name
        self._pool = pool
        self._depth = depth
        self._tasks: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._cond = threading.Condition()
        self._running = False
        self.applied_jseq = 0  # journal sequence number of the last message applied
        self.fallback_jseq = 0  # jseq of the previous checkpoint kept as a fallback (0: none)
        self.errors = 0
        self.latency = {op: _Latency(window) for op in ("write", "recall", "save")}
        self.recall_ewma_ms = 0.0  # smoothed recall duration: decides inline vs lane
        self.last_stats: dict[str, Any] = {}  # the memory's stats when last read

    _BUSY = object()

    def run_inline(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the calling thread if the lane is idle (nothing queued or
        running), keeping the lane's one-at-a-time rule; else return ``_Lane._BUSY``."""
        with self._cond:
            if self._tasks or self._running:
                return _Lane._BUSY
            self._running = True
        try:
            return fn()
        finally:
            with self._cond:
                self._running = False
                if self._tasks:  # queued meanwhile: hand them to the pool
                    self._running = True
                    self._pool.submit(self._drain)
                self._cond.notify_all()

    def submit(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        with self._cond:
            while len(self._tasks) >= self._depth:
                self._cond.wait()
            self._tasks.append((fn, fut))
            if not self._running:
                self._running = True
                self._pool.submit(self._drain)
        return fut

    def _drain(self) -> None:
        while True:
            with self._cond:
                if not self._tasks:
                    self._running = False
                    self._cond.notify_all()
                    return
                fn, fut = self._tasks.popleft()
                self._cond.notify_all()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                fut.set_exception(exc)

    def idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no task is queued or running."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._tasks or self._running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def queued(self) -> int:
        return len(self._tasks)


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


def default_memories(
    embedders: Embedders | None = None, *, include: Sequence[str] | None = None
) -> list[Memory]:
    """The standard set: spatial (when ``engram.memory.spatial`` is importable), temporal,
    episodic, semantic, working. ``include`` picks names."""
    from engram.memory.episodic import EpisodicMemory
    from engram.memory.semantic import SemanticMemory
    from engram.memory.temporal import TemporalMemory
    from engram.memory.working import WorkingMemory

    out: list[Memory] = []
    try:
        from engram.memory.spatial import SpatialMemory

        out.append(SpatialMemory())
    except ImportError as exc:  # the spatial package is optional here
        log.warning("spatial memory not available: %s", exc)
    out += [
        TemporalMemory(embedders=embedders),
        EpisodicMemory(embedders=embedders),
        SemanticMemory(embedders=embedders),
        WorkingMemory(embedders=embedders),
    ]
    if include is not None:
        unknown = set(include) - {m.name for m in out}
        if unknown:
            raise ValueError(
                f"default_memories: unknown memory name(s) {sorted(unknown)}; "
                f"known: {[m.name for m in out]}"
            )
        out = [m for m in out if m.name in include]
    return out


class MemorySystem:
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
        self._lanes = [_Lane(m, self._pool, cfg.lane_depth, cfg.latency_window) for m in mems]
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

    def _lanes_for(self, names: Sequence[str]) -> list[_Lane]:
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
            futures = self._dispatch(jseq, msg, topic)
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
            message_to_record(msg, collection=_JOURNAL, record_id=f"{jseq:016d}", topic=topic)
        )
        if self._journal.pending == 0:
            self._journal_committed = jseq

    def _dispatch(self, jseq: int, msg: Message, topic: str) -> list[tuple[str, Future]]:
        futures = []
        with self._dispatch_lock:
            for lane in self._lanes:
                if msg.TYPE in lane.memory.accepts or not lane.memory.accepts:
                    futures.append(
                        (lane.name, lane.submit(self._apply_task(lane, jseq, msg, topic)))
                    )
            self._dispatched_jseq = max(self._dispatched_jseq, jseq)
            self.counters["dispatched"] += 1
            self._since_checkpoint += 1
        return futures

    def _apply_task(self, lane: _Lane, jseq: int, msg: Message, topic: str) -> Callable[[], str]:
        def task() -> str:
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

        return task

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                jseq, msg, topic = self._inq.get(timeout=0.1)
            except queue.Empty:
                self._idle_tick()
                continue
            self._slots.release()
            try:
                self._dispatch(jseq, msg, topic)
                cfg = self.config
                if (
                    cfg.root
                    and cfg.checkpoint_every
                    and self._since_checkpoint >= cfg.checkpoint_every
                ):
                    self.checkpoint(_from_dispatcher=True)
            except Exception:  # noqa: BLE001 - keep ingesting
                log.error("memory dispatch failed:\n%s", traceback.format_exc())
            finally:
                self._inq.task_done()

    def _idle_tick(self) -> None:
        if self._journal is not None:
            with self._submit_lock:
                self._journal.commit_if_due()
                if self._journal.pending == 0:
                    self._journal_committed = self._jseq

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
                if out is _Lane._BUSY:  # writes pending: queue behind them
                    futs[lane.name] = lane.submit(self._recall_task(lane, query))
                else:
                    inline[lane.name] = out
            done, _ = wait(list(futs.values()), timeout=self.config.recall_timeout_s)
            for lane in lanes:
                if lane.name in inline:
                    if inline[lane.name] is not None:
                        results.append((lane.name, inline[lane.name]))
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

    def _recall_plan(self, lanes: list[_Lane]) -> list[_Lane]:
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

    def _recall_task(self, lane: _Lane, query: MemoryQuery) -> Callable[[], list[Hit]]:
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

    # ---- persistence --------------------------------------------------------------------
    def _open_persistence(self, root: Path) -> None:
        cfg = self.config
        (root / "memories").mkdir(parents=True, exist_ok=True)
        journal_cfg = StoreConfig(
            batch_records=cfg.journal_batch,
            batch_interval_s=cfg.journal_interval_s,
            durable=cfg.durable,
        )
        try:
            self._journal = Store(root / "journal", config=journal_cfg)
        except StoreCorrupt as exc:
            moved = _set_aside(root / "journal")
            self._load_error("journal", f"{exc}; set aside as {moved}, a new journal started")
            self._journal = Store(root / "journal", config=journal_cfg)
        for lane in self._lanes:
            self._load_lane(lane)
        floor = min((lane.applied_jseq for lane in self._lanes), default=0)
        last = max((lane.applied_jseq for lane in self._lanes), default=0)
        replayed = 0
        try:
            for rec in self._journal.scan(_JOURNAL):
                jseq = int(rec.record_id)
                last = max(last, jseq)
                if jseq <= floor:
                    continue
                msg, topic = record_to_message(rec)
                for lane in self._lanes:
                    if jseq > lane.applied_jseq:
                        self._apply_task(lane, jseq, msg, topic)()
                replayed += 1
        except (sqlite3.DatabaseError, StoreError, ValueError, KeyError) as exc:
            # damage found part-way: keep what was replayed, set the journal aside
            self._journal.close()
            moved = _set_aside(root / "journal")
            self._load_error(
                "journal",
                f"replay stopped after {replayed} message(s): {exc!r}; set aside as {moved}, "
                "a new journal started",
            )
            self._journal = Store(root / "journal", config=journal_cfg)
        self._jseq = self._journal_committed = self._dispatched_jseq = last
        self.counters["replayed"] = replayed

    def _load_lane(self, lane: _Lane) -> None:
        """Load a memory's CURRENT checkpoint; when it is damaged, set it aside and fall
        back to the previous one (the journal reaches back to it), or to an empty memory."""
        mem_dir = self._mem_dir(lane.name)
        pointer = mem_dir / "CURRENT"
        ckpt = None
        try:
            ckpt = self._current_checkpoint(lane.name)
            if ckpt is not None:
                lane.memory.load(ckpt)
                lane.applied_jseq = _jseq_of(ckpt)
                older = [c for c in _checkpoints(mem_dir) if _jseq_of(c) < lane.applied_jseq]
                lane.fallback_jseq = _jseq_of(older[-1]) if older else 0
            return
        except Exception as exc:  # noqa: BLE001 - one bad checkpoint must not stop the rest
            problem = f"checkpoint {ckpt or pointer} could not be loaded ({exc})"
            if ckpt is not None:
                problem += f"; set aside as {_set_aside(ckpt)}"
        # only checkpoints older than the damaged one: a newer directory is the leftover
        # of an interrupted save (CURRENT never pointed at it)
        named = pointer.read_text().strip() if pointer.exists() else ""
        below = _jseq_of(Path(named)) if re.fullmatch(r"ckpt-\d{16}", named) else 0
        pointer.unlink(missing_ok=True)
        older = [c for c in _checkpoints(mem_dir) if _jseq_of(c) < below]
        for prev in reversed(older):
            try:
                lane.memory.reset()
                _unshare(prev)  # its array files may be hard links of the damaged one's
                lane.memory.load(prev)
            except Exception as exc:  # noqa: BLE001 - try the next older one
                problem += f"; the older {prev.name} failed too ({exc}), set aside as "
                problem += str(_set_aside(prev))
                continue
            (mem_dir / "CURRENT.tmp").write_text(prev.name)
            os.replace(mem_dir / "CURRENT.tmp", pointer)
            lane.applied_jseq, lane.fallback_jseq = _jseq_of(prev), 0
            self._load_error(lane.name, f"{problem}; restored {prev.name} + the journal")
            return
        lane.memory.reset()
        lane.applied_jseq = lane.fallback_jseq = 0
        self._load_error(lane.name, f"{problem}; rebuilt from the journal")

    def _load_error(self, what: str, text: str) -> None:
        self.load_errors[what] = text
        log.error("memory system at %s: %s: %s", self.config.root, what, text)

    def _mem_dir(self, name: str) -> Path:
        return Path(self.config.root) / "memories" / name

    def _current_checkpoint(self, name: str) -> Path | None:
        pointer = self._mem_dir(name) / "CURRENT"
        if not pointer.exists():
            return None
        target = self._mem_dir(name) / pointer.read_text().strip()
        if not target.is_dir():
            raise RuntimeError(f"{pointer} points at a missing checkpoint {target}")
        return target

    def checkpoint(self, *, _from_dispatcher: bool = False) -> dict[str, int]:
        """Save every memory at a consistent journal position; prune the journal.
        Returns {memory: jseq saved}."""
        if not self.config.root:
            raise RuntimeError("MemorySystem.checkpoint: no root directory configured")
        if not _from_dispatcher:
            self.flush()
        with self._submit_lock:
            self._journal.commit()  # type: ignore[union-attr]
            self._journal_committed = self._jseq
        with self._dispatch_lock:
            # Every message up to this jseq is queued before the save in each lane, so
            # each save holds exactly the messages <= jseq (those its memory accepts).
            jseq = self._dispatched_jseq
            futs = [(lane, lane.submit(self._save_task(lane, jseq))) for lane in self._lanes]
        saved = {lane.name: fut.result() for lane, fut in futs}
        # Keep the journal back to the *previous* checkpoints: a damaged current one is
        # then replaced by its predecessor plus the journal, and nothing is lost.
        floor = min((lane.fallback_jseq for lane in self._lanes), default=0)
        if floor:
            self._journal.delete_where(_JOURNAL, max_record_id=f"{floor:016d}")  # type: ignore[union-attr]
            if self._journal.count(_JOURNAL) == 0:  # type: ignore[union-attr]
                self._journal.compact()  # type: ignore[union-attr]
        self._since_checkpoint = 0
        return saved

    def _save_task(self, lane: _Lane, jseq: int) -> Callable[[], int]:
        def task() -> int:
            t0 = time.perf_counter()
            lane.applied_jseq = max(lane.applied_jseq, jseq)
            mem_dir = self._mem_dir(lane.name)
            current = self._current_checkpoint(lane.name)
            name = f"ckpt-{jseq:016d}"
            if current is not None and current.name == name:
                return jseq  # nothing new since the last checkpoint
            target = mem_dir / name
            if target.exists():
                shutil.rmtree(target)  # a leftover of an interrupted checkpoint
            target.mkdir(parents=True)
            if current is not None and getattr(lane.memory, "incremental_save", False):
                _clone_store(current, target)  # then save() writes only the changes
            lane.memory.save(target)
            _fsync_dir(target) if self.config.durable else None
            tmp = mem_dir / "CURRENT.tmp"
            tmp.write_text(name)
            os.replace(tmp, mem_dir / "CURRENT")  # atomic switch
            keep = {name, current.name if current is not None else name}
            for old in _checkpoints(mem_dir):
                if old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)
            lane.fallback_jseq = _jseq_of(current) if current is not None else 0
            lane.latency["save"].add(time.perf_counter() - t0)
            return jseq

        return task

    @property
    def journal_committed(self) -> int:
        """The last journal sequence number known to be committed (survives a kill)."""
        return self._journal_committed

    def disk_bytes(self) -> int:
        if not self.config.root:
            return 0
        return sum(p.stat().st_size for p in Path(self.config.root).rglob("*") if p.is_file())

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
            if mstats is _Lane._BUSY:
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


def _clone_store(src: Path, dst: Path) -> None:
    """Start checkpoint ``dst`` as a copy of checkpoint ``src`` (a ``engram.memory.store.Store``):
    the SQLite database is copied (backup API), the append-only array files are
    hard-linked, so a copy costs O(metadata), and the following save appends only what
    changed. Safe: ``src`` reads its arrays only up to its own committed lengths, and if
    the checkpoint never completes, reopening ``src`` truncates what ``dst`` appended."""
    if not (src / "store.sqlite").exists():
        return
    import sqlite3

    for f in (src / "arrays").rglob("*.bin"):
        link = dst / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, link)
        except OSError:  # no hard links on this filesystem: copy
            shutil.copy2(f, link)
    with sqlite3.connect(src / "store.sqlite") as a, sqlite3.connect(dst / "store.sqlite") as b:
        a.backup(b)
    b.close()
    a.close()


def _checkpoints(mem_dir: Path) -> list[Path]:
    """A memory's checkpoint directories (not set-aside ones), oldest first."""
    found = [p for p in mem_dir.glob("ckpt-*") if re.fullmatch(r"ckpt-\d{16}", p.name)]
    return sorted((p for p in found if p.is_dir()), key=_jseq_of)


def _jseq_of(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def _unshare(ckpt: Path) -> None:
    """Give a checkpoint its own copy of hard-linked array files (``_clone_store`` links
    them into the next checkpoint, which appends to them) before it is opened for writing."""
    for f in (ckpt / "arrays").rglob("*.bin"):
        if f.stat().st_nlink > 1:
            tmp = f.with_name(f.name + ".unshare")
            shutil.copy2(f, tmp)
            os.replace(tmp, f)


def _set_aside(path: Path) -> Path:
    """Rename a damaged store directory to ``<name>.corrupt-<unix time>`` (kept for
    inspection, never deleted) and return the new path."""
    target = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{int(time.time())}-{n}")
        n += 1
    os.replace(path, target)
    return target


def _fsync_dir(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
