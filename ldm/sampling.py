"""Samplers: ancestral DDPM (σ² = β or β̃, optionally on fewer steps), DDIM (any η, any steps),
DPM-Solver++(2M) (the second-order multistep solver of the ODE, or with η > 0 of the reverse SDE),
and annealed Langevin dynamics with the score the same ε-model implies.

DDPM, DDIM and DPM-Solver++ walk a decreasing sequence of kept timesteps t > s, spaced evenly in
t or in log-SNR, and use the model's x̂_0 at each step, so that the same code serves the full
1000-step chain and respaced ones; DDPM and DDIM take their coefficients from
`schedule.posterior`. All noise is drawn on the CPU from `generator` and then moved, so that
samples do not depend on the device. `SamplerConfig` names a sampler with its
settings, validates them and runs it; the functions take the settings it has validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .editing import Edit
from .errors import ConfigError, check_choice
from .schedule import NoiseSchedule, posterior

# A denoiser as the samplers see it: (x_t [N x ...], t [N]) -> ε̂ with x_t's shape.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(i, t, x_t after the step, x̂_0 of the step)
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]

SAMPLERS = ("ddpm", "ddim", "dpm++2m", "langevin")
# `make samplers` (docs/results.md): DPM-Solver++(2M) at 10 steps in log-SNR is the cheapest
# setting whose mean FID is within one seed-to-seed standard deviation of DDIM-50's
DEFAULT_SAMPLER = "dpm++2m"
ETA_SAMPLERS = ("ddim", "dpm++2m")  # those with a noise scale η
VARIANCES = ("beta_tilde", "beta")
SPACINGS = ("time", "logsnr")
# Steps when none are asked for: DDPM's full chain of the usual T = 1000, DDIM's 50 (no gain
# beyond, docs/results.md), DPM-Solver++'s 10 (`make samplers`), 100 Langevin noise levels.
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm++2m": 10, "langevin": 100}
# The "no label" branch (the unconditional model) runs the default sampler stochastically, with the
# steps that needs: `make samplers` (docs/results.md) found its probability-flow ODE converging to a
# far worse FID than its reverse SDE, where the conditional branch is best served by the ODE.
UNCONDITIONAL_DEFAULTS = {"dpm++2m": {"steps": 20, "eta": 1.0}}
# DPM-Solver++ steps in log-SNR, its own variable: there it beats DDIM on Gaussian data
# (tests/test_sampling.py) and on MNIST from 10 steps on (in time it wins only at 5)
DEFAULT_SPACING = {"dpm++2m": "logsnr"}


def sampling_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps from T-1 down to 0 (all of them when steps == T). Every
    chain starts at T-1, from noise: a single step is T-1 alone, not the grid's other end."""
    if not 0 < steps <= num_timesteps:
        raise ConfigError("steps", steps, f"must be in 1..{num_timesteps} (T = {num_timesteps})")
    grid = np.linspace(0, num_timesteps - 1, steps) if steps > 1 else [num_timesteps - 1]
    return sorted({int(round(v)) for v in grid}, reverse=True)


def half_log_snr(alpha_bar: torch.Tensor | float):
    """λ = log(α/σ) = ½ log(ᾱ / (1 - ᾱ)), the time variable of DPM-Solver (eq. 3 of 2211.01095)."""
    if isinstance(alpha_bar, torch.Tensor):
        return 0.5 * (alpha_bar.log() - (-alpha_bar).log1p())
    return 0.5 * (np.log(alpha_bar) - np.log1p(-alpha_bar))


# Below λ ≈ -5 (ᾱ < 5e-5) x_t is pure noise for any purpose here; the cosine schedule spends its
# last ~10 of 1000 timesteps between λ = -5 and -10, and uniform-λ steps there would be wasted
# (diffusers clips cosine schedules' λ at -5.1 for the same reason).
LOGSNR_MIN = -5.1


