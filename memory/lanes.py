"""Execution lanes of the memory system: one memory's tasks run one at a time, in order.

A ``Lane`` is a bounded FIFO of tasks (writes, recalls, saves) of one memory, run on a
shared ``ThreadPoolExecutor``: a memory never runs two tasks at once (memories need
not be thread-safe), sees messages in order, and a recall queued after a write sees
that write; different memories' lanes run concurrently. A full lane blocks the
caller of ``submit`` (backpressure), never grows. ``Latency`` keeps a window of
durations per operation for the p50 / p95 / p99 of ``MemorySystem.stats()``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from engram.memory.base import Memory

__all__ = ["Lane", "Latency"]


class Latency:
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


class Lane:
    """Serial execution of one memory's tasks on a shared pool (bounded FIFO)."""

    def __init__(self, memory: Memory, pool: ThreadPoolExecutor, depth: int, window: int) -> None:
        self.memory = memory
        self.name = memory.name
        self._pool = pool
        self._depth = depth
        # (task, its future, how many messages it carries): ``depth`` bounds the messages
        self._tasks: collections.deque[tuple[Callable[[], Any], Future, int]] = collections.deque()
        self._weight = 0  # messages in the queued tasks
        self._cond = threading.Condition()
        self._running = False
        self.applied_jseq = 0  # journal sequence number of the last message applied
        self.fallback_jseq = 0  # jseq of the previous checkpoint kept as a fallback (0: none)
        self.errors = 0
        self.latency = {op: Latency(window) for op in ("write", "recall", "save")}
        self.recall_ewma_ms = 0.0  # smoothed recall duration: decides inline vs lane
        self.last_stats: dict[str, Any] = {}  # the memory's stats when last read

    _BUSY = object()

    def run_inline(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the calling thread if the lane is idle (nothing queued or
        running), keeping the lane's one-at-a-time rule; else return ``Lane._BUSY``."""
        with self._cond:
            if self._tasks or self._running:
                return Lane._BUSY
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

    def submit(self, fn: Callable[[], Any], weight: int = 1) -> Future:
        """Queue ``fn``, a task for ``weight`` messages (a batch of writes counts each);
        blocks while the queued tasks already hold ``depth`` messages (an oversized batch
        still goes in when the lane is empty)."""
        fut: Future = Future()
        with self._cond:
            while self._tasks and self._weight + weight > self._depth:
                self._cond.wait()
            self._tasks.append((fn, fut, weight))
            self._weight += weight
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
                fn, fut, weight = self._tasks.popleft()
                self._weight -= weight
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
        """Messages (and recalls, saves) waiting in the lane."""
        return self._weight
