"""Buses: publish/subscribe and request/reply behind one small interface.

A ``Bus`` moves ``Message`` values between nodes. Implementations:

- ``InProcBus`` (this module): threads in one process; messages are passed by
  reference (no copy, no encoding). Used by tests and the embedded default.
- ``ZmqBus`` (``runtime/zmq_bus.py``): ZeroMQ across processes or hosts,
  ``ipc://`` or ``tcp://``; messages go through ``runtime/codec.py``.

Freshness is a named ``QueuePolicy`` per subscription; no queue is unbounded:

- ``latest``: keep the newest message only (older ones are dropped and counted).
- ``queue(n)``: bounded FIFO of n; when full the oldest is dropped and counted.
- ``all``: bounded FIFO of n (default 64); when full the *publisher blocks*
  (backpressure) instead of dropping. Across processes (``ZmqBus``) that wait is bounded
  (``all_block_timeout_s``): a subscriber that takes nothing for that long loses the
  message (counted in ``Subscription.lost``) instead of freezing its publisher.

Request/reply (``serve`` / ``request``) is for queries such as memory recall:
``request`` raises ``TimeoutError`` when no reply arrives in time.

``make_bus(url)`` picks an implementation from a URL: ``inproc://NAME``,
``ipc:///path/prefix`` or ``tcp://host:port`` (``ZmqBus``, registered as kind ``"bus"``
for those schemes by ``engram.runtime.register``, so this module imports no transport).
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engram.runtime import registry
from engram.runtime.messages import Message

__all__ = [
    "Bus",
    "BusClosed",
    "InProcBus",
    "Mailbox",
    "QueuePolicy",
    "Subscription",
    "make_bus",
]

log = logging.getLogger(__name__)

_POLICY_RE = re.compile(r"^\s*(latest|all|queue)\s*(?:\(\s*(\d+)\s*\))?\s*$")


class BusClosed(RuntimeError):
    """The bus (or subscription) was closed."""


@dataclass(frozen=True)
class QueuePolicy:
    """Freshness policy of a subscription. Parse with ``QueuePolicy.parse("queue(8)")``."""

    kind: str = "queue"  # "latest" | "queue" | "all"
    depth: int = 8  # max messages held (1 for latest)

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "queue", "all"):
            raise ValueError(f"policy kind must be latest, queue(n) or all, got {self.kind!r}")
        if self.depth < 1:
            raise ValueError(f"policy depth must be >= 1, got {self.depth}")
        if self.kind == "latest" and self.depth != 1:
            object.__setattr__(self, "depth", 1)

    @classmethod
    def parse(cls, text: str | QueuePolicy) -> QueuePolicy:
        """``"latest"``, ``"queue(n)"``, ``"all"`` or ``"all(n)"``."""
        if isinstance(text, QueuePolicy):
            return text
        m = _POLICY_RE.match(str(text))
        if not m:
            raise ValueError(f"bad freshness policy {text!r}: use latest, queue(n) or all")
        kind, depth = m.group(1), m.group(2)
        if kind == "latest":
            return cls("latest", 1)
        if kind == "queue" and depth is None:
            raise ValueError(f"bad freshness policy {text!r}: queue needs a size, e.g. queue(8)")
        return cls(kind, int(depth) if depth else 64)

    def __str__(self) -> str:
        return "latest" if self.kind == "latest" else f"{self.kind}({self.depth})"


class Mailbox:
    """A bounded, thread-safe buffer that applies a ``QueuePolicy``.

    ``put`` never grows past ``policy.depth``: ``latest``/``queue`` drop the oldest
    (counted in ``dropped``), ``all`` blocks the caller until there is room.
    """

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy
        self._items: collections.deque[Message] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, msg: Message, timeout_s: float | None = None) -> bool:
        """Add a message; returns False if it could not be delivered (closed / timeout)."""
        with self._cond:
            if self._closed:
                return False
            if self.policy.kind == "all":
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                while len(self._items) >= self.policy.depth and not self._closed:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                if self._closed:
                    return False
            else:
                while len(self._items) >= self.policy.depth:
                    self._items.popleft()
                    self.dropped += 1
            self._items.append(msg)
            self.received += 1
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None = None) -> Message | None:
        """The oldest held message, waiting up to ``timeout_s``; None on timeout.

        Raises ``BusClosed`` once closed and empty.
        """
        with self._cond:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while not self._items:
                if self._closed:
                    raise BusClosed("subscription closed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            msg = self._items.popleft()
            self._cond.notify_all()
            return msg

    def drain(self) -> list[Message]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Subscription:
    """A subscriber's handle: pull messages with ``get``; counters for health."""

    def __init__(self, topic: str, policy: QueuePolicy, on_close: Callable[[], None] | None = None):
        self.topic = topic
        self.policy = policy
        self.mailbox = Mailbox(policy)
        self.decode_errors = 0
        # "all" over a network bus: messages a publisher dropped for this subscription after
        # it stayed full for the publisher's timeout (seen as gaps in its sequence numbers)
        self.lost = 0
        # messages of the wrong type for the port that reads this subscription (Node drops them)
        self.wrong_type = 0
        self._on_close = on_close

    @property
    def received(self) -> int:
        return self.mailbox.received

    @property
    def dropped(self) -> int:
        return self.mailbox.dropped

    def get(self, timeout_s: float | None = None) -> Message | None:
        return self.mailbox.get(timeout_s)

    def drain(self) -> list[Message]:
        return self.mailbox.drain()

    def close(self) -> None:
        self.mailbox.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __repr__(self) -> str:
        return (
            f"Subscription({self.topic!r}, {self.policy}, received={self.received}, "
            f"dropped={self.dropped}, lost={self.lost}, decode_errors={self.decode_errors})"
        )


