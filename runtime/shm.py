"""Shared-memory payloads for ``ZmqBus`` on one host: rings of slots, ZeroMQ notifications.

What it does
============

A bus on an ``ipc://`` URL (every ``engram launch`` process group; all its peers are on this
host by construction) publishes a message whose array payload is at least
``ShmConfig.min_bytes`` by copying the arrays once into a **slot of a shared-memory ring**
(one ring per topic per publishing bus, a file in ``/dev/shm``) and sending, over the same
ZeroMQ sockets as before, only ``[topic, descriptor, codec header]``. The subscriber maps
the ring and hands out arrays that are **read-only views of the slot** (no copy). Topics,
freshness policies, subscriber counting, ordering and the broker are untouched: ZeroMQ still
carries every message, only the bytes travel through shared memory (for ``latest`` /
``queue(n)`` subscriptions the descriptor goes as a unix datagram instead, straight to the
subscriber's receiver thread: ``runtime/shm_notify.py``). ``tcp://`` buses (other hosts,
CURVE) never use it. ``ENGRAM_SHM=0`` turns it off.

Ring file layout (little-endian u64 words; constants, descriptor format, locks and the sweep
live in ``runtime/shm_layout.py``)::

    [0, 4096)        header: magic, version, slots, slot_bytes, readers, entry_words,
                     table_off, data_off, writer pid; at byte 256: per slot (state, nbytes)
    [table_off, …)   reader table: ``readers`` entries of (flags, cursor, pid, 0, pin[slots])
    [data_off, …)    ``slots`` payload slots of ``slot_bytes`` each

Concurrency without waiting (the writer never blocks on a reader)
=================================================================

- *Slot state* is a seqlock word written only by the writer: odd while it writes, then the
  even sequence number of the message it holds. Readers never write it.
- A reader that hands out a zero-copy view first **pins** the slot in its own table entry
  (``pin[slot] = seq``), then re-reads the state; the writer first marks a slot odd, then
  reads the pins. Each side puts a full memory barrier between its store and its load
  (Dekker), so either the reader sees the overwrite (and drops the message, counted in
  ``Subscription.dropped``) or the writer sees the pin (and takes another slot). The pin is
  released when the last array view of that message is garbage-collected.
- Every reader publishes a **cursor** (highest seq read). The writer does not reuse a slot
  a live ``all`` reader has not read yet; when every live reader has read the newest
  message and holds no view of it, the writer takes that slot again (still in its cache;
  a subscriber that has not read any message yet can miss its first). When every slot
  is pinned or still owed to an ``all`` reader, the writer **does not wait**: that message
  goes inline over ZeroMQ as before (and ZeroMQ's own high-water marks apply). So a stuck reader costs
  speed, never a frozen publisher or a corrupted frame.
- Beyond ``pin_budget`` messages held at once, or without a free table entry, a reader
  copies the slot out and validates it with the seqlock (two state reads around the copy).
- Each reader entry is owned through an open-file-description lock (``F_OFD_SETLK``) on its
  byte range; the kernel drops it when the process dies, so the writer sees a dead reader
  and clears its pins and cursor: **buffers are released when a subscriber dies**.
- The writer holds such a lock on byte 0 of its ring for its lifetime; every new writer
  sweeps ``/dev/shm/engram-shm.*`` files whose lock is free (their writer died, e.g. by
  SIGKILL), so killed processes do not fill ``/dev/shm``. Rings are reserved with
  ``posix_fallocate`` (a full ``/dev/shm`` means "inline", never SIGBUS later) and capped by
  ``max_ring_bytes`` and ``max_rings``: memory is bounded.
- Array views are read-only (``memoryview.toreadonly``): a subscriber cannot write into a
  frame another subscriber is reading.
- **Loans** (``ShmWriter.loan`` / ``ZmqBus.loan``): a producer gets writable arrays laid out
  in a free slot, builds its frame there (a camera driver decodes into it) and publishes
  the message as usual; arrays already at their place in the slot are not copied, so a
  1080p frame costs the notification only. The slot stays "being written" until then.

Why our own rings and not iceoryx2 or Zenoh (measured, 2 loaded cores, 640x480 RGB)
===================================================================================

iceoryx2 0.10.0's Python bindings work (loan, memmove, send; p50 0.10 ms cross-process with
a 50 us polling subscriber) but do not fit the bus: a subscriber needs its own busy-poll
or event service beside the ZeroMQ socket, queue depth and overflow are per service rather
than per subscription (our ``latest`` / ``queue(n)`` / ``all`` per subscription), payloads
must be matched back to ZeroMQ order, and every process prints a config notice. Zenoh SHM
(``eclipse-zenoh``) is not installed and would replace the transport rather than carry
payloads for it. A ring plus a descriptor on the existing sockets (the dora-rs design)
keeps every bus semantic and measures the same order of latency (``bench/transport.py``).

The memory barrier: on x86-64 the only reordering that matters is a store passing a later
load; a locked read-modify-write is a full barrier, and an uncontended
``threading.Lock`` acquire/release is one (glibc semaphore CAS). Other architectures would
need a real fence, so shared memory is enabled on x86-64 only (elsewhere: inline).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, compress
from typing import Any

import numpy as np

from engram.runtime.shm_layout import (  # the ring file's layout and small helpers (split out)
    _E_CURSOR,
    _E_FLAGS,
    _E_PID,
    _E_PINS,
    _F_CLAIMED,
    _F_LOSSLESS,
    _HEADER_BYTES,
    _MAGIC,
    _MAX_SLOTS,
    _NAME_RE,
    _STATES_OFF,
    _VERSION,
    DESCRIPTOR_MAGIC,
    RING_PREFIX,
    SHM_DIR,
    ShmDropped,
    ShmError,
    _align,
    _count,
    _descriptor,
    _fence,
    _lock,
    _map,
    _offsets,
    _parse_descriptor,
    empty_arrays,
    is_descriptor,
    shm_supported,
    sweep_stale_rings,
)

__all__ = [
    "DESCRIPTOR_MAGIC",
    "SHM_DIR",
    "ShmConfig",
    "ShmDropped",
    "ShmError",
    "ShmReader",
    "ShmWriter",
    "empty_arrays",
    "is_descriptor",
    "shm_supported",
    "sweep_stale_rings",
]

log = logging.getLogger(__name__)


@dataclass
class ShmConfig:
    """Sizes of the shared-memory path (env ``ENGRAM_SHM=0`` disables it)."""

    # array payloads (bytes, all arrays of one message) below this stay inline in ZeroMQ
    min_bytes: int = 64 * 1024
    slots: int = 16  # slots per ring (one ring per topic per publishing bus), at most
    # fewer slots (not under 4) for large payloads, so a ring stays near this size
    ring_target_bytes: int = 64 * 2**20
    readers: int = 32  # reader-table entries per ring (subscriptions reading it at once)
    # zero-copy messages one subscription may hold per ring; beyond it copies out
    pin_budget: int = 6
    max_ring_bytes: int = 512 * 2**20  # cap per ring; a larger payload goes inline
    max_rings: int = 32  # rings per publishing bus; further topics go inline
    stale_age_s: float = 5.0  # unlocked ring files older than this are swept as stale
    alive_check_s: float = 0.1  # how long the writer trusts "this reader is alive"
    reader_cache: int = 8  # rings one subscription keeps mapped (least recently used out)

    def __post_init__(self) -> None:
        if not 2 <= self.slots <= _MAX_SLOTS:
            raise ValueError(f"ShmConfig.slots must be in 2..{_MAX_SLOTS}, got {self.slots}")
        if self.readers < 1 or self.pin_budget < 0 or self.min_bytes < 1:
            raise ValueError(f"bad ShmConfig {self}")


# ---------------------------------------------------------------------------
# writer


class _WriterRing:
    def __init__(self, name: str, slots: int, slot_bytes: int, cfg: ShmConfig) -> None:
        self.name = name
        self.name_bytes = name.encode()  # (in every descriptor)
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.entry_words = _align(_E_PINS + slots, 8)
        entry_bytes = self.entry_words * 8
        self.table_off = _HEADER_BYTES
        self.data_off = _align(self.table_off + cfg.readers * entry_bytes, 4096)
        self.size = self.data_off + slots * slot_bytes
        self.readers = cfg.readers
        path = SHM_DIR / name
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _lock(fd, 0)  # held for our lifetime: the sweep's "writer alive" test
            os.posix_fallocate(fd, 0, self.size)  # ENOSPC now, not SIGBUS later
            self.mm = _map(fd, self.size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self.fd = fd
        words = np.frombuffer(self.mm, np.uint64)
        self.words = words
        self.bytes = np.frombuffer(self.mm, np.uint8)
        self.address = int(self.bytes.ctypes.data)  # where the mapping starts in our memory
        s0 = _STATES_OFF // 8
        self.states = words[s0 : s0 + 2 * slots].reshape(slots, 2)
        t0 = self.table_off // 8
        self.table = words[t0 : t0 + cfg.readers * self.entry_words].reshape(
            cfg.readers, self.entry_words
        )
        # the same words as Python ints: one index costs ~30 ns, a numpy scalar ~150 ns
        self.qw = memoryview(self.mm).cast("Q")
        self.s0, self.t0 = s0, t0
        words[1:9] = [
            _VERSION,
            slots,
            slot_bytes,
            cfg.readers,
            self.entry_words,
            self.table_off,
            self.data_off,
            os.getpid(),
        ]
        words[0] = _MAGIC  # last: a reader checks it
        self.seq = 0
        self.st = [0] * slots  # the slot states as written to the ring (only we write them)
        self.recent = list(range(slots))  # slots, the most recently written first
        self.entries, self.slot_numbers = range(cfg.readers), range(slots)
        self.alive_check_s = cfg.alive_check_s
        self.alive_until = [0.0] * cfg.readers  # per entry: trusted alive until (monotonic)

    def acquire(self, readers: int = 0) -> int | None:
        """A slot no reader needs, marked as being written; None when all are needed.
        ``readers``: how many subscriptions will be sent this message (0: not known).

        The table is read once per call (not once per slot). The warmest slot first: the
        most recently written one that every live reader has read (its cursor) and none
        holds a view of, still in this core's cache (a 640x480 copy into the slot written
        3-4 messages ago costs ~0.9x one into a slot written 16 ago, into the last one
        ~0.6x). A reader that keeps up, holding the message it works on, thus has the writer
        go round 3-4 slots. Otherwise the least recently written first (the most time
        before reuse), and always while fewer readers are in the table than subscriptions
        are sent the message: one that has not read its first message yet has no entry,
        and its first messages must not be overwritten under it."""
        slots, qw, s0, t0, ew = self.slots, self.qw, self.s0, self.t0, self.entry_words
        st = self.st  # (only this writer writes the states: our own copy, no read)
        flags = qw[t0 : t0 + self.readers * ew : ew].tolist()
        # (itertools.compress and ranges: C loops over the 32 entries and 16 slots)
        now, until = time.monotonic(), self.alive_until  # (trusted alive: no call each)
        live = [e for e in compress(self.entries, flags) if now < until[e] or self._alive(e)]
        floor = -1  # slots holding a seq above this are owed to an ``all`` reader
        held: set[int] = set()  # pinned by some live reader (a hint; see below)
        read = 0  # every live reader has read up to here (none: a reader may be coming)
        if live:
            # the small table is read into Python lists once: numpy calls on 16-slot arrays
            # cost more than the work (~20 -> ~6 us per call with a reader holding views)
            rows = [qw[t0 + e * ew : t0 + e * ew + _E_PINS + slots].tolist() for e in live]
            lossless = [row[_E_CURSOR] for row in rows if row[_E_FLAGS] & _F_LOSSLESS]
            if lossless:
                floor = min(lossless)
            if len(live) >= readers:  # (else a reader without an entry yet: no early reuse)
                read = min(row[_E_CURSOR] for row in rows)
            for row in rows:
                pins = row[_E_PINS : _E_PINS + slots]
                held.update(s for s in compress(self.slot_numbers, pins) if pins[s] == st[s])
        recent = self.recent  # slots, the most recently written first
        warm = -1
        for s in recent:  # the warmest slot read by all and held by none goes first
            old = st[s]
            if old <= read and s not in held:
                if not old & 1:
                    warm = s
                break
        # then the least recently written first
        for s in chain((warm,), reversed(recent)) if warm >= 0 else reversed(recent):
            old = st[s]
            if old and ((floor >= 0 and old > floor) or s in held):
                continue
            new = self.seq + 2
            qw[s0 + 2 * s] = new - 1  # odd: being written
            _fence()  # Dekker with the reader's pin (see the module docstring)
            if old and self._pinned(s, old):  # the authoritative check, after the fence
                qw[s0 + 2 * s] = old
                continue
            st[s] = new - 1
            recent.remove(s)
            recent.insert(0, s)
            self.seq = new
            return s
        return None

    def _pinned(self, s: int, old: int) -> bool:
        ew = self.entry_words
        at = self.t0 + _E_PINS + s
        column = self.qw[at : at + self.readers * ew : ew].tolist()  # read now, after the fence
        if old not in column:  # (the usual answer, from a C loop)
            return False
        return any(self._alive(e) for e, pin in enumerate(column) if pin == old)

    def _alive(self, e: int) -> bool:
        """Whether entry ``e``'s owner still holds its lock; clears it if not."""
        now = time.monotonic()
        if now < self.alive_until[e]:
            return True
        start = self.table_off + e * self.entry_words * 8
        if not _lock(self.fd, start):
            self.alive_until[e] = now + self.alive_check_s  # one syscall per entry per period
            return True
        try:
            self.table[e, :] = 0  # its owner died: release its pins and cursor
        finally:
            _lock(self.fd, start, unlock=True)
        return False

    def write(
        self,
        s: int,
        arrays: list[Any],
        lengths: list[int],
        offs: list[int],
        total: int,
        loan: _Loan | None,
    ) -> int:
        """Copy ``arrays`` (``lengths`` bytes each, at ``offs``: ``_offsets``) into slot
        ``s``; those already in place (built in ``loan``'s arrays) are skipped: returns how
        many bytes were."""
        base = self.data_off + s * self.slot_bytes
        in_place = 0
        mm = self.mm
        for i, (frame, off, n) in enumerate(zip(arrays, offs, lengths)):
            if n < 4096:  # small arrays (a pose, intrinsics): copied, cheaper than asking
                if n:  # numpy where they lie
                    mm[base + off : base + off + n] = frame
            elif loan is not None and _in_place(frame, loan, i, self.address + base + off):
                in_place += n  # built in the slot (a loan): not copied
            else:
                self.bytes[base + off : base + off + n] = np.frombuffer(frame, np.uint8)
        self.commit(s, self.seq, total)
        return in_place

    def commit(self, s: int, seq: int, total: int) -> None:
        at = self.s0 + 2 * s
        self.qw[at + 1] = total
        self.qw[at] = seq  # even: valid (x86 keeps stores in order)
        self.st[s] = seq

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self.qw.release()
        del self.words, self.bytes, self.states, self.table, self.qw
        try:
            self.mm.close()
        except BufferError:
            pass
        os.close(self.fd)


