"""Noise schedules: β_t as float64 tensors, and the tables the diffusion maths reads from them."""

from __future__ import annotations

import math

import torch


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear β from Ho et al. 2020 (arXiv:2006.11239), rescaled so any T gives the same ᾱ_T range."""
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


def make_betas(name: str, num_timesteps: int) -> torch.Tensor:
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(BETA_SCHEDULES)}")
    if num_timesteps <= 0:
        raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
    betas = BETA_SCHEDULES[name](num_timesteps)
    if betas.max() > 1:  # the linear schedule's 1000/T rescaling overshoots for T < 20
        raise ValueError(f"the {name} schedule has β > 1 at T = {num_timesteps}; use more timesteps")
    return betas


class NoiseSchedule:
    """The per-timestep coefficients of DDPM, named as in the papers, kept in float64."""

    def __init__(self, betas: torch.Tensor):
        assert betas.ndim == 1 and betas.dtype == torch.float64, "betas must be a 1-D float64 tensor"
        assert bool((betas > 0).all() and (betas <= 1).all()), "betas must lie in (0, 1]"
        self.num_timesteps = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # q(x_{t-1} | x_t, x_0), eqs. (6)-(7) of 2006.11239
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000) -> "NoiseSchedule":
        return cls(make_betas(name, num_timesteps))


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather table[t] and shape it [N x 1 x 1 ...] to broadcast against x, in x's dtype and device."""
    values = table.to(t.device)[t].to(x.dtype)
    return values.reshape(len(t), *([1] * (x.ndim - 1)))