class Bus(ABC):
    """Publish/subscribe plus request/reply. Thread-safe; usable as a context manager."""

    @abstractmethod
    def publish(self, topic: str, msg: Message) -> None:
        """Send ``msg`` to every subscriber of ``topic`` (non-blocking unless a
        subscriber uses the ``all`` policy and is full)."""

    @abstractmethod
    def subscribe(self, topic: str, policy: QueuePolicy | str = "queue(8)") -> Subscription:
        """Start receiving ``topic`` into a bounded ``Subscription``."""

    @abstractmethod
    def serve(self, topic: str, handler: Callable[[Message], Message]) -> None:
        """Answer requests on ``topic`` with ``handler(request) -> reply`` (own thread)."""

    @abstractmethod
    def request(self, topic: str, msg: Message, timeout_s: float = 2.0) -> Message:
        """Send a request and wait for the reply; ``TimeoutError`` after ``timeout_s``."""

    @abstractmethod
    def close(self) -> None:
        """Release sockets and threads; further use raises ``BusClosed``."""

    def loan(self, topic: str, *specs: tuple[tuple[int, ...], Any]) -> list[Any]:
        """Writable arrays, one per ``(shape, dtype)``, to build the first array fields of
        the next message on ``topic`` in (a camera decodes or renders straight into them).
        Here plain arrays; a bus with shared memory (``ZmqBus`` on ``ipc://``) lays them in
        a ring slot so that ``publish`` copies none of their bytes. Do not write into them
        after publishing."""
        import numpy as np

        return [np.empty(shape, dtype) for shape, dtype in specs]

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcBus(Bus):
    """Threads in one process. Messages are shared by reference: treat them as immutable."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._subs: dict[str, list[Subscription]] = collections.defaultdict(list)
        self._services: dict[str, Callable[[Message], Message]] = {}
        self._lock = threading.Lock()
        self._seq: dict[str, int] = collections.defaultdict(int)
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed(f"bus {self.name!r} is closed")

    def publish(self, topic: str, msg: Message) -> None:
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"publish({topic!r}): expected a Message, got {type(msg).__name__}")
        with self._lock:
            if msg.seq == 0:
                self._seq[topic] += 1
                msg.seq = self._seq[topic]
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            sub.mailbox.put(msg)

    def subscribe(self, topic: str, policy: QueuePolicy | str = "queue(8)") -> Subscription:
        self._check_open()
        pol = QueuePolicy.parse(policy)

        def remove() -> None:
            with self._lock:
                if sub in self._subs.get(topic, []):
                    self._subs[topic].remove(sub)

        sub = Subscription(topic, pol, on_close=remove)
        with self._lock:
            self._subs[topic].append(sub)
        return sub

    def serve(self, topic: str, handler: Callable[[Message], Message]) -> None:
        self._check_open()
        with self._lock:
            if topic in self._services:
                raise ValueError(f"service {topic!r} already has a server")
            self._services[topic] = handler

    def request(self, topic: str, msg: Message, timeout_s: float = 2.0) -> Message:
        self._check_open()
        with self._lock:
            handler = self._services.get(topic)
        if handler is None:
            # Behave like a network bus: nobody answers, so time out.
            time.sleep(timeout_s)
            raise TimeoutError(f"no reply on {topic!r} within {timeout_s:.3g} s (no server)")
        result: list[Message] = []
        error: list[BaseException] = []

        def call() -> None:
            try:
                result.append(handler(msg))
            except BaseException as exc:  # noqa: BLE001 - re-raised in caller
                error.append(exc)

        worker = threading.Thread(target=call, daemon=True, name=f"request:{topic}")
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise TimeoutError(f"no reply on {topic!r} within {timeout_s:.3g} s")
        if error:
            raise error[0]
        return result[0]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            subs = [s for lst in self._subs.values() for s in lst]
            self._subs.clear()
            self._services.clear()
        for sub in subs:
            sub.mailbox.close()


_INPROC_BUSES: dict[str, InProcBus] = {}
_INPROC_LOCK = threading.Lock()


def make_bus(url: str = "inproc://default", **options: object) -> Bus:
    """A bus for a URL: ``inproc://NAME`` (shared per name within a process),
    ``ipc://...`` or ``tcp://...`` (ZeroMQ; options go to ``ZmqBus``)."""
    if url.startswith("inproc://"):
        name = url[len("inproc://") :] or "default"
        with _INPROC_LOCK:
            bus = _INPROC_BUSES.get(name)
            if bus is None or bus._closed:
                bus = _INPROC_BUSES[name] = InProcBus(name)
            return bus
    scheme = url.partition("://")[0]
    if "://" in url and scheme in registry.known("bus"):
        # registered transports: ipc/tcp -> engram.runtime.zmq_bus.ZmqBus (pyzmq only now)
        return registry.get("bus", scheme)(url, **options)
    raise ValueError(f"unknown bus URL {url!r}: use inproc://NAME, ipc://PATH or tcp://HOST:PORT")
