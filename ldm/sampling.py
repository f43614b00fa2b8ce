"""Samplers: ancestral DDPM (σ² = β or β̃, optionally on fewer steps), DDIM (any η, any steps),
and annealed Langevin dynamics with the score the same ε-model implies.

DDPM and DDIM walk a decreasing sequence of kept timesteps t > s and use the model's x̂_0 at each
step, so that the same code serves the full 1000-step chain and respaced ones; both take their
coefficients from `schedule.posterior`. All noise is drawn on the CPU from `generator` and then
moved, so that samples do not depend on the device. `SamplerConfig` names a sampler with its
settings, validates them and runs it; the functions take the settings it has validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .schedule import NoiseSchedule, posterior
from .utils import ConfigError, check_choice

# A denoiser as the samplers see it: (x_t [N x ...], t [N]) -> ε̂ with x_t's shape.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(i, t, x_t after the step, x̂_0 of the step)
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]

SAMPLERS = ("ddpm", "ddim", "langevin")
VARIANCES = ("beta_tilde", "beta")
# Steps when none are asked for: DDPM's full chain of the usual T = 1000, DDIM's 50 (no gain
# beyond, docs/results.md), 100 Langevin noise levels.
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "langevin": 100}


def sampling_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps from T-1 down to 0 (all of them when steps == T)."""
    if not 0 < steps <= num_timesteps:
        raise ConfigError("steps", steps, f"must be in 1..{num_timesteps} (T = {num_timesteps})")
    return sorted({int(round(v)) for v in np.linspace(0, num_timesteps - 1, steps)}, reverse=True)


def _randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device)


def _sample_loop(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], steps: int,
                 update: Callable, generator, device, progress: bool, callback: Callback | None) -> torch.Tensor:
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
        x0 = schedule.predict_x0(x, t_batch, eps)
        # 2. x_t -> x_s; the last step (s = -1, ᾱ = 1) returns the mean without noise
        alpha_bar_s = alphas_cumprod[s] if s >= 0 else 1.0
        noise = _randn(shape, generator, device) if s >= 0 else None
        x = update(x, x0, eps, alphas_cumprod[t], alpha_bar_s, noise)
        if callback is not None:
            callback(i, t, x, x0)
    return x


def ddpm_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int,
                variance: str = "beta_tilde", generator: torch.Generator | None = None, device="cpu",
                progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. 2020 (arXiv:2006.11239): x_s drawn from the
    posterior q(x_s | x_t, x̂_0), with its variance β̃ ("beta_tilde") or the step's β ("beta").
    With fewer `steps` than T the chain is respaced (Nichol & Dhariwal 2021, arXiv:2102.09672)."""

    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise):
        q = posterior(alpha_bar_t, alpha_bar_s)
        mean = q.coef_x0 * x0 + q.coef_xt * x
        if noise is None:
            return mean
        return mean + (q.beta if variance == "beta" else q.beta_tilde) ** 0.5 * noise

    return _sample_loop(model, schedule, shape, steps, update, generator, device, progress, callback)


def ddim_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int,
                eta: float = 0.0, generator: torch.Generator | None = None, device="cpu",
                progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """DDIM, eq. (12) of Song et al. 2020 (arXiv:2010.02502), with σ = η·√β̃ (eq. 16): η = 0 is
    deterministic given x_T, η = 1 is the ancestral DDPM step with σ² = β̃."""

    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise):
        sigma = eta * posterior(alpha_bar_t, alpha_bar_s).beta_tilde ** 0.5
        x = alpha_bar_s ** 0.5 * x0 + max(1.0 - alpha_bar_s - sigma ** 2, 0.0) ** 0.5 * eps
        return x if noise is None else x + sigma * noise

    return _sample_loop(model, schedule, shape, steps, update, generator, device, progress, callback)


def langevin_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, levels: int,
                    steps_per_level: int = 10, step_scale: float = 0.2, generator: torch.Generator | None = None,
                    device="cpu", progress: bool = False, callback: Callback | None = None) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, arXiv:1907.05600, Algorithm 1) on the
    marginals q(x_t) of the diffusion, with the score an ε-model implies,
        ∇ log q(x_t) ≈ -ε̂(x_t, t) / σ_t,   σ_t = √(1 - ᾱ_t)   (Song et al. 2021, arXiv:2011.13456).
    At each of `levels` timesteps from T-1 down to 0, `steps_per_level` updates
        x <- x + δ/2 · score + √δ · z,   δ = step_scale · σ_t²,
    then the result is denoised once, x̂_0 = E[x_0 | x_0's level], as the other samplers end.
    """
    if not steps_per_level > 0:
        raise ConfigError("steps_per_level", steps_per_level, "must be positive")
    if not step_scale > 0:
        raise ConfigError("step_scale", step_scale, "must be > 0")
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
        x0 = schedule.predict_x0(x, t_batch, model(x, t_batch))
        if callback is not None:
            callback(i, t, x, x0)
    return x0


@dataclass(frozen=True)
class SamplerConfig:
    """A sampler and its settings, validated here once; `label` is how reports name it."""
    sampler: str = "ddim"  # one of SAMPLERS
    steps: int | None = None  # denoising steps (Langevin: noise levels); None: DEFAULT_STEPS
    eta: float = 0.0  # DDIM's noise scale: 0 deterministic, 1 the DDPM posterior step
    variance: str = "beta_tilde"  # DDPM's step variance: the posterior's β̃, or β

    def __post_init__(self):
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("variance", self.variance, VARIANCES)
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.sampler])
        if not self.eta >= 0:
            raise ConfigError("eta", self.eta, "must be >= 0")

    @property
    def label(self) -> str:
        """DDPM-100, DDPM-1000 σ²=β, DDIM-50, DDIM-50 η=0.5, Langevin-100."""
        if self.sampler == "ddpm":
            return f"DDPM-{self.steps}" + (" σ²=β" if self.variance == "beta" else "")
        if self.sampler == "ddim":
            return f"DDIM-{self.steps}" + (f" η={self.eta:g}" if self.eta else "")
        return f"Langevin-{self.steps}"

    def run(self, model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], **kwargs) -> torch.Tensor:
        """Samples [shape] from `model`; kwargs: generator, device, progress, callback."""
        if self.sampler == "ddpm":
            return ddpm_sample(model, schedule, shape, steps=self.steps, variance=self.variance, **kwargs)
        if self.sampler == "ddim":
            return ddim_sample(model, schedule, shape, steps=self.steps, eta=self.eta, **kwargs)
        return langevin_sample(model, schedule, shape, levels=self.steps, **kwargs)
