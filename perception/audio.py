"""Audio basics and the energy detector: 16 kHz mono, voice activity by energy, and
non-speech sound events.

``to_mono_16k`` converts any (N, C) / (N,) audio to (M,) float32 mono at 16 kHz.

``AudioSegmenter`` (streaming, numpy only) is the *energy* detector. Speech is found by
Silero (``engram.perception.speech.vad``, the default); this detector remains for sound
events (bells, kettles, phones), which Silero does not report, and as the measured peer
in ``bench/audio.py``:

1. 20 ms frames, energy in dBFS against a noise floor; a frame is active when it is
   ``margin_db`` above the floor and above ``min_energy_db``. The floor is the lowest
   100 ms mean energy over the last ``noise_window_s`` (minimum statistics: it follows a
   background that gets louder or quieter within that window, active or not, and a
   single very quiet frame cannot pin it; digital silence counts as -90 dBFS).
   Active frames open a region;
   ``hangover_ms`` of inactivity closes it at its last active frame. Regions longer than
   ``max_segment_s`` are cut, and the next piece starts ``overlap_s`` before the cut
   (pieces carry ``final=False``).
2. Each closed region is classified from its spectrum: *tonal* (the strongest peak
   holds >= ``tonality_threshold`` of the energy, or its frequency stays within
   ``stable_pitch_semitones``) or *noisy* (spectral flatness >= ``flatness_threshold``)
   regions are sound events; the rest is speech (>= ``min_speech_ms``). Sound events
   carry onset/end, peak energy, peak frequency and a spectral embedding (log mel band
   profile, L2-normalised, ``embedding_bands``-d).

Times: ``start_ns``/``end_ns`` are the first/last active frame, from the stream clock
(the first chunk's ``stamp_ns`` plus samples counted since; a jump of more than
``resync_ms`` in chunk stamps closes open regions and restarts the clock).

Before this floor (issue 13) the floor followed the quietest single frame and rose only
on frames already judged inactive, so a background above about -50 dBFS was "speech"
for ever and pauses never split.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from engram.perception.encoders import l2_normalize

__all__ = [
    "SAMPLE_RATE_HZ",
    "AudioSegment",
    "AudioSegmenter",
    "SegmenterConfig",
    "detect_segments",
    "to_mono_16k",
]

SAMPLE_RATE_HZ = 16000
_FRAME = 320  # samples per analysis frame (20 ms at 16 kHz)
_NFFT = 512
_DIGITAL_SILENCE_DB = -90.0  # quieter frames count as this in the noise floor, dBFS


def to_mono_16k(pcm: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """(N, C) or (N,) float audio at any rate -> (M,) float32 mono at 16 kHz."""
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"pcm: expected (N,) or (N, C), got shape {x.shape}")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    if sample_rate_hz == SAMPLE_RATE_HZ or len(x) == 0:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(int(sample_rate_hz), SAMPLE_RATE_HZ)
    return resample_poly(x, SAMPLE_RATE_HZ // g, int(sample_rate_hz) // g).astype(np.float32)


# ---------------------------------------------------------------------------
# segmentation


@dataclass
class SegmenterConfig:
    """Settings of ``AudioSegmenter`` (16 kHz, 20 ms frames)."""

    # frames quieter than this are never active, dB relative to full scale
    min_energy_db: float = -50.0
    # a frame is active when this far above the noise floor, dB
    margin_db: float = 12.0
    # the noise floor is the lowest 100 ms mean energy over this much recent audio, seconds
    noise_window_s: float = 3.0
    # inactivity that closes a region, milliseconds
    hangover_ms: float = 300.0
    # speech regions shorter than this are dropped, milliseconds
    min_speech_ms: float = 150.0
    # sound-event regions shorter than this are dropped, milliseconds
    min_event_ms: float = 40.0
    # long regions are cut into pieces of at most this, seconds (whisper's window is 30 s)
    max_segment_s: float = 20.0
    # consecutive pieces of a cut region overlap by this, seconds
    overlap_s: float = 1.0
    # audio kept before/after a speech region for recognition, milliseconds
    pad_ms: float = 150.0
    # median energy share of the strongest spectral peak (+-2 bins) making a region tonal
    tonality_threshold: float = 0.65
    # a region whose peak frequency varies less than this (std, semitones) is tonal
    stable_pitch_semitones: float = 1.0
    # median spectral flatness making a region noise-like (not speech), [0, 1]
    flatness_threshold: float = 0.3
    # size of the sound-event spectral embedding (mel bands)
    embedding_bands: int = 32
    # a jump in chunk stamps larger than this restarts the stream clock, milliseconds
    resync_ms: float = 200.0


@dataclass
class AudioSegment:
    """One closed region of activity."""

    kind: str  # "speech" or "sound"
    start_ns: int  # first active frame
    end_ns: int  # end of the last active frame
    audio: np.ndarray  # (M,) float32 16 kHz, the region plus pad_ms on each side
    energy_db: float  # loudest frame, dBFS
    peak_hz: float  # frequency of the strongest peak of the mean spectrum
    embedding: np.ndarray  # (embedding_bands,) float32 unit log-mel profile
    tonality: float  # median peak energy share
    flatness: float  # median spectral flatness
    label: str = ""  # sound events: "tone", "noise" or "impulse"
    final: bool = True  # False for a piece of a longer region cut at max_segment_s
    heard_at_s: float = 0.0  # time.monotonic() when the region's last sample arrived (0: unknown)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _mel_filterbank(n_bands: int, sr: int = SAMPLE_RATE_HZ, n_fft: int = _NFFT) -> np.ndarray:
    """(n_bands, n_fft // 2 + 1) triangular mel filters, 60 Hz .. sr / 2."""

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(60.0), hz_to_mel(sr / 2), n_bands + 2)
    edges = mel_to_hz(mels)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


