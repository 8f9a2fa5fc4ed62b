"""Voice activity: Silero speech probability, streamed, and the ``SpeechSegmenter`` that cuts
a live stream into utterances (Silero) and non-speech sound events (the energy detector).

``SileroVad`` runs the Silero VAD v6 ONNX model that faster-whisper ships inside its package
(``faster_whisper/assets/silero_vad_v6.onnx``; onnxruntime, no torch) one 32 ms window
(512 samples at 16 kHz, with the previous window's last 64 samples as context) at a time,
carrying the LSTM state across calls, so a stream pushed in any chunk sizes gives the same
probabilities as the whole file at once. faster-whisper's own ``get_speech_timestamps`` only
takes a whole recording, hence this streaming wrapper.

``SpeechSegmenter.push(samples, stamp_ns)`` (16 kHz mono float32) returns the
``AudioSegment``\\ s that closed:

- ``kind="speech"``: a window with P(speech) >= ``threshold`` opens an utterance; it closes
  when P stays below ``neg_threshold`` for ``min_silence_ms`` (so pauses of 0.5 s and more
  split utterances), at the end of the last speech window. Shorter than ``min_speech_ms``:
  dropped. Longer than ``max_segment_s``: cut there (the piece has ``final=False``, the next
  one starts at the cut). ``audio`` is the utterance plus ``speech_pad_ms`` on each side.
- ``kind="sound"``: regions of the energy detector (``engram.perception.audio``) that Silero
  did not call speech (less than half of them overlaps an utterance): bells, kettles,
  phones, knocks, with their label, onset, peak frequency and spectral embedding.

``open_utterance()`` is the utterance being spoken (start, audio so far) for partial
transcripts; ``pending_close()`` the final audio of an utterance whose trailing silence has
begun (decoded early, used if no speech comes back); ``flush()`` closes everything at the end of a stream. Times follow the stream
clock of the chunk stamps, as in the energy detector (a jump of more than ``resync_ms``
restarts it).
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field

import numpy as np

from engram.perception.audio import (
    SAMPLE_RATE_HZ,
    AudioSegment,
    AudioSegmenter,
    SegmenterConfig,
)

__all__ = ["SileroConfig", "SileroVad", "SpeechSegmenter", "silero_probabilities"]

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous window the model sees


class SileroVad:
    """Streaming Silero VAD: ``push(samples)`` -> P(speech) of each completed 32 ms window."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model  # cached: one ONNX session per process

        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        n = len(x) // WINDOW
        self._pending = x[n * WINDOW :].copy()
        if n == 0:
            return np.zeros(0, np.float32)
        blocks = x[: n * WINDOW].reshape(n, WINDOW)
        prev = np.concatenate([self._context[None], blocks[:-1, -_CONTEXT:]], axis=0)
        batch = np.ascontiguousarray(np.concatenate([prev, blocks], axis=1))
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = blocks[-1, -_CONTEXT:].copy()
        return np.asarray(out, np.float32).reshape(-1)


def silero_probabilities(audio: np.ndarray) -> np.ndarray:
    """P(speech) per 32 ms window of a whole (N,) float32 16 kHz recording."""
    return SileroVad().push(audio)


@dataclass
class SileroConfig:
    """Settings of ``SpeechSegmenter`` (16 kHz, 32 ms Silero windows)."""

    # P(speech) that opens an utterance, [0, 1]
    threshold: float = 0.5
    # P(speech) below which a window counts as silence inside an utterance, [0, 1]
    neg_threshold: float = 0.35
    # silence that ends an utterance, milliseconds (pauses of 0.5 s and more split)
    min_silence_ms: float = 400.0
    # utterances shorter than this are dropped, milliseconds
    min_speech_ms: float = 250.0
    # audio kept before / after an utterance for the recognizer, milliseconds
    speech_pad_ms: float = 200.0
    # longer utterances are cut into pieces of at most this, seconds (whisper's window: 30 s)
    max_segment_s: float = 20.0
    # report non-speech sound events (the energy detector, ``energy``)
    sound_events: bool = True
    # settings of the energy detector that finds the sound events
    energy: SegmenterConfig = field(default_factory=SegmenterConfig)
    # a jump in chunk stamps larger than this restarts the stream clock, milliseconds
    resync_ms: float = 200.0

    def __post_init__(self) -> None:
        if isinstance(self.energy, dict):
            self.energy = SegmenterConfig(**self.energy)
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError(
                "SileroConfig: need 0 < neg_threshold <= threshold < 1, got "
                f"{self.neg_threshold}, {self.threshold}"
            )
        if not self.max_segment_s > 1.0:
            raise ValueError(f"SileroConfig.max_segment_s must be > 1, got {self.max_segment_s}")


