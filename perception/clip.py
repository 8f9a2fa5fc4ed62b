"""Image and text encoder on open_clip (``make_encoder("clip")``).

Weights are never downloaded here. ``ClipEncoder.load()`` resolves them, in order:

1. ``checkpoint_path``: an explicit weights file (.safetensors, .bin, .pt); it must exist.
2. ``pretrained`` tag (e.g. ``"laion2b_s34b_b79k"``), looked up offline in
   ``<cache_dir>/<model_name>-<tag>.{safetensors,bin,pt}``, then in the Hugging Face hub
   cache layout that ``open_clip.create_model(..., cache_dir=...)`` writes (inside
   ``cache_dir``, or the default ``~/.cache/huggingface/hub``), then in open_clip's URL
   cache (``<cache_dir>`` or ``~/.cache/clip``). Missing everywhere -> ``FileNotFoundError``
   listing every path tried and the one command that downloads the weights once.
3. ``pretrained=None``: the same architecture with random weights, seeded by ``seed``
   (reproducible across loads).

Architectures are open_clip's built-ins (``ViT-B-32``: 512-d, 224 px) plus the small
random-weight ones in ``perception/model_configs`` (``engram-vit-tiny``: 64-d, 64 px,
for tests; ``engram-vit-small``: 256-d, 128 px, the CPU default).

Images are preprocessed on the model's device as one batch: uint8 (B, H, W, 3) ->
resize of the shorter side (bicubic, antialiased) -> centre crop -> normalise. Inference
runs under ``torch.inference_mode``, in fp16 on CUDA (``precision="auto"``), fp32 on CPU.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engram.perception.encoders import (
    EncoderError,
    TorchEncoder,
    check_images,
    check_texts,
    resolve_device,
)

__all__ = ["ClipConfig", "ClipEncoder", "resolve_clip_weights"]

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_REGISTER_LOCK = threading.Lock()
_registered = False


@dataclass
class ClipConfig:
    """Settings of ``ClipEncoder``."""

    # open_clip architecture: a built-in name (ViT-B-32, ...) or engram-vit-tiny/-small
    model_name: str = "engram-vit-small"
    # weights tag, e.g. "laion2b_s34b_b79k"; None = random weights of the architecture
    pretrained: str | None = None
    # directory holding downloaded weights; None = open_clip's default caches
    cache_dir: str | None = None
    # explicit weights file (.safetensors/.bin/.pt); takes precedence over pretrained
    checkpoint_path: str | None = None
    # "auto" (cuda when present, else cpu), "cpu", "cuda", "cuda:1"
    device: str = "auto"
    # "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16", "bf16"
    precision: str = "auto"
    # most images per forward pass; larger batches are split
    batch_size: int = 16
    # torch seed for random weights (pretrained None), so that loads are reproducible
    seed: int = 0
    # region crops are grown by this fraction of the box side before resizing
    region_padding_frac: float = 0.1
    # resizing: "auto" (OpenCV on uint8 on CPU, torch on the GPU), "cv2" or "torch"
    preprocess: str = "auto"


def _register_model_configs() -> None:
    """Add perception/model_configs to open_clip's architecture registry (once)."""
    global _registered
    with _REGISTER_LOCK:
        if _registered:
            return
        import open_clip

        if "engram-vit-tiny" not in open_clip.list_models():
            open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def _known_architectures() -> list[str]:
    import open_clip

    return open_clip.list_models()


def resolve_clip_weights(config: ClipConfig) -> Path | None:
    """The weights file ``config`` asks for, found offline; None for random weights.

    Raises ``FileNotFoundError`` naming every path tried and how to get the file.
    """
    if config.checkpoint_path:
        path = Path(config.checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"open_clip checkpoint_path {str(path)!r} does not exist; point "
                "ClipConfig.checkpoint_path at a downloaded .safetensors/.bin/.pt file, "
                "or set pretrained=None for random weights"
            )
        return path
    tag = config.pretrained
    if not tag:
        return None
    tried: list[str] = []
    cache = Path(config.cache_dir).expanduser() if config.cache_dir else None
    if cache is not None:
        for suffix in _WEIGHT_SUFFIXES:
            candidate = cache / f"{config.model_name}-{tag}{suffix}"
            tried.append(str(candidate))
            if candidate.is_file():
                return candidate
    tag_cfg = _pretrained_cfg(config.model_name, tag)
    hf_hub = tag_cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf_hub)
        for name in (filename,) if filename else _HF_FILENAMES:
            found = try_to_load_from_cache(
                repo_id, name, cache_dir=str(cache) if cache is not None else None
            )
            where = str(cache) if cache is not None else "~/.cache/huggingface/hub"
            tried.append(f"{where} (hub cache of {repo_id}/{name})")
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = tag_cfg.get("url", "")
    if url:
        url_dir = cache if cache is not None else Path("~/.cache/clip").expanduser()
        candidate = url_dir / os.path.basename(url)
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    cache_arg = f", cache_dir='{config.cache_dir}'" if config.cache_dir else ""
    raise FileNotFoundError(
        f"open_clip weights for {config.model_name!r} / pretrained={tag!r} not found. "
        f"Looked for: {'; '.join(tried) or '(nothing to look for)'}. "
        'Download them once on a machine with internet: python -c "import open_clip; '
        f"open_clip.create_model('{config.model_name}', pretrained='{tag}'{cache_arg})\" "
        "and copy the cache here, or save the weights as "
        f"{tried[0] if tried else '<file>'} or pass checkpoint_path=<file>; "
        "pretrained=None gives random weights."
    )


