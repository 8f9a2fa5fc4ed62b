"""Noise schedule, DDPM training targets and DDPM / DDIM samplers (torch).

Epsilon prediction throughout. With ``T`` training steps, ``alpha_bar[t]`` is the
squared-cosine schedule of Nichol & Dhariwal (2021)::

    alpha_bar(t) = cos(((t / T) + s) / (1 + s) * pi / 2) ** 2,   s = 0.008
    beta[t] = min(1 - alpha_bar(t + 1) / alpha_bar(t), 0.999)

Training (``NoiseSchedule.add_noise``)::

    x_t = sqrt(alpha_bar[t]) * x_0 + sqrt(1 - alpha_bar[t]) * eps,   loss = |eps - eps_hat|^2

Sampling starts from ``x_T ~ N(0, I)`` and calls ``denoise(x_t, t) -> eps_hat``:

- ``ddpm_sample``: all ``T`` ancestral steps (stochastic);
- ``ddim_sample``: ``K << T`` evenly spaced steps, deterministic (eta = 0) given the
  initial noise, so a seeded ``torch.Generator`` makes it reproducible.

Predicted ``x_0`` is clipped to ``[-clip, clip]`` (actions are normalised to
``[-1, 1]`` by the expert) before each update, as diffusion_policy does.

Shapes: ``x`` is any ``(B, ...)`` tensor, usually ``(B, H, A)`` action chunks;
``t`` is ``(B,)`` int64 step indices in ``[0, T)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NoiseSchedule", "NoiseScheduleConfig", "cosine_alpha_bar"]

Denoiser = Callable[[Any, Any], Any]  # (x_t (B, ...), t (B,) int64) -> eps_hat (B, ...)


def cosine_alpha_bar(num_steps: int, *, s: float = 0.008) -> list[float]:
    """alpha_bar at t = 0 .. num_steps (num_steps + 1 values), squared-cosine schedule."""
    return [
        math.cos(((t / num_steps) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(num_steps + 1)
    ]


@dataclass
class NoiseScheduleConfig:
    """The diffusion process."""

    train_steps: int = 100  # T: number of DDPM noise levels used in training
    max_beta: float = 0.999  # cap on beta[t] (the cosine schedule explodes near t = T)
    clip_sample: float = 1.0  # clip predicted x_0 to [-clip, clip]; 0 disables


class NoiseSchedule:
    """Squared-cosine DDPM schedule with DDPM and DDIM samplers (epsilon prediction)."""

    def __init__(self, config: NoiseScheduleConfig | None = None) -> None:
        import torch

        self.config = config or NoiseScheduleConfig()
        steps = int(self.config.train_steps)
        if steps < 2:
            raise ValueError(f"NoiseScheduleConfig.train_steps must be >= 2, got {steps}")
        ab = cosine_alpha_bar(steps)
        betas = [min(1.0 - ab[t + 1] / ab[t], self.config.max_beta) for t in range(steps)]
        self.betas = torch.tensor(betas, dtype=torch.float64)  # (T,)
        self.alphas = 1.0 - self.betas  # (T,)
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)  # (T,)
        self._cache: dict[Any, tuple[Any, Any]] = {}

    @property
    def train_steps(self) -> int:
        return int(self.config.train_steps)

    # ------------------------------------------------------------------ training

    def sample_timesteps(self, batch: int, *, device: Any, generator: Any = None) -> Any:
        """(B,) int64 uniform in [0, T)."""
        import torch

        return torch.randint(
            0, self.train_steps, (batch,), device=device, generator=generator, dtype=torch.long
        )

    def add_noise(self, x0: Any, noise: Any, t: Any) -> Any:
        """q(x_t | x_0): (B, ...) x0, (B, ...) noise, (B,) t -> (B, ...) x_t."""
        sqrt_ab, sqrt_1mab = self._coeffs(x0)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return sqrt_ab[t].view(shape) * x0 + sqrt_1mab[t].view(shape) * noise

    def _coeffs(self, like: Any) -> tuple[Any, Any]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            ab = self.alpha_bar.to(device=like.device)
            self._cache[key] = (ab.sqrt().to(like.dtype), (1 - ab).sqrt().to(like.dtype))
        return self._cache[key]

    # ------------------------------------------------------------------ sampling

    def _x0_from_eps(self, x_t: Any, eps: Any, ab_t: float) -> Any:
        x0 = (x_t - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)
        clip = self.config.clip_sample
        return x0.clamp(-clip, clip) if clip > 0 else x0

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        """The K step indices DDIM visits, descending, evenly spaced in [0, T).

        "Trailing" spacing: the first step is always T - 1 (pure noise), as
        Lin et al. (2023) recommend, e.g. T = 100, K = 10 -> 99, 89, ..., 9.
        """
        if not 1 <= num_steps <= self.train_steps:
            raise ValueError(f"ddim steps must be in [1, {self.train_steps}], got {num_steps}")
        stride = self.train_steps / num_steps
        steps = {round(self.train_steps - i * stride) - 1 for i in range(num_steps)}
        return sorted(steps, reverse=True)

    def ddim_sample(
        self, denoise: Denoiser, shape: tuple[int, ...], *, num_steps: int, noise: Any
    ) -> Any:
        """Deterministic DDIM (eta = 0) from ``noise`` (shape) in ``num_steps`` steps -> x_0."""
        import torch

        x = noise
        steps = self.ddim_timesteps(num_steps)
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            ab_t = float(self.alpha_bar[t])
            ab_prev = float(self.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
            tt = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
            eps = denoise(x, tt)
            x0 = self._x0_from_eps(x, eps, ab_t)
            # Recompute eps from the clipped x0 so the update stays consistent.
            eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)
            x = math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps
        return x

    def ddpm_sample(
        self, denoise: Denoiser, shape: tuple[int, ...], *, noise: Any, generator: Any = None
    ) -> Any:
        """Ancestral DDPM sampling over all T steps from ``noise`` -> x_0."""
        import torch

        x = noise
        for t in range(self.train_steps - 1, -1, -1):
            ab_t = float(self.alpha_bar[t])
            ab_prev = float(self.alpha_bar[t - 1]) if t > 0 else 1.0
            beta_t = float(self.betas[t])
            tt = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
            eps = denoise(x, tt)
            x0 = self._x0_from_eps(x, eps, ab_t)
            # Posterior q(x_{t-1} | x_t, x_0) mean and variance.
            c0 = math.sqrt(ab_prev) * beta_t / (1.0 - ab_t)
            ct = math.sqrt(1.0 - beta_t) * (1.0 - ab_prev) / (1.0 - ab_t)
            x = c0 * x0 + ct * x
            if t > 0:
                var = beta_t * (1.0 - ab_prev) / (1.0 - ab_t)
                dev = generator.device if generator is not None else x.device
                z = torch.randn(x.shape, dtype=x.dtype, generator=generator, device=dev)
                z = z.to(x.device)
                x = x + math.sqrt(max(var, 1e-20)) * z
        return x
