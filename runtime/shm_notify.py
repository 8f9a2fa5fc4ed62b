"""Same-host notifications of shared-memory messages: a unix datagram straight to the
subscriber's receiver thread, so a frame does not pass through ZeroMQ's I/O threads.

Why
===

With shared-memory payloads (``runtime/shm.py``) a 640x480 frame's hop was mostly thread
hand-offs: publisher -> its ZeroMQ I/O thread -> unix socket -> the subscriber's ZeroMQ I/O
thread -> the subscription's receiver thread -> the consumer. On 2 shared cores each wake-up
costs tens of microseconds and, under load, a scheduling slice. Here the publisher's own
thread ``sendto``s a small datagram (``[frame 0, descriptor, codec header]``, a few hundred
bytes) to a unix datagram socket that the receiver thread polls beside its ZeroMQ SUB socket
(``zmq.Poller`` takes raw file descriptors): publisher -> receiver thread -> consumer.
Measured beside the ZeroMQ notification and iceoryx2 in ``bench/transport.py``.

How a publisher learns the address: the subscription itself
============================================================

A ``latest`` / ``queue(n)`` subscription on a same-host (``ipc://``, shared memory on)
bus subscribes its SUB socket to two prefixes instead of ``topic\\0``:

- ``topic\\0`` + ``INLINE`` (``b"I"``): messages too large for a datagram that cannot go
  through shared memory (over a size cap, no ring) still come over ZeroMQ;
- ``topic\\0`` + ``NOTIFY_MARK`` + its datagram address (an abstract unix name: no file to
  clean up, gone with the process).

ZeroMQ carries subscriptions to every publisher (also ones that connect later) and, with
``XPUB_VERBOSER``, reports each (un)subscription to the publishing bus, which keeps the
addresses per topic in a ``NotifySender``. Frame 0 of every message is ``topic\\0`` + a tag +
the publisher id + its wire number (u64, one count per publishing bus: see "Ordering"). A
message whose frames fit in
``MAX_DATAGRAM`` (a shared-memory descriptor, or any small message) is tagged ``DIRECT``:
it goes as a datagram to every registered address and over ZeroMQ only to subscribers
without one (``ENGRAM_SHM=0`` in their process); a larger one is tagged ``INLINE`` and goes
over ZeroMQ to everyone. So each subscription gets every message exactly once.

Semantics kept
==============

- Freshness policies: unchanged (the receiver thread, or a consumer waiting in ``get``,
  puts messages into the same bounded ``Mailbox``: ``runtime/zmq_receiver.py``). The datagram queue of a socket is bounded by the kernel
  (``net.unix.max_dgram_qlen``).
- Only ``latest`` / ``queue(n)`` subscriptions take datagrams, sent without waiting. A full
  datagram queue (its reader lags: the kernel holds ``net.unix.max_dgram_qlen``, 10 here)
  does not drop the message: the publisher sends it to that subscription alone over
  ZeroMQ's lossy socket (frame 0: ``topic\\0`` + ``NOTIFY_MARK`` + its address + id + wire
  number, matching only that subscription's prefix; ``NotifySender.fallback`` counts them),
  where ZeroMQ's high-water marks bound it. ``all`` subscriptions (backpressure, ordered, gap counting)
  stay on ZeroMQ's lossless socket, unchanged, with the payload in shared memory.
- A subscriber that dies: its SUB socket's pipe ends, ZeroMQ reports the unsubscription and
  the address is forgotten; a send to a vanished address (``ECONNREFUSED``) forgets it too.
  Its ring slots are released by ``runtime/shm.py`` (reader-table locks).
- Ordering: a subscription that takes datagrams gets messages on two paths, which can
  overtake each other. It hands out each publisher's messages in wire-number order: one
  older than a message it already delivered from that publisher is dropped as stale
  (counted as received and dropped, like a full queue's oldest; a stale datagram is not
  even decoded). A large message that cannot go through shared memory because every slot
  of its ring is in use is *dropped* for datagram subscriptions (``NotifySender.dropped``):
  sent inline it would cost the lagging readers more; one that cannot for a lasting reason
  (over a size cap, no ring) is ``INLINE`` for all.
- Cross-host (``tcp://``, CURVE) never uses this: those subscriptions subscribe to
  ``topic\\0`` as before and everything stays on ZeroMQ.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import select
import socket
import struct
import threading
from typing import Any

from engram.runtime.codec import DecodeError

__all__ = ["DIRECT", "INLINE", "MAX_DATAGRAM", "NOTIFY_MARK", "NotifyReceiver", "NotifySender"]

INLINE = b"I"  # frame-0 tag: over ZeroMQ to every subscription (too large for a datagram)
DIRECT = b"D"  # frame-0 tag: datagrams to same-host subscriptions, ZeroMQ to the others
NOTIFY_MARK = b"\xffN"  # after ``topic\0`` in a subscription: the datagram address follows
_ADDR_RE = re.compile(rb"^engram-n\.\d+\.[0-9a-f]{12}$")
MAX_DATAGRAM = 60_000  # bytes of frames one datagram carries at most (kernel buffer 208 KiB)
_MAX_FRAMES = 64
WAKE = b"\0"  # a wake-up datagram (no frames): "look at the mailbox"
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_HEADS: dict[int, struct.Struct] = {}  # frame count -> its datagram head (count, lengths)
_UNPACKS: dict[int, struct.Struct] = {}  # frame count -> the lengths after the count byte


def _head_struct(n: int) -> struct.Struct:
    got = _HEADS.get(n)
    if got is None:
        got = _HEADS[n] = struct.Struct(f"<B{n}I")
    return got


def _unpack_struct(n: int) -> struct.Struct:
    got = _UNPACKS.get(n)
    if got is None:
        got = _UNPACKS[n] = struct.Struct(f"<{n}I")
    return got


class NotifySender:
    """Publisher side: the datagram addresses of subscriptions (from the XPUB events of the
    lossy socket) and the sends, which never wait."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._peers: dict[bytes, dict[bytes, int]] = {}  # key -> address -> subscriptions
        self._lock = threading.Lock()
        self.sent = 0  # datagrams sent
        self.dropped = 0  # messages not delivered to a subscription (every ring slot in use)
        self.fallback = 0  # datagrams refused (a full queue), sent over ZeroMQ instead

    def on_event(self, event: bytes) -> bool:
        """An XPUB (un)subscription event; True when it was a notify address (handled)."""
        if len(event) < 2 or event[:1] not in (b"\x00", b"\x01"):
            return False
        nul = event.find(b"\0", 1)
        if nul < 0 or event[nul + 1 : nul + 1 + len(NOTIFY_MARK)] != NOTIFY_MARK:
            return False
        key, addr = event[1 : nul + 1], event[nul + 1 + len(NOTIFY_MARK) :]
        if not _ADDR_RE.match(addr):
            return True  # not ours: ignored
        with self._lock:
            peers = self._peers.setdefault(key, {})
            if event[:1] == b"\x01":
                peers[addr] = peers.get(addr, 0) + 1
            elif addr in peers:
                peers[addr] -= 1
                if peers[addr] <= 0:
                    del peers[addr]
                if not peers:
                    del self._peers[key]
        return True

    def count(self, key: bytes) -> int:
        """Subscriptions to ``key`` that take notifications."""
        return len(self._peers.get(key, ()))

    def send(self, key: bytes, frames: list[Any]) -> list[bytes]:
        """Send the message's frames (``[frame 0, *codec or descriptor frames]``, together
        at most ``MAX_DATAGRAM`` bytes) to every address of ``key``; returns the addresses
        whose datagram queue was full (their reader lags): the bus sends those the message
        over ZeroMQ instead (``fallback``), so the newest message is not the one lost."""
        peers = self._peers.get(key)
        if not peers:
            return []
        # (bytes frames, the common case, are joined as they are: no memoryview each; a
        # byte-cast memoryview's len is its size in bytes)
        parts = [
            f if type(f) is bytes else memoryview(getattr(f, "buffer", f)).cast("B") for f in frames
        ]
        n = len(parts)
        data = b"".join([_head_struct(n).pack(n, *map(len, parts)), *parts])
        full: list[bytes] = []
        for addr in list(peers):
            try:
                self._sock.sendto(data, b"\0" + addr)
                self.sent += 1
            except (BlockingIOError, InterruptedError):
                full.append(addr)
            except OSError as exc:  # gone (ECONNREFUSED, ENOENT): forget it
                if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                    raise
                with self._lock:
                    peers.pop(addr, None)
        self.fallback += len(full)
        return full

    def close(self) -> None:
        self._sock.close()


