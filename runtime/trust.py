"""Whether message validation scans payload values, or only shapes and dtypes.

A message is validated when it is built (``Message.__post_init__``). A check that reads
every value of a large array (``Frame``'s "no negative depth" over a 640x480 depth image,
~0.1-0.3 ms on this machine) is skipped while the codec rebuilds a message whose arrays are
views of a same-host shared-memory ring (``runtime/shm.py``): the publishing process ran the
same check when it built that message on those same bytes (a loaned array is filled before
the message is built), the arrays are read-only to readers and the ring file is mode 0600.
Shapes, dtypes and the small fields (intrinsics, poses) are still checked on every receipt;
inline payloads (tcp: possibly another host) are still scanned.
"""

from __future__ import annotations

import threading

__all__ = ["scan_values", "set_trusted"]

_STATE = threading.local()


def scan_values() -> bool:
    """False while this thread decodes a message whose payload was validated at its source."""
    return not getattr(_STATE, "trusted", False)


def set_trusted(on: bool) -> None:
    """Mark (or unmark) this thread as decoding a payload validated at its source."""
    _STATE.trusted = on
