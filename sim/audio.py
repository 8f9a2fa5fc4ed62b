"""Scene audio: synthesised sounds tied to places, heard at a moving microphone.

A ``SoundSource`` is a labelled sound (``SOUNDS``: doorbell, kettle, phone)
playing from a world position between ``start_s`` and ``start_s + duration_s``.
``SceneAudio.chunk(t0_s, n, mic_pos)`` mixes what the microphone hears:
each active source's waveform scaled by ``level / max(1, distance)`` and by
``wall_gain`` when a wall or furniture blocks the straight path (the caller
passes ``occluded(source_pos, mic_pos) -> bool``), plus a little seeded noise.
Output: (n,) float32 in [-1, 1] at ``sample_rate_hz`` (16 kHz mono).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["SOUNDS", "SceneAudio", "SoundSource", "synthesise"]


def _doorbell(t: np.ndarray) -> np.ndarray:
    """Ding-dong every 1.4 s: 660 Hz then 523 Hz, each decaying."""
    phase = np.mod(t, 1.4)
    first = phase < 0.6
    f = np.where(first, 660.0, 523.0)
    local = np.where(first, phase, phase - 0.6)
    env = np.exp(-4.0 * local)
    return 0.8 * env * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t))


def _kettle(t: np.ndarray) -> np.ndarray:
    """Whistle near 2 kHz with a 6 Hz vibrato."""
    inst = 2000.0 * t + (40.0 / (2 * np.pi * 6.0)) * np.sin(2 * np.pi * 6.0 * t)
    return 0.6 * np.sin(2 * np.pi * inst) * np.minimum(1.0, t / 0.3)


def _phone(t: np.ndarray) -> np.ndarray:
    """Ring: 950/1400 Hz alternating at 20 Hz, 0.4 s on, 0.2 s off, twice, then a pause."""
    cadence = np.mod(t, 2.0)
    on = (cadence < 0.4) | ((cadence > 0.6) & (cadence < 1.0))
    f = np.where(np.mod(t * 20.0, 1.0) < 0.5, 950.0, 1400.0)
    return 0.6 * on * np.sin(2 * np.pi * f * t)


#: sound label -> waveform of time since the sound started, (n,) -> (n,) in [-1, 1]
SOUNDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "doorbell": _doorbell,
    "kettle": _kettle,
    "phone": _phone,
}


def synthesise(label: str, t_s: np.ndarray) -> np.ndarray:
    """Waveform of sound ``label`` at times ``t_s`` (n,) seconds since its start."""
    try:
        fn = SOUNDS[label]
    except KeyError:
        raise KeyError(f"unknown sound {label!r}; known: {', '.join(SOUNDS)}") from None
    return fn(np.asarray(t_s, np.float64)).astype(np.float32)


@dataclass
class SoundSource:
    """A sound playing at a place."""

    label: str  # key of SOUNDS
    position_m: np.ndarray  # (3,) world position
    start_s: float  # simulation time it starts
    duration_s: float  # how long it plays
    room: str = ""  # room it is in (ground truth)
    level: float = 0.5  # amplitude at 1 m


class SceneAudio:
    """Mixes the active sources as heard at the microphone. See module docstring."""

    def __init__(
        self,
        *,
        sample_rate_hz: int = 16000,
        noise_level: float = 0.002,
        wall_gain: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.noise_level = noise_level
        self.wall_gain = wall_gain
        self.sources: list[SoundSource] = []
        self._rng = np.random.default_rng(seed)

    def add(self, source: SoundSource) -> None:
        if source.label not in SOUNDS:
            raise KeyError(f"unknown sound {source.label!r}; known: {', '.join(SOUNDS)}")
        self.sources.append(source)

    def active(self, t_s: float) -> list[SoundSource]:
        return [s for s in self.sources if s.start_s <= t_s < s.start_s + s.duration_s]

    def chunk(
        self,
        t0_s: float,
        n: int,
        mic_pos: np.ndarray,
        occluded: Callable[[np.ndarray, np.ndarray], bool] | None = None,
    ) -> np.ndarray:
        """(n,) float32 samples starting at simulation time ``t0_s``."""
        t = t0_s + np.arange(n) / self.sample_rate_hz
        out = self.noise_level * self._rng.standard_normal(n)
        t1 = t0_s + n / self.sample_rate_hz
        for s in self.sources:
            if s.start_s >= t1 or s.start_s + s.duration_s <= t0_s:
                continue
            live = (t >= s.start_s) & (t < s.start_s + s.duration_s)
            dist = float(np.linalg.norm(np.asarray(s.position_m) - mic_pos))
            gain = s.level / max(1.0, dist)
            if occluded is not None and occluded(np.asarray(s.position_m), mic_pos):
                gain *= self.wall_gain
            out[live] += gain * synthesise(s.label, t[live] - s.start_s)
        return np.clip(out, -1.0, 1.0).astype(np.float32)
