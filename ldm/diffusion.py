"""Forward process and training loss of DDPM (Ho et al. 2020, arXiv:2006.11239).

The network predicts ε, or v = √ᾱ ε - √(1-ᾱ) x_0 (Salimans & Ho 2022, arXiv:2202.00512); samplers
always see an ε-predictor (`as_eps_model`). The per-timestep loss can be reweighted by min-SNR-γ
(Hang et al. 2023, arXiv:2303.09556).
"""

from __future__ import annotations

from typing import Callable

import torch

from .schedule import NoiseSchedule, extract

# A denoiser maps (x_t [N x ...], t [N]) to ε̂ (or v̂) with x_t's shape.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PREDICTIONS = ("eps", "v")


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {list(PREDICTIONS)}")


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


def velocity(schedule: NoiseSchedule, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t ε - √(1 - ᾱ_t) x_0, the target of v-prediction."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x_start) * noise
            - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start)


def as_eps_model(model: EpsModel, schedule: NoiseSchedule, prediction: str) -> EpsModel:
    """Wrap a v-predictor so that it returns ε̂ = √(1 - ᾱ_t) x_t + √ᾱ_t v̂; ε-predictors pass through."""
    check_prediction(prediction)
    if prediction == "eps":
        return model

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (extract(schedule.sqrt_one_minus_alphas_cumprod, t, x) * x
                + extract(schedule.sqrt_alphas_cumprod, t, x) * model(x, t))

    return eps


def snr(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), float32 on t's device."""
    a = schedule.alphas_cumprod.to(t.device)[t]
    return (a / (1.0 - a)).float()


def training_losses(model: EpsModel, schedule: NoiseSchedule, x_start: torch.Tensor,
                    t: torch.Tensor | None = None, noise: torch.Tensor | None = None, *, prediction: str = "eps",
                    min_snr_gamma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example MSE of the model's prediction; for ε the "simple" loss of eq. (14) of 2006.11239.

    :param x_start: [N x ...] clean data.
    :param t: [N] timesteps; uniform over 0..T-1 when None.
    :param prediction: "eps" or "v", what the model outputs.
    :param min_snr_gamma: if set, weight each example by min(SNR, γ)/SNR for ε (min(SNR, γ)/(SNR + 1)
        for v), i.e. the x_0-MSE clipped at γ, so that easy low-noise steps stop dominating.
    :return: (losses [N], t [N]) so callers can log the loss per timestep range.
    """
    check_prediction(prediction)
    if t is None:
        t = torch.randint(0, schedule.num_timesteps, (len(x_start),), device=x_start.device)
    noise = torch.randn_like(x_start) if noise is None else noise
    output = model(q_sample(schedule, x_start, t, noise), t)
    target = noise if prediction == "eps" else velocity(schedule, x_start, t, noise)
    losses = (output - target).pow(2).flatten(1).mean(dim=1)
    if min_snr_gamma is not None:
        ratio = snr(schedule, t)
        losses = losses * ratio.clamp(max=min_snr_gamma) / (ratio if prediction == "eps" else ratio + 1)
    return losses, t
