"""MemoryVLA-style action expert: memory-conditioned diffusion over action chunks.

One control step, batch ``B``, token width ``D``, chunk horizon ``H``, action size ``A``::

    state (B, S) ──MLP──▶ state tokens (B, Ns, D) ┐
    image (B, h, w, 3) ──CNN──▶ image tokens (B, 4, D) ┴─▶ perceptual tokens p (B, Np, D)
    instruction embedding (B, E) + mean(p) ──MLP──▶ cognitive token c (B, 1, D)

    PerceptualCognitiveBank (memory/working.py), this episode's past entries:
        p, c ──retrieve (cross-attention, timestep encoding) + gated fusion──▶ p', c'
        (``use_memory=False`` removes the bank: p' = p, c' = c, no memory parameters)

    conditioning tokens [p', c'] (B, Np + 1, D)
    noisy chunk x_t (B, H, A) + diffusion step t ──transformer denoiser──▶ eps_hat (B, H, A)

The denoiser is a pre-norm transformer decoder: H action tokens (plus the diffusion
step embedding) self-attend and cross-attend to the conditioning tokens.

Training is DDPM with epsilon prediction (``noise.py`` beside this module, squared-cosine
schedule, ``diffusion_steps`` levels); sampling is DDIM in ``ddim_steps`` steps
(or full DDPM for comparison). Conditioning is computed once per chunk, the
denoiser runs once per sampling step.

Normalisation lives in the model as buffers, so a checkpoint carries it: actions are
mapped to ``[-1, 1]`` per dimension by their min / max in the training data, states
are standardised by mean / std. Inputs and outputs of the public methods are in raw
(unnormalised) units.

Memory, in training and at inference. The bank stores each step's *current* (unfused)
tokens with its step index. In an episode, ``observe`` writes a step that needs no
chunk and ``online_condition`` (one ``act``) retrieves, fuses and writes; past
``memory_capacity`` entries the bank merges its most similar adjacent pair. In
training, a sample at step ``t`` gets as memory a random ordered subset of up to
``memory_context`` earlier steps of its episode, encoded by the same encoders and
installed as the bank's entries for one differentiable retrieval, so the encoders,
the retrieval and the gates learn end to end from the behaviour-cloning loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engram.planners.policies.diffusion.noise import NoiseSchedule, NoiseScheduleConfig

__all__ = ["ActionExpert", "ActionExpertConfig", "prepare_images", "resolve_device"]


@dataclass
class ActionExpertConfig:
    """Sizes and switches of ``ActionExpert`` (saved in every checkpoint)."""

    action_dim: int = 7  # A: numbers per action
    horizon: int = 8  # H: actions predicted per chunk
    state_dim: int = 16  # S: low-dim observation size (0 = no state input)
    image_size_px: int = 0  # side of square input images (0 = no image input)
    instruction_dim: int = 384  # E: instruction/subgoal embedding size (MiniLM)
    token_dim: int = 128  # D: width of every token
    state_tokens: int = 2  # Ns: tokens the state MLP produces
    num_heads: int = 4  # attention heads (token_dim must divide by it)
    denoiser_layers: int = 3  # transformer decoder layers of the denoiser
    ff_mult: int = 4  # feed-forward width = ff_mult * token_dim
    dropout: float = 0.0  # dropout in the denoiser
    diffusion_steps: int = 100  # T: DDPM noise levels (training)
    ddim_steps: int = 10  # K: DDIM sampling steps at inference
    use_memory: bool = True  # ablation switch: False removes the memory input entirely
    memory_capacity: int = 16  # most entries the bank keeps (older ones consolidated)
    memory_context: int = 16  # past steps per training sample used as memory
    # observation keys flattened, in this order, into the state vector (sim data:
    # robot, objects, task); empty = the observation dict carries "state" itself
    state_keys: tuple[str, ...] = ()
    action_space: str = ""  # ActionChunk.action_space of the outputs (e.g. arm_ee_delta)
    dt_s: float = 0.1  # seconds between consecutive actions of a chunk
    # state layout the expert was trained on ("" = the observation's own "state";
    # features.FEATURES = the shared tabletop layout, built from env or bus inputs)
    features: str = ""
    tasks: tuple[str, ...] = ()  # tasks in the training data (multi-task)
    # per task: the tracked objects' labels, in state-slot order (tabletop layout)
    object_names: dict[str, list[str]] = field(default_factory=dict)
    # what the actions are (features.ACTION_MODES): "delta" = the controller's actions
    # as recorded; "waypoint" = end-effector targets the executor tracks (tabletop)
    action_mode: str = "delta"
    # per task, per object label: where perception's centroid sits relative to the
    # position the state was trained on (m; a cup's body origin is its base, its
    # centroid 4.5 cm up); the policy node subtracts it from perceived centroids
    object_offsets_m: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # "" = states and waypoints in the world frame; "goal" (tabletop waypoints): a
    # subgoal-conditioned chunk sees the state and predicts waypoints relative to the
    # subgoal's target (x, y), without memory; the instruction-conditioned (end-to-end)
    # pass reads the memory bank and points: which skill, object slot and frame slot
    # (the target) the next subgoal is (``pointer_*`` heads), then runs the goal pass
    frame: str = ""
    pointer_slots: int = 0  # object slots the pointer chooses among (0 = no pointer)
    pointer_skills: tuple[str, ...] = ()  # skills the pointer chooses among
    pointer_loss_weight: float = 0.2  # weight of the pointer's cross-entropy
    # goal frame: the goal slots (zero there) carry the running subgoal's progress
    # (features.subgoal_progress: rise above its lowest point, steps since it began)
    subgoal_progress: bool = False

    def __post_init__(self) -> None:
        for name in (
            "action_dim",
            "horizon",
            "token_dim",
            "num_heads",
            "denoiser_layers",
            "diffusion_steps",
            "ddim_steps",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"ActionExpertConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.state_dim < 0 or self.image_size_px < 0:
            raise ValueError("ActionExpertConfig.state_dim and image_size_px must be >= 0")
        if self.state_dim == 0 and self.image_size_px == 0:
            raise ValueError("ActionExpertConfig needs a state input, an image input, or both")
        if self.image_size_px and self.image_size_px < 16:
            raise ValueError(
                f"ActionExpertConfig.image_size_px must be >= 16, got {self.image_size_px}"
            )
        if self.token_dim % self.num_heads:
            raise ValueError(
                f"ActionExpertConfig.token_dim ({self.token_dim}) must divide by num_heads ({self.num_heads})"
            )
        if self.action_mode not in ("delta", "waypoint"):
            raise ValueError(
                f"ActionExpertConfig.action_mode must be 'delta' or 'waypoint', got {self.action_mode!r}"
            )
        if self.frame not in ("", "goal"):
            raise ValueError(f"ActionExpertConfig.frame must be '' or 'goal', got {self.frame!r}")
        if self.ddim_steps > self.diffusion_steps:
            raise ValueError("ActionExpertConfig.ddim_steps must be <= diffusion_steps")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionExpertConfig:
        """Ignores unknown keys (older / newer checkpoints), fails on bad values."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        for key in ("state_keys", "tasks", "pointer_skills"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_images(images: Any, size_px: int) -> Any:
    """(N, H, W, 3) uint8 -> (N, size_px, size_px, 3) uint8: centre crop to a square,
    then area-resize (the same in training and at inference)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    _, h, w, _ = arr.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    arr = arr[:, top : top + side, left : left + side]
    if side == size_px:
        return np.ascontiguousarray(arr)
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    mode = "area" if side > size_px else "bilinear"
    y = F.interpolate(x, size=(size_px, size_px), mode=mode)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _sinusoid(x: Any, dim: int) -> Any:
    """(B,) float positions -> (B, dim) sinusoidal embedding."""
    import torch

    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device) / max(half - 1, 1))
    args = x.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


def _build(config: ActionExpertConfig):  # noqa: ANN202 - returns an nn.Module
    """Build the torch module (torch is imported here, not at module import)."""
    import torch
    from torch import nn

    cfg = config
    d = cfg.token_dim

    class _ImageEncoder(nn.Module):
        """(B, h, w, 3) uint8 -> (B, 4, D): small CNN, 2x2 pooled grid."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 5, stride=2, padding=2),
                nn.GELU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(64, d, 3, stride=2, padding=1),
                nn.GELU(),
                nn.AdaptiveAvgPool2d(2),
            )
            self.pos = nn.Parameter(torch.zeros(1, 4, d))

        def forward(self, images: Any) -> Any:
            x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, h, w) in [-1, 1]
            feat = self.net(x)  # (B, D, 2, 2)
            return feat.flatten(2).transpose(1, 2) + self.pos  # (B, 4, D)

    class _Expert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            s, a = cfg.state_dim, cfg.action_dim
            # normalisation buffers (set by ``set_normalization``)
            self.register_buffer("action_min", -torch.ones(a))
            self.register_buffer("action_max", torch.ones(a))
            self.register_buffer("state_mean", torch.zeros(max(s, 1)))
            self.register_buffer("state_std", torch.ones(max(s, 1)))
            if s:
                self.state_enc = nn.Sequential(
                    nn.Linear(s, d), nn.GELU(), nn.Linear(d, d * cfg.state_tokens)
                )
                self.state_pos = nn.Parameter(torch.zeros(1, cfg.state_tokens, d))
            if cfg.image_size_px:
                self.image_enc = _ImageEncoder()
            self.percept_norm = nn.LayerNorm(d)
            self.instr_proj = nn.Linear(cfg.instruction_dim, d)
            self.cog_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
            self.cog_norm = nn.LayerNorm(d)
            if cfg.use_memory:
                self.memory = _make_bank(cfg)
            # denoiser
            self.act_in = nn.Linear(a, d)
            self.act_pos = nn.Parameter(torch.zeros(1, cfg.horizon, d))
            self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
            self.cond_type = nn.Parameter(torch.zeros(1, 2, d))  # perceptual / cognitive
            layer = nn.TransformerDecoderLayer(
                d,
                cfg.num_heads,
                dim_feedforward=cfg.ff_mult * d,
                dropout=cfg.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.denoiser = nn.TransformerDecoder(layer, cfg.denoiser_layers)
            self.out_norm = nn.LayerNorm(d)
            self.act_out = nn.Linear(d, a)
            if cfg.pointer_slots:
                # end-to-end pointer: fused cognitive token + mean perceptual token ->
                # logits of [skill | object slot | frame slot]
                n = len(cfg.pointer_skills) + 2 * cfg.pointer_slots
                self.pointer = nn.Sequential(
                    nn.LayerNorm(2 * d), nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, n)
                )
            nn.init.normal_(self.act_pos, std=0.02)
            if s:
                nn.init.normal_(self.state_pos, std=0.02)
            nn.init.normal_(self.cond_type, std=0.02)

        # ---- encoders ---------------------------------------------------------
        def encode(self, state: Any, image: Any, instruction: Any) -> tuple[Any, Any]:
            """(B, S) normalised state, (B, h, w, 3) uint8 image | None, (B, E)
            -> perceptual (B, Np, D), cognitive (B, 1, D)."""
            tokens = []
            if cfg.state_dim:
                b = state.shape[0]
                tokens.append(self.state_enc(state).view(b, cfg.state_tokens, d) + self.state_pos)
            if cfg.image_size_px:
                tokens.append(self.image_enc(image))
            p = self.percept_norm(torch.cat(tokens, dim=1))
            c = self.cog_mlp(torch.cat([self.instr_proj(instruction), p.mean(dim=1)], dim=-1))
            return p, self.cog_norm(c)[:, None, :]

        def condition(self, p: Any, c: Any) -> Any:
            """perceptual (B, Np, D), cognitive (B, 1, D) -> conditioning tokens (B, Np + 1, D)."""
            return torch.cat([p + self.cond_type[:, :1], c + self.cond_type[:, 1:]], dim=1)

        def denoise(self, x_t: Any, t: Any, cond: Any) -> Any:
            """(B, H, A) noisy normalised chunk, (B,) steps, (B, N, D) -> eps_hat (B, H, A)."""
            temb = self.time_mlp(_sinusoid(t, d))[:, None, :]  # (B, 1, D)
            h = self.act_in(x_t) + self.act_pos + temb
            memory = torch.cat([cond, temb], dim=1)
            h = self.denoiser(h, memory)
            return self.act_out(self.out_norm(h))

    return _Expert()