def _pretrained_cfg(model_name: str, tag: str) -> dict[str, Any]:
    from open_clip.pretrained import get_pretrained_cfg

    return dict(get_pretrained_cfg(model_name, tag) or {})


class ClipEncoder(TorchEncoder):
    """open_clip image + text towers. See the module docstring for loading."""

    name: ClassVar[str] = "clip"
    modalities: ClassVar[frozenset[str]] = frozenset({"image", "text"})
    Config: ClassVar[type] = ClipConfig

    def __init__(self, config: ClipConfig | None = None) -> None:
        super().__init__(config)
        self._dtype: Any = None
        self._image_size = 224
        self._mean: Any = None
        self._std: Any = None
        self.weights_path: Path | None = None
        self._dim: int | None = None
        self._use_cv2 = True

    # ---- lifecycle -----------------------------------------------------------------
    def _load(self) -> None:
        import open_clip
        import torch

        _register_model_configs()
        cfg = self.config
        if cfg.model_name not in _known_architectures() and not cfg.model_name.startswith(
            "local-dir:"
        ):
            raise EncoderError(
                f"ClipConfig.model_name {cfg.model_name!r} is not an open_clip architecture; "
                f"e.g. ViT-B-32, engram-vit-tiny, engram-vit-small "
                f"(all: open_clip.list_models())"
            )
        device = resolve_device(cfg.device)
        precision = cfg.precision
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision not in ("fp32", "fp16", "bf16"):
            raise EncoderError(
                f"ClipConfig.precision must be auto, fp32, fp16 or bf16, got {precision!r}"
            )
        weights = resolve_clip_weights(cfg)
        tag_cfg = _pretrained_cfg(cfg.model_name, cfg.pretrained) if cfg.pretrained else {}
        if weights is None:
            # Random weights: seed without disturbing the caller's RNG state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = open_clip.create_model(
                    cfg.model_name, pretrained=None, precision=precision, device=device
                )
            log.info("open_clip %s: random weights (seed %d)", cfg.model_name, cfg.seed)
        else:
            try:
                model = open_clip.create_model(
                    cfg.model_name,
                    pretrained=str(weights),
                    precision=precision,
                    device=device,
                    force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                )
            except Exception as exc:  # damaged file, or weights of another architecture
                raise EncoderError(
                    f"open_clip {cfg.model_name}: cannot load weights from {weights}: "
                    f"{type(exc).__name__}: {exc} (a damaged or partial download, or weights "
                    "of another model; download it again or fix model_name)"
                ) from exc
            log.info("open_clip %s: weights from %s", cfg.model_name, weights)
        model.eval()
        pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        mean = tag_cfg.get("mean") or pp.get("mean") or (0.48145466, 0.4578275, 0.40821073)
        std = tag_cfg.get("std") or pp.get("std") or (0.26862954, 0.26130258, 0.27577711)
        size = model.visual.image_size
        self._image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._dtype = next(model.parameters()).dtype
        self._mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        if cfg.preprocess not in ("auto", "cv2", "torch"):
            raise EncoderError(
                f"ClipConfig.preprocess must be auto, cv2 or torch, got {cfg.preprocess!r}"
            )
        self._use_cv2 = cfg.preprocess == "cv2" or (
            cfg.preprocess == "auto" and not device.startswith("cuda")
        )
        self._mean_u8 = np.asarray(mean, np.float32) * 255.0
        self._inv_std_u8 = 1.0 / (np.asarray(std, np.float32) * 255.0)
        self._tokenizer = open_clip.get_tokenizer(cfg.model_name)
        self._model = model
        self._device = device
        self.weights_path = weights

    @property
    def dim(self) -> int:
        if self._dim is None:
            import open_clip

            _register_model_configs()
            cfg = open_clip.get_model_config(self.config.model_name)
            if cfg is not None and "embed_dim" in cfg:
                self._dim = int(cfg["embed_dim"])
            else:  # e.g. local-dir: models; ask the model itself
                self._dim = int(self.encode_texts(["a"]).shape[1])
        return self._dim

    @property
    def image_size(self) -> int:
        """Side S of the square model input, pixels (loads the model)."""
        self.load()
        return self._image_size

    # ---- encoding ------------------------------------------------------------------
    def encode_images(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(B, H, W, 3) uint8, or a list of (H_i, W_i, 3) -> (B, D) float32, unit norm."""
        imgs = check_images(images)
        return self._embed_batches(
            len(imgs), lambda part: self._encode_pixels(self._preprocess(imgs[part]))
        )

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> (B, D) float32, unit norm (the CLIP text tower)."""
        items = check_texts(texts)
        return self._embed_batches(
            len(items),
            lambda part: self._model.encode_text(self._tokenizer(items[part]).to(self._device)),
            batch_size=max(self.config.batch_size, 64),
        )

    def encode_regions(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        *,
        masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Region embeddings of one image.

        image (H, W, 3) uint8; boxes (K, 4) xyxy pixels; masks optional (K, H, W) bool
        (pixels outside a region's mask are replaced by the mean colour) -> (K, D).
        Crops are squared around the box centre and grown by ``region_padding_frac``;
        they are cut and resized with OpenCV on the CPU, with ``roi_align`` on the GPU.
        """
        (img,) = check_images([image], what="image")
        h, w = img.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise EncoderError(f"boxes: expected (K, 4) xyxy, got shape {boxes.shape}")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.shape != (len(boxes), h, w):
                raise EncoderError(
                    f"masks: expected (K, H, W) = {(len(boxes), h, w)}, got {masks.shape}"
                )
        self.load()
        squares = _square_boxes(boxes, w, h, pad_frac=self.config.region_padding_frac)
        frame = None  # the torch path uploads the frame once, not once per chunk
        if not self._use_cv2 and len(squares):
            import torch

            frame = self._to_float(torch.from_numpy(np.ascontiguousarray(img))[None])

        def embed(part: slice) -> Any:
            chunk_masks = None if masks is None else masks[part]
            return self._encode_pixels(
                self._region_pixels(img, squares[part], chunk_masks, frame=frame)
            )

        return self._embed_batches(len(squares), embed)

    def _region_pixels(
        self, img: np.ndarray, squares: np.ndarray, masks: np.ndarray | None, *, frame: Any = None
    ) -> Any:
        """Normalised model input of K square regions: (K, 3, S, S) on the device.

        ``frame``: img as a (1, 3, H, W) float tensor on the device (torch path only).
        """
        import torch

        s = self._image_size
        if self._use_cv2:
            fill = np.round(self._mean.cpu().numpy().reshape(3) * 255).astype(np.uint8)
            crops_u8, mask_f = _crop_regions_cv2(img, squares, masks, s, fill)
            crops = self._to_float(torch.from_numpy(crops_u8))
            if mask_f is not None:
                mc = torch.from_numpy(mask_f).to(self._device)[:, None]
                crops = crops * mc + self._mean * (1.0 - mc)
            return (crops - self._mean) / self._std
        from torchvision.ops import roi_align

        if frame is None:
            frame = self._to_float(torch.from_numpy(np.ascontiguousarray(img))[None])
        sq = torch.as_tensor(squares, dtype=torch.float32, device=self._device)
        rois = torch.cat([torch.zeros(len(sq), 1, device=self._device), sq], dim=1)
        crops = roi_align(frame, rois, output_size=(s, s), spatial_scale=1.0, aligned=True)
        if masks is not None:
            m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))
            m = m.to(self._device)[:, None]
            idx = torch.arange(len(sq), device=self._device, dtype=torch.float32)
            mrois = torch.cat([idx[:, None], sq], dim=1)
            mc = roi_align(m, mrois, output_size=(s, s), spatial_scale=1.0, aligned=True)
            crops = crops * mc + self._mean * (1.0 - mc)
        return (crops - self._mean) / self._std

    # ---- internals -----------------------------------------------------------------
    def _to_float(self, batch_u8: Any) -> Any:
        """(B, H, W, 3) uint8 tensor -> (B, 3, H, W) float32 in [0, 1] on the device."""
        return batch_u8.to(self._device).permute(0, 3, 1, 2).float().div_(255.0)

    def _preprocess(self, imgs: list[np.ndarray]) -> Any:
        """List of (H, W, 3) uint8 -> (B, 3, S, S) normalised float32 on the device.

        CPU: each uint8 image is resized with OpenCV (area filter when shrinking), centre
        cropped, and only the small result becomes float. GPU: the uint8 batch is
        uploaded and resized there (bicubic, antialiased).
        """
        import torch

        if self._use_cv2:  # normalise the small uint8 crops in numpy (cheaper on the CPU)
            small = np.stack([_resize_crop_cv2(im, self._image_size) for im in imgs])
            x = (small.astype(np.float32) - self._mean_u8) * self._inv_std_u8  # (B, S, S, 3)
            return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(self._device)
        if all(im.shape == imgs[0].shape for im in imgs):
            groups = [np.stack(imgs)]
        else:
            groups = [im[None] for im in imgs]
        parts = [self._resize_crop(self._to_float(torch.from_numpy(g))) for g in groups]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return (x - self._mean) / self._std

    def _resize_crop(self, x: Any) -> Any:
        """(B, 3, H, W) -> (B, 3, S, S): shorter side to S (bicubic, antialias), centre crop."""
        import torch.nn.functional as F

        s = self._image_size
        h, w = x.shape[-2:]
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - s) // 2, (nw - s) // 2
        return x[..., top : top + s, left : left + s].clamp_(0.0, 1.0)

    def _encode_pixels(self, pixels: Any) -> Any:
        """(B, 3, S, S) normalised pixels -> (B, D) image features (not yet unit norm)."""
        return self._model.encode_image(pixels.to(self._dtype))


def _square_boxes(boxes: np.ndarray, width: int, height: int, *, pad_frac: float) -> np.ndarray:
    """(K, 4) xyxy -> (K, 4) float squares around the box centres, grown by pad_frac and
    shifted to lie inside the image where they fit."""
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side = np.maximum(np.maximum(x1 - x0, y1 - y0), 1.0) * (1.0 + pad_frac)
    side = np.minimum(side, max(width, height))
    half = side / 2.0
    cx = np.clip(cx, half, np.maximum(width - half, half))
    cy = np.clip(cy, half, np.maximum(height - half, half))
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def _resize_crop_cv2(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3) uint8: shorter side to S, centre crop."""
    import cv2

    h, w = img.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top : top + size, left : left + size]


def _crop_regions_cv2(
    img: np.ndarray,
    squares: np.ndarray,
    masks: np.ndarray | None,
    size: int,
    fill: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Square crops resized to S: (K, S, S, 3) uint8 and, with masks, (K, S, S) float32.
    Parts of a square outside the image take the ``fill`` colour (mask 0)."""
    import cv2

    h, w = img.shape[:2]
    k = len(squares)
    crops = np.empty((k, size, size, 3), np.uint8)
    mask_out = None if masks is None else np.empty((k, size, size), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(squares):
        X0, Y0 = int(np.floor(x0)), int(np.floor(y0))
        X1, Y1 = max(X0 + 1, int(np.ceil(x1))), max(Y0 + 1, int(np.ceil(y1)))
        ix0, iy0, ix1, iy1 = max(X0, 0), max(Y0, 0), min(X1, w), min(Y1, h)
        interp = cv2.INTER_AREA if (X1 - X0) > size else cv2.INTER_LINEAR
        if (ix0, iy0, ix1, iy1) == (X0, Y0, X1, Y1):
            patch = img[Y0:Y1, X0:X1]
        else:
            patch = np.empty((Y1 - Y0, X1 - X0, 3), np.uint8)
            patch[:] = fill
            if ix1 > ix0 and iy1 > iy0:
                patch[iy0 - Y0 : iy1 - Y0, ix0 - X0 : ix1 - X0] = img[iy0:iy1, ix0:ix1]
        crops[i] = cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)
        if masks is not None and mask_out is not None:
            mpatch = np.zeros((Y1 - Y0, X1 - X0), np.float32)
            if ix1 > ix0 and iy1 > iy0:
                mpatch[iy0 - Y0 : iy1 - Y0, ix0 - X0 : ix1 - X0] = masks[i, iy0:iy1, ix0:ix1]
            mask_out[i] = cv2.resize(mpatch, (size, size), interpolation=interp)
    return crops, mask_out
