"""``engram transcribe AUDIO_FILE [--json] [--whisper-model NAME|PATH]``: the live pipeline
(Silero utterances -> faster-whisper, low-confidence output dropped) on a recording.

Reads anything soundfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1) and, failing
that, anything ffmpeg decodes (m4a, mp4, ...). Prints one line per utterance
(``[t0 - t1] text (confidence)``), or with ``--json`` one object::

    {"text": "...", "segments": [{"t0_s", "t1_s", "text", "confidence",
      "words": [{"word", "t0_s", "t1_s", "probability"}]}], "model": "...",
     "detector": "silero", "duration_s": ..., "real_time_factor": ...}

(times in seconds from the start of the file; one segment per utterance). A missing or
unreadable file, an unknown model name or a model in the wrong format: a message on
stderr and exit status 2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "load_audio", "main", "run"]

SAMPLE_RATE_HZ = 16000


class AudioFileError(ValueError):
    """An audio file that is missing or cannot be decoded."""


def load_audio(path: str | Path) -> np.ndarray:
    """(N,) float32 mono 16 kHz from a file (soundfile, else ffmpeg); ``AudioFileError``."""
    from engram.perception.audio import to_mono_16k

    p = Path(path).expanduser()
    if not p.is_file():
        raise AudioFileError(f"{str(path)!r}: no such audio file")
    import soundfile as sf

    try:
        x, rate = sf.read(str(p), dtype="float32", always_2d=True)
        audio = to_mono_16k(x, int(rate))
    except Exception as sf_error:  # noqa: BLE001 - libsndfile: a format it does not know
        audio = _ffmpeg(p, sf_error)
    if len(audio) == 0:
        raise AudioFileError(f"{str(path)!r}: the audio file has no samples")
    return audio


def _ffmpeg(path: Path, sf_error: Exception) -> np.ndarray:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioFileError(
            f"{str(path)!r}: soundfile cannot read it ({sf_error}) and ffmpeg is not installed "
            "(apt-get install ffmpeg for m4a / mp4 / other formats)"
        )
    cmd = [exe, "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1"]
    cmd += ["-ar", str(SAMPLE_RATE_HZ), "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioFileError(
            f"{str(path)!r}: not an audio file soundfile or ffmpeg can decode "
            f"({err[-1] if err else sf_error})"
        )
    return np.frombuffer(proc.stdout, np.float32).copy()


def add_arguments(parser: Any) -> None:
    parser.add_argument("audio_file", help="wav, flac, ogg, mp3, m4a, ... (soundfile or ffmpeg)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--whisper-model",
        default="tiny.en",
        help="model name (tiny.en, base.en, ...), a CTranslate2 folder or an openai-whisper .pt",
    )
    parser.add_argument(
        "--detector", choices=("silero", "energy"), default="silero", help="speech detector"
    )
    parser.add_argument("--language", default="en", help="spoken language ('' = detect)")
    parser.add_argument("--beam-size", type=int, default=5, help="beam width (1 = greedy)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--min-confidence", type=float, default=0.2, help="drop utterances below this"
    )


def run(args: Any) -> int:
    from engram.perception.speech.recognizers import RecognizerConfig, WhisperModelError
    from engram.perception.speech.streaming import SpeechConfig, SpeechStream, transcribe_audio

    try:
        audio = load_audio(args.audio_file)
        rec = RecognizerConfig(
            model=args.whisper_model,
            language=args.language,
            beam_size=args.beam_size,
            device=args.device,
        )
        cfg = SpeechConfig(
            detector=args.detector,
            recognizer=rec,
            min_confidence=args.min_confidence,
            partial_interval_s=0.0,
        )
        stream = SpeechStream(cfg)
        stream.load()
    except (AudioFileError, WhisperModelError, ValueError) as exc:
        print(f"engram transcribe: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    utterances = transcribe_audio(audio, SAMPLE_RATE_HZ, stream=stream)
    elapsed = time.perf_counter() - t0
    duration_s = len(audio) / SAMPLE_RATE_HZ
    segments = [
        {
            "t0_s": round(u.start_ns / 1e9, 3),
            "t1_s": round(u.end_ns / 1e9, 3),
            "text": u.text,
            "confidence": round(u.confidence, 4),
            "words": [
                {
                    "word": w["word"],
                    "t0_s": round(w["start_ns"] / 1e9, 3),
                    "t1_s": round(w["end_ns"] / 1e9, 3),
                    "probability": w["probability"],
                }
                for w in u.words
            ],
        }
        for u in utterances
    ]
    if args.json:
        out = {
            "text": " ".join(s["text"] for s in segments),
            "segments": segments,
            "model": stream.recognizer.describe(),
            "detector": args.detector,
            "duration_s": round(duration_s, 3),
            "real_time_factor": round(elapsed / max(duration_s, 1e-9), 4),
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        for s in segments:
            print(f"[{s['t0_s']:7.2f} - {s['t1_s']:7.2f}] {s['text']}  ({s['confidence']:.2f})")
        if not segments:
            print("(no speech)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m engram.perception.transcribe FILE ...`` (same as ``engram transcribe``)."""
    import argparse

    from engram.runtime.command import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="engram transcribe", description=__doc__, formatter_class=HelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
