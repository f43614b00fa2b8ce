"""Samplers: ancestral DDPM (σ² = β or β̃, optionally on fewer steps), DDIM (any η, any steps),
and annealed Langevin dynamics with the score the same ε-model implies.

DDPM and DDIM walk a decreasing sequence of kept timesteps t > s and use the model's x̂_0 at each step, so
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
SAMPLERS = ("ddpm", "ddim", "langevin")


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


def langevin_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, levels: int = 100,
                    steps_per_level: int = 10, step_scale: float = 0.2, generator: torch.Generator | None = None,
                    device="cpu", progress: bool = False, callback=None) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, arXiv:1907.05600, Algorithm 1) on the
    marginals q(x_t) of the diffusion, with the score an ε-model implies,
        ∇ log q(x_t) ≈ -ε̂(x_t, t) / σ_t,   σ_t = √(1 - ᾱ_t)   (Song et al. 2021, arXiv:2011.13456).
    At each of `levels` timesteps from T-1 down to 0, `steps_per_level` updates
        x <- x + δ/2 · score + √δ · z,   δ = step_scale · σ_t²,
    then the result is denoised once, x̂_0 = E[x_0 | x_0's level], as the other samplers end.
    """
    if step_scale <= 0 or steps_per_level <= 0:
        raise ValueError(f"step_scale and steps_per_level must be positive, got {step_scale}, {steps_per_level}")
    device = torch.device(device)
    x = _randn(shape, generator, device)
    timesteps = sampling_timesteps(schedule.num_timesteps, levels)
    for i, t in enumerate(tqdm(timesteps, desc="langevin", leave=False, disable=not progress)):
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        sigma2 = 1.0 - schedule.alphas_cumprod[t].item()
        delta = step_scale * sigma2
        for _ in range(steps_per_level):
            score = -model(x, t_batch) / sigma2 ** 0.5
            x = x + 0.5 * delta * score + delta ** 0.5 * _randn(shape, generator, device)
        x0 = predict_x0_from_eps(schedule, x, t_batch, model(x, t_batch))
        if callback is not None:
            callback(i, t, x, x0)
    return x0


def run_sampler(sampler: str, model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *,
                steps: int | None = None, eta: float = 0.0, variance: str = "beta_tilde", **kwargs) -> torch.Tensor:
    """One of SAMPLERS by name. steps: DDPM's chain length (None: all T), DDIM's steps (None: 50),
    Langevin's noise levels (None: 100). kwargs: generator, device, progress, callback."""
    if sampler == "ddpm":
        return ddpm_sample(model, schedule, shape, steps=steps, variance=variance, **kwargs)
    if sampler == "ddim":
        return ddim_sample(model, schedule, shape, steps=steps or 50, eta=eta, **kwargs)
    if sampler == "langevin":
        return langevin_sample(model, schedule, shape, levels=steps or 100, **kwargs)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