def logsnr_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """`steps` timesteps, from the last one with λ ≥ LOGSNR_MIN (T-1 on the linear schedule) down
    to 0, whose λ are as evenly spaced as integer timesteps allow (Lu et al. 2022 space their
    steps uniformly in λ): each target λ goes to the nearest timestep, moved where λ changes faster
    than one timestep per target so that all are distinct."""
    sampling_timesteps(schedule.num_timesteps, steps)  # the same range check
    lambdas = half_log_snr(schedule.alphas_cumprod)  # increasing as t decreases
    start = max(lambdas[-1].item(), LOGSNR_MIN)
    targets = torch.linspace(start, lambdas[0].item(), steps, dtype=torch.float64)
    nearest = (lambdas[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()  # from t = T-1 down
    timesteps = []
    for i, t in enumerate(nearest):  # strictly decreasing, leaving room for the steps still to come
        t = min(max(t, steps - 1 - i), schedule.num_timesteps - 1 - i)
        timesteps.append(t if not timesteps else min(t, timesteps[-1] - 1))
    return timesteps


def spaced_timesteps(schedule: NoiseSchedule, steps: int, spacing: str) -> list[int]:
    return sampling_timesteps(schedule.num_timesteps, steps) if spacing == "time" else logsnr_timesteps(schedule, steps)


def _randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device)


def _sample_loop(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], timesteps: list[int],
                 update: Callable, generator, device, progress: bool, callback: Callback | None,
                 edit: Edit | None = None) -> torch.Tensor:
    """Shared loop: x_T ~ N(0, I), then x_s = update(x_t, x̂_0, ε̂, ᾱ_t, ᾱ_s, noise-or-None,
    previous) along the decreasing `timesteps`, the last to ᾱ = 1; `previous` is (x̂_0, ᾱ) of the
    step before (None at the first), for multistep solvers. An `edit` (editing.py) may start the
    chain from given latents part-way along it, and keep some of them at every step, each step
    then taken `edit.resample` times."""
    device = torch.device(device)
    x = _randn(shape, generator, device)
    alphas_cumprod = schedule.alphas_cumprod.tolist()
    if edit is not None:
        x, timesteps = edit.start(x, timesteps, alphas_cumprod)
    tries = 1 if edit is None or edit.mask is None else edit.resample
    previous = None
    for i, t in enumerate(tqdm(timesteps, desc="sampling", leave=False, disable=not progress)):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        alpha_bar_s = alphas_cumprod[s] if s >= 0 else 1.0
        for attempt in range(tries):
            # 1. predict noise
            eps = model(x, t_batch)
            x0 = schedule.predict_x0(x, t_batch, eps)
            # 2. x_t -> x_s; the last step (s = -1, ᾱ = 1) returns the mean without noise
            noise = _randn(shape, generator, device) if s >= 0 else None
            x_s = update(x, x0, eps, alphas_cumprod[t], alpha_bar_s, noise, previous)
            if edit is not None:
                x_s = edit.keep(x_s, alpha_bar_s, lambda: _randn(shape, generator, device))
            if attempt + 1 < tries:  # RePaint: back to level t from the merged x_s, and the step again
                x = Edit.renoise(x_s, alphas_cumprod[t], alpha_bar_s, _randn(shape, generator, device))
        # a multistep solver's history is of another trajectory once x is re-noised: resampled steps
        # are first order
        previous = (x0, alphas_cumprod[t]) if tries == 1 else None
        x = x_s
        if callback is not None:
            callback(i, t, x, x0)
    return x


