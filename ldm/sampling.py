"""Samplers: ancestral DDPM (σ² = β or β̃, optionally on fewer steps) and DDIM (any η, any steps).

Both walk a decreasing sequence of kept timesteps t > s and use the model's x̂_0 at each step, so
that the same code serves the full 1000-step chain and respaced ones. All noise is drawn on the
CPU from `generator` and then moved, so that samples do not depend on the device.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .diffusion import EpsModel, predict_x0_from_eps
from .schedule import NoiseSchedule

VARIANCES = ("beta", "beta_tilde")


def sampling_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps from T-1 down to 0 (all of them when steps == T)."""
    if not 0 < steps <= num_timesteps:
        raise ValueError(f"steps must be in 1..{num_timesteps}, got {steps}")
    return sorted({int(round(v)) for v in np.linspace(0, num_timesteps - 1, steps)}, reverse=True)


def _randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device)


def _sample_loop(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], steps: int,
                 update: Callable, generator, device, progress: bool, callback) -> torch.Tensor:
    """Shared loop: x_T ~ N(0, I), then x_s = update(x_t, x̂_0, ε̂, ᾱ_t, ᾱ_s, noise-or-None)."""
    device = torch.device(device)
    x = _randn(shape, generator, device)
    timesteps = sampling_timesteps(schedule.num_timesteps, steps)
    alphas_cumprod = schedule.alphas_cumprod.tolist()
    for i, t in enumerate(tqdm(timesteps, desc="sampling", leave=False, disable=not progress)):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        # 1. predict noise
        eps = model(x, t_batch)
        x0 = predict_x0_from_eps(schedule, x, t_batch, eps)
        # 2. x_t -> x_s; the last step (s = -1, ᾱ = 1) returns the mean without noise
        alpha_bar_s = alphas_cumprod[s] if s >= 0 else 1.0
        noise = _randn(shape, generator, device) if s >= 0 else None
        x = update(x, x0, eps, alphas_cumprod[t], alpha_bar_s, noise)
        if callback is not None:
            callback(i, t, x, x0)
    return x


def ddpm_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int | None = None,
                variance: str = "beta_tilde", generator: torch.Generator | None = None, device="cpu",
                progress: bool = False, callback=None) -> torch.Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. 2020 (arXiv:2006.11239).

    With fewer `steps` than T, a step from t to s uses β = 1 - ᾱ_t/ᾱ_s (the respacing of
    Nichol & Dhariwal 2021, arXiv:2102.09672); with steps = T it is the original chain.
    variance: "beta_tilde" is the posterior variance β̃ = (1-ᾱ_s)/(1-ᾱ_t)·β, "beta" is σ² = β.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {list(VARIANCES)}")

    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise):
        beta = 1.0 - alpha_bar_t / alpha_bar_s
        # posterior mean of q(x_s | x_t, x_0), eq. (7) of 2006.11239
        coef_x0 = alpha_bar_s ** 0.5 * beta / (1.0 - alpha_bar_t)
        coef_xt = (1.0 - beta) ** 0.5 * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
        mean = coef_x0 * x0 + coef_xt * x
        if noise is None:
            return mean
        var = beta if variance == "beta" else beta * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
        return mean + var ** 0.5 * noise

    return _sample_loop(model, schedule, shape, steps or schedule.num_timesteps, update, generator, device,
                        progress, callback)


def ddim_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int = 50,
                eta: float = 0.0, generator: torch.Generator | None = None, device="cpu",
                progress: bool = False, callback=None) -> torch.Tensor:
    """DDIM, eq. (12) of Song et al. 2020 (arXiv:2010.02502); η = 0 is deterministic given x_T,
    η = 1 is the ancestral DDPM step with σ² = β̃."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")

    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise):
        sigma = eta * ((1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s)) ** 0.5
        x = alpha_bar_s ** 0.5 * x0 + max(1.0 - alpha_bar_s - sigma ** 2, 0.0) ** 0.5 * eps
        return x if noise is None else x + sigma * noise

    return _sample_loop(model, schedule, shape, steps, update, generator, device, progress, callback)
