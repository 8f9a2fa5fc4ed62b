"""The spoken-memory task: espeak-ng speech in the scene audio, the answer only in what was
heard, and the real speech pipeline (Silero + tiny.en) recovering it from the microphone."""

from __future__ import annotations

import numpy as np

from engram.sim.audio import SceneAudio, SoundSource, speak
from engram.sim.tasks.spoken_keys import transcript_answer


def test_speech_source_plays_its_waveform_over_the_noise_floor():
    wave = speak("I left my keys next to the plant.")
    assert wave.dtype == np.float32 and 1.0 < len(wave) / 16000 < 4.0
    audio = SceneAudio(noise_level=0.01, seed=0)
    src = SoundSource("speech", np.zeros(3), start_s=0.5, duration_s=len(wave) / 16000,
                      level=0.5, waveform=wave)  # fmt: skip
    audio.add(src)
    before = audio.chunk(0.0, 8000, np.array([1.0, 0.0, 0.0]))  # the first 0.5 s: noise only
    during = audio.chunk(0.5, 8000, np.array([1.0, 0.0, 0.0]))
    assert 0.005 < before.std() < 0.015
    # what is left after taking out the voice (0.5 at 1 m) is the noise floor
    assert 0.005 < (during - 0.5 * wave[:8000]).std() < 0.015
    assert during.std() > 3 * before.std()


def test_transcript_answer_reads_the_object_from_imperfect_transcripts():
    assert transcript_answer(["I left my keys next to the red mug."]) == "mug_red"
    assert transcript_answer(["I left my keys next to the yellow marble."]) == "bottle_yellow"
    assert transcript_answer(["Hello.", "I left my key next to the plant!"]) == "plant"
    assert transcript_answer(["next to the blue ball"]) is None  # not about the keys
    assert transcript_answer(["I left my keys next to my family mayor."]) is None


def test_transcript_answer_hears_a_misheard_name_by_its_sound():
    # what tiny.en made of espeak's "brown teddy bear" / "green book" on seeds 9501 / 9503
    assert transcript_answer(["I left my keys next to the round and the air."]) == "teddy_brown"
    assert transcript_answer(["I left my keys next to the greenboard."]) == "book_green"
    assert transcript_answer(["I left my keys next to the fridge."]) is None  # no guess


def test_the_answer_comes_from_the_microphone_stream_through_the_speech_pipeline():
    from engram.perception.speech.streaming import SpeechConfig, SpeechStream
    from engram.planners.policies.scripted import run_episode
    from engram.sim.envs import make
    from engram.sim.tasks.spoken_keys import TranscriptPolicy

    env = make("spoken_keys")
    stream = SpeechStream(SpeechConfig(partial_interval_s=0.0))
    policy = TranscriptPolicy(stream, keep=True, seed=0)
    ok, _, _ = run_episode(env, policy, seed=103)
    gt = env.ground_truth()
    assert any("keys" in t.lower() for t in policy.heard), policy.heard
    assert transcript_answer(policy.heard) == gt["answer"]["object"] == env.target
    assert ok and gt["success"]
    (said,) = gt["speech"]
    assert said["end_s"] < gt["decision_time_s"]  # long over when the question comes