def ddpm_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int,
                variance: str = "beta_tilde", spacing: str = "time", generator: torch.Generator | None = None,
                device="cpu", progress: bool = False, callback: Callback | None = None,
                edit: Edit | None = None) -> torch.Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. 2020 (arXiv:2006.11239): x_s drawn from the
    posterior q(x_s | x_t, x̂_0), with its variance β̃ ("beta_tilde") or the step's β ("beta").
    With fewer `steps` than T the chain is respaced (Nichol & Dhariwal 2021, arXiv:2102.09672)."""

    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise, previous):
        q = posterior(alpha_bar_t, alpha_bar_s)
        mean = q.coef_x0 * x0 + q.coef_xt * x
        if noise is None:
            return mean
        return mean + (q.beta if variance == "beta" else q.beta_tilde) ** 0.5 * noise

    return _sample_loop(model, schedule, shape, spaced_timesteps(schedule, steps, spacing), update, generator,
                        device, progress, callback, edit)


def ddim_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int,
                eta: float = 0.0, spacing: str = "time", generator: torch.Generator | None = None, device="cpu",
                progress: bool = False, callback: Callback | None = None,
                edit: Edit | None = None) -> torch.Tensor:
    """DDIM, eq. (12) of Song et al. 2020 (arXiv:2010.02502), with σ = η·√β̃ (eq. 16): η = 0 is
    deterministic given x_T, η = 1 is the ancestral DDPM step with σ² = β̃."""

    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise, previous):
        sigma = eta * posterior(alpha_bar_t, alpha_bar_s).beta_tilde ** 0.5
        return _ddim_step(x0, eps, alpha_bar_s, sigma, noise)

    return _sample_loop(model, schedule, shape, spaced_timesteps(schedule, steps, spacing), update, generator,
                        device, progress, callback, edit)


def _ddim_step(x0, eps, alpha_bar_s: float, sigma: float = 0.0, noise=None):
    """x_s = √ᾱ_s x̂_0 + √(1 - ᾱ_s - σ²) ε̂ + σ z, eq. (12) of 2010.02502."""
    x = alpha_bar_s ** 0.5 * x0 + max(1.0 - alpha_bar_s - sigma ** 2, 0.0) ** 0.5 * eps
    return x if noise is None else x + sigma * noise


def dpm_solver_2m_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int,
                         spacing: str = DEFAULT_SPACING["dpm++2m"], order: int = 2, eta: float = 0.0,
                         generator: torch.Generator | None = None, device="cpu", progress: bool = False,
                         callback: Callback | None = None, edit: Edit | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), Algorithm 2 of Lu et al. 2022 (arXiv:2211.01095): the probability-flow
    ODE solved in data prediction, second-order multistep in λ = log(α/σ) (α = √ᾱ, σ = √(1-ᾱ)).
    From t to s, with h = λ_s - λ_t and r = h_prev / h (h_prev: the previous step's h),
        x_s = (σ_s/σ_t) x_t - α_s (e^(-h) - 1) D,   D = (1 + 1/(2r)) x̂_0(t) - 1/(2r) x̂_0(t_prev),
    and D = x̂_0(t) on the first step (no history) and on the last, to σ = 0, where h is infinite
    and only the first-order step is defined (the paper's "lower order final"). That update is
    DDIM's (η = 0) with x̂_0 replaced by D and ε by the noise D implies, (x_t - α_t D)/σ_t; with
    D = x̂_0 it is DDIM's step itself, so the first-order solver (`order` 1) is DDIM to the last
    bit. One model evaluation per step, like DDIM.

    `eta` > 0 mixes in the reverse SDE: the same DDIM step with fresh noise of standard deviation
        c = σ_s √(1 - e^(-2ηh)),   i.e.   x_s = (σ_s/σ_t) e^(-ηh) x_t + α_s (1 - e^(-(1+η)h)) D + c z,
    which keeps every marginal for any η in [0, 1]. At η = 1 it is SDE-DPM-Solver++(2M) (appendix
    of 2211.01095), the ancestral DDPM step (c² = β̃) with x̂_0 replaced by D; its noise corrects
    errors of earlier steps that the ODE carries to the end."""
    def update(x, x0, eps, alpha_bar_t, alpha_bar_s, noise, previous):
        if alpha_bar_s == 1.0:  # the last step, to σ = 0: first order, no noise
            return _ddim_step(x0, eps, alpha_bar_s)
        h = half_log_snr(alpha_bar_s) - half_log_snr(alpha_bar_t)
        if order == 2 and previous is not None:
            x0_previous, alpha_bar_previous = previous
            half_over_r = 0.5 * h / (half_log_snr(alpha_bar_t) - half_log_snr(alpha_bar_previous))
            d = (1 + half_over_r) * x0 - half_over_r * x0_previous
            x0, eps = d, (x - alpha_bar_t ** 0.5 * d) / (1 - alpha_bar_t) ** 0.5
        if eta == 0:
            return _ddim_step(x0, eps, alpha_bar_s)
        sigma = ((1 - alpha_bar_s) * -np.expm1(-2 * eta * h)) ** 0.5
        return _ddim_step(x0, eps, alpha_bar_s, sigma, noise)

    return _sample_loop(model, schedule, shape, spaced_timesteps(schedule, steps, spacing), update, generator,
                        device, progress, callback, edit)


def langevin_sample(model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], *, levels: int,
                    steps_per_level: int = 10, step_scale: float = 0.2, generator: torch.Generator | None = None,
                    device="cpu", progress: bool = False, callback: Callback | None = None,
                    edit: Edit | None = None) -> torch.Tensor:
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
    if edit is not None and edit.resample > 1:
        raise ConfigError("resample", edit.resample, "Langevin dynamics already iterates at every level; "
                                                     "it does not resample")
    device = torch.device(device)
    x = _randn(shape, generator, device)
    timesteps = sampling_timesteps(schedule.num_timesteps, levels)
    if edit is not None:
        x, timesteps = edit.start(x, timesteps, schedule.alphas_cumprod.tolist())
    x0 = x  # what no level at all (an edit at strength 0) returns
    for i, t in enumerate(tqdm(timesteps, desc="langevin", leave=False, disable=not progress)):
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        sigma2 = 1.0 - schedule.alphas_cumprod[t].item()
        delta = step_scale * sigma2
        for _ in range(steps_per_level):
            score = -model(x, t_batch) / sigma2 ** 0.5
            x = x + 0.5 * delta * score + delta ** 0.5 * _randn(shape, generator, device)
            if edit is not None:
                x = edit.keep(x, 1.0 - sigma2, lambda: _randn(shape, generator, device))
        x0 = schedule.predict_x0(x, t_batch, model(x, t_batch))
        if callback is not None:
            callback(i, t, x, x0)
    return x0 if edit is None else edit.keep(x0, 1.0, None)


