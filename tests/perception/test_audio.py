"""Audio: VAD on synthesised speech, sound events, whisper (tiny random weights)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engram.perception.audio import (
    AudioSegmenter,
    SegmenterConfig,
    SpeechRecognizer,
    WhisperConfig,
    detect_segments,
    resolve_whisper_checkpoint,
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


def test_whisper_random_tiny_runs_end_to_end(speech, tmp_path):
    rec = SpeechRecognizer(WhisperConfig(model_name="random", device="cpu", max_tokens=8))
    spoken = [s for s in detect_segments(speech.audio) if s.kind == "speech"]
    results = rec.transcribe([s.audio for s in spoken])
    assert len(results) == len(spoken)
    for r in results:
        assert isinstance(r.text, str) and r.language == "en"
        assert 0.0 <= r.confidence <= 1.0
    # deterministic: same weights (seed) and temperature 0
    again = SpeechRecognizer(WhisperConfig(model_name="random", device="cpu", max_tokens=8))
    assert [r.text for r in again.transcribe([spoken[0].audio])] == [results[0].text]
    # the checkpoint code path: save the random model as a whisper .pt, load it by path
    import torch

    path = tmp_path / "tiny-random.pt"
    torch.save({"dims": rec.model.dims.__dict__, "model_state_dict": rec.model.state_dict()}, path)
    loaded = SpeechRecognizer(WhisperConfig(checkpoint_path=str(path), device="cpu", max_tokens=8))
    assert [r.text for r in loaded.transcribe([spoken[0].audio])] == [results[0].text]
    assert loaded.checkpoint == path


def test_whisper_missing_model_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        resolve_whisper_checkpoint(WhisperConfig(model_name="tiny.en", cache_dir=str(tmp_path)))
    assert str(tmp_path / "tiny.en.pt") in str(err.value)
    assert "whisper.load_model('tiny.en'" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        resolve_whisper_checkpoint(WhisperConfig(checkpoint_path=str(tmp_path / "nope.pt")))
    with pytest.raises(ValueError, match="not a whisper model"):
        resolve_whisper_checkpoint(WhisperConfig(model_name="huge-v9"))
    damaged = tmp_path / "cut.pt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    rec = SpeechRecognizer(WhisperConfig(checkpoint_path=str(damaged), device="cpu"))
    with pytest.raises(RuntimeError, match=r"cannot load the checkpoint .*cut\.pt"):
        rec.load()
