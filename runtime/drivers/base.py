"""What the drivers share: ``SourceError`` and a publish-rate meter."""

from __future__ import annotations

import collections
import time

__all__ = ["RateMeter", "SourceError"]


class SourceError(RuntimeError):
    """A camera or microphone cannot be opened; the message lists what is available."""


class RateMeter:
    """Events per second over a sliding window of ``tick()`` times (0 after 2 s of silence)."""

    def __init__(self, window: int = 30) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=window)

    def tick(self) -> None:
        self._times.append(time.monotonic())

    @property
    def hz(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        if time.monotonic() - self._times[-1] > 2.0 or span <= 0:
            return 0.0
        return (len(self._times) - 1) / span
