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

Ring file layout (little-endian u64 words)::

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

import errno
import fcntl
import logging
import math
import mmap
import os
import platform
import re
import secrets
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.codec import DecodeError

__all__ = [
    "DESCRIPTOR_MAGIC",
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

SHM_DIR = Path("/dev/shm")
RING_PREFIX = "engram-shm."
DESCRIPTOR_MAGIC = b"EGSH\x02"  # then _DESC: name length, arrays, slot, seq; name; lengths
_DESC = struct.Struct("<BBIQ")  # fixed fields (a struct: msgpack + type checks cost ~4 us)
_LENGTHS: dict[int, struct.Struct] = {}  # array count -> its u64 lengths
_NAME_RE = re.compile(r"^engram-shm\.\d+\.[0-9a-f]{12}\.\d+$")
_MAGIC = int.from_bytes(b"EGRSHM01", "little")
_VERSION = 1
_HEADER_BYTES = 4096
_STATES_OFF = 256  # byte offset of the (state, nbytes) pairs in the header
_MAX_SLOTS = 64  # (4096 - 256) / 16 would allow 240; 64 keeps the table small
_ALIGN = 64  # each array starts on a cache line inside a slot
_MAX_ARRAYS = 64  # array frames one message may have (the codec's own limit)
_F_CLAIMED, _F_LOSSLESS = 1, 2
_E_FLAGS, _E_CURSOR, _E_PID, _E_PINS = 0, 1, 2, 4  # words of a reader entry
_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64 (l_type, l_whence, l_start, l_len, l_pid)


def _env_enabled() -> bool:
    return os.environ.get("ENGRAM_SHM", "1").strip().lower() not in ("0", "false", "no", "off")


def shm_supported() -> bool:
    """True where shared-memory payloads can be used (Linux x86-64 with /dev/shm, not off)."""
    return (
        _env_enabled()
        and platform.machine().lower() in ("x86_64", "amd64")
        and hasattr(fcntl, "F_OFD_SETLK")
        and SHM_DIR.is_dir()
        and os.access(SHM_DIR, os.W_OK)
    )


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


class ShmError(DecodeError):
    """A descriptor or ring that cannot be read (bad name, foreign or damaged file)."""


class ShmDropped(Exception):
    """The slot was overwritten before this reader got to it (a drop, like a full queue)."""


def is_descriptor(frame: Any) -> bool:
    """Whether a received frame is a shared-memory descriptor (not a codec header)."""
    buf = getattr(frame, "buffer", frame)
    try:
        return memoryview(buf)[: len(DESCRIPTOR_MAGIC)].tobytes() == DESCRIPTOR_MAGIC
    except TypeError:
        return False


# ---------------------------------------------------------------------------
# small helpers


def empty_arrays(specs: Any) -> list[np.ndarray]:
    """Plain arrays for ``(shape, dtype)`` specs (a loan where shared memory is not used)."""
    return [np.empty(shape, dtype) for shape, dtype in specs]


_FENCE = threading.Lock()


def _fence() -> None:
    """Full memory barrier on x86-64 (a locked RMW inside the mutex); see the docstring."""
    _FENCE.acquire()
    _FENCE.release()


def _lock(fd: int, start: int, *, unlock: bool = False) -> bool:
    """Try (without waiting) to take or drop an OFD write lock on byte ``start``."""
    kind = fcntl.F_UNLCK if unlock else fcntl.F_WRLCK
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, start, 1, 0))
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _align(n: int, a: int = _ALIGN) -> int:
    return -(-n // a) * a


def _offsets(lengths: list[int]) -> tuple[list[int], int]:
    offs, at = [], 0
    for n in lengths:
        offs.append(at)
        at = _align(at + n)
    return offs, at


def _count(shape: Any) -> int:
    """Elements of an array ``shape`` (``math.prod``: np.prod costs ~3 us a call)."""
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    return math.prod(int(d) for d in dims)


def _lengths_struct(n: int) -> struct.Struct:
    got = _LENGTHS.get(n)
    if got is None:
        got = _LENGTHS[n] = struct.Struct(f"<{n}Q")
    return got


def _descriptor(name: bytes, slot: int, seq: int, lengths: list[int]) -> bytes:
    """``DESCRIPTOR_MAGIC`` + where a message's arrays lie (``ShmReader.resolve`` reads it)."""
    n = len(lengths)
    return b"".join(
        (
            DESCRIPTOR_MAGIC,
            _DESC.pack(len(name), n, slot, seq),
            name,
            _lengths_struct(n).pack(*lengths),
        )
    )


def _parse_descriptor(desc: memoryview) -> tuple[str, int, int, list[int]]:
    """(ring name, slot, seq, array lengths) of a descriptor after its magic."""
    if len(desc) < _DESC.size:
        raise ShmError(f"bad shared-memory descriptor ({len(desc)} bytes)")
    name_len, n, slot, seq = _DESC.unpack_from(desc)
    at = _DESC.size + name_len
    if n > _MAX_ARRAYS or len(desc) != at + 8 * n:
        raise ShmError(f"bad shared-memory descriptor ({len(desc)} bytes, {n} arrays)")
    try:
        name = desc[_DESC.size : at].tobytes().decode("ascii")
    except UnicodeDecodeError:
        raise ShmError("bad shared-memory descriptor (ring name)") from None
    return name, slot, seq, list(_lengths_struct(n).unpack_from(desc, at))


def _nbytes(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


def _map(fd: int, size: int) -> mmap.mmap:
    """Map a ring with its page tables filled now (no page faults on the first frames)."""
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, size, flags=flags)


def sweep_stale_rings(min_age_s: float = 5.0, directory: Path = SHM_DIR) -> int:
    """Unlink ring files whose writer is gone (no lock on byte 0); returns how many."""
    removed = 0
    now = time.time()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(RING_PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = directory / name
        try:
            if now - path.stat().st_mtime < min_age_s:
                continue  # may be a ring whose writer has not locked it yet
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            if _lock(fd, 0):
                path.unlink(missing_ok=True)
                removed += 1
                _lock(fd, 0, unlock=True)
        except OSError:
            pass
        finally:
            os.close(fd)
    if removed:
        log.info("shm: removed %d stale ring file(s) of dead processes from %s", removed, directory)
    return removed


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
        self.next = 0
        self.alive_check_s = cfg.alive_check_s
        self.alive_until = [0.0] * cfg.readers  # per entry: trusted alive until (monotonic)

    def acquire(self) -> int | None:
        """A slot no reader needs, marked as being written; None when all are needed.

        The table is read once per call (not once per slot). When every live
        reader has read the previous message and holds no view of it, its slot is taken
        again: it is still in this core's cache (a 640x480 copy into a cold slot costs ~2x
        a warm one). Otherwise the slots go round (the most time before reuse)."""
        new = self.seq + 2
        slots = self.slots
        states = self.states[:, 0]
        # the small table is read into Python lists once: numpy calls on 16-slot arrays cost
        # more than the work (~20 -> ~6 us per call with a reader holding views)
        st = states.tolist()  # (only this writer writes the states)
        flags = self.table[:, _E_FLAGS].tolist()
        live = [e for e, f in enumerate(flags) if f and self._alive(e)]
        floor = -1  # slots holding a seq above this are owed to an ``all`` reader
        held: set[int] = set()  # pinned by some live reader (a hint; see below)
        order = [(self.next + i) % slots for i in range(slots)]
        if live:
            rows = self.table[live].tolist()
            lossless = [row[_E_CURSOR] for row in rows if row[_E_FLAGS] & _F_LOSSLESS]
            if lossless:
                floor = min(lossless)
            for row in rows:
                pins = row[_E_PINS : _E_PINS + slots]
                held.update(s for s, pin in enumerate(pins) if pin and pin == st[s])
            last = (self.next - 1) % slots
            if (
                self.seq
                and st[last] == self.seq
                and min(row[_E_CURSOR] for row in rows) >= self.seq
                and last not in held
            ):
                order.insert(0, last)
        for s in order:
            old = st[s]
            if old and ((floor >= 0 and old > floor) or s in held):
                continue
            states[s] = new - 1  # odd: being written
            _fence()  # Dekker with the reader's pin (see the module docstring)
            if old and self._pinned(s, old):  # the authoritative check, after the fence
                states[s] = old
                continue
            self.next = s + 1
            self.seq = new
            return s
        return None

    def _pinned(self, s: int, old: int) -> bool:
        column = self.table[:, _E_PINS + s].tolist()  # read now, after the fence
        return any(pin == old and self._alive(e) for e, pin in enumerate(column))

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

    def write(self, s: int, arrays: list[Any], lengths: list[int]) -> int:
        """Copy ``arrays`` into slot ``s``; those already in place (loaned) are skipped:
        returns how many bytes were."""
        offs, total = _offsets(lengths)
        base = self.data_off + s * self.slot_bytes
        in_place = 0
        for frame, off, n in zip(arrays, offs, lengths):
            if n:
                src = np.frombuffer(frame, np.uint8)
                # small arrays (a pose, intrinsics) are copied: cheaper than asking numpy
                # where they lie (~3 us)
                if n >= 4096 and src.ctypes.data == self.address + base + off:
                    in_place += n
                else:
                    self.bytes[base + off : base + off + n] = src
        self.commit(s, self.seq, total)
        return in_place

    def commit(self, s: int, seq: int, total: int) -> None:
        self.states[s, 1] = total
        self.states[s, 0] = seq  # even: valid (x86 keeps stores in order)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        del self.words, self.bytes, self.states, self.table
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
        sweep_stale_rings(self.config.stale_age_s)

    def wrap(self, topic: str, frames: list[Any]) -> list[Any] | None:
        """``[key, header, *arrays]`` -> ``[key, descriptor, header]``, or None (send inline)."""
        arrays = frames[2:]
        loan = self._loans.pop(topic, None)
        self.full = False
        if not arrays:
            self._release(loan)
            return None
        lengths = [_nbytes(f) for f in arrays]
        _, total = _offsets(lengths)
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
            if ring.write(slot, arrays, lengths):  # arrays built in the slot: not copied
                self.loaned += 1
            for arr in loan.arrays:
                arr.flags.writeable = False  # the slot is the readers' now
        else:
            self._release(loan)
            ring = self._ring(topic, total)
            slot = ring.acquire() if ring is not None else None
            if ring is None or slot is None:
                self.inline += 1
                self.full = ring is not None
                return None
            ring.write(slot, arrays, lengths)
            seq = ring.seq
        self.sent += 1
        return [frames[0], _descriptor(ring.name_bytes, slot, seq, lengths), frames[1]]

    def loan(self, topic: str, specs: list[tuple[tuple[int, ...], Any]]) -> list[np.ndarray] | None:
        """Writable arrays (``(shape, dtype)`` each) laid out in a free slot of ``topic``'s
        ring, or None (too small, no free slot: the caller allocates normally).

        Build a message's first array fields in them (same order) and publish it: ``wrap``
        then copies nothing of them. Until then the slot is marked "being written" (no
        reader sees it, the writer does not reuse it); another ``loan`` or a publish of
        other arrays on the topic gives it back. After the publish the slot belongs to the
        readers, and once they are done to later messages: the arrays handed out are made
        read-only (views taken from them earlier are not). As with any zero-copy transport,
        do not write into a message, or keep reading it, after publishing it."""
        self._release(self._loans.pop(topic, None))
        dtypes = [np.dtype(d) for _, d in specs]
        lengths = [_count(shape) * d.itemsize for (shape, _), d in zip(specs, dtypes)]
        offs, total = _offsets(lengths)
        if total < self.config.min_bytes:
            return None
        ring = self._ring(topic, total + 4096)  # room for the message's small arrays after
        slot = ring.acquire() if ring is not None else None
        if ring is None or slot is None:
            return None
        base = ring.data_off + slot * ring.slot_bytes
        arrays = [
            np.frombuffer(ring.mm, d, count=n // d.itemsize, offset=base + o).reshape(shape)
            for (shape, _), d, o, n in zip(specs, dtypes, offs, lengths)
        ]
        self._loans[topic] = _Loan(ring, slot, ring.seq, arrays)
        return arrays

    def _release(self, loan: _Loan | None) -> None:
        """Give back a loaned slot that was not published (the slot becomes free)."""
        if loan is not None and loan.ring in self._rings.values():
            if int(loan.ring.states[loan.slot, 0]) == loan.seq - 1:
                loan.ring.states[loan.slot, 0] = 0

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
        self.ro = memoryview(self.mm).toreadonly()
        self.entry = -1  # our reader-table entry (-1: none)
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
                return

    def unpin(self, s: int, seq: int) -> None:
        with self.lock:
            if self.entry >= 0 and int(self.table[self.entry, _E_PINS + s]) == seq:
                self.table[self.entry, _E_PINS + s] = 0
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
            self.entry = -1
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
        if root is None:  # copy out, validated by the seqlock
            if int(ring.states[s, 0]) != seq:
                raise ShmDropped(f"slot {s} of {name} reused before it was read")
            root = np.frombuffer(ring.ro, np.uint8, count=total, offset=base).copy()
            if int(ring.states[s, 0]) != seq:  # x86 keeps these loads after the copy's
                raise ShmDropped(f"slot {s} of {name} reused while it was copied")
            root.flags.writeable = False  # like a view: messages are shared, not edited
            self.copied += 1
        else:
            self.zero_copy += 1
        if ring.entry >= 0 and seq > int(ring.table[ring.entry, _E_CURSOR]):
            # read up to here: ``all`` readers are owed nothing older; and when every reader
            # has read the newest message its (cache-warm) slot may be taken again
            ring.table[ring.entry, _E_CURSOR] = seq
        return [parts[1], *(root[o : o + n] for o, n in zip(offs, lengths))]

    def _pinned_view(
        self, ring: _ReaderRing, s: int, seq: int, total: int, base: int
    ) -> np.ndarray | None:
        with ring.lock:
            e = ring.entry
            budget = min(self.config.pin_budget, ring.slots // 2)  # leave the writer slots
            if e < 0 or ring.pins >= budget or ring.table[e, _E_PINS + s]:
                return None
            ring.table[e, _E_PINS + s] = seq
            ring.pins += 1
        _fence()  # Dekker with the writer's odd mark (see the module docstring)
        if int(ring.states[s, 0]) != seq or int(ring.states[s, 1]) < total:
            ring.unpin(s, seq)
            raise ShmDropped(f"slot {s} of {ring.name} reused before it was read")
        root = np.frombuffer(ring.ro, np.uint8, count=total, offset=base)
        weakref.finalize(root, ring.unpin, s, seq)  # views of root keep it alive
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
