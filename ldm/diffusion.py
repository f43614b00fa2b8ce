"""Forward process and training loss of DDPM with ε-prediction (Ho et al. 2020, arXiv:2006.11239)."""

from __future__ import annotations

from typing import Callable

import torch

from .schedule import NoiseSchedule, extract

# A denoiser maps (x_t [N x ...], t [N]) to ε̂ with x_t's shape.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def q_sample(schedule: NoiseSchedule, x_start: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), eq. (4) of 2006.11239."""
    noise = torch.randn_like(x_start) if noise is None else noise
    return (extract(schedule.sqrt_alphas_cumprod, t, x_start) * x_start
            + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor,
                        eps: torch.Tensor) -> torch.Tensor:
    """Invert q_sample: x̂_0 = (x_t - √(1 - ᾱ_t) ε̂) / √ᾱ_t."""
    return (x_t - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(
        schedule.sqrt_alphas_cumprod, t, x_t)


def training_losses(model: EpsModel, schedule: NoiseSchedule, x_start: torch.Tensor,
                    t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example ε-MSE, the "simple" loss of eq. (14) of 2006.11239.

    :param x_start: [N x ...] clean data.
    :param t: [N] timesteps; uniform over 0..T-1 when None.
    :return: (losses [N], t [N]) so callers can log the loss per timestep range.
    """
    if t is None:
        t = torch.randint(0, schedule.num_timesteps, (len(x_start),), device=x_start.device)
    noise = torch.randn_like(x_start) if noise is None else noise
    eps = model(q_sample(schedule, x_start, t, noise), t)
    return (eps - noise).pow(2).flatten(1).mean(dim=1), t