@dataclass
class _Loan:
    ring: _WriterRing
    slot: int
    seq: int  # the seq the slot gets when published
    arrays: list[np.ndarray]  # what ``loan`` handed out
    addresses: list[int]  # where each of them starts in this process's memory


def _in_place(frame: Any, loan: _Loan, i: int, address: int) -> bool:
    """Whether a codec frame (a message's array) lies at ``address``, in the slot.

    The common case, frame ``i`` is a view of all of loan array ``i``, is told from the
    objects: a C-contiguous view of ``arr`` (numpy points a view's ``base`` at ``arr``) as
    large as ``arr`` starts where ``arr`` starts. Asking numpy for the pointer
    (``ndarray.ctypes``) costs ~40 us with cold caches, as right after a camera filled its
    frame; anything else (a part of a loan array, another array) still asks it."""
    if type(frame) is memoryview and i < len(loan.arrays) and frame.c_contiguous:
        arr, obj = loan.arrays[i], frame.obj
        if (obj is arr or getattr(obj, "base", None) is arr) and frame.nbytes == arr.nbytes:
            return loan.addresses[i] == address
    return np.frombuffer(frame, np.uint8).ctypes.data == address


class ShmWriter:
    """Publisher side: ``wrap`` turns codec frames into ``[topic, descriptor, header]``."""

    def __init__(self, config: ShmConfig | None = None) -> None:
        self.config = config or ShmConfig()
        self._token = secrets.token_hex(6)
        self._rings: dict[str, _WriterRing] = {}
        self._generation = 0
        self._refused: set[str] = set()
        self.sent = 0  # messages whose payload went through shared memory
        self.inline = 0  # large messages sent inline (no free slot, or over a cap)
        self.loaned = 0  # messages whose arrays were built in their slot (``loan``)
        self.full = False  # the last ``wrap`` found every slot of its ring needed
        self._loans: dict[str, _Loan] = {}  # topic -> its slot lent out by ``loan``
        self._layouts: dict[Any, Any] = {}  # loan specs -> their layout (``_layout``)
        sweep_stale_rings(self.config.stale_age_s)

    def wrap(self, topic: str, frames: list[Any], readers: int = 0) -> list[Any] | None:
        """``[key, header, *arrays]`` -> ``[key, descriptor, header]``, or None (send inline).
        ``readers``: how many subscriptions will be sent it (0: not known; ``acquire``)."""
        arrays = frames[2:]
        loan = self._loans.pop(topic, None)
        self.full = False
        if not arrays:
            self._release(loan)
            return None
        lengths = [len(f) for f in arrays]  # (codec frames: bytes or byte-cast memoryviews)
        offs, total = _offsets(lengths)
        if total < self.config.min_bytes:
            self._release(loan)
            return None
        if (
            loan is not None
            and loan.ring is self._rings.get(topic)
            and loan.seq == loan.ring.seq  # (only this topic's wrap/loan use its ring)
            and total <= loan.ring.slot_bytes
        ):
            ring, slot, seq = loan.ring, loan.slot, loan.seq
            if ring.write(slot, arrays, lengths, offs, total, loan):  # built in the slot
                self.loaned += 1
            for arr in loan.arrays:
                arr.setflags(write=False)  # the slot is the readers' now
        else:
            self._release(loan)
            ring = self._ring(topic, total)
            slot = ring.acquire(readers) if ring is not None else None
            if ring is None or slot is None:
                self.inline += 1
                self.full = ring is not None
                return None
            ring.write(slot, arrays, lengths, offs, total, None)  # (none of it is in place)
            seq = ring.seq
        self.sent += 1
        return [frames[0], _descriptor(ring.name_bytes, slot, seq, lengths), frames[1]]

    def loan(
        self, topic: str, specs: Sequence[tuple[tuple[int, ...], Any]], readers: int = 0
    ) -> list[np.ndarray] | None:
        """Writable arrays (``(shape, dtype)`` each) laid out in a free slot of ``topic``'s
        ring, or None (too small, no free slot: the caller allocates normally).

        Build a message's first array fields in them (same order) and publish it: ``wrap``
        then copies nothing of them. Until then the slot is marked "being written" (no
        reader sees it, the writer does not reuse it); another ``loan`` or a publish of
        other arrays on the topic gives it back. After the publish the slot belongs to the
        readers, and once they are done to later messages: the arrays handed out are made
        read-only (views taken from them earlier are not). As with any zero-copy transport,
        do not write into a message, or keep reading it, after publishing it. ``readers``:
        how many subscriptions the message will be sent to (0: not known; ``acquire``)."""
        self._release(self._loans.pop(topic, None))
        layout = self._layout(specs)
        if layout is None:
            return None
        total, arrays_at = layout
        ring = self._ring(topic, total + 4096)  # room for the message's small arrays after
        slot = ring.acquire(readers) if ring is not None else None
        if ring is None or slot is None:
            return None
        base, mm = ring.data_off + slot * ring.slot_bytes, ring.mm
        arrays = [np.ndarray(shape, d, mm, base + o) for shape, d, o in arrays_at]
        addresses = [ring.address + base + o for _, _, o in arrays_at]
        self._loans[topic] = _Loan(ring, slot, ring.seq, arrays, addresses)
        return arrays

    def _layout(self, specs: Sequence[tuple[tuple[int, ...], Any]]) -> tuple[int, list] | None:
        """(slot bytes, [(shape, dtype, offset)]) of a loan's arrays, or None when they are
        too small for shared memory; remembered per distinct specs (a camera asks for the
        same every frame: ~3 us of dtype and size arithmetic each time otherwise)."""
        key: Any = specs  # ``ZmqBus.loan`` passes a tuple of (shape tuple, dtype): as is
        try:
            got = self._layouts.get(key)
        except TypeError:  # (a list, list shapes)
            got = None
        if got is None:
            try:
                key = tuple((tuple(shape), d) for shape, d in specs)
                got = self._layouts.get(key)
            except TypeError:  # (an unhashable dtype spec: worked out every time)
                key, got = None, None
        if got is not None:
            return got[0]
        dtypes = [np.dtype(d) for _, d in specs]
        shapes = [
            tuple(int(n) for n in (s if isinstance(s, (tuple, list)) else (s,))) for s, _ in specs
        ]
        lengths = [_count(shape) * d.itemsize for shape, d in zip(shapes, dtypes)]
        if any(n < 0 for shape in shapes for n in shape):
            raise ValueError(f"loan: negative dimension in {shapes}")
        offs, total = _offsets(lengths)
        out = None if total < self.config.min_bytes else (total, list(zip(shapes, dtypes, offs)))
        if key is not None:
            if len(self._layouts) >= 64:
                self._layouts.clear()
            self._layouts[key] = (out,)
        return out

    def _release(self, loan: _Loan | None) -> None:
        """Give back a loaned slot that was not published (the slot becomes free)."""
        if loan is not None and loan.ring in self._rings.values():
            at = loan.ring.s0 + 2 * loan.slot
            if loan.ring.qw[at] == loan.seq - 1:
                loan.ring.qw[at] = loan.ring.st[loan.slot] = 0

    def _ring(self, topic: str, total: int) -> _WriterRing | None:
        cfg = self.config
        ring = self._rings.get(topic)
        if ring is not None and ring.slot_bytes >= total:
            return ring
        # 64 KiB multiples; a growing payload gets 25% headroom so rings are not remade often
        need = total if ring is None else max(total, ring.slot_bytes * 5 // 4)
        slot_bytes = _align(need, 64 * 1024)
        if slot_bytes * 4 > cfg.max_ring_bytes:
            return None
        if ring is None and len(self._rings) >= cfg.max_rings:
            return None
        self._generation += 1
        name = f"{RING_PREFIX}{os.getpid()}.{self._token}.{self._generation}"
        slots = max(4, min(cfg.slots, cfg.ring_target_bytes // slot_bytes))
        try:
            new = _WriterRing(name, slots, slot_bytes, cfg)
        except OSError as exc:
            if topic not in self._refused:
                self._refused.add(topic)
                log.warning(
                    "shm: cannot create a %.1f MiB ring for %s in %s (%s); sending inline",
                    cfg.slots * slot_bytes / 2**20,
                    topic,
                    SHM_DIR,
                    exc,
                )
            return None
        if ring is not None:  # grew: readers still holding views keep their own mapping
            ring.close()
        self._rings[topic] = new
        return new

    def close(self) -> None:
        rings, self._rings = list(self._rings.values()), {}
        for ring in rings:
            ring.close()


# ---------------------------------------------------------------------------
# reader

#: id of a weak reference to a zero-copy view's root -> (the reference, ring, slot, seq) to
#: unpin when the root dies (by id: a weakref hashes as its referent, and arrays do not hash)
_PINNED: dict[int, tuple[weakref.ref, Any, int, int]] = {}


def _unpin(ref: weakref.ref) -> None:
    got = _PINNED.pop(id(ref), None)
    if got is not None:
        got[1].unpin(got[2], got[3])


class _ReaderRing:
    def __init__(self, name: str, cfg: ShmConfig) -> None:
        if not _NAME_RE.match(name):
            raise ShmError(f"shared-memory descriptor names a bad ring {name!r:.80}")
        self.name = name
        try:
            fd = os.open(SHM_DIR / name, os.O_RDWR)
        except FileNotFoundError:
            raise ShmDropped(f"ring {name} is gone (its publisher closed or grew it)") from None
        except OSError as exc:
            raise ShmError(f"cannot open shared-memory ring {name}: {exc}") from None
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                # payloads read from it are trusted as validated at their source: only a
                # ring of our own user that nobody else can write qualifies
                raise ShmError(f"ring {name} is not ours (uid {st.st_uid}, mode {st.st_mode:o})")
            size = st.st_size
            if size < _HEADER_BYTES:
                raise ShmError(f"ring {name} is truncated ({size} bytes)")
            self.mm = _map(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        words = np.frombuffer(self.mm, np.uint64)
        head = [int(w) for w in words[:9]]
        magic, version, slots, slot_bytes, readers, entry_words, table_off, data_off = head[:8]
        if magic != _MAGIC or version != _VERSION:
            self.close()
            raise ShmError(f"ring {name} has a bad header (magic/version)")
        if not (
            2 <= slots <= _MAX_SLOTS
            and entry_words >= _E_PINS + slots
            and table_off == _HEADER_BYTES
            and data_off >= table_off + readers * entry_words * 8
            and data_off + slots * slot_bytes == size
        ):
            self.close()
            raise ShmError(f"ring {name} has an inconsistent geometry")
        self.slots, self.slot_bytes, self.entry_words = slots, slot_bytes, entry_words
        self.table_off, self.data_off, self.readers = table_off, data_off, readers
        s0 = _STATES_OFF // 8
        self.states = words[s0 : s0 + 2 * slots].reshape(slots, 2)
        t0 = table_off // 8
        self.table = words[t0 : t0 + readers * entry_words].reshape(readers, entry_words)
        self.qw = memoryview(self.mm).cast("Q")  # the words as Python ints (cheaper to index)
        self.s0 = s0
        self.ro = memoryview(self.mm).toreadonly()
        self.entry = -1  # our reader-table entry (-1: none)
        self.entry_at = -1  # its first word in ``qw``
        self.next_claim = 0.0  # table full: when to try again (monotonic)
        self.pins = 0
        self.closing = False
        self.lock = threading.RLock()

    def claim(self, lossless: bool, cursor: int) -> None:
        now = time.monotonic()
        if now < self.next_claim:
            return
        self.next_claim = now + 1.0  # a full table is not rescanned for every message
        for e in range(self.readers):
            if _lock(self.fd, self.table_off + e * self.entry_words * 8):
                row = self.table[e]
                row[:] = 0  # a dead owner's leftovers
                row[_E_PID] = os.getpid()
                row[_E_CURSOR] = cursor
                row[_E_FLAGS] = _F_CLAIMED | (_F_LOSSLESS if lossless else 0)
                self.entry = e
                self.entry_at = self.table_off // 8 + e * self.entry_words
                return

    def unpin(self, s: int, seq: int) -> None:
        with self.lock:
            if self.entry >= 0 and self.qw[self.entry_at + _E_PINS + s] == seq:
                self.qw[self.entry_at + _E_PINS + s] = 0
                self.pins -= 1
            if self.closing and self.pins <= 0:
                self._release()

    def retire(self) -> None:
        """Stop owing anything to the writer; release once no view is held."""
        with self.lock:
            self.closing = True
            if self.entry >= 0:
                self.table[self.entry, _E_FLAGS] &= ~np.uint64(_F_LOSSLESS)
            if self.pins <= 0:
                self._release()

    def _release(self) -> None:
        if self.entry >= 0:
            self.table[self.entry, :] = 0
            _lock(self.fd, self.table_off + self.entry * self.entry_words * 8, unlock=True)
            self.entry = self.entry_at = -1
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the mapping (and views of it) stay valid
            self.fd = -1


class ShmReader:
    """Subscriber side: ``resolve([descriptor, header])`` -> ``[header, *array views]``.

    One per subscription (its receiver thread); ``lossless`` for ``all`` subscriptions.
    """

    def __init__(self, lossless: bool, config: ShmConfig | None = None) -> None:
        self.lossless = lossless
        self.config = config or ShmConfig()
        self._rings: dict[str, _ReaderRing] = {}
        self.zero_copy = 0  # messages handed out as views of shared memory
        self.copied = 0  # messages copied out (pin budget reached or no table entry)

    def frames(self, parts: list[Any]) -> list[Any]:
        """Codec frames of a received message: ``parts`` itself unless it is a descriptor."""
        return self.resolve(parts) if parts and is_descriptor(parts[0]) else parts

    def resolve(self, parts: list[Any]) -> list[Any]:
        """Raises ``ShmDropped`` when the slot was reused first, ``ShmError`` on bad input."""
        if len(parts) != 2:
            raise ShmError(f"shared-memory message has {len(parts)} frames after the topic, not 2")
        desc = memoryview(getattr(parts[0], "buffer", parts[0]))[len(DESCRIPTOR_MAGIC) :]
        name, s, seq, lengths = _parse_descriptor(desc)
        ring = self._ring(name)
        offs, total = _offsets(lengths)
        if not (0 <= s < ring.slots and seq > 0 and seq % 2 == 0 and total <= ring.slot_bytes):
            raise ShmError(f"shared-memory descriptor out of range for ring {name}")
        if ring.entry < 0 and not ring.closing:
            ring.claim(self.lossless, seq - 2)
        base = ring.data_off + s * ring.slot_bytes
        root = self._pinned_view(ring, s, seq, total, base)
        state = ring.s0 + 2 * s
        if root is None:  # copy out, validated by the seqlock
            if ring.qw[state] != seq:
                raise ShmDropped(f"slot {s} of {name} reused before it was read")
            root = np.frombuffer(ring.ro, np.uint8, count=total, offset=base).copy()
            if ring.qw[state] != seq:  # x86 keeps these loads after the copy's
                raise ShmDropped(f"slot {s} of {name} reused while it was copied")
            root.flags.writeable = False  # like a view: messages are shared, not edited
            self.copied += 1
        else:
            self.zero_copy += 1
        cursor = ring.entry_at + _E_CURSOR
        if ring.entry >= 0 and seq > ring.qw[cursor]:
            # read up to here: ``all`` readers are owed nothing older; and when every reader
            # has read the newest message its (cache-warm) slot may be taken again
            ring.qw[cursor] = seq
        # memoryview slices (views of root, which they keep alive): cheaper than numpy's,
        # above all with cold caches, and the codec wraps them in arrays anyway
        # numpy's stubs declare ndarray.__buffer__ only on Python >= 3.12
        whole = memoryview(root)  # pyright: ignore[reportArgumentType]
        return [parts[1], *(whole[o : o + n] for o, n in zip(offs, lengths))]

    def _pinned_view(
        self, ring: _ReaderRing, s: int, seq: int, total: int, base: int
    ) -> np.ndarray | None:
        qw = ring.qw
        with ring.lock:
            budget = min(self.config.pin_budget, ring.slots // 2)  # leave the writer slots
            pin = ring.entry_at + _E_PINS + s
            if ring.entry < 0 or ring.pins >= budget or qw[pin]:
                return None
            qw[pin] = seq
            ring.pins += 1
        _fence()  # Dekker with the writer's odd mark (see the module docstring)
        state = ring.s0 + 2 * s
        if qw[state] != seq or qw[state + 1] < total:
            ring.unpin(s, seq)
            raise ShmDropped(f"slot {s} of {ring.name} reused before it was read")
        root = np.frombuffer(ring.ro, np.uint8, count=total, offset=base)
        # unpinned when the last view of root is collected (views keep root alive); a plain
        # weakref in a module registry: weakref.finalize costs ~10x more per message
        ref = weakref.ref(root, _unpin)
        _PINNED[id(ref)] = (ref, ring, s, seq)
        return root

    def _ring(self, name: str) -> _ReaderRing:
        ring = self._rings.pop(name, None)
        if ring is None:
            ring = _ReaderRing(name, self.config)
            while len(self._rings) >= self.config.reader_cache:
                oldest = next(iter(self._rings))
                self._rings.pop(oldest).retire()
        self._rings[name] = ring  # most recently used last
        return ring

    def close(self) -> None:
        rings, self._rings = list(self._rings.values()), {}
        for ring in rings:
            ring.retire()
