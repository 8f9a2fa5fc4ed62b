"""Streaming speech: audio chunks in, partial and final ``Utterance``\\ s and sound events out.

``SpeechStream`` joins a segmenter (``SpeechSegmenter``: Silero utterances + energy-detector
sound events, the default; or ``detector="energy"``: the energy detector alone) and a
``Recognizer`` (faster-whisper tiny.en by default):

- ``push(pcm, sample_rate_hz, stamp_ns)`` (any thread): segments; sound events go to
  ``on_sound`` at once; closed utterances go to a bounded queue (``max_queue``, oldest
  dropped and counted) served by one recognizer worker thread (``start()``), or decoded
  in the caller's thread when the stream is not started (offline use, ``transcribe_audio``).
- Finals: each closed utterance is decoded; text that is empty, has confidence below
  ``min_confidence`` or looks like no speech (``no_speech_prob`` above
  ``no_speech_threshold`` with mean log-prob below -1, whisper's own rule) is **not**
  published (counted as ``rejected``). Words carry absolute times (ns, stream clock).
- Partials: while an utterance is open and the worker is idle, every
  ``partial_interval_s`` of new speech the audio so far is decoded (greedy, without word
  times unless ``partial_words``) and published with ``final=False`` and the utterance's
  ``utterance_id`` (the final one replaces it). No partial starts once the detector hears
  silence (unless ``partial_during_pause``): a partial decode would delay the final; and
  on a slow or busy machine partials space out (``partial_backoff`` x the last one's
  decode time of new speech between them), so they do not keep the worker busy.
- Early finals (``early_final``, Silero): once the trailing ``speech_pad_ms`` of silence
  after an utterance has arrived, the worker decodes the audio the final will have
  (``SpeechSegmenter.pending_close``) while the detector still waits out
  ``min_silence_ms``; when the utterance then closes with that audio the result is used
  (counted ``early_finals``), if speech came back it is discarded (``early_discarded``).
- ``flush()``: end of stream: the open utterance is closed and decoded (a file's last
  sentence is transcribed when the file ends, not when the program stops).
- Latency: for each final, ``time.monotonic()`` at publication minus the time the
  utterance's last speech sample arrived (``AudioSegment.heard_at_s``); p50 / p95 over the
  last ``latency_window`` finals in ``stats()`` (``end_to_final_ms``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.perception.audio import (
    SAMPLE_RATE_HZ,
    AudioSegment,
    AudioSegmenter,
    SegmenterConfig,
    to_mono_16k,
)
from engram.perception.speech.recognizers import (
    AsrResult,
    Recognizer,
    RecognizerConfig,
    make_recognizer,
)
from engram.perception.speech.vad import SileroConfig, SpeechSegmenter

__all__ = ["SpeechConfig", "SpeechStream", "Utterance", "transcribe_audio"]

log = logging.getLogger(__name__)

DETECTORS = ("silero", "energy")


@dataclass
class SpeechConfig:
    """Settings of ``SpeechStream``."""

    # speech detector: "silero" (default) or "energy" (the energy detector alone)
    detector: str = "silero"
    # Silero segmentation (and the energy detector's sound events, silero.energy)
    silero: SileroConfig = field(default_factory=SileroConfig)
    # the energy detector's settings when detector="energy"
    energy: SegmenterConfig = field(default_factory=SegmenterConfig)
    # the recognizer: model name / path, backend, device, beam
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    # finals below this confidence (exp(mean log-prob) x P(speech)) are not published, [0, 1]
    min_confidence: float = 0.2
    # P(no speech) above which text with mean log-prob < -1 is dropped (whisper's rule)
    no_speech_threshold: float = 0.6
    # decode the open utterance every this much new speech, seconds (0 = no partials)
    partial_interval_s: float = 1.0
    # partials also while a pause has begun (the previous behaviour): a partial decode then
    # in progress delays the final; False = no partial once the detector hears silence
    partial_during_pause: bool = False
    # word times on partials too (an extra alignment pass per partial); finals always have them
    partial_words: bool = False
    # beam width of partials (1 = greedy, fast; finals use the recognizer's beam_size)
    partial_beam_size: int = 1
    # a partial waits for at least this many times the last partial's decode time of new
    # speech (a slow or busy machine decodes fewer partials, which would delay finals); 0 = off
    partial_backoff: float = 3.0
    # decode an utterance's final audio as soon as its trailing pad of silence has arrived
    # (SpeechSegmenter.pending_close), before min_silence_ms close it; used when no speech
    # came back (the same audio, so the same text), discarded otherwise
    early_final: bool = True
    # closed utterances waiting for the recognizer; beyond it the oldest is dropped
    max_queue: int = 8
    # finals kept for the latency percentiles
    latency_window: int = 256

    def __post_init__(self) -> None:
        for name, cls in (
            ("silero", SileroConfig),
            ("energy", SegmenterConfig),
            ("recognizer", RecognizerConfig),
        ):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        if self.detector not in DETECTORS:
            raise ValueError(
                f"SpeechConfig.detector must be one of {DETECTORS}, got {self.detector!r}"
            )
        if self.max_queue < 1:
            raise ValueError(f"SpeechConfig.max_queue must be >= 1, got {self.max_queue}")


@dataclass
class Utterance:
    """A transcript of one utterance (``final``) or of the part spoken so far (partial)."""

    utterance_id: int
    final: bool
    text: str
    start_ns: int
    end_ns: int
    language: str
    confidence: float
    # [{"word", "start_ns", "end_ns", "probability"}], absolute stream times
    words: list[dict[str, Any]]
    # whisper's segments: [{"t0_s", "t1_s", "text", "confidence"}], seconds from start_ns
    segments: list[dict[str, Any]]
    latency_s: float = 0.0  # finals: end of speech heard -> published, seconds


class SpeechStream:
    """Segmenter + recognizer worker; see the module docstring."""

    def __init__(
        self,
        config: SpeechConfig | None = None,
        *,
        on_utterance: Callable[[Utterance], None] | None = None,
        on_sound: Callable[[AudioSegment], None] | None = None,
        recognizer: Recognizer | None = None,
    ) -> None:
        self.config = cfg = config or SpeechConfig()
        # resolve the model now: a wrong name or format fails before anything runs
        self.recognizer = recognizer or make_recognizer(cfg.recognizer)
        self.on_utterance = on_utterance
        self.on_sound = on_sound
        self.segmenter: SpeechSegmenter | AudioSegmenter = (
            SpeechSegmenter(cfg.silero) if cfg.detector == "silero" else AudioSegmenter(cfg.energy)
        )
        self.counters: dict[str, int] = collections.Counter()
        self._latency: collections.deque[float] = collections.deque(maxlen=cfg.latency_window)
        self._queue: collections.deque[tuple[int, AudioSegment]] = collections.deque()
        self._cond = threading.Condition()
        self._seg_lock = threading.Lock()
        self._busy = 0
        self._next_id = 1
        self._open_id = 0  # id of the utterance being spoken (0 = none)
        self._partial_at = 0  # open-utterance samples decoded by the last partial
        # early final: ((start_ns, end_ns, samples), result) of the last pending_close decoded
        self._early: tuple[tuple[int, int, int], AsrResult] | None = None
        self._early_cpu = 0.0
        self._partial_wall_s = 0.0  # wall time of the last partial decode
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # (stamp_ns just after a pushed chunk, time.monotonic() it arrived): when was a
        # sample heard (latency of the energy detector's segments, which carry no time)
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=2048)
        self.decode_cpu_s: collections.deque[float] = collections.deque(maxlen=cfg.latency_window)

    # ---- lifecycle ---------------------------------------------------------------------
    def load(self) -> None:
        self.recognizer.load()

    def start(self) -> None:
        """Decode in a worker thread (otherwise ``push``/``flush`` decode in the caller)."""
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._worker, name="speech:asr", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    # ---- input -------------------------------------------------------------------------
    def push(self, pcm: np.ndarray, sample_rate_hz: int, stamp_ns: int) -> None:
        mono = to_mono_16k(pcm, sample_rate_hz)
        now = time.monotonic()
        with self._seg_lock:
            self._arrivals.append((stamp_ns + round(len(mono) * 1e9 / SAMPLE_RATE_HZ), now))
            segments = self.segmenter.push(mono, stamp_ns)
            if isinstance(self.segmenter, SpeechSegmenter) and self._open_id == 0:
                if self.segmenter.open_utterance() is not None:
                    self._open_id = self._take_id()
                    self._partial_at = 0
        self._route(segments)
        if self._thread is None:
            self._drain()
        elif self.config.early_final:
            with self._cond:
                self._cond.notify_all()  # the worker may decode a pending close at once

    def end_stream(self) -> None:
        """End of stream: close the open utterance and queue it (does not wait)."""
        with self._seg_lock:
            segments = self.segmenter.flush()
        self._route(segments)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """End of stream: close the open utterance, wait until every utterance is decoded."""
        self.end_stream()
        if self._thread is None:
            self._drain()
            return True
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> dict[str, Any]:
        lat = sorted(self._latency)
        pct = {}
        if lat:
            pct = {
                "p50": round(1000 * lat[len(lat) // 2], 1),
                "p95": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
                "n": len(lat),
            }
        return {
            "counters": dict(self.counters),
            "queue_len": len(self._queue),
            "end_to_final_ms": pct,
            "recognizer": self.recognizer.describe(),
            "detector": self.config.detector,
        }

    # ---- internals ---------------------------------------------------------------------
    def _take_id(self) -> int:
        uid = self._next_id
        self._next_id += 1
        return uid

    def _route(self, segments: list[AudioSegment]) -> None:
        for seg in segments:
            if seg.kind == "sound":
                self.counters["sound_events"] += 1
                if self.on_sound is not None:
                    self.on_sound(seg)
                continue
            self.counters["speech_segments"] += 1
            with self._seg_lock:
                uid = self._open_id or self._take_id()
                self._open_id = 0
                if not seg.final:  # a long utterance was cut: the rest is a new one
                    self._open_id = self._take_id()
                self._partial_at = 0
            with self._cond:
                if len(self._queue) >= self.config.max_queue:
                    self._queue.popleft()
                    self.counters["speech_dropped"] += 1
                self._queue.append((uid, seg))
                self._cond.notify_all()

    def _drain(self) -> None:
        while self._queue:
            uid, seg = self._queue.popleft()
            self._final(uid, seg)

    def _worker(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self._cond.wait(0.05)
                if not self._queue:
                    job = None
                else:
                    job = self._queue.popleft()
                    self._busy += 1
            try:
                if job is not None:
                    self._final(*job)
                elif not self.poll_early_final():
                    self.poll_partial()
            except Exception:  # noqa: BLE001 - counted, logged, the worker keeps running
                self.counters["errors"] += 1
                log.error("speech: recognition failed:\n%s", traceback.format_exc())
            finally:
                if job is not None:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()

    def poll_early_final(self) -> bool:
        """Decode the open utterance's final audio once its trailing silence has begun
        (``SpeechSegmenter.pending_close``; the worker calls this when idle); True if done."""
        if not self.config.early_final or not isinstance(self.segmenter, SpeechSegmenter):
            return False
        with self._seg_lock:
            pending = self.segmenter.pending_close()
        if pending is None:
            return False
        start_ns, end_ns, audio = pending
        key = (start_ns, end_ns, len(audio))
        if self._early is not None and self._early[0] == key:
            return False
        cpu0 = time.process_time()
        (result,) = self.recognizer.transcribe([audio])
        self._early_cpu = time.process_time() - cpu0
        if self._early is not None:
            self.counters["early_discarded"] += 1  # speech came back after the last one
        self._early = (key, result)
        return True

    def poll_partial(self) -> bool:
        """Decode the open utterance when ``partial_interval_s`` of new speech arrived since
        the last partial (the worker calls this when idle); True if a partial was published."""
        step = int(self.config.partial_interval_s * SAMPLE_RATE_HZ)
        if step <= 0 or not isinstance(self.segmenter, SpeechSegmenter):
            return False
        step = max(step, int(self.config.partial_backoff * self._partial_wall_s * SAMPLE_RATE_HZ))
        with self._seg_lock:
            uid = self._open_id
            cur = self.segmenter.open_utterance() if uid else None
            if cur is None or len(cur[2]) - self._partial_at < step:
                return False
            if not self.config.partial_during_pause and self.segmenter.quiet_ms() > 0:
                return False  # the utterance may be ending: keep the worker free for its final
            self._partial_at = len(cur[2])
        start_ns, end_ns, audio = cur
        t0 = time.monotonic()
        (result,) = self.recognizer.transcribe(
            [audio], words=self.config.partial_words, beam_size=self.config.partial_beam_size
        )
        self._partial_wall_s = time.monotonic() - t0
        if not self._acceptable(result):
            return False
        with self._seg_lock:
            if self._open_id != uid:  # the utterance closed meanwhile: its final follows
                return False
        pad_ns = round(self.config.silero.speech_pad_ms * 1e6)
        self._emit(self._utterance(uid, False, result, start_ns, end_ns, start_ns - pad_ns))
        return True

    def _acceptable(self, r: AsrResult) -> bool:
        cfg = self.config
        if not r.text:
            return False
        if r.no_speech_prob > cfg.no_speech_threshold and r.avg_logprob < -1.0:
            return False
        return r.confidence >= cfg.min_confidence

    def _heard_at(self, seg: AudioSegment) -> float:
        if seg.heard_at_s > 0:
            return seg.heard_at_s
        with self._seg_lock:
            arrivals = list(self._arrivals)
        return next((t for end_ns, t in arrivals if end_ns >= seg.end_ns), 0.0)

    def _final(self, uid: int, seg: AudioSegment) -> None:
        early, self._early = self._early, None
        if early is not None and early[0] == (seg.start_ns, seg.end_ns, len(seg.audio)):
            result = early[1]  # decoded while the detector waited out the pause
            self.counters["early_finals"] += 1
            self.decode_cpu_s.append(self._early_cpu)
        else:
            if early is not None:
                self.counters["early_discarded"] += 1
            cpu0 = time.process_time()
            (result,) = self.recognizer.transcribe([seg.audio])
            self.decode_cpu_s.append(time.process_time() - cpu0)
        if not self._acceptable(result):
            self.counters["rejected"] += 1
            return
        pad_ns = round(self.config.silero.speech_pad_ms * 1e6)
        if self.config.detector == "energy":
            pad_ns = round(self.config.energy.pad_ms * 1e6)
        audio_t0 = max(0, seg.start_ns - pad_ns)
        utt = self._utterance(uid, True, result, seg.start_ns, seg.end_ns, audio_t0)
        heard = self._heard_at(seg)
        if heard > 0:
            utt.latency_s = max(0.0, time.monotonic() - heard)
            self._latency.append(utt.latency_s)
        self._emit(utt)

    def _utterance(
        self, uid: int, final: bool, r: AsrResult, start_ns: int, end_ns: int, audio_t0_ns: int
    ) -> Utterance:
        def at(t_s: float) -> int:
            return int(min(max(audio_t0_ns + round(t_s * 1e9), start_ns), max(end_ns, start_ns)))

        words = [
            {
                "word": w.word,
                "start_ns": at(w.start_s),
                "end_ns": at(w.end_s),
                "probability": round(w.probability, 4),
            }
            for w in r.words
        ]
        segments = [
            {
                "t0_s": round(max(0.0, (audio_t0_ns - start_ns) / 1e9 + s.start_s), 3),
                "t1_s": round(max(0.0, (audio_t0_ns - start_ns) / 1e9 + s.end_s), 3),
                "text": s.text,
                "confidence": round(s.confidence, 4),
            }
            for s in r.segments
        ]
        return Utterance(
            utterance_id=uid,
            final=final,
            text=r.text,
            start_ns=start_ns,
            end_ns=end_ns,
            language=r.language,
            confidence=r.confidence,
            words=words,
            segments=segments,
        )

    def _emit(self, utt: Utterance) -> None:
        self.counters["finals" if utt.final else "partials"] += 1
        if self.on_utterance is not None:
            self.on_utterance(utt)


def transcribe_audio(
    audio: np.ndarray,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    *,
    config: SpeechConfig | None = None,
    stream: SpeechStream | None = None,
    chunk_s: float = 0.1,
    stamp_ns: int = 0,
) -> list[Utterance]:
    """Offline: the streaming pipeline over a whole recording, in ``chunk_s`` chunks, without
    partials; the final ``Utterance``\\ s in order (times from ``stamp_ns``)."""
    out: list[Utterance] = []
    if stream is None:
        cfg = config or SpeechConfig()
        cfg.partial_interval_s = 0.0
        stream = SpeechStream(cfg)
    stream.on_utterance = lambda u: out.append(u) if u.final else None
    x = to_mono_16k(audio, sample_rate_hz)
    step = max(1, int(chunk_s * SAMPLE_RATE_HZ))
    for i in range(0, len(x), step):
        stream.push(x[i : i + step], SAMPLE_RATE_HZ, stamp_ns + round(i * 1e9 / SAMPLE_RATE_HZ))
    stream.flush()
    return out