class NotifyReceiver:
    """Subscriber side: an abstract-namespace unix datagram socket, read without waiting by
    the subscription's receiver thread (which polls its file descriptor) or by a consumer
    thread waiting in ``Subscription.get`` (``runtime/zmq_receiver.py``).

    The kernel attaches each sender's credentials (``SO_PASSCRED``): an abstract socket has
    no file permissions, so anyone on the host may send to it; ``recv`` says whether the
    sender runs as our own user (only then is a message rebuilt without re-validation)."""

    def __init__(self) -> None:
        self.address = f"engram-n.{os.getpid()}.{secrets.token_hex(6)}".encode()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(b"\0" + self.address)
        self._sock.setblocking(False)
        self._uid = os.getuid()
        self._bufsize = MAX_DATAGRAM + 8 + 4 * _MAX_FRAMES
        self._ancsize = socket.CMSG_SPACE(_UCRED.size)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> bool:
        """Whether a datagram waits (no wait; one reader thread at a time calls this)."""
        return bool(self._poll.poll(0))

    def subscription(self, key: bytes) -> bytes:
        """The prefix to subscribe to so that publishers of ``key`` notify this socket."""
        return key + NOTIFY_MARK + self.address

    def wake(self) -> None:
        """Wake whoever polls this socket (a one-byte datagram, which ``recv`` skips)."""
        try:
            self._sock.sendto(WAKE, b"\0" + self.address)
        except OSError:
            pass  # queue full (the poller wakes anyway) or closed

    def recv(self) -> tuple[list[memoryview], bool] | None:
        """The frames of the next datagram (``[frame 0, ...]``; ``[]`` for a wake-up) and
        whether its sender runs as our user, or None when none is waiting. Raises
        ``DecodeError`` for a malformed one."""
        try:
            data, anc, _, _ = self._sock.recvmsg(self._bufsize, self._ancsize)
        except (BlockingIOError, InterruptedError):
            return None
        ours = False
        for level, kind, cred in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                ours = len(cred) >= _UCRED.size and _UCRED.unpack_from(cred)[1] == self._uid
        if data == WAKE:
            return [], ours
        n = data[0] if data else 0
        at = 1 + 4 * n
        if not 2 <= n <= _MAX_FRAMES or len(data) < at:
            raise DecodeError(f"bad notification ({len(data)} bytes, {n} frames)")
        view, frames = memoryview(data), []
        for length in _unpack_struct(n).unpack_from(data, 1):
            frames.append(view[at : at + length])
            at += length
        if at != len(data):
            raise DecodeError(f"notification of {len(data)} bytes, its frames say {at}")
        return frames, ours

    def close(self) -> None:
        self._sock.close()
