"""A file microphone into the perception node: the end of the file flushes the last
utterance (transcribed while the program still runs, not when it stops)."""

from __future__ import annotations

import time

from engram.perception.node import PerceptionConfig, PerceptionNode
from engram.runtime.bus import InProcBus
from engram.runtime.drivers.microphone import MicrophoneSource, MicrophoneSourceConfig


def test_last_chunk_of_a_file_is_marked_end_of_stream(speech_sample_dir):
    bus = InProcBus("mic-eos-chunks")
    sub = bus.subscribe("/audio", "queue(500)")
    wav = speech_sample_dir / "ldc93s1.wav"
    mic = MicrophoneSource(MicrophoneSourceConfig(device=str(wav), chunk_ms=200.0), bus=bus)
    with mic:
        assert mic.finished.wait(15.0)
    chunks = sub.drain()
    assert [c.end_of_stream for c in chunks] == [False] * (len(chunks) - 1) + [True]
    bus.close()


def test_a_file_microphone_s_last_utterance_is_transcribed_when_the_file_ends(
    speech_sample_dir,
):
    """ldc93s1.wav's speech runs to 40 ms before its end: no pause closes it; only the
    end of the stream does."""
    bus = InProcBus("mic-eos")
    transcripts = bus.subscribe("/transcripts", "queue(100)")
    wav = speech_sample_dir / "ldc93s1.wav"
    mic = MicrophoneSource(MicrophoneSourceConfig(device=str(wav), source="desk"), bus=bus)
    node = PerceptionNode(
        PerceptionConfig(
            model_name="engram-vit-tiny", device="cpu", heartbeat_hz=0.0, text_encoder=""
        ),
        bus=bus,
    )
    with node, mic:
        assert mic.finished.wait(15.0)
        deadline = time.monotonic() + 30.0
        finals = []
        while not finals and time.monotonic() < deadline:
            finals = [t for t in transcripts.drain() if t.final]
            time.sleep(0.05)
        # still running: nothing was stopped or flushed by hand
        assert node.running and mic.finished.is_set()
    assert len(finals) == 1, "the last utterance was not transcribed at the end of the file"
    (t,) = finals
    assert "greasy" in t.text.lower() and t.source == "desk" and t.words
    bus.close()
