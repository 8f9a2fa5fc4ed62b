"""Ring-file layout and small helpers of the shared-memory transport (``runtime/shm.py``).

Split out of ``runtime/shm.py`` (file size): the constants of the ring file and the
descriptor, the OFD locks, the memory barrier, the sweep of dead writers' rings. The writer
and reader (``ShmWriter``, ``ShmReader``) and the design are documented there.
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
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.codec import DecodeError

__all__ = [
    "DESCRIPTOR_MAGIC",
    "RING_PREFIX",
    "SHM_DIR",
    "ShmDropped",
    "ShmError",
    "empty_arrays",
    "is_descriptor",
    "shm_supported",
    "sweep_stale_rings",
]

log = logging.getLogger("engram.runtime.shm")


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
    """Where each array starts in a slot (``_ALIGN``-aligned), and the bytes they take."""
    offs, at = [], 0
    for n in lengths:
        offs.append(at)
        at = -(-(at + n) // _ALIGN) * _ALIGN  # (``_align`` inline: once per array per frame)
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