@dataclass(frozen=True)
class SamplerConfig:
    """A sampler and its settings, validated here once; `label` is how reports name it."""
    sampler: str = DEFAULT_SAMPLER  # one of SAMPLERS
    steps: int | None = None  # denoising steps = model evaluations (Langevin: noise levels); None: DEFAULT_STEPS
    eta: float = 0.0  # DDIM's and DPM-Solver++'s noise scale: 0 deterministic (ODE), 1 the reverse SDE (DDPM's step)
    variance: str = "beta_tilde"  # DDPM's step variance: the posterior's β̃, or β
    spacing: str | None = None  # steps evenly spaced in "time" or in "logsnr"; None: DEFAULT_SPACING

    def __post_init__(self):
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("variance", self.variance, VARIANCES)
        if self.spacing is None:
            object.__setattr__(self, "spacing", DEFAULT_SPACING.get(self.sampler, "time"))
        check_choice("spacing", self.spacing, SPACINGS)
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.sampler])
        if not 0 <= self.eta <= 1:  # the added noise must stay below the step's own, √(1 - ᾱ_s)
            raise ConfigError("eta", self.eta, "must be in [0, 1] (0 deterministic, 1 = DDPM)")
        if self.eta and self.sampler not in ETA_SAMPLERS:
            raise ConfigError("eta", self.eta, f"only {' and '.join(ETA_SAMPLERS)} have a noise scale η, "
                                               f"not {self.sampler}")

    @classmethod
    def for_branch(cls, unconditional: bool, sampler: str | None = None, steps: int | None = None,
                   eta: float | None = None, variance: str = "beta_tilde", spacing: str | None = None) -> "SamplerConfig":
        """The sampler a request gets: unset `sampler` is DEFAULT_SAMPLER, and its unset steps and η
        are those of the branch sampled (UNCONDITIONAL_DEFAULTS on the "no label" branch, else
        DEFAULT_STEPS and η = 0)."""
        sampler = DEFAULT_SAMPLER if sampler is None else sampler
        defaults = UNCONDITIONAL_DEFAULTS.get(sampler, {}) if unconditional else {}
        return cls(sampler, defaults.get("steps") if steps is None else steps,
                   defaults.get("eta", 0.0) if eta is None else eta, variance, spacing)

    @property
    def label(self) -> str:
        """DDPM-100, DDPM-1000 σ²=β, DDIM-50, DDIM-50 η=0.5, DPM++2M-10, DPM++2M-10 in t, Langevin-100:
        a spacing other than the sampler's default is named."""
        default = DEFAULT_SPACING.get(self.sampler, "time")
        named = {"time": " in t", "logsnr": " in logSNR"}[self.spacing]
        spacing = "" if self.spacing == default or self.sampler == "langevin" else named
        if self.sampler == "ddpm":
            return f"DDPM-{self.steps}" + (" σ²=β" if self.variance == "beta" else "") + spacing
        if self.sampler == "ddim":
            return f"DDIM-{self.steps}" + (f" η={self.eta:g}" if self.eta else "") + spacing
        if self.sampler == "dpm++2m":
            return f"DPM++2M-{self.steps}" + (f" η={self.eta:g}" if self.eta else "") + spacing
        return f"Langevin-{self.steps}"

    @staticmethod
    def defaults_label() -> str:
        """How reports name the default sampler of both branches: "DPM++2M-10 (no label:
        DPM++2M-20 η=1)"."""
        return f"{SamplerConfig.for_branch(False).label} (no label: {SamplerConfig.for_branch(True).label})"

    def run(self, model: EpsModel, schedule: NoiseSchedule, shape: tuple[int, ...], **kwargs) -> torch.Tensor:
        """Samples [shape] from `model`; kwargs: generator, device, progress, callback, edit."""
        if self.sampler == "ddpm":
            return ddpm_sample(model, schedule, shape, steps=self.steps, variance=self.variance, spacing=self.spacing,
                               **kwargs)
        if self.sampler == "ddim":
            return ddim_sample(model, schedule, shape, steps=self.steps, eta=self.eta, spacing=self.spacing, **kwargs)
        if self.sampler == "dpm++2m":
            return dpm_solver_2m_sample(model, schedule, shape, steps=self.steps, spacing=self.spacing, eta=self.eta,
                                        **kwargs)
        return langevin_sample(model, schedule, shape, levels=self.steps, **kwargs)