class SpeechSegmenter:
    """Utterances (Silero) and sound events (energy detector) from a stream; module doc."""

    def __init__(self, config: SileroConfig | None = None) -> None:
        self.config = cfg = config or SileroConfig()
        self.vad = SileroVad()
        self.energy = AudioSegmenter(cfg.energy) if cfg.sound_events else None
        self._silence_w = max(1, math.ceil(cfg.min_silence_ms * SAMPLE_RATE_HZ / 1000 / WINDOW))
        self._min_speech = int(cfg.min_speech_ms * SAMPLE_RATE_HZ / 1000)
        self._pad = int(cfg.speech_pad_ms * SAMPLE_RATE_HZ / 1000)
        self._max_len = int(cfg.max_segment_s * SAMPLE_RATE_HZ)
        # recent utterance spans (start, end) in stream samples, to keep speech out of events
        self._spans: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        self._origin_ns: int | None = None
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=4096)
        self._reset_stream()

    def _reset_stream(self) -> None:
        self.vad.reset()
        self._n_in = 0  # samples received since the clock origin
        self._n_win = 0  # Silero windows analysed
        self._buf = np.zeros(0, np.float32)  # samples from _buf_start on
        self._buf_start = 0
        self._start: int | None = None  # open utterance: first sample
        self._last_speech = 0  # end sample of its last speech window
        self._quiet = 0  # consecutive silent windows
        self._spans.clear()
        self._arrivals.clear()
        self.probabilities: collections.deque[float] = collections.deque(maxlen=512)

    # ---- public ------------------------------------------------------------------------
    def push(self, samples: np.ndarray, stamp_ns: int) -> list[AudioSegment]:
        x = np.asarray(samples, np.float32).reshape(-1)
        out: list[AudioSegment] = []
        if self._origin_ns is None:
            self._origin_ns = int(stamp_ns)
        elif abs(int(stamp_ns) - self._time_ns(self._n_in)) > self.config.resync_ms * 1e6:
            out.extend(self.flush())
            self._reset_stream()
            self._origin_ns = int(stamp_ns)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        self._arrivals.append((self._n_in, time.monotonic()))
        for p in self.vad.push(x):
            out.extend(self._step(float(p)))
        self._trim()
        if self.energy is not None:
            out.extend(self._events(self.energy.push(x, stamp_ns)))
        return out

    def flush(self) -> list[AudioSegment]:
        """End of stream: close the open utterance and the energy detector's open region."""
        out: list[AudioSegment] = []
        if self._start is not None:
            seg = self._close(self._last_speech, final=True)
            if seg is not None:
                out.append(seg)
        if self.energy is not None:
            out.extend(self._events(self.energy.flush()))
        return out

    def open_utterance(self) -> tuple[int, int, np.ndarray] | None:
        """(start_ns, end_ns, audio) of the utterance being spoken, or None."""
        if self._start is None:
            return None
        s0 = max(self._start - self._pad, self._buf_start)
        audio = self._buf[s0 - self._buf_start : self._n_in - self._buf_start].copy()
        return self._time_ns(self._start), self._time_ns(self._n_in), audio

    def quiet_ms(self) -> float:
        """Silence since the open utterance's last speech window, ms (0: none open / speaking)."""
        return 0.0 if self._start is None else self._quiet * WINDOW * 1000 / SAMPLE_RATE_HZ

    def pending_close(self) -> tuple[int, int, np.ndarray] | None:
        """(start_ns, end_ns, audio) the open utterance will close with if no speech comes back,
        once its trailing pad of silence has arrived (``speech_pad_ms``), else None: the audio
        is then exactly the final ``AudioSegment``'s, so it can be decoded before the
        ``min_silence_ms`` that closes the utterance have passed."""
        if self._start is None or self._quiet == 0 or self._n_in < self._last_speech + self._pad:
            return None
        start, end = self._start, self._last_speech
        if end - start < self._min_speech:
            return None
        s0 = max(start - self._pad, self._buf_start)
        audio = self._buf[s0 - self._buf_start : end + self._pad - self._buf_start].copy()
        return self._time_ns(start), self._time_ns(end), audio

    # ---- internals ---------------------------------------------------------------------
    def _time_ns(self, sample: int) -> int:
        assert self._origin_ns is not None
        return self._origin_ns + round(sample * 1e9 / SAMPLE_RATE_HZ)

    def _heard_at(self, sample: int) -> float:
        """Wall (monotonic) time at which stream sample ``sample`` arrived."""
        for n, t in self._arrivals:
            if n >= sample:
                return t
        return time.monotonic()

    def _step(self, p: float) -> list[AudioSegment]:
        cfg = self.config
        w0 = self._n_win * WINDOW
        self._n_win += 1
        w1 = w0 + WINDOW
        self.probabilities.append(p)
        out: list[AudioSegment] = []
        if self._start is None:
            if p >= cfg.threshold:
                self._start, self._last_speech, self._quiet = w0, w1, 0
            return out
        if p >= cfg.neg_threshold:
            self._last_speech, self._quiet = w1, 0
        else:
            self._quiet += 1
            if self._quiet >= self._silence_w:
                seg = self._close(self._last_speech, final=True)
                return [seg] if seg is not None else []
        if w1 - self._start >= self._max_len:
            seg = self._close(w1, final=False)
            self._start, self._last_speech, self._quiet = w1, w1, 0  # goes on from the cut
            if seg is not None:
                out.append(seg)
        return out

    def _close(self, end: int, *, final: bool) -> AudioSegment | None:
        start = self._start
        assert start is not None
        self._start = None
        self._quiet = 0
        if end - start < self._min_speech and final:
            return None
        self._spans.append((start, end))
        s0 = max(start - self._pad, self._buf_start)
        s1 = min(end + self._pad, self._n_in)
        audio = self._buf[s0 - self._buf_start : s1 - self._buf_start].copy()
        speech = self._buf[max(start, self._buf_start) - self._buf_start : end - self._buf_start]
        energy = 10 * math.log10(float(np.mean(speech.astype(np.float64) ** 2)) + 1e-12)
        return AudioSegment(
            kind="speech",
            start_ns=self._time_ns(start),
            end_ns=self._time_ns(end),
            audio=audio,
            energy_db=energy if len(speech) else -120.0,
            peak_hz=0.0,
            embedding=np.zeros(0, np.float32),
            tonality=0.0,
            flatness=0.0,
            final=final,
            heard_at_s=self._heard_at(end),
        )

    def _trim(self) -> None:
        keep = (self._start if self._start is not None else self._n_in) - self._pad
        keep = max(keep, self._buf_start)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :]
            self._buf_start = keep

    def _events(self, segments: list[AudioSegment]) -> list[AudioSegment]:
        """Energy regions Silero did not call speech become sound events."""
        out = []
        spans = list(self._spans)
        if self._start is not None:
            spans.append((self._start, self._n_in))
        for seg in segments:
            a = round((seg.start_ns - self._time_ns(0)) * SAMPLE_RATE_HZ / 1e9)
            b = round((seg.end_ns - self._time_ns(0)) * SAMPLE_RATE_HZ / 1e9)
            overlap = sum(max(0, min(b, e) - max(a, s)) for s, e in spans)
            if overlap > 0.5 * max(b - a, 1):
                continue  # speech: the recognizer gets it through Silero
            if seg.kind == "speech":  # speech-like to the energy detector, not to Silero
                seg.kind, seg.label = "sound", seg.label or "other"
            out.append(seg)
        return out