@dataclass
class _Features:
    """Per-frame features of F frames."""

    energy_db: np.ndarray  # (F,)
    power: np.ndarray  # (F, 257) power spectra
    peak_bin: np.ndarray  # (F,)
    tonality: np.ndarray  # (F,)
    flatness: np.ndarray  # (F,)


_WINDOW = np.hanning(_FRAME).astype(np.float32)


def _frame_features(frames: np.ndarray) -> _Features:
    """(F, 320) float32 -> per-frame features (vectorised over frames)."""
    energy_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    power = np.abs(np.fft.rfft(frames * _WINDOW, _NFFT, axis=1)) ** 2  # (F, 257)
    band = power[:, 2:]  # drop DC and < 60 Hz
    peak = band.argmax(axis=1) + 2
    idx = np.clip(peak[:, None] + np.arange(-2, 3)[None], 0, power.shape[1] - 1)
    total = power.sum(axis=1) + 1e-20
    tonality = np.take_along_axis(power, idx, axis=1).sum(axis=1) / total
    flatness = np.exp(np.mean(np.log(band + 1e-20), axis=1)) / (band.mean(axis=1) + 1e-20)
    return _Features(energy_db, power.astype(np.float32), peak, tonality, flatness)


class AudioSegmenter:
    """Streaming voice-activity and sound-event segmentation; see the module docstring.

    ``push(samples, stamp_ns)`` takes (M,) float32 16 kHz mono and returns the
    segments that closed; ``flush()`` closes the open one. Memory is bounded by
    ``max_segment_s`` plus pads.
    """

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        cfg = self.config
        if cfg.overlap_s >= cfg.max_segment_s:
            raise ValueError(
                f"SegmenterConfig.overlap_s ({cfg.overlap_s}) must be < max_segment_s "
                f"({cfg.max_segment_s})"
            )
        self._mel = _mel_filterbank(cfg.embedding_bands)
        self._hang = round(cfg.hangover_ms / 20.0)
        self._pad = int(cfg.pad_ms * SAMPLE_RATE_HZ / 1000)
        self._max_frames = max(1, int(cfg.max_segment_s * 50))
        self._overlap_frames = int(cfg.overlap_s * 50)
        if not cfg.noise_window_s > 0.1:
            raise ValueError(
                f"SegmenterConfig.noise_window_s must be > 0.1, got {cfg.noise_window_s}"
            )
        self.noise_floor_db = -120.0
        self._recent_power: collections.deque[float] = collections.deque(maxlen=5)  # 100 ms
        # (frame index, 100 ms mean power) with increasing power: the running minimum
        self._floor_q: collections.deque[tuple[int, float]] = collections.deque()
        self._window_frames = max(5, round(cfg.noise_window_s * 50))
        self._origin_ns: int | None = None  # stamp of absolute sample 0
        self._n_in = 0  # absolute samples received
        self._buf = np.zeros(0, np.float32)  # samples from absolute index _buf_start
        self._buf_start = 0
        self._next_frame = 0  # absolute frame index to analyse next
        self._region_start: int | None = None  # frame index
        self._last_active = -1  # frame index
        self._region_parts: list[tuple[_Features, np.ndarray]] = []  # (features, active)
        self._cut_at = -1  # frame where the open region's previous piece was cut

    # ---- public --------------------------------------------------------------------
    def push(self, samples: np.ndarray, stamp_ns: int) -> list[AudioSegment]:
        """Feed (M,) float32 16 kHz samples whose first sample was captured at stamp_ns."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        out: list[AudioSegment] = []
        if self._origin_ns is None:
            self._origin_ns = int(stamp_ns)
        else:
            expected = self._time_ns(self._n_in)
            if abs(int(stamp_ns) - expected) > self.config.resync_ms * 1e6:
                out.extend(self.flush())
                self._restart(int(stamp_ns))
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        out.extend(self._analyse())
        return out

    def flush(self) -> list[AudioSegment]:
        """Close the open region (end of stream)."""
        out: list[AudioSegment] = []
        if self._region_start is not None:
            seg = self._close(self._last_active, covered=self._next_frame - 1, final=True)
            if seg is not None:
                out.append(seg)
        return out

    # ---- internals -----------------------------------------------------------------
    def _restart(self, stamp_ns: int) -> None:
        # the background is still the same: keep the floor, counted from the new frame 0
        shift = self._next_frame
        self._floor_q = collections.deque((f - shift, p) for f, p in self._floor_q)
        self._origin_ns = stamp_ns
        self._n_in = 0
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0
        self._next_frame = 0
        self._region_start = None
        self._last_active = -1
        self._region_parts = []
        self._cut_at = -1

    def _time_ns(self, sample_index: int) -> int:
        assert self._origin_ns is not None
        return self._origin_ns + round(sample_index * 1e9 / SAMPLE_RATE_HZ)

    def _analyse(self) -> list[AudioSegment]:
        cfg = self.config
        n_frames = (self._n_in // _FRAME) - self._next_frame
        out: list[AudioSegment] = []
        if n_frames <= 0:
            return out
        first = self._next_frame * _FRAME - self._buf_start
        frames = self._buf[first : first + n_frames * _FRAME].reshape(n_frames, _FRAME)
        feats = _frame_features(frames)
        # Noise floor and activity, frame by frame (cheap scalar recurrence).
        active = np.zeros(n_frames, bool)
        base = self._next_frame
        q, recent = self._floor_q, self._recent_power
        for i, e in enumerate(feats.energy_db):
            # a frame is judged against the floor of the frames before it
            floor = 10.0 * math.log10(q[0][1] + 1e-12) if q else self.noise_floor_db
            active[i] = e > max(cfg.min_energy_db, floor + cfg.margin_db)
            # zeros (padding, a muted input) count as a -90 dBFS background, not -120
            recent.append(10.0 ** (max(float(e), _DIGITAL_SILENCE_DB) / 10.0))
            p = sum(recent) / len(recent)
            while q and q[-1][1] >= p:
                q.pop()
            q.append((base + i, p))
            while q[0][0] <= base + i - self._window_frames:
                q.popleft()
        if q:
            self.noise_floor_db = max(10.0 * math.log10(q[0][1] + 1e-12), -120.0)
        lo = 0  # first frame of this push that belongs to the open region
        for i in range(n_frames):
            f = base + i
            if self._region_start is None:
                if not active[i]:
                    continue
                self._region_start = f
                self._region_parts = []
                lo = i
            prev_last = self._last_active
            if active[i]:
                self._last_active = f
            if f - self._last_active >= self._hang:
                self._region_parts.append((_slice_feats(feats, lo, i + 1), active[lo : i + 1]))
                seg = self._close(self._last_active, covered=f, final=True)
                if seg is not None:
                    out.append(seg)
            elif (
                active[i]
                and f - prev_last > 1
                and (prev_last - self._region_start + 1 >= self._max_frames - self._hang)
            ):
                # a long region: cut in the pause that just ended
                self._region_parts.append((_slice_feats(feats, lo, i), active[lo:i]))
                seg = self._close(prev_last, covered=f - 1, final=False)
                if seg is not None:
                    out.append(seg)
                lo = i
            elif active[i] and f - self._region_start + 1 >= self._max_frames:
                # no pause in time: cut mid-speech
                self._region_parts.append((_slice_feats(feats, lo, i + 1), active[lo : i + 1]))
                seg = self._close(f, covered=f, final=False)
                if seg is not None:
                    out.append(seg)
                lo = i + 1
        if self._region_start is not None and n_frames > lo:
            self._region_parts.append((_slice_feats(feats, lo, n_frames), active[lo:n_frames]))
        self._next_frame += n_frames
        self._trim_buffer()
        return out

    def _trim_buffer(self) -> None:
        """Keep only the samples an open region (or the next one's pad) may need."""
        if self._region_start is not None:
            keep_from = self._region_start * _FRAME - self._pad
        else:
            keep_from = self._next_frame * _FRAME - self._pad
        keep_from = max(keep_from, self._buf_start)
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from

    def _close(self, last_frame: int, *, covered: int, final: bool) -> AudioSegment | None:
        """End the open region at ``last_frame`` (inclusive); its parts cover frames up to
        ``covered``. ``final=False`` cuts a long region: a new one continues from
        ``overlap_s`` before the cut (and is dropped if nothing new is heard)."""
        cfg = self.config
        start_f = self._region_start
        assert start_f is not None
        feats = _cat_feats([p[0] for p in self._region_parts])
        active = (
            np.concatenate([p[1] for p in self._region_parts])
            if self._region_parts
            else np.zeros(0, bool)
        )
        cut_before = self._cut_at
        if final:
            self._region_start = None
            self._region_parts = []
            self._cut_at = -1
            if last_frame <= cut_before:
                return None  # only the overlap of the previous piece: nothing new
        else:
            new_start = max(start_f, last_frame + 1 - self._overlap_frames)
            keep = min(covered - new_start + 1, len(active))
            self._region_start = covered + 1 - keep
            tail = len(active) - keep
            self._region_parts = [(_slice_feats(feats, tail), active[tail:])]
            self._cut_at = last_frame
        n_region = last_frame - start_f + 1
        if n_region <= 0 or len(active) == 0:
            return None
        act = active[:n_region]
        if not np.any(act):
            return None
        sel = _slice_feats(feats, 0, n_region)
        a_idx = np.nonzero(act)[0]
        tonality = float(np.median(sel.tonality[a_idx]))
        flatness = float(np.median(sel.flatness[a_idx]))
        peak_hz_frames = sel.peak_bin[a_idx] * SAMPLE_RATE_HZ / _NFFT
        pitch_std = float(np.std(12.0 * np.log2(peak_hz_frames)))
        duration_ms = n_region * 20.0
        tonal = tonality >= cfg.tonality_threshold or (
            len(a_idx) >= 3 and pitch_std <= cfg.stable_pitch_semitones
        )
        noisy = flatness >= cfg.flatness_threshold
        kind = "sound" if (tonal or noisy) else "speech"
        if kind == "speech" and duration_ms < cfg.min_speech_ms and final:
            # too short for speech: keep it as a short sound (an impulse), if long enough
            kind = "sound"
        if kind == "sound" and duration_ms < cfg.min_event_ms:
            return None
        label = ""
        if kind == "sound":
            label = "tone" if tonal else ("impulse" if duration_ms < 250 else "noise")
        mean_power = sel.power[a_idx].mean(axis=0)
        peak_hz = float((mean_power[2:].argmax() + 2) * SAMPLE_RATE_HZ / _NFFT)
        bands = np.log(self._mel @ mean_power + 1e-10)
        embedding = l2_normalize(bands - bands.mean())
        s0 = start_f * _FRAME - self._pad
        s1 = (last_frame + 1) * _FRAME + self._pad
        lo = max(s0, self._buf_start) - self._buf_start
        hi = min(s1, self._buf_start + len(self._buf)) - self._buf_start
        audio = self._buf[lo:hi].copy()
        return AudioSegment(
            kind=kind,
            start_ns=self._time_ns(start_f * _FRAME),
            end_ns=self._time_ns((last_frame + 1) * _FRAME),
            audio=audio,
            energy_db=float(sel.energy_db[a_idx].max()),
            peak_hz=peak_hz,
            embedding=embedding,
            tonality=tonality,
            flatness=flatness,
            label=label,
            final=final,
        )


def _slice_feats(f: _Features, lo: int, hi: int | None = None) -> _Features:
    s = slice(lo, hi)
    return _Features(f.energy_db[s], f.power[s], f.peak_bin[s], f.tonality[s], f.flatness[s])


def _cat_feats(parts: list[_Features]) -> _Features:
    if not parts:
        return _Features(
            np.zeros(0), np.zeros((0, _NFFT // 2 + 1), np.float32), np.zeros(0, int), np.zeros(0),
            np.zeros(0),
        )  # fmt: skip
    if len(parts) == 1:
        return parts[0]
    return _Features(*(np.concatenate([getattr(p, k) for p in parts]) for k in (
        "energy_db", "power", "peak_bin", "tonality", "flatness")))  # fmt: skip


def detect_segments(
    audio: np.ndarray,
    *,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    stamp_ns: int = 0,
    config: SegmenterConfig | None = None,
    chunk_s: float = 0.1,
) -> list[AudioSegment]:
    """Offline helper: run the streaming segmenter over a whole recording in chunks."""
    x = to_mono_16k(audio, sample_rate_hz)
    seg = AudioSegmenter(config)
    step = max(1, int(chunk_s * SAMPLE_RATE_HZ))
    out: list[AudioSegment] = []
    for i in range(0, len(x), step):
        out.extend(seg.push(x[i : i + step], stamp_ns + round(i * 1e9 / SAMPLE_RATE_HZ)))
    out.extend(seg.flush())
    return out
