"""Embedding spaces: the shared cache, routing by space, injected text encoders (a
callable or an object with ``encode_texts``), encoders found by name in the registry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from engram.memory.embedding import (
    Embedders,
    TextEncoder,
    load_text_encoder,
    query_vectors,
)
from engram.runtime import registry


def test_embedders_cache_and_route_by_space() -> None:
    calls = []

    def fake(text: str) -> np.ndarray:
        calls.append(text)
        return np.arange(1, 5, dtype=np.float32)

    emb = Embedders({"text": fake})
    a = emb.embed("text", "red mug")
    b = emb.embed("text", "red mug")
    assert np.allclose(np.linalg.norm(a), 1.0) and a is b and calls == ["red mug"]
    assert emb.embed("image", "red mug") is None  # no encoder for that space
    given = np.ones(8, np.float32)
    qv = query_vectors("red mug", given, emb, {"image": 8, "text": 4})
    assert set(qv) == {"image", "text"}  # given vector by dimension, text embedded
    assert np.allclose(qv["image"], given / np.linalg.norm(given))


class _FakeEncoder:
    """A TextEncoder: B strings -> (B, 4)."""

    dim = 4
    modalities = frozenset({"text"})

    def __init__(self) -> None:
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([np.full(4, len(t), np.float32) for t in texts])


def test_an_encoder_object_is_injected_like_a_function() -> None:
    enc = _FakeEncoder()
    assert isinstance(enc, TextEncoder)
    by_object = Embedders({"text": enc}).embed("text", "mug")
    by_fn = Embedders({"text": lambda t: enc.encode_texts([t])[0]}).embed("text", "mug")
    assert np.array_equal(by_object, by_fn)
    with pytest.raises(TypeError, match="encode_texts"):
        Embedders({"text": 3})  # type: ignore[dict-item]


def test_text_encoders_are_found_by_name_in_the_registry() -> None:
    registry.register("encoder", "fake_text", _FakeEncoder)
    try:
        enc = load_text_encoder("fake_text")
        assert isinstance(enc, _FakeEncoder) and enc.loaded
    finally:
        registry.REGISTRY.unregister("encoder", "fake_text")
    with pytest.raises(KeyError, match="unknown encoder"):
        load_text_encoder("no_such_encoder")
