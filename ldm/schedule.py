"""Noise schedules: β_t as float64 tensors, the tables the diffusion maths reads from them, and
the forward process's Gaussian identities (q_sample, x̂_0, v, the posterior of a step)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear β from Ho et al. 2020 (arXiv:2006.11239), rescaled so any T gives the same ᾱ_T range;
    β_T = 20/T, so T >= 20 keeps every β <= 1."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule, eq. (17) of Nichol & Dhariwal 2021 (arXiv:2102.09672):
    ᾱ(t) = cos²((t/T + s) / (1 + s) · π/2), β_t = 1 - ᾱ(t+1)/ᾱ(t), clipped at max_beta.
    ᾱ_{T-1} ≈ 2e-9, so an ε-predictor's x̂_0 = (x_t - √(1-ᾱ) ε̂)/√ᾱ there multiplies its error by
    ~2e4 (pixel-space codebases clip x̂_0; latents have no range to clip to): pair it with v."""
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


BETA_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


class NoiseSchedule:
    """The per-timestep coefficients of DDPM, named as in the papers and kept in float64, and the
    Gaussian identities of the forward process that the loss and the samplers are built from."""

    def __init__(self, betas: torch.Tensor):
        assert betas.ndim == 1 and betas.dtype == torch.float64, "betas must be a 1-D float64 tensor"
        assert bool((betas > 0).all() and (betas <= 1).all()), "betas must lie in (0, 1]"
        self.num_timesteps = len(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000) -> "NoiseSchedule":
        """A schedule of BETA_SCHEDULES (names are validated by DiffusionConfig)."""
        return cls(BETA_SCHEDULES[name](num_timesteps))

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), eq. (4) of 2006.11239."""
        noise = torch.randn_like(x_start) if noise is None else noise
        return (extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert q_sample: x̂_0 = (x_t - √(1 - ᾱ_t) ε̂) / √ᾱ_t, eq. (15) of 2006.11239."""
        return (x_t - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(
            self.sqrt_alphas_cumprod, t, x_t)

    def velocity(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε - √(1 - ᾱ_t) x_0, the target of v-prediction (Salimans & Ho 2022, arXiv:2202.00512)."""
        return (extract(self.sqrt_alphas_cumprod, t, x_start) * noise
                - extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start)

    def eps_from_velocity(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """ε = √(1 - ᾱ_t) x_t + √ᾱ_t v: solve x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε and the definition of v for ε."""
        return (extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t
                + extract(self.sqrt_alphas_cumprod, t, x_t) * v)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), float32 on t's device."""
        a = self.alphas_cumprod.to(t.device)[t]
        return (a / (1.0 - a)).float()


class Posterior(NamedTuple):
    coef_x0: float  # coefficient of x_0 in the mean
    coef_xt: float  # coefficient of x_t in the mean
    beta: float  # β = 1 - ᾱ_t/ᾱ_s, the variance of q(x_t | x_s)
    beta_tilde: float  # β̃, the variance of q(x_s | x_t, x_0)


def posterior(alpha_bar_t: float, alpha_bar_s: float) -> Posterior:
    """q(x_s | x_t, x_0) for s < t, eqs. (6)-(7) of 2006.11239 for a step of any length: with
    β = 1 - ᾱ_t/ᾱ_s (β_t itself when s = t-1, the respacing of arXiv:2102.09672 otherwise),
        mean = √ᾱ_s β / (1 - ᾱ_t) · x_0 + √(1 - β) (1 - ᾱ_s) / (1 - ᾱ_t) · x_t,
        variance β̃ = (1 - ᾱ_s) / (1 - ᾱ_t) · β.
    ᾱ_s = 1 (s = -1, past the last step) gives mean x_0 and variance 0.
    Python floats throughout.
    """
    beta = 1.0 - alpha_bar_t / alpha_bar_s
    coef_x0 = alpha_bar_s ** 0.5 * beta / (1.0 - alpha_bar_t)
    coef_xt = (1.0 - beta) ** 0.5 * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
    return Posterior(coef_x0, coef_xt, beta, beta * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t))


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather table[t] and shape it [N x 1 x 1 ...] to broadcast against x, in x's dtype and device."""
    values = table.to(t.device)[t].to(x.dtype)
    return values.reshape(len(t), *([1] * (x.ndim - 1)))