def torch_cat(*xs: Any) -> Any:
    import torch

    return torch.cat(xs, dim=-1)


def _perceptual_tokens(cfg: ActionExpertConfig) -> int:
    """Np: state tokens plus the 2x2 image grid."""
    return (cfg.state_tokens if cfg.state_dim else 0) + (4 if cfg.image_size_px else 0)


def _make_bank(cfg: ActionExpertConfig):  # noqa: ANN202 - nn.Module
    """MemoryVLA's ``PerceptualCognitiveBank`` (memory/working.py) sized for this expert.

    It stores the *current* (unfused) tokens of each step (``write_fused=False``): that is
    what a training sample's memory holds too (its past steps, encoded independently).
    """
    from engram.memory.working import PerceptualCognitiveBank, WorkingConfig

    return PerceptualCognitiveBank(
        WorkingConfig(
            dim=cfg.token_dim,
            perceptual_tokens=_perceptual_tokens(cfg),
            cognitive_tokens=1,
            capacity=cfg.memory_capacity,
            heads=cfg.num_heads,
            write_fused=False,
        )
    )


# The bank keeps its entries in these buffers; retrieval reads them. The expert swaps
# in other entries (a training batch's past steps, or a caller's bank) around a call,
# so the trained retrieval / gate weights are used with any entries.
_ENTRY_BUFFERS = ("bank_p", "bank_c", "bank_pm", "bank_t", "count")


