"""Working memory: MemoryVLA's perceptual-cognitive memory bank, in torch.

``PerceptualCognitiveBank`` (an ``nn.Module``, used by the action expert) keeps,
per batch element, up to ``capacity`` entries, each with

- perceptual tokens (Np, D): low-level detail (object / patch embeddings),
- cognitive tokens (Nc, D): high-level gist (the whole-image embedding),
- a timestep (float: the step index within the episode).

One control step (``forward``)::

    p: (B, Np, D), c: (B, Nc, D), t: (B,)  ->  p_fused: (B, Np, D), c_fused: (B, Nc, D)

1. *retrieve*: the current tokens plus a sinusoidal encoding of ``t`` (through a
   learned projection) attend (multi-head cross-attention) over every stored
   token plus the encoding of its entry's timestep: ``(B, Np, D) x (B, L*Np, D) ->
   (B, Np, D)``, and likewise for the cognitive stream;
2. *fuse*: ``g = sigmoid(W [x; h])``, ``x' = g * h + (1 - g) * x`` per stream;
3. *write*: the entry (fused tokens if ``write_fused``, else the current ones)
   is appended; when a batch element holds more than ``capacity`` entries,
   *consolidation* merges its most similar ADJACENT pair (cosine of the
   entries' mean tokens over both streams) into their average (timestep too),
   so redundant consecutive frames collapse while distinct moments stay.

``reset(mask)`` empties the bank per batch element (a new episode). Entries
and masks live in buffers, so ``.to(device)`` moves them; a batch element with
an empty bank retrieves zeros and the gate then passes the current tokens.

``WorkingMemory`` wraps one bank (batch 1) as a ``Memory`` for the memory
system: a ``Percept``'s whole-image embedding is its cognitive token and its
object embeddings (padded / cut to Np, with a mask) its perceptual tokens; an
``Instruction`` of a new episode starts a new episode (reset; the same episode's
instruction again, e.g. its phase changing from show to act, keeps the bank). Its
``recall`` returns the entries nearest (cosine of the cognitive token) to the query
embedding, newest first on ties, with their time span and labels. It stores the
*current* tokens (``write_fused=False``) so that what it recalls is what was seen,
not a mix shaped by untrained weights.

torch is imported lazily (inside functions); importing this module is cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram.memory.base import Hit, Memory, Provenance
from engram.memory.embedding import Embedders, query_vectors
from engram.memory.index import l2n
from engram.memory.store import Record, Store
from engram.runtime.messages import Instruction, MemoryQuery, Message, Percept

__all__ = [  # noqa: F822 - PerceptualCognitiveBank comes from the module __getattr__
    "PerceptualCognitiveBank",
    "WorkingConfig",
    "WorkingMemory",
    "timestep_encoding",
]


@dataclass
class WorkingConfig:
    """Shape and capacity of the perceptual-cognitive memory bank."""

    dim: int = 512  # D: token width (the image-embedding size when wrapping percepts)
    perceptual_tokens: int = 8  # Np: perceptual tokens per entry
    cognitive_tokens: int = 1  # Nc: cognitive tokens per entry
    capacity: int = 16  # L: entries kept per batch element (then adjacent merges)
    heads: int = 4  # attention heads (must divide dim)
    timestep_period: float = 10_000.0  # longest period of the sinusoidal timestep encoding
    write_fused: bool = True  # store fused tokens (MemoryVLA) instead of the current ones
    device: str = "cpu"  # torch device of the bank (the wrapper's)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(
                f"WorkingConfig: dim {self.dim} must be divisible by heads {self.heads}"
            )
        if min(self.perceptual_tokens, self.cognitive_tokens, self.capacity) < 1:
            raise ValueError("WorkingConfig: token counts and capacity must be >= 1")


def timestep_encoding(t: Any, dim: int, *, period: float = 10_000.0) -> Any:
    """Sinusoidal encoding: (...,) float tensor -> (..., dim) (sin on even, cos on odd)."""
    import torch

    half = dim // 2
    freqs = torch.exp(
        -math.log(period) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1)
    )
    angles = t.float()[..., None] * freqs  # (..., half)
    enc = torch.zeros((*t.shape, dim), device=t.device, dtype=torch.float32)
    enc[..., 0 : 2 * half : 2] = torch.sin(angles)
    enc[..., 1 : 2 * half : 2] = torch.cos(angles)
    return enc


def _module_classes() -> tuple[type, type]:
    """Build the torch classes on first use (keeps ``import engram.memory.working`` light)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import torch
    from torch import nn

    class CrossAttention(nn.Module):
        """Multi-head attention of queries (B, Q, D) over keys/values (B, K, D) with a
        key mask (B, K) bool (True = usable); rows with no usable key give zeros."""

        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
            self.out = nn.Linear(dim, dim)

        def forward(self, x: Any, kv_keys: Any, kv_values: Any, mask: Any) -> Any:
            b, nq, d = x.shape
            nk = kv_keys.shape[1]
            h = self.heads
            q = self.q(x).view(b, nq, h, d // h).transpose(1, 2)  # (B, H, Q, d)
            k = self.k(kv_keys).view(b, nk, h, d // h).transpose(1, 2)  # (B, H, K, d)
            v = self.v(kv_values).view(b, nk, h, d // h).transpose(1, 2)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)  # (B, H, Q, K)
            att = att.masked_fill(~mask[:, None, None, :], float("-inf"))
            att = torch.softmax(att, dim=-1)
            att = torch.nan_to_num(att, nan=0.0)  # all keys masked -> no retrieval
            y = (att @ v).transpose(1, 2).reshape(b, nq, d)
            any_key = mask.any(dim=1)[:, None, None]
            return torch.where(any_key, self.out(y), torch.zeros_like(y))

    class PerceptualCognitiveBank(nn.Module):
        """MemoryVLA's perceptual-cognitive memory bank (see the module docstring).

        ``forward(p, c, t, *, p_mask=None, write=True)``: (B, Np, D), (B, Nc, D), (B,)
        -> fused (B, Np, D), (B, Nc, D). Also ``retrieve``, ``fuse``, ``write``,
        ``consolidate``, ``reset(batch_size=None, *, mask=None)``.
        """

        # buffers (registered by ``reset``) and submodules, for the type checker
        bank_p: Any  # (B, L, Np, D) perceptual tokens per entry
        bank_c: Any  # (B, L, Nc, D) cognitive tokens per entry
        bank_pm: Any  # (B, L, Np) bool: perceptual token present
        bank_t: Any  # (B, L) entry timesteps
        count: Any  # (B,) long: entries used
        p_attn: Any
        c_attn: Any

        def __init__(self, config: WorkingConfig | None = None) -> None:
            super().__init__()
            config = config or WorkingConfig()
            self.config = config
            d = config.dim
            self.t_proj = nn.Linear(d, d)
            self.p_attn = CrossAttention(d, config.heads)
            self.c_attn = CrossAttention(d, config.heads)
            self.p_gate = nn.Linear(2 * d, d)
            self.c_gate = nn.Linear(2 * d, d)
            self.reset(1)

        # ---- state -------------------------------------------------------------------
        def reset(self, batch_size: int | None = None, *, mask: Any = None) -> None:
            """Empty the bank: all of it (``batch_size`` sets B), or the rows where
            ``mask`` (B,) bool is True (new episodes)."""
            cfg = self.config
            if mask is not None:
                self.count[mask.to(self.count.device)] = 0
                return
            b = batch_size if batch_size is not None else self.count.shape[0]
            dev = next(self.parameters()).device
            L, Np, Nc, D = cfg.capacity + 1, cfg.perceptual_tokens, cfg.cognitive_tokens, cfg.dim
            self.register_buffer("bank_p", torch.zeros(b, L, Np, D, device=dev), persistent=True)
            self.register_buffer("bank_c", torch.zeros(b, L, Nc, D, device=dev), persistent=True)
            self.register_buffer("bank_pm", torch.zeros(b, L, Np, dtype=torch.bool, device=dev))
            self.register_buffer("bank_t", torch.zeros(b, L, device=dev))
            self.register_buffer("count", torch.zeros(b, dtype=torch.long, device=dev))

        @property
        def batch_size(self) -> int:
            return int(self.count.shape[0])

        def _te(self, t: Any) -> Any:
            return self.t_proj(
                timestep_encoding(t, self.config.dim, period=self.config.timestep_period)
            )

        # ---- one step ----------------------------------------------------------------
        def retrieve(self, p: Any, c: Any, t: Any, p_mask: Any = None) -> tuple[Any, Any]:
            """(B, Np, D), (B, Nc, D), (B,) -> retrieved (B, Np, D), (B, Nc, D)."""
            del p_mask  # queries are never masked; padded query rows are ignored downstream
            b, L = self.batch_size, self.config.capacity + 1
            Np, Nc, D = p.shape[1], c.shape[1], self.config.dim
            entry_ok = torch.arange(L, device=p.device)[None, :] < self.count[:, None]  # (B, L)
            te_bank = self._te(self.bank_t)  # (B, L, D)
            te_now = self._te(t)[:, None, :]  # (B, 1, D)
            keys_p = (self.bank_p + te_bank[:, :, None, :]).reshape(b, L * Np, D)
            mask_p = (self.bank_pm & entry_ok[:, :, None]).reshape(b, L * Np)
            keys_c = (self.bank_c + te_bank[:, :, None, :]).reshape(b, L * Nc, D)
            mask_c = entry_ok[:, :, None].expand(b, L, Nc).reshape(b, L * Nc)
            h_p = self.p_attn(p + te_now, keys_p, self.bank_p.reshape(b, L * Np, D), mask_p)
            h_c = self.c_attn(c + te_now, keys_c, self.bank_c.reshape(b, L * Nc, D), mask_c)
            return h_p, h_c

        def fuse(self, x: Any, h: Any, gate: Any) -> Any:
            """Gated fusion: (B, N, D) x2 -> (B, N, D)."""
            g = torch.sigmoid(gate(torch.cat([x, h], dim=-1)))
            return g * h + (1.0 - g) * x

        def forward(
            self, p: Any, c: Any, t: Any, *, p_mask: Any = None, write: bool = True
        ) -> tuple[Any, Any]:
            """(B, Np, D), (B, Nc, D), (B,) [, (B, Np) bool] -> fused (B, Np, D), (B, Nc, D)."""
            self._check(p, c, t, p_mask)
            h_p, h_c = self.retrieve(p, c, t)
            p_f = self.fuse(p, h_p, self.p_gate)
            c_f = self.fuse(c, h_c, self.c_gate)
            if write:
                if self.config.write_fused:
                    self.write(p_f.detach(), c_f.detach(), t, p_mask=p_mask)
                else:
                    self.write(p.detach(), c.detach(), t, p_mask=p_mask)
            return p_f, c_f

        def write(self, p: Any, c: Any, t: Any, *, p_mask: Any = None) -> list[int]:
            """Append one entry per batch element; consolidate where over capacity.

            Returns, per batch element, the index i of the merged pair (i, i+1) or -1."""
            self._check(p, c, t, p_mask)
            b = self.batch_size
            rows = torch.arange(b, device=p.device)
            slot = self.count.clone()
            if torch.is_grad_enabled():
                # The bank may be part of a graph being trained (retrieve read it): write
                # into fresh tensors so backward still sees the values it used.
                for name in ("bank_p", "bank_c", "bank_pm", "bank_t", "count"):
                    setattr(self, name, getattr(self, name).clone())
            with torch.no_grad():
                self.bank_p[rows, slot] = p
                self.bank_c[rows, slot] = c
                self.bank_pm[rows, slot] = (
                    p_mask if p_mask is not None else torch.ones_like(self.bank_pm[:, 0])
                )
                self.bank_t[rows, slot] = t.float()
                self.count += 1
            return self.consolidate()

        def consolidate(self) -> list[int]:
            """Merge the most similar adjacent pair of every batch element over capacity."""
            merged = [-1] * self.batch_size
            cap = self.config.capacity
            # buffers read once: each ``self.bank_*`` goes through nn.Module.__getattr__
            bank_p, bank_c, bank_pm = self.bank_p, self.bank_c, self.bank_pm
            with torch.no_grad():
                for bi, n in enumerate(self.count.tolist()):
                    if n <= cap:
                        continue
                    pm = bank_pm[bi, :n, :, None].float()  # (n, Np, 1)
                    pooled_p = (bank_p[bi, :n] * pm).sum(1) / pm.sum(1).clamp(min=1.0)
                    feats = torch.cat([pooled_p, bank_c[bi, :n].mean(1)], dim=-1)  # (n, 2D)
                    feats = torch.nn.functional.normalize(feats, dim=-1)
                    sim = (feats[:-1] * feats[1:]).sum(-1)  # (n-1,) adjacent cosine
                    i = int(torch.argmax(sim))
                    self._merge(bi, i, n)
                    merged[bi] = i
            return merged

        def _merge(self, bi: int, i: int, n: int) -> None:
            bank_p, bank_c, bank_pm, bank_t = self.bank_p, self.bank_c, self.bank_pm, self.bank_t
            a, b = bank_pm[bi, i].float(), bank_pm[bi, i + 1].float()
            w = (a + b).clamp(min=1.0)[:, None]
            bank_p[bi, i] = (bank_p[bi, i] * a[:, None] + bank_p[bi, i + 1] * b[:, None]) / w
            bank_pm[bi, i] = bank_pm[bi, i] | bank_pm[bi, i + 1]
            bank_c[bi, i] = (bank_c[bi, i] + bank_c[bi, i + 1]) / 2
            bank_t[bi, i] = (bank_t[bi, i] + bank_t[bi, i + 1]) / 2
            for buf in (bank_p, bank_c, bank_pm, bank_t):
                buf[bi, i + 1 : n - 1] = buf[bi, i + 2 : n].clone()
                buf[bi, n - 1] = 0
            self.count[bi] = n - 1

        def _check(self, p: Any, c: Any, t: Any, p_mask: Any) -> None:
            cfg = self.config
            b = self.batch_size
            want = {
                "p": (p, (b, cfg.perceptual_tokens, cfg.dim)),
                "c": (c, (b, cfg.cognitive_tokens, cfg.dim)),
                "t": (t, (b,)),
            }
            if p_mask is not None:
                want["p_mask"] = (p_mask, (b, cfg.perceptual_tokens))
            for name, (x, shape) in want.items():
                if tuple(x.shape) != shape:
                    raise ValueError(
                        f"PerceptualCognitiveBank: {name} must have shape {shape} "
                        f"(B={b}: call reset(batch_size) to change B), got {tuple(x.shape)}"
                    )

    _CLASSES = (CrossAttention, PerceptualCognitiveBank)
    return _CLASSES


_CLASSES: tuple[type, type] | None = None
_OMP: tuple[Any, ...] | None = None


def _omp_controls() -> tuple[Any, ...]:
    """``(omp_set_num_threads, omp_get_max_threads)`` of torch's OpenMP runtime, or ``()``.

    A write is a few dozen tiny torch ops on a (17, 8, 512) bank: with torch's default
    intra-op threads each op may wake OpenMP workers, and on 2 busy cores one write took
    ~4 ms instead of ~0.5 ms single-threaded. ``torch.set_num_threads`` would change the
    whole process (also perception's and the policy's torch); OpenMP's own setter changes
    only the calling thread's count (its ICV), restored after the write. Found once:
    torch's bundled libgomp; checked to take effect (else nothing is changed)."""
    global _OMP
    if _OMP is None:
        import ctypes
        import glob
        import os

        import torch

        found: tuple[Any, ...] = ()
        libs = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*")
        for path in sorted(glob.glob(libs)):
            try:
                lib = ctypes.CDLL(path)
                set_n, get_n = lib.omp_set_num_threads, lib.omp_get_max_threads
            except (OSError, AttributeError):
                continue
            torch.get_num_threads()  # torch's per-thread lazy init first (it sets the count)
            before = get_n()
            set_n(1)
            works = torch.get_num_threads() == 1
            set_n(before)
            if works:
                found = (set_n, get_n)
            break
        _OMP = found
    if _OMP:
        import torch

        torch.get_num_threads()  # this thread's lazy init, so it does not undo ours later
    return _OMP


def _write_cpu(bank: Any, p: np.ndarray, c: np.ndarray, t: float, pm: np.ndarray) -> int:
    """``bank.write`` for batch element 0 of a bank on the CPU, in numpy on views of its
    buffers (the same memory, so the torch module sees the result); returns the index of
    the merged pair or -1. Same steps as ``PerceptualCognitiveBank.write`` / ``consolidate``
    / ``_merge`` (``test_working.py`` checks they agree). Why a second copy of those ~20
    lines: a write there is some 60 tiny torch ops at 5-10 us of dispatch each (~0.5 ms per
    percept, holding the GIL: ingest's largest share); numpy's dispatch is ~1 us. The bank's
    own write stays the one for training and other devices."""
    bp, bc, bpm = bank.bank_p.numpy()[0], bank.bank_c.numpy()[0], bank.bank_pm.numpy()[0]
    bt, count = bank.bank_t.numpy()[0], bank.count.numpy()
    slot = int(count[0])
    bp[slot], bc[slot], bpm[slot], bt[slot] = p, c, pm, t
    n = slot + 1
    count[0] = n
    if n <= bank.config.capacity:
        return -1
    m = bpm[:n, :, None].astype(np.float32)  # (n, Np, 1)
    pooled = (bp[:n] * m).sum(1) / np.maximum(m.sum(1), 1.0)
    feats = np.concatenate([pooled, bc[:n].mean(1)], axis=-1)  # (n, 2D)
    # F.normalize: x / max(||x||, 1e-12)
    feats /= np.maximum(np.sqrt(np.einsum("ij,ij->i", feats, feats)), 1e-12)[:, None]
    i = int(np.argmax(np.einsum("ij,ij->i", feats[:-1], feats[1:])))  # adjacent cosine
    a, b = bpm[i].astype(np.float32), bpm[i + 1].astype(np.float32)
    w = np.maximum(a + b, 1.0)[:, None]
    bp[i] = (bp[i] * a[:, None] + bp[i + 1] * b[:, None]) / w
    bpm[i] |= bpm[i + 1]
    bc[i] = (bc[i] + bc[i + 1]) / 2
    bt[i] = (bt[i] + bt[i + 1]) / 2
    for buf in (bp, bc, bpm, bt):
        buf[i + 1 : n - 1] = buf[i + 2 : n]  # numpy copies overlapping slices safely
        buf[n - 1] = 0
    count[0] = n - 1
    return i


def __getattr__(name: str) -> Any:
    """``PerceptualCognitiveBank`` is defined on first access (it subclasses
    ``torch.nn.Module``, and torch is imported lazily)."""
    if name == "PerceptualCognitiveBank":
        return _module_classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class WorkingMemory(Memory):
    """The bank as a ``Memory`` (batch 1): percepts in, nearest entries out."""

    name = "working"
    accepts = ("Percept", "Instruction")
    #: save(dir) into a copy of its previous save only writes what changed (store.sync)
    incremental_save = True
    #: a bank on the CPU is written in numpy on its buffers (``_write_cpu``: ~4x less CPU
    #: per percept); False: through the bank's own torch ``write``, as on other devices
    write_in_numpy = True

    def __init__(
        self,
        config: WorkingConfig | None = None,
        *,
        embedders: Embedders | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or WorkingConfig(write_fused=False)
        self.embedders = embedders
        self.seed = seed
        self.bank: Any = None  # built on the first percept (D = its embedding size)
        self._meta: list[dict[str, Any]] = []  # per entry: stamps, labels, provenance
        self._step = 0
        self._episode_id = ""  # the episode of the last Instruction ("" = none named)
        self._weights_version = 1  # bumped when the weights change (train, load)
        self.counters = {"written": 0, "episodes": 0, "merges": 0}

    def _build(self, dim: int) -> Any:
        """Build the bank for embeddings of size ``dim``; returns it."""
        import torch

        if dim % self.config.heads:
            raise ValueError(
                f"Percept.embedding: dimension {dim} is not divisible by heads {self.config.heads}"
            )
        cfg = WorkingConfig(**{**self.config.__dict__, "dim": dim})
        self.config = cfg
        torch.manual_seed(self.seed)
        self.bank = _module_classes()[1](cfg).to(cfg.device).eval()
        return self.bank

    def write(self, msg: Message, *, topic: str = "") -> None:
        if isinstance(msg, Instruction):
            # a new task empties the bank; the same episode's instruction again (its
            # phase changed, or a follow-up question) keeps what it remembers
            if not msg.episode_id or msg.episode_id != self._episode_id:
                self.reset_episode()
            self._episode_id = msg.episode_id
            return
        if not isinstance(msg, Percept) or msg.embedding is None or not msg.embedding.size:
            return
        d = msg.embedding.size
        if self.bank is not None and d != self.config.dim:
            raise ValueError(
                f"Percept.embedding: dimension {d} differs from the bank's {self.config.dim}"
            )
        objs = msg.object_embeddings
        if objs is not None and len(objs) and objs.shape[1] != d:
            raise ValueError(
                f"Percept.object_embeddings: dimension {objs.shape[1]} differs from embedding's {d}"
            )
        import torch

        bank = self._build(d) if self.bank is None else self.bank
        cfg = self.config
        np_tok = cfg.perceptual_tokens
        p = np.zeros((np_tok, d), np.float32)
        pm = np.zeros(np_tok, bool)
        if objs is not None and len(objs):
            k = min(len(objs), np_tok)
            p[:k] = l2n(objs[:k])
            pm[:k] = True
        else:  # no objects: the frame itself is the one perceptual token
            p[0] = l2n(msg.embedding)
            pm[0] = True
        c = np.repeat(l2n(msg.embedding)[None], cfg.cognitive_tokens, axis=0)
        dev = cfg.device
        if self.write_in_numpy and bank.count.device.type == "cpu":  # numpy on the buffers
            merged = [_write_cpu(bank, p, c, float(self._step), pm)]
        else:
            omp = _omp_controls()
            if omp:  # one OpenMP thread for this thread's torch ops (note on _omp_controls)
                prev = omp[1]()
                omp[0](1)
            try:
                with torch.inference_mode():
                    merged = bank.write(
                        torch.from_numpy(p)[None].to(dev),
                        torch.from_numpy(c)[None].to(dev),
                        torch.tensor([float(self._step)], device=dev),
                        p_mask=torch.from_numpy(pm)[None].to(dev),
                    )
            finally:
                if omp:
                    omp[0](prev)
        self._meta.append(
            {
                "start_ns": msg.stamp_ns,
                "end_ns": msg.stamp_ns,
                "labels": list(msg.object_labels[:np_tok]),
                # = Provenance.of(msg, topic).to_dict(), without dataclasses.asdict's deep copy
                "provenance": {
                    "source_topic": topic,
                    "stamp_ns": msg.stamp_ns,
                    "seq": msg.seq,
                    "producer": "",
                },
                "frames": 1,
            }
        )
        if merged[0] >= 0:
            i = merged[0]
            a, b = self._meta[i], self._meta.pop(i + 1)
            a["end_ns"] = max(a["end_ns"], b["end_ns"])
            a["start_ns"] = min(a["start_ns"], b["start_ns"])
            a["labels"] = sorted(set(a["labels"]) | set(b["labels"]))
            a["frames"] += b["frames"]
            self.counters["merges"] += 1
        self._step += 1
        self.counters["written"] += 1

    def reset(self) -> None:
        """Forget everything: no entries, and a bank built afresh on the next write."""
        self.bank = None
        self._meta = []
        self._step = 0

    def reset_episode(self) -> None:
        """Empty the bank (a new task)."""
        if self.bank is not None:
            self.bank.reset(1)
        self._meta = []
        self._step = 0
        self.counters["episodes"] += 1

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> cognitive tokens (L, Nc, D), perceptual tokens (L, Np, D), timesteps (L,)."""
        if self.bank is None:
            d = self.config.dim
            return np.zeros((0, 1, d)), np.zeros((0, 1, d)), np.zeros(0)
        n = int(self.bank.count[0])
        return (
            self.bank.bank_c[0, :n].cpu().numpy(),
            self.bank.bank_p[0, :n].cpu().numpy(),
            self.bank.bank_t[0, :n].cpu().numpy(),
        )

    def recall(self, query: MemoryQuery) -> list[Hit]:
        if self.bank is None or not self._meta:
            return []
        qv = query_vectors(query.text, query.embedding, self.embedders, {"image": self.config.dim})
        if "image" not in qv:
            return []
        cog, _, steps = self.entries()
        scores = l2n(cog.mean(axis=1)) @ qv["image"]  # (L,)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), -i))
        hits = []
        for i in order:
            if scores[i] <= 0:
                break
            m = self._meta[i]
            if query.t0_ns and m["end_ns"] < query.t0_ns:
                continue
            if query.t1_ns and m["start_ns"] > query.t1_ns:
                continue
            hits.append(
                Hit(
                    memory=self.name,
                    score=float(max(scores[i], 0.0)),
                    text=f"working entry {i} ({m['frames']} frames): {', '.join(m['labels'])}",
                    stamp_ns=m["start_ns"],
                    record_id=f"entry:{i}",
                    provenance=Provenance(**m["provenance"]),
                    data={
                        "timestep": float(steps[i]),
                        "end_ns": m["end_ns"],
                        "frames": m["frames"],
                    },
                )
            )
            if len(hits) >= query.top_k:
                break
        return hits

    def consolidate(self, *, now_ns: int | None = None) -> None:
        """The bank consolidates on every write; nothing else to do."""

    def save(self, directory: str | Path) -> None:
        """Two records: the bank's weights (rewritten only when they changed, e.g. after
        ``load``) and its entries (tokens, masks, timesteps, per-entry metadata)."""
        meta = {
            "config": self.config.__dict__,
            "step": self._step,
            "entries": self._meta,
            "counters": self.counters,
            "built": self.bank is not None,
        }
        weights, buffers = {}, {}
        if self.bank is not None:
            names = {n for n, _ in self.bank.named_buffers()}
            for k, v in self.bank.state_dict().items():
                (buffers if k in names else weights)[k.replace(".", "__")] = (
                    v.detach().cpu().numpy()
                )
        records = [Record(self.name, "bank", payload=meta, arrays=buffers)]
        if weights:
            records.append(
                Record(self.name, "weights", arrays=weights, version=self._weights_version)
            )
        with Store(directory) as store:
            store.sync(self.name, records, keep_history=False)

    def load(self, directory: str | Path) -> None:
        import torch

        with Store(directory) as store:
            rec = store.get(self.name, "bank")
            wrec = store.get(self.name, "weights")
        if rec is None:
            raise ValueError(f"{directory}: no working memory saved there")
        m = rec.payload
        self.config = WorkingConfig(**m["config"])
        self._step, self._meta = m["step"], list(m["entries"])
        self.counters.update(m["counters"])
        self.bank = None
        if m["built"]:
            self._build(self.config.dim)
            arrays = {**rec.arrays, **(wrec.arrays if wrec is not None else {})}
            state = {k.replace("__", "."): torch.from_numpy(np.array(v)) for k, v in arrays.items()}
            self.bank.load_state_dict(state)
            self._weights_version = wrec.version if wrec is not None else 1

    def __len__(self) -> int:
        return len(self._meta)

    def stats(self) -> dict[str, Any]:
        return {"records": len(self), "capacity": self.config.capacity, **self.counters}
