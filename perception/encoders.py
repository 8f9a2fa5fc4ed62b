"""The ``Encoder`` interface shared by image and text encoders, and their registry.

An encoder turns images and/or text into L2-normalised float32 embeddings:

- ``encode_images``: (B, H, W, 3) uint8 (or a list of differently sized images) -> (B, D)
- ``encode_texts``: B strings -> (B, D)
- ``encode_regions``: one (H, W, 3) image, (K, 4) xyxy pixel boxes, optional (K, H, W)
  masks -> (K, D)

Which encoder fills which field (embedding sizes differ, so never mix spaces):

========================  =======================================  ========================
field                     encoder                                  dim
========================  =======================================  ========================
``Percept.embedding``     image tower of ``clip`` (open_clip)      512 for ViT-B-32
``Percept.object_*``      image tower of ``clip`` (region crops)   same as above
text query vs. images     text tower of the same ``clip`` model    same as above
``Transcript.embedding``  ``minilm`` (all-MiniLM-L6-v2)            384
facts, instructions       ``minilm``                               384
========================  =======================================  ========================

Lifecycle: constructing an encoder is cheap (no weights); ``load()`` builds the model
and moves it to the device (called implicitly by the first ``encode_*``); ``close()``
releases it. ``with make_encoder("clip") as enc:`` does both.

``TorchEncoder`` is the base of the torch-backed encoders (``clip``, ``minilm``): it
holds the thread-safe load/close lifecycle and the device, checks ``batch_size``, and
runs the forward passes in chunks (``embed_in_batches``: inference mode, L2-normalised
float32 rows, ``(0, D)`` for no input). A subclass implements ``_load`` and ``dim``.

Encoders are registered by name (kind ``"encoder"`` of ``engram.runtime.registry``, in
``engram.perception.register``) as ``"module:Class"``; ``make_encoder(name, config)``
imports the class only then, so importing this module never loads torch.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any, ClassVar

import numpy as np

from engram.runtime import registry

__all__ = [
    "Encoder",
    "EncoderError",
    "TorchEncoder",
    "embed_in_batches",
    "encoder_class",
    "l2_normalize",
    "make_encoder",
    "resolve_device",
]


class EncoderError(ValueError):
    """Bad input to an encoder, or a modality the encoder does not have."""


class Encoder(ABC):
    """Base of every encoder. Subclasses set ``name``, ``modalities`` and ``Config``."""

    name: ClassVar[str] = "encoder"
    #: subset of {"image", "text"}
    modalities: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type] = object

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        self._loaded = False

    # ---- lifecycle -----------------------------------------------------------------
    @abstractmethod
    def load(self) -> None:
        """Build the model, load weights, move it to the device. Idempotent."""

    def close(self) -> None:
        """Release the model (and GPU memory). ``load()`` may be called again."""
        self._loaded = False

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding size D (loads the model if needed)."""

    @property
    def device(self) -> str:
        """The torch device the model runs on ("cpu", "cuda", ...)."""
        return "cpu"

    # ---- encoding ------------------------------------------------------------------
    def encode_images(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, D) float32, L2-normalised."""
        raise EncoderError(f"encoder {self.name!r} has no image modality ({self._has()})")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> (B, D) float32, L2-normalised."""
        raise EncoderError(f"encoder {self.name!r} has no text modality ({self._has()})")

    def encode_regions(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        *,
        masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Crops of one image: (H, W, 3) uint8, (K, 4) xyxy boxes, (K, H, W) bool -> (K, D)."""
        raise EncoderError(f"encoder {self.name!r} has no image modality ({self._has()})")

    def __enter__(self) -> Encoder:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _has(self) -> str:
        return "has: " + (", ".join(sorted(self.modalities)) or "nothing")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class TorchEncoder(Encoder):
    """Base of the encoders that run a torch model.

    ``Config`` must have ``device: str`` and ``batch_size: int`` (most inputs per
    forward pass). Subclasses implement ``_load`` (build ``_model``, and ``_tokenizer``
    if any, on ``resolve_device(config.device)``, and set ``_device``) and ``dim``, and
    encode through ``_embed_batches``.
    """

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        if self.config.batch_size < 1:
            raise EncoderError(
                f"{self.Config.__name__}.batch_size must be >= 1, got {self.config.batch_size}"
            )
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._lock = threading.Lock()

    @abstractmethod
    def _load(self) -> None:
        """Build the model on the device; called once by ``load()``, under the lock."""

    def load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._load()
            self._loaded = True

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None
            self._loaded = False
            if self._device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    @property
    def device(self) -> str:
        return self._device

    def _embed_batches(
        self, n: int, embed: Callable[[slice], Any], *, batch_size: int | None = None
    ) -> np.ndarray:
        """Load the model, then ``embed_in_batches`` of N inputs -> (N, D) float32.

        ``batch_size`` defaults to ``config.batch_size``.
        """
        self.load()
        bs = self.config.batch_size if batch_size is None else batch_size
        # dim is asked only for no input: ClipEncoder.dim may itself encode a text
        return embed_in_batches(n, embed, batch_size=bs, dim=lambda: self.dim)


def embed_in_batches(
    n: int, embed: Callable[[slice], Any], *, batch_size: int, dim: int | Callable[[], int]
) -> np.ndarray:
    """Embed N inputs in chunks of at most ``batch_size`` under ``torch.inference_mode``.

    ``embed(part)`` gets the slice of the inputs of one chunk (B = its length) and
    returns their (B, D) features as a torch tensor, on any device and of any float
    dtype. Rows come back L2-normalised (zero rows stay zero), in input order:
    (N, D) float32. ``n == 0`` -> (0, D) without calling ``embed``; ``dim`` is D, or a
    function giving it (called only then).
    """
    if batch_size < 1:
        raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
    if n < 0:
        raise EncoderError(f"n: number of inputs must be >= 0, got {n}")
    if n == 0:
        return np.zeros((0, dim() if callable(dim) else dim), np.float32)
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            feats = embed(slice(start, min(start + batch_size, n)))
            out.append(F.normalize(feats.float(), dim=-1).cpu().numpy())
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)


def encoder_class(name: str) -> type[Encoder]:
    """The class registered as ``name`` (kind "encoder" of ``engram.runtime.registry``);
    ``KeyError`` (``RegistryError``) lists the known names."""
    cls = registry.get("encoder", name)
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        target = registry.REGISTRY.target("encoder", name)
        raise TypeError(f"encoder {name!r} -> {target} is not an Encoder subclass")
    return cls


def make_encoder(name: str, config: Any = None, **overrides: Any) -> Encoder:
    """Build the encoder registered as ``name``.

    ``config`` is that encoder's Config dataclass, a dict of its fields, or None for
    the defaults; ``overrides`` replace single fields (``make_encoder("clip",
    model_name="ViT-B-32")``). Unknown field names raise ``TypeError`` naming them.
    """
    cls = encoder_class(name)
    cfg_cls = cls.Config
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        config = _config_from_dict(cfg_cls, config, name)
    if overrides:
        _check_fields(cfg_cls, overrides, name)
        config = replace(config, **overrides)
    return cls(config)


def _check_fields(cfg_cls: type, values: dict[str, Any], name: str) -> None:
    if is_dataclass(cfg_cls):
        known = {f.name for f in fields(cfg_cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(
                f"encoder {name!r}: unknown config field(s) {sorted(unknown)}; "
                f"fields are {sorted(known)}"
            )


def _config_from_dict(cfg_cls: type, values: dict[str, Any], name: str) -> Any:
    _check_fields(cfg_cls, values, name)
    return cfg_cls(**values)


def l2_normalize(x: np.ndarray, *, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero): (..., D) -> (..., D) float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is present, else ``"cpu"``; others pass.

    Asking for ``"cuda"`` without a GPU raises ``EncoderError``.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} requested but no CUDA GPU is available")
    return device


def check_images(images: np.ndarray | Sequence[np.ndarray], *, what: str = "images") -> list:
    """Validate a batch of RGB images: returns a list of (H, W, 3) uint8 arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            raise EncoderError(
                f"{what}: expected a batch (B, H, W, 3), got one image of shape {images.shape}; "
                "wrap it in a list or add a batch axis"
            )
        if images.ndim != 4:
            raise EncoderError(f"{what}: expected (B, H, W, 3) uint8, got shape {images.shape}")
        images = list(images)
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3:
            raise EncoderError(f"{what}[{i}]: expected (H, W, 3), got shape {img.shape}")
        if img.dtype != np.uint8:
            raise EncoderError(f"{what}[{i}]: expected uint8 RGB, got dtype {img.dtype}")
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise EncoderError(f"{what}[{i}]: empty image of shape {img.shape}")
        out.append(img)
    return out


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a batch of strings (a bare str is an error: wrap it in a list)."""
    if isinstance(texts, str):
        raise EncoderError("texts: expected a list of strings, got one str; wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise EncoderError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return out
