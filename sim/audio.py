"""Scene audio: synthesised sounds tied to places, heard at a moving microphone.

A ``SoundSource`` is a labelled sound (``SOUNDS``: doorbell, kettle, phone)
playing from a world position between ``start_s`` and ``start_s + duration_s``.
``SceneAudio.chunk(t0_s, n, mic_pos)`` mixes what the microphone hears:
each active source's waveform scaled by ``level / max(1, distance)`` and by
``wall_gain`` when a wall or furniture blocks the straight path (the caller
passes ``occluded(source_pos, mic_pos) -> bool``), plus a little seeded noise.
Output: (n,) float32 in [-1, 1] at ``sample_rate_hz`` (16 kHz mono).

Speech: a ``SoundSource`` with label ``"speech"`` plays its ``waveform`` (16 kHz samples,
e.g. ``speak("The keys are ...")``: espeak-ng, peak-normalised) instead of a synthesised
sound; ``SceneAudio(noise_level=...)`` is the noise floor it is mixed over.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["SOUNDS", "SceneAudio", "SoundSource", "speak", "synthesise"]


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


@functools.lru_cache(maxsize=64)
def _speak_cached(text: str, voice: str, wpm: int, gap_10ms: int) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(
            "spoken sounds need espeak-ng, which is not installed (apt-get install espeak-ng)"
        )
    with tempfile.NamedTemporaryFile(suffix=".wav") as fh:
        cmd = [exe, "-v", voice, "-s", str(wpm), "-g", str(gap_10ms), "-w", fh.name, text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        x, sr = sf.read(fh.name, dtype="float32")
    if x.ndim == 2:
        x = x.mean(axis=1)
    g = int(np.gcd(int(sr), 16000))
    x = resample_poly(x, 16000 // g, int(sr) // g).astype(np.float32)
    loud = np.nonzero(np.abs(x) > 1e-3 * np.abs(x).max())[0]
    x = x[loud[0] : loud[-1] + 1]
    out = (x / np.abs(x).max()).astype(np.float32)
    out.setflags(write=False)
    return out


def speak(text: str, voice: str = "en-us", wpm: int = 150, gap_10ms: int = 0) -> np.ndarray:
    """``text`` spoken by espeak-ng (``voice``, ``wpm`` words per minute, ``gap_10ms`` x 10 ms
    between words): (n,) float32 at 16 kHz, peak 1 (cached)."""
    return _speak_cached(str(text), str(voice), int(wpm), int(gap_10ms))


@dataclass
class SoundSource:
    """A sound playing at a place."""

    label: str  # key of SOUNDS
    position_m: np.ndarray  # (3,) world position
    start_s: float  # simulation time it starts
    duration_s: float  # how long it plays
    room: str = ""  # room it is in (ground truth)
    level: float = 0.5  # amplitude at 1 m
    waveform: np.ndarray | None = None  # label "speech": the 16 kHz samples it plays
    text: str = ""  # label "speech": what is said (ground truth)


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
        if source.label == "speech":
            if source.waveform is None:
                raise ValueError("a speech SoundSource needs its waveform (see speak())")
            self.sources.append(source)
            return
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
            if s.waveform is not None:
                idx = np.round((t[live] - s.start_s) * self.sample_rate_hz).astype(int)
                idx = idx[idx < len(s.waveform)]
                out[np.nonzero(live)[0][: len(idx)]] += gain * s.waveform[idx]
            else:
                out[live] += gain * synthesise(s.label, t[live] - s.start_s)
        return np.clip(out, -1.0, 1.0).astype(np.float32)
