"""Encoders: open_clip with random weights (shapes, norms, determinism, loading) and MiniLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

from engram.perception.encoders import (
    EncoderError,
    TorchEncoder,
    embed_in_batches,
    encoder_class,
    l2_normalize,
    make_encoder,
)
from engram.runtime import registry


def _images(n: int, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_registry_names_and_unknown_encoder():
    assert {"clip", "minilm"} <= set(registry.known("encoder"))
    assert encoder_class("clip").modalities == {"image", "text"}
    with pytest.raises(KeyError, match="known: clip, minilm"):
        make_encoder("nope")
    with pytest.raises(TypeError, match="unknown config field"):
        make_encoder("clip", model_nam="engram-vit-tiny")


def test_clip_shapes_norms_and_determinism(tiny_clip):
    imgs = _images(5)
    emb = tiny_clip.encode_images(imgs)
    assert emb.shape == (5, tiny_clip.dim) == (5, 64)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # same input -> same output; batch composition does not change an image's embedding
    np.testing.assert_allclose(tiny_clip.encode_images(imgs), emb, atol=1e-6)
    np.testing.assert_allclose(tiny_clip.encode_images(imgs[2:3]), emb[2:3], atol=1e-5)
    # a fresh encoder with the same seed builds the same random weights
    other = make_encoder("clip", model_name="engram-vit-tiny", device="cpu")
    np.testing.assert_allclose(other.encode_images(imgs), emb, atol=1e-6)
    # ... and a different seed does not
    reseeded = make_encoder("clip", model_name="engram-vit-tiny", device="cpu", seed=1)
    assert np.abs(reseeded.encode_images(imgs) - emb).max() > 1e-3
    # different images -> different embeddings
    assert np.abs(emb[0] - emb[1]).max() > 1e-4


def test_clip_mixed_sizes_texts_and_regions(tiny_clip):
    imgs = [_images(1, 60, 80)[0], _images(1, 240, 320, seed=1)[0]]
    emb = tiny_clip.encode_images(imgs)
    assert emb.shape == (2, 64)
    txt = tiny_clip.encode_texts(["a red cup", "a chair", ""])
    assert txt.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    image = _images(1, 120, 160, seed=2)[0]
    boxes = np.array([[0, 0, 40, 30], [100, 60, 160, 120], [10, 10, 11, 11]])
    masks = np.zeros((3, 120, 160), bool)
    masks[0, 5:25, 5:35] = True
    masks[1, 60:, 100:] = True
    masks[2, 10, 10] = True
    reg = tiny_clip.encode_regions(image, boxes, masks=masks)
    assert reg.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(reg, axis=1), 1.0, atol=1e-5)
    # a mask changes the embedding of a region (the background is greyed out)
    unmasked = tiny_clip.encode_regions(image, boxes)
    assert np.abs(unmasked[0] - reg[0]).max() > 1e-4
    assert tiny_clip.encode_regions(image, np.zeros((0, 4))).shape == (0, 64)


def test_clip_bad_inputs_name_the_problem(tiny_clip):
    with pytest.raises(EncoderError, match="uint8"):
        tiny_clip.encode_images(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(EncoderError, match="one image"):
        tiny_clip.encode_images(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(EncoderError, match="wrap it in a list"):
        tiny_clip.encode_texts("a cup")
    with pytest.raises(EncoderError, match="masks"):
        tiny_clip.encode_regions(
            np.zeros((8, 8, 3), np.uint8), np.array([[0, 0, 4, 4]]), masks=np.ones((1, 4, 4))
        )
    assert make_encoder("minilm").modalities == {"text"}
    with pytest.raises(EncoderError, match="no image modality"):
        make_encoder("minilm").encode_images(np.zeros((1, 8, 8, 3), np.uint8))


def test_clip_checkpoint_round_trip_through_cache_and_path(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    imgs = _images(3, seed=3)
    # weights different from the default seed, saved where a user's download would be
    src = make_encoder("clip", model_name="engram-vit-tiny", device="cpu", seed=42)
    src.load()
    state = {k: v.contiguous() for k, v in src._model.state_dict().items()}
    path = tmp_path / "engram-vit-tiny-mytag.safetensors"
    save_file(state, str(path))
    want = src.encode_images(imgs)

    via_cache = make_encoder(
        "clip", model_name="engram-vit-tiny", pretrained="mytag", cache_dir=str(tmp_path)
    )
    np.testing.assert_allclose(via_cache.encode_images(imgs), want, atol=1e-6)
    assert via_cache.weights_path == path
    via_path = make_encoder("clip", model_name="engram-vit-tiny", checkpoint_path=str(path))
    np.testing.assert_allclose(via_path.encode_images(imgs), want, atol=1e-6)
    assert np.abs(tiny_clip.encode_images(imgs) - want).max() > 1e-3  # not the seed-0 weights


def test_missing_weights_error_names_the_file(tmp_path):
    enc = make_encoder(
        "clip", model_name="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path)
    )
    with pytest.raises(FileNotFoundError) as err:
        enc.load()
    msg = str(err.value)
    assert str(tmp_path / "ViT-B-32-laion2b_s34b_b79k.safetensors") in msg
    assert "open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k'" in msg
    missing = tmp_path / "nothing_here.pt"
    with pytest.raises(FileNotFoundError, match=r"nothing_here\.pt"):
        make_encoder("clip", model_name="engram-vit-tiny", checkpoint_path=str(missing)).load()
    with pytest.raises(EncoderError, match="not an open_clip architecture"):
        make_encoder("clip", model_name="ViT-Nope").load()
    damaged = tmp_path / "half-download.safetensors"
    damaged.write_bytes(b"\x00" * 4096)
    with pytest.raises(EncoderError, match=r"cannot load weights from .*half-download"):
        make_encoder("clip", model_name="engram-vit-tiny", checkpoint_path=str(damaged)).load()


def test_vit_b_32_stays_available():
    enc = make_encoder("clip", model_name="ViT-B-32")
    assert enc.dim == 512  # from the architecture config, without building the model


def test_minilm_ranks_paraphrase_above_unrelated():
    enc = make_encoder("minilm", device="cpu")
    emb = enc.encode_texts(
        [
            "Please bring me the red cup from the kitchen.",
            "Fetch the red mug from the kitchen for me.",
            "The stock market fell sharply on Tuesday.",
            "Where did you leave my keys?",
            "Have you seen where my keys are?",
            "It is going to rain tomorrow in the mountains.",
        ]
    )
    assert emb.shape == (6, 384) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[3, 4] > sim[3, 5] + 0.3
    assert sim[0, 1] > sim[0, 3] and sim[3, 4] > sim[3, 0]
    # batching does not change an embedding
    np.testing.assert_allclose(
        enc.encode_texts(["Where did you leave my keys?"])[0], emb[3], atol=1e-5
    )
    assert enc.encode_texts([]).shape == (0, 384)


def test_l2_normalize_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_cpu_and_gpu_preprocessing_paths_agree(tiny_clip, rgbd_sample_dir):
    """OpenCV resizing (the CPU default) and torch resizing / roi_align (the GPU path)
    feed the model nearly the same pixels; a different frame differs far more."""
    import cv2
    import torch

    from engram.perception.clip import _square_boxes

    def read(i: int) -> np.ndarray:
        bgr = cv2.imread(str(rgbd_sample_dir / "color" / f"{i:05d}.jpg"))
        return np.ascontiguousarray(bgr[:, :, ::-1])

    img, other = read(0), read(4)
    torch_path = make_encoder(
        "clip", model_name="engram-vit-tiny", device="cpu", preprocess="torch"
    )
    torch_path.load()
    with torch.inference_mode():
        a = tiny_clip._preprocess([img])
        b = torch_path._preprocess([img])
        c = tiny_clip._preprocess([other])
        assert a.shape == b.shape == (1, 3, 64, 64)
        same = float((a - b).abs().mean())
        assert same < 0.1 and same < 0.25 * float((a - c).abs().mean())
        boxes = np.array([[300, 80, 620, 400], [0, 0, 200, 479], [600, 440, 640, 480]])
        masks = np.zeros((3, 480, 640), bool)
        masks[0, 100:380, 330:600] = True
        masks[1, :, :150] = True
        masks[2, 450:, 610:] = True
        squares = _square_boxes(boxes, 640, 480, pad_frac=0.1)
        ra = tiny_clip._region_pixels(img, squares, masks)
        rb = torch_path._region_pixels(img, squares, masks)
        rc = tiny_clip._region_pixels(other, squares, masks)
        assert ra.shape == rb.shape == (3, 3, 64, 64)
        for k in range(3):
            same = float((ra[k] - rb[k]).abs().mean())
            assert same < 0.02 and same < 0.25 * float((ra[k] - rc[k]).abs().mean()), k
    np.testing.assert_allclose(
        tiny_clip.encode_regions(img, boxes, masks=masks),
        torch_path.encode_regions(img, boxes, masks=masks),
        atol=0.05,
    )
    with pytest.raises(EncoderError, match="preprocess"):
        make_encoder("clip", model_name="engram-vit-tiny", preprocess="pil").load()


def test_embed_in_batches_chunks_match_one_batch_and_empty_input():
    import torch

    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 4, bias=False).double()
    x = torch.randn(10, 5, dtype=torch.float64)
    x[7] = 0.0  # a zero row stays zero
    seen: list[tuple[int, bool]] = []

    def embed(part: slice) -> Any:
        seen.append((len(x[part]), torch.is_inference_mode_enabled()))
        return layer(x[part])

    chunked = embed_in_batches(10, embed, batch_size=3, dim=4)
    assert seen == [(3, True), (3, True), (3, True), (1, True)]
    whole = embed_in_batches(10, embed, batch_size=100, dim=4)
    assert seen[4:] == [(10, True)]
    assert chunked.shape == (10, 4) and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    with torch.no_grad():
        want = l2_normalize(layer(x).numpy())
    np.testing.assert_allclose(chunked, want, atol=1e-6)  # input order kept
    norms = np.linalg.norm(chunked, axis=1)
    np.testing.assert_allclose(np.delete(norms, 7), 1.0, atol=1e-6)
    assert not chunked[7].any()
    # no input: (0, D), embed never called, a lazy dim asked only then
    seen.clear()
    empty = embed_in_batches(0, embed, batch_size=3, dim=lambda: 4)
    assert empty.shape == (0, 4) and empty.dtype == np.float32 and seen == []
    never = embed_in_batches(2, embed, batch_size=3, dim=lambda: pytest.fail("dim asked"))
    assert never.shape == (2, 4)
    with pytest.raises(EncoderError, match="batch_size must be >= 1, got 0"):
        embed_in_batches(3, embed, batch_size=0, dim=4)
    with pytest.raises(EncoderError, match="must be >= 0, got -1"):
        embed_in_batches(-1, embed, batch_size=3, dim=4)


@dataclass
class _LinearConfig:
    """Settings of the test encoder below."""

    # "auto", "cpu", "cuda"
    device: str = "cpu"
    # most rows per forward pass
    batch_size: int = 2


class _LinearEncoder(TorchEncoder):
    """(B, 3) float rows -> (B, 2): a TorchEncoder as small as it gets."""

    name: ClassVar[str] = "linear"
    Config: ClassVar[type] = _LinearConfig

    def __init__(self, config: _LinearConfig | None = None) -> None:
        super().__init__(config)
        self.loads = 0

    def _load(self) -> None:
        import torch

        from engram.perception.encoders import resolve_device

        self.loads += 1
        torch.manual_seed(0)
        self._device = resolve_device(self.config.device)
        self._model = torch.nn.Linear(3, 2).to(self._device)

    @property
    def dim(self) -> int:
        return 2

    def encode_rows(self, rows: np.ndarray) -> np.ndarray:
        import torch

        x = torch.as_tensor(rows, dtype=torch.float32)
        return self._embed_batches(len(x), lambda part: self._model(x[part].to(self._device)))


def test_torch_encoder_lifecycle_and_batch_size_check():
    with pytest.raises(EncoderError, match=r"_LinearConfig\.batch_size must be >= 1, got 0"):
        _LinearEncoder(_LinearConfig(batch_size=0))
    with pytest.raises(EncoderError, match=r"MiniLMConfig\.batch_size must be >= 1, got 0"):
        make_encoder("minilm", batch_size=0)
    with pytest.raises(EncoderError, match=r"ClipConfig\.batch_size must be >= 1, got -1"):
        make_encoder("clip", batch_size=-1)
    enc = _LinearEncoder()
    assert enc._model is None and enc.loads == 0  # constructing loads nothing
    rows = np.arange(15, dtype=np.float32).reshape(5, 3) - 7.0
    out = enc.encode_rows(rows)  # loads on first use, in chunks of 2
    assert enc.loads == 1 and enc.device == "cpu" and out.shape == (5, 2)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(enc.encode_rows(rows[3:4]), out[3:4], atol=1e-6)
    assert enc.encode_rows(np.zeros((0, 3))).shape == (0, 2)
    enc.load()
    assert enc.loads == 1  # idempotent
    enc.close()
    assert enc._model is None and enc._tokenizer is None
    with enc:
        assert enc.loads == 2 and enc._model is not None
        np.testing.assert_allclose(enc.encode_rows(rows), out, atol=1e-6)
    assert enc._model is None


def test_clip_chunked_batches_match_one_batch(tiny_clip):
    small = make_encoder("clip", model_name="engram-vit-tiny", device="cpu", batch_size=2)
    imgs = _images(5, seed=4)
    np.testing.assert_allclose(small.encode_images(imgs), tiny_clip.encode_images(imgs), atol=1e-5)
    image = _images(1, 120, 160, seed=5)[0]
    boxes = np.array([[0, 0, 40, 30], [100, 60, 160, 120], [10, 10, 50, 90], [5, 5, 9, 9]])
    masks = np.zeros((4, 120, 160), bool)
    masks[:, 20:80, 20:100] = True
    np.testing.assert_allclose(
        small.encode_regions(image, boxes, masks=masks),
        tiny_clip.encode_regions(image, boxes, masks=masks),
        atol=1e-5,
    )
    assert small.encode_images([]).shape == (0, 64)
    assert small.encode_texts([]).shape == (0, 64)