@contextmanager
def _entries_installed(bank: Any, entries: dict[str, Any]) -> Iterator[Any]:
    saved = {k: getattr(bank, k) for k in _ENTRY_BUFFERS}
    try:
        for k, v in entries.items():
            setattr(bank, k, v)
        yield bank
    finally:
        for k, v in saved.items():
            setattr(bank, k, v)


def _check_compatible(bank: Any, other: Any) -> None:
    a, b = bank.config, getattr(other, "config", None)
    keys = ("dim", "perceptual_tokens", "cognitive_tokens", "capacity")
    if b is None or any(getattr(a, k) != getattr(b, k) for k in keys):
        want = {k: getattr(a, k) for k in keys}
        got = None if b is None else {k: getattr(b, k) for k in keys}
        raise ValueError(f"memory: a PerceptualCognitiveBank with {want} is needed, got {got}")
    if other.batch_size != 1:
        raise ValueError(
            f"memory: the bank must hold one episode (batch 1), has {other.batch_size}"
        )


class ActionExpert:
    """The memory-conditioned diffusion action expert (holds the torch module).

    ``module`` is the ``nn.Module`` (parameters and normalisation buffers);
    ``schedule`` the noise schedule. Build with ``ActionExpert(config, device=...)``.
    """

    def __init__(self, config: ActionExpertConfig, *, device: str = "auto") -> None:
        self.config = config
        self.device = resolve_device(device)
        self.module = _build(config).to(self.device)
        self.schedule = NoiseSchedule(NoiseScheduleConfig(train_steps=config.diffusion_steps))

    # ---------------------------------------------------------------- normalisation

    def set_normalization(
        self,
        *,
        action_min: Any,
        action_max: Any,
        state_mean: Any = None,
        state_std: Any = None,
    ) -> None:
        """Per-dimension stats from the training data: actions (A,), states (S,)."""
        import torch

        m = self.module
        a = self.config.action_dim

        def _vec(x: Any, n: int, name: str) -> Any:
            t = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
            if t.numel() != n:
                raise ValueError(f"normalisation {name}: expected {n} values, got {t.numel()}")
            return t.to(self.device)

        lo, hi = _vec(action_min, a, "action_min"), _vec(action_max, a, "action_max")
        # A constant dimension gets a unit range centred on its value.
        flat = (hi - lo) < 1e-6
        lo, hi = torch.where(flat, lo - 1.0, lo), torch.where(flat, hi + 1.0, hi)
        m.action_min.copy_(lo)
        m.action_max.copy_(hi)
        if self.config.state_dim and state_mean is not None:
            s = self.config.state_dim
            m.state_mean.copy_(_vec(state_mean, s, "state_mean"))
            m.state_std.copy_(_vec(state_std, s, "state_std").clamp(min=1e-3))

    def normalize_actions(self, actions: Any) -> Any:
        """(..., A) raw -> (..., A) in [-1, 1]."""
        m = self.module
        return 2.0 * (actions - m.action_min) / (m.action_max - m.action_min) - 1.0

    def unnormalize_actions(self, actions: Any) -> Any:
        """(..., A) in [-1, 1] -> (..., A) raw."""
        m = self.module
        return (actions + 1.0) * 0.5 * (m.action_max - m.action_min) + m.action_min

    def normalize_state(self, state: Any) -> Any:
        """(..., S) raw -> (..., S) standardised (empty when the config has no state)."""
        m = self.module
        if not self.config.state_dim:
            return state
        return (state - m.state_mean) / m.state_std

    # ---------------------------------------------------------------- encoding + memory

    def encode(self, state: Any, image: Any, instruction: Any) -> tuple[Any, Any]:
        """Raw state (B, S), image (B, h, w, 3) uint8 | None, instruction (B, E)
        -> perceptual tokens (B, Np, D), cognitive token (B, 1, D)."""
        self._check_inputs(state, image, instruction)
        return self.module.encode(self.normalize_state(state), image, instruction)

    def _check_inputs(self, state: Any, image: Any, instruction: Any) -> None:
        cfg = self.config
        b = instruction.shape[0]
        if instruction.dim() != 2 or instruction.shape[1] != cfg.instruction_dim:
            raise ValueError(
                f"instruction embedding must be (B, {cfg.instruction_dim}), got {tuple(instruction.shape)}"
            )
        if cfg.state_dim and (
            state is None or state.dim() != 2 or tuple(state.shape) != (b, cfg.state_dim)
        ):
            got = None if state is None else tuple(state.shape)
            raise ValueError(f"state must be ({b}, {cfg.state_dim}), got {got}")
        if cfg.image_size_px:
            px = cfg.image_size_px
            if image is None or tuple(image.shape) != (b, px, px, 3):
                got = None if image is None else tuple(image.shape)
                raise ValueError(f"image must be ({b}, {px}, {px}, 3) uint8, got {got}")

    # ---------------------------------------------------------------- training

    def loss(self, batch: dict[str, Any], *, generator: Any = None) -> Any:
        """DDPM epsilon-prediction loss (scalar) on one batch of raw tensors.

        batch keys (B samples, M memory slots):
          ``state`` (B, S) float32, ``image`` (B, h, w, 3) uint8 (if images are used),
          ``instruction`` (B, E) float32, ``actions`` (B, H, A) float32 raw,
          ``step`` (B,) int64 control step of each sample in its episode,
          and for the memory variant ``mem_state`` (B, M, S), ``mem_image``
          (B, M, h, w, 3), ``mem_step`` (B, M) int64, ``mem_mask`` (B, M) bool (True =
          a real past step; a sample at the start of an episode has none).
        """
        import torch

        cfg = self.config
        state, image, instr = batch.get("state"), batch.get("image"), batch["instruction"]
        p, c = self.encode(state, image, instr)
        if cfg.use_memory:
            p, c = self._fuse_training_memory(p, c, batch)
        cond = self.module.condition(p, c)
        x0 = self.normalize_actions(batch["actions"]).clamp(-1.0, 1.0)
        bsz = x0.shape[0]
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        t = self.schedule.sample_timesteps(bsz, device=x0.device, generator=generator)
        x_t = self.schedule.add_noise(x0, noise, t)
        eps = self.module.denoise(x_t, t, cond)
        if "diffuse" not in batch:
            return torch.nn.functional.mse_loss(eps, noise)
        # goal frame: only the subgoal-conditioned samples train the denoiser, the
        # instruction-conditioned ones train the pointer
        w = batch["diffuse"].float()
        if "weight" in batch:  # (B, H) per chunk position (press descents weigh more)
            per = (((eps - noise) ** 2).mean(dim=2) * batch["weight"].float()).mean(dim=1)
        else:
            per = ((eps - noise) ** 2).mean(dim=(1, 2))
        total = (per * w).sum() / w.sum().clamp(min=1.0)
        if cfg.pointer_slots and "pointer" in batch:
            total = total + cfg.pointer_loss_weight * self._pointer_loss(p, c, batch["pointer"])
        return total

    def pointer_logits(self, p: Any, c: Any) -> tuple[Any, Any, Any]:
        """Fused perceptual (B, Np, D), cognitive (B, 1, D) -> logits of the skill
        (B, K), object slot (B, N), frame slot (B, N)."""
        cfg = self.config
        z = self.module.pointer(torch_cat(c[:, 0], p.mean(dim=1)))
        k, n = len(cfg.pointer_skills), cfg.pointer_slots
        return z[:, :k], z[:, k : k + n], z[:, k + n :]

    def _pointer_loss(self, p: Any, c: Any, target: Any) -> Any:
        import torch.nn.functional as F

        total = p.new_zeros(())
        for logits, col in zip(self.pointer_logits(p, c), target.T):
            if bool((col >= 0).any()):
                total = total + F.cross_entropy(logits, col, ignore_index=-1)
        return total

    def _fuse_training_memory(self, p: Any, c: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        """Encode each sample's M past steps and fuse them through the bank (differentiable)."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        mask = batch["mem_mask"]  # (B, M)
        b, m = mask.shape
        mem_state = batch.get("mem_state")
        mem_image = batch.get("mem_image")
        flat_state = mem_state.reshape(b * m, -1) if cfg.state_dim else None
        flat_image = mem_image.reshape(b * m, *mem_image.shape[2:]) if cfg.image_size_px else None
        instr = batch["instruction"][:, None, :].expand(b, m, -1).reshape(b * m, -1)
        mp, mc = self.encode(flat_state, flat_image, instr)  # (B*M, Np, D), (B*M, 1, D)
        mp = mp.view(b, m, *mp.shape[1:])
        mc = mc.view(b, m, -1)
        bank = self.module.memory
        slots = bank.config.capacity + 1  # the bank's retrieval reads L = capacity + 1 slots
        if m > slots:
            raise ValueError(f"memory context {m} exceeds the bank's {slots} slots")
        pad = slots - m
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real entries first
        mask = torch.gather(mask, 1, order)
        mp = mp[torch.arange(b, device=mp.device)[:, None], order]
        mc = mc[torch.arange(b, device=mc.device)[:, None], order]
        mem_t = torch.gather(batch["mem_step"], 1, order).float()
        entries = {
            "bank_p": F.pad(mp, (0, 0, 0, 0, 0, pad)),  # (B, L, Np, D)
            "bank_c": F.pad(mc[:, :, None, :], (0, 0, 0, 0, 0, pad)),  # (B, L, 1, D)
            "bank_pm": F.pad(mask, (0, pad))[:, :, None].expand(-1, -1, mp.shape[2]),
            "bank_t": F.pad(mem_t, (0, pad)),  # (B, L)
            "count": mask.sum(dim=1),  # (B,)
        }
        with _entries_installed(bank, entries):
            return bank(p, c, batch["step"].float(), write=False)

    # ---------------------------------------------------------------- inference

    def reset_memory(self) -> None:
        """Empty the working-memory bank (call at the start of every episode)."""
        if self.config.use_memory:
            self.module.memory.reset(1)

    def online_condition(
        self,
        state: Any,
        image: Any,
        instruction: Any,
        *,
        step: int,
        bank: Any = None,
        memory: bool = True,
        fused: list[Any] | None = None,
    ) -> Any:
        """One control step of an episode -> conditioning tokens (1, Np + 1, D).

        Raw state (1, S), image (1, h, w, 3) uint8 | None, instruction (1, E).
        With memory: retrieve from ``bank`` (default: the expert's own bank) and fuse,
        then write this step's tokens into the bank. Without memory the bank is untouched.
        """
        import torch

        p, c = self.encode(state, image, instruction)
        if self.config.use_memory:
            own = self.module.memory
            t = torch.tensor([float(step)], device=p.device)
            if bank is None or bank is own:
                p, c = own(p, c, t, write=True)
            else:
                _check_compatible(own, bank)
                with _entries_installed(own, {k: getattr(bank, k) for k in _ENTRY_BUFFERS}):
                    p, c = own(p, c, t, write=True)  # writes in place into bank's buffers
        if fused is not None:
            fused.extend((p, c))
        return self.module.condition(p, c)

    def observe(
        self, state: Any, image: Any, instruction: Any, *, step: int, bank: Any = None
    ) -> None:
        """Write one control step into the bank without sampling (same inputs as
        ``online_condition``). Does nothing when ``use_memory`` is False."""
        import torch

        if not self.config.use_memory:
            return
        p, c = self.encode(state, image, instruction)
        own = self.module.memory
        t = torch.tensor([float(step)], device=p.device)
        if bank is None or bank is own:
            own.write(p, c, t)
        else:
            _check_compatible(own, bank)
            bank.write(p, c, t)

    def sample(
        self,
        cond: Any,
        *,
        sampler: str = "ddim",
        num_steps: int | None = None,
        generator: Any = None,
        noise: Any = None,
    ) -> Any:
        """Conditioning tokens (B, N, D) -> raw action chunk (B, H, A).

        ``sampler``: ``ddim`` (``num_steps`` or ``config.ddim_steps`` steps, deterministic
        given the noise) or ``ddpm`` (all ``diffusion_steps``). ``generator`` seeds the
        initial noise; ``noise`` (B, H, A) overrides it.
        """
        import torch

        cfg = self.config
        shape = (cond.shape[0], cfg.horizon, cfg.action_dim)
        if noise is None:
            dev = generator.device if generator is not None else cond.device
            noise = torch.randn(shape, generator=generator, device=dev).to(cond.device)

        def _den(x: Any, t: Any) -> Any:
            return self.module.denoise(x, t, cond)

        if sampler == "ddim":
            x0 = self.schedule.ddim_sample(
                _den, shape, num_steps=num_steps or cfg.ddim_steps, noise=noise
            )
        elif sampler == "ddpm":
            x0 = self.schedule.ddpm_sample(_den, shape, noise=noise, generator=generator)
        else:
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        return self.unnormalize_actions(x0.clamp(-1.0, 1.0))

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def train(self, mode: bool = True) -> ActionExpert:
        self.module.train(mode)
        return self

    def eval(self) -> ActionExpert:
        return self.train(False)
