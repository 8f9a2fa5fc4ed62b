"""The energy detector: utterances of synthesised speech, sound events, the stream clock, and
its noise floor on backgrounds louder than -50 dBFS (issue 13). Recognizers: test_speech.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engram.perception.audio import (
    AudioSegmenter,
    SegmenterConfig,
    detect_segments,
    to_mono_16k,
)

TOLERANCE_S = 0.150
T0_NS = 1_700_000_000_000_000_000  # an arbitrary wall-clock origin


def test_vad_finds_each_utterance_within_150_ms(speech):
    segments = detect_segments(speech.audio, stamp_ns=T0_NS, chunk_s=0.064)
    spoken = [s for s in segments if s.kind == "speech"]
    assert len(spoken) == len(speech.truth_s), [(s.start_ns, s.end_ns) for s in spoken]
    for seg, (start, end) in zip(spoken, speech.truth_s):
        assert abs((seg.start_ns - T0_NS) / 1e9 - start) <= TOLERANCE_S
        assert abs((seg.end_ns - T0_NS) / 1e9 - end) <= TOLERANCE_S
        assert seg.final
        # the audio handed to whisper covers the utterance plus the pads
        assert len(seg.audio) >= (end - start) * 16000


def test_bell_is_a_sound_event_with_onset_and_peak(speech):
    segments = detect_segments(speech.audio, stamp_ns=0)
    sounds = [s for s in segments if s.kind == "sound"]
    assert len(sounds) == 1
    bell = sounds[0]
    assert bell.label == "tone"
    assert abs(bell.start_ns / 1e9 - speech.bell_s[0]) <= TOLERANCE_S
    assert abs(bell.peak_hz - 880.0) < 40.0  # strongest partial
    assert -30.0 < bell.energy_db < 0.0
    assert bell.embedding.shape == (32,)
    assert abs(np.linalg.norm(bell.embedding) - 1.0) < 1e-5
    # a second bell at another pitch has a different spectral embedding
    t = np.arange(8000) / 16000
    other = np.concatenate([np.zeros(8000), 0.3 * np.sin(2 * np.pi * 3000 * t), np.zeros(16000)])
    (event,) = detect_segments(other.astype(np.float32))
    assert event.kind == "sound" and abs(event.peak_hz - 3000) < 40
    assert float(event.embedding @ bell.embedding) < 0.9


def test_long_speech_is_cut_with_overlap(speech):
    cfg = SegmenterConfig(max_segment_s=1.0, overlap_s=0.3)
    pieces = [s for s in detect_segments(speech.audio, config=cfg) if s.kind == "speech"]
    start, end = speech.truth_s[0]  # the longest utterance, about 2.1 s
    first = [p for p in pieces if start - 0.2 <= p.start_ns / 1e9 <= end]
    assert len(first) >= 3
    for a, b in itertools.pairwise(first):
        assert not a.final
        assert a.end_ns - b.start_ns == pytest.approx(0.3e9, abs=0.021e9)  # 0.3 s overlap
        assert a.duration_s <= 1.0 + 1e-6
    assert first[-1].final
    assert abs(first[-1].end_ns / 1e9 - end) <= TOLERANCE_S


def test_stream_clock_follows_chunk_stamps_and_resyncs():
    seg = AudioSegmenter()
    rng = np.random.default_rng(0)
    noise = (0.2 * rng.normal(size=8000)).astype(np.float32)  # 0.5 s broadband burst
    silence = np.zeros(8000, np.float32)
    out = seg.push(silence, 5_000_000_000)
    out += seg.push(noise, 5_500_000_000)
    out += seg.push(silence, 6_000_000_000)
    out += seg.push(silence, 6_500_000_000)
    (event,) = out
    assert event.kind == "sound" and event.label == "noise"
    assert event.start_ns == pytest.approx(5_500_000_000, abs=25_000_000)
    # a 10 s gap in stamps restarts the clock at the new stamp
    out = seg.push(noise, 20_000_000_000) + seg.push(silence, 20_500_000_000)
    out += seg.flush()
    assert len(out) == 1 and out[0].start_ns == pytest.approx(20_000_000_000, abs=25_000_000)


def test_to_mono_16k():
    stereo = np.stack([np.ones(44100), -np.ones(44100)], axis=1).astype(np.float32)
    mono = to_mono_16k(stereo, 44100)
    assert mono.shape == (16000,) and np.abs(mono).max() < 1e-5
    with pytest.raises(ValueError, match="pcm"):
        to_mono_16k(np.zeros((2, 2, 2)), 16000)


def test_noise_floor_follows_a_hiss_and_pauses_split(speech):
    """Regression: the floor pinned to the quietest frame and rose only on frames already
    judged silent, so with hiss above about -50 dBFS everything was one region."""
    rng = np.random.default_rng(11)
    loud = speech.audio / np.abs(speech.audio).max() * 0.5  # speech peaks at -6 dBFS
    lead = 3.5  # s of hiss before the speech: a fan switched on after digital silence
    loud = np.concatenate([np.zeros(int(lead * 16000), np.float32), loud])
    for hiss_db in (-40.0, -35.0):
        x = loud + rng.normal(0.0, 10 ** (hiss_db / 20), len(loud)).astype(np.float32)
        x[:800] = 0.0  # 50 ms of digital silence first: the old floor pinned to -120 dBFS
        segments = detect_segments(x, stamp_ns=0)
        spoken = [s for s in segments if s.kind == "speech"]
        assert len(spoken) == len(speech.truth_s), (hiss_db, [s.duration_s for s in spoken])
        for seg, (start, end) in zip(spoken, speech.truth_s):
            assert abs(seg.start_ns / 1e9 - lead - start) <= 0.2
            assert abs(seg.end_ns / 1e9 - lead - end) <= 0.3
        # the hiss's onset is one sound event that ends within the floor's window
        onset = [s for s in segments if s.kind == "sound" and s.start_ns < 1e9]
        assert len(onset) == 1 and onset[0].duration_s < 3.5


def test_noise_floor_tracks_a_background_that_gets_louder():
    rng = np.random.default_rng(2)
    quiet = rng.normal(0, 10 ** (-60 / 20), 3 * 16000)
    louder = rng.normal(0, 10 ** (-30 / 20), 8 * 16000)
    seg = AudioSegmenter()
    events = seg.push(np.concatenate([quiet, louder]).astype(np.float32), 0) + seg.flush()
    # the step up is one event (its onset), not an endless region
    assert len(events) == 1 and events[0].duration_s < 4.0
    assert seg.noise_floor_db == pytest.approx(-30.0, abs=2.0)
