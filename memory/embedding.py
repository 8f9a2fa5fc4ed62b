"""Embedding spaces of the memories and the text encoders injected into them.

Memory does not depend on perception: a text encoder is *injected*. It is either a
callable ``text -> (D,)`` or an object with the small ``TextEncoder`` interface
(``encode_texts(list[str]) -> (N, D) float32`` and ``dim``), which perception's
encoders (``MiniLMEncoder``, ``ClipEncoder`` of the perception package)
have. ``load_text_encoder(name)`` obtains the encoder registered under that name
(``registry.get("encoder", name)``: a registry lookup, no dependency on perception).

``Embedders`` names the embedding spaces ("image": CLIP image/text space,
"text": MiniLM sentences, "audio": spectral) and holds one optional text encoder
per space with a small shared cache, so the memories of one system embed a query
once per space. ``query_vectors`` turns a query into one unit vector per space a
memory holds.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from engram.memory.index import l2n
from engram.runtime import registry

__all__ = [
    "EmbedFn",
    "Embedders",
    "TextEncoder",
    "load_text_embedder",
    "load_text_encoder",
    "query_vectors",
]

EmbedFn = Callable[[str], np.ndarray]


@runtime_checkable
class TextEncoder(Protocol):
    """What memory needs of a text encoder: B strings -> (B, D) float32 rows, and D."""

    @property
    def dim(self) -> int: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def as_embed_fn(encoder: EmbedFn | TextEncoder) -> EmbedFn:
    """A ``text -> (D,)`` callable for a ``TextEncoder`` (a callable passes unchanged)."""
    if isinstance(encoder, TextEncoder):
        return lambda text: encoder.encode_texts([text])[0]
    if callable(encoder):
        return encoder
    raise TypeError(
        f"a text embedder must be a callable text -> (D,) or have encode_texts(); "
        f"got {type(encoder).__name__}"
    )


def load_text_encoder(name: str = "minilm") -> TextEncoder:
    """The text encoder registered as ``name`` (kind "encoder"), built with its default
    config and loaded. ``RegistryError`` names the known encoders for an unknown name."""
    cls = registry.get("encoder", name)
    encoder = cls()
    if "text" not in getattr(encoder, "modalities", {"text"}):
        raise ValueError(f"encoder {name!r} has no text modality")
    encoder.load()
    return encoder


def load_text_embedder(name: str = "minilm") -> EmbedFn:
    """The registered encoder ``name`` as ``text -> (D,) float32`` (see ``load_text_encoder``)."""
    return as_embed_fn(load_text_encoder(name))


class Embedders:
    """Named embedding spaces, each with an optional text encoder, and a shared cache.

    ``embed_text`` maps a space name ("image", "text", "audio", ...) to a callable
    ``text -> (D,)`` or a ``TextEncoder``. ``embed(space, text)`` returns an
    L2-normalised float32 vector or None when that space has no text encoder.
    Thread-safe; results are cached (LRU).
    """

    def __init__(
        self,
        embed_text: Mapping[str, EmbedFn | TextEncoder] | None = None,
        *,
        cache_size: int = 512,
    ) -> None:
        self._fns = {space: as_embed_fn(enc) for space, enc in (embed_text or {}).items()}
        self._cache: collections.OrderedDict[tuple[str, str], np.ndarray] = (
            collections.OrderedDict()
        )
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._space_locks: dict[str, threading.Lock] = {}
        self.calls = 0  # encoder invocations (cache misses)

    def has(self, space: str) -> bool:
        return space in self._fns

    @property
    def spaces(self) -> list[str]:
        return sorted(self._fns)

    def embed(self, space: str, text: str) -> np.ndarray | None:
        fn = self._fns.get(space)
        if fn is None or not text:
            return None
        key = (space, text)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            space_lock = self._space_locks.setdefault(space, threading.Lock())
        # One call at a time per encoder (encoders need not be thread-safe); a memory
        # asking for the same text meanwhile waits and then finds it in the cache.
        with space_lock:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
            vec = np.asarray(fn(text), dtype=np.float32).reshape(-1)
            if not np.all(np.isfinite(vec)):
                raise ValueError(f"embed_text[{space!r}] returned NaN/inf for {text!r}")
            vec = l2n(vec)
            with self._lock:
                self.calls += 1
                self._cache[key] = vec
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vec


def query_vectors(
    query_text: str,
    query_embedding: np.ndarray | None,
    embedders: Embedders | None,
    space_dims: dict[str, int],
) -> dict[str, np.ndarray]:
    """The query as one unit vector per embedding space this memory holds.

    A given embedding goes to every space of the same dimension; the text is
    embedded (cached) in every held space that has a text encoder.
    """
    out: dict[str, np.ndarray] = {}
    if query_embedding is not None and query_embedding.size:
        vec = l2n(query_embedding.reshape(-1))
        for space, dim in space_dims.items():
            if dim == vec.size:
                out[space] = vec
    if query_text and embedders is not None:
        for space, dim in space_dims.items():
            if space in out or not embedders.has(space):
                continue
            vec = embedders.embed(space, query_text)
            if vec is not None and vec.size == dim:
                out[space] = vec
    return out
