"""What a denoiser learns and how it is used, for any data shape: the UNet on VAE latents and the
MLP on toy vectors go through this same code.

`DiffusionConfig` is the process (β schedule, T, what the network predicts, loss weighting, label
dropout); it travels in every denoiser checkpoint. `Diffusion` owns its noise schedule and gives
the training loss of DDPM (Ho et al. 2020, arXiv:2006.11239) for an ε- or v-predictor (Salimans &
Ho 2022, arXiv:2202.00512), optionally min-SNR-γ weighted (Hang et al. 2023, arXiv:2303.09556), and
the ε-model that samplers see, with classifier-free guidance. Training a denoiser with it is
diffusion_training.py's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .editing import Edit
from .errors import ConfigError, check_choice
from .guidance import ConditionalModel, autoguided, guided_model
from .runtime import autocast
from .sampling import Callback, EpsModel, SamplerConfig, half_log_snr
from .schedule import BETA_SCHEDULES, NoiseSchedule

PREDICTIONS = ("eps", "v")
# Which noise levels training draws (diffusion.timestep_probabilities): uniform over the T steps,
# or a density concentrated in the middle of log-SNR.
TIMESTEP_DENSITIES = ("uniform", "logit-normal", "log-normal")
LOGIT_NORMAL = (0.0, 1.0)  # (m, s) of logit(t/T), Esser et al. 2024 (arXiv:2403.03206) §3.1: their best
# EDM's (P_mean, P_std) of ln σ, Karras et al. 2022 (arXiv:2206.00364) Table 1, for data of std 0.5;
# scaled latents have std 1, so P_mean moves by ln 2 (σ is measured in units of the data's std).
LOG_NORMAL = (-1.2 + math.log(2.0), 1.2)
MAX_TIMESTEPS = 2**24  # float32 holds every integer up to here, and nn.timestep_embedding takes t as float32


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process a denoiser is trained for; validated here once. The defaults are the
    project's measured choice for MNIST latents (docs/results.md)."""
    schedule: str = "cosine"  # linear (Ho et al.) or cosine (Nichol & Dhariwal); cosine won at equal steps
    num_timesteps: int = 1000  # T, the length of the chain
    prediction: str = "v"  # what the network outputs: eps or v; v beat ε at equal steps (cosine needs v)
    min_snr_gamma: float | None = None  # min-SNR-γ loss weighting; None: the plain MSE
    # which noise levels training draws (TIMESTEP_DENSITIES): logit-normal beat uniform at equal
    # wall-clock on every row of `make recipes` (docs/results.md)
    timesteps: str = "logit-normal"
    label_dropout: float = 0.5  # fraction of labels replaced by "no label" (class-conditional models only)

    def __post_init__(self):
        check_choice("schedule", self.schedule, BETA_SCHEDULES)
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("timesteps", self.timesteps, TIMESTEP_DENSITIES)
        if self.num_timesteps <= 0 or (self.schedule == "linear" and self.num_timesteps < 20):
            raise ConfigError("num_timesteps", self.num_timesteps,
                              "must be positive (at least 20 for the linear schedule, whose β_T = 20/T)")
        if self.num_timesteps > MAX_TIMESTEPS:
            raise ConfigError("num_timesteps", self.num_timesteps,
                              f"must be at most 2**24 = {MAX_TIMESTEPS} (the UNet embeds t as a float32, "
                              "which tells no more integers apart)")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ConfigError("min_snr_gamma", self.min_snr_gamma, "must be > 0")
        if not 0 <= self.label_dropout <= 1:
            raise ConfigError("label_dropout", self.label_dropout, "must be in [0, 1]")


def mixed_precision(model: ConditionalModel) -> ConditionalModel:
    """The denoiser's forward pass under the process's mixed-precision policy (runtime.py)."""
    def forward(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        with autocast(x.device):
            return model(x, t, labels)
    return forward


def timestep_probabilities(density: str, schedule: NoiseSchedule) -> torch.Tensor | None:
    """P(t) over the T discrete timesteps for a continuous density, as float64 [T]; None for
    uniform. Each timestep takes the probability mass of its bin, in closed form by the normal CDF
    (torch.special.ndtr):
    - logit-normal: u = (t + ½)/T has logit(u) ~ N(m, s²); timestep t holds u in [t/T, (t+1)/T];
    - log-normal: ln σ ~ N(P_mean, P_std²) with σ_t = √((1 - ᾱ_t)/ᾱ_t) the noise-to-signal ratio
      (the σ of EDM's variance-exploding form of x_t/√ᾱ_t); timestep t holds the ln σ between
      the midpoints to its neighbours'."""
    if density == "uniform":
        return None
    T = schedule.num_timesteps
    if density == "logit-normal":
        m, s = LOGIT_NORMAL
        u = torch.arange(1, T, dtype=torch.float64) / T
        inner = (torch.log(u) - torch.log1p(-u) - m) / s
    else:
        m, s = LOG_NORMAL
        log_sigma = 0.5 * (torch.log1p(-schedule.alphas_cumprod) - torch.log(schedule.alphas_cumprod))
        inner = ((log_sigma[1:] + log_sigma[:-1]) / 2 - m) / s
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.special.ndtr(inner), torch.ones(1, dtype=torch.float64)])
    return edges.diff()


class Diffusion:
    """A DiffusionConfig with its noise schedule; the network is an argument of each method."""

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.schedule = NoiseSchedule.from_name(config.schedule, config.num_timesteps)
        self.timestep_probs = timestep_probabilities(config.timesteps, self.schedule)

    def draw_timesteps(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n training timesteps from the config's density (torch's global generator)."""
        if self.timestep_probs is None:
            return torch.randint(0, self.schedule.num_timesteps, (n,), device=device)
        return torch.multinomial(self.timestep_probs, n, replacement=True).to(device)

    def losses(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_start: torch.Tensor,
               t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example MSE of the model's prediction; for ε the "simple" loss of eq. (14) of 2006.11239.

        :param model: (x_t, t) -> ε̂ or v̂, as the config's `prediction` says.
        :param x_start: [N x ...] clean data.
        :param t: [N] timesteps; drawn by `draw_timesteps` when None.
        :return: (losses [N], t [N]) so callers can log the loss per timestep range. With
            min_snr_gamma, each example is weighted by min(SNR, γ)/SNR for ε (min(SNR, γ)/(SNR + 1)
            for v), i.e. the x_0-MSE clipped at γ, so that easy low-noise steps stop dominating.
        """
        config, schedule = self.config, self.schedule
        if t is None:
            t = self.draw_timesteps(len(x_start), x_start.device)
        noise = torch.randn_like(x_start) if noise is None else noise
        output = model(schedule.q_sample(x_start, t, noise), t)
        target = noise if config.prediction == "eps" else schedule.velocity(x_start, t, noise)
        losses = (output - target).pow(2).flatten(1).mean(dim=1)
        if config.min_snr_gamma is not None:
            ratio = schedule.snr(t)
            denominator = ratio if config.prediction == "eps" else ratio + 1
            losses = losses * ratio.clamp(max=config.min_snr_gamma) / denominator
        return losses, t

    def eps_model(self, model: ConditionalModel, labels: torch.Tensor | None = None, guidance: float = 1.0,
                  num_classes: int = 0, guidance_interval: tuple[float, float] | None = None,
                  guide: ConditionalModel | None = None, autoguidance: float = 1.0) -> EpsModel:
        """The (x_t, t) -> ε̂ function samplers call: `model` prompted with `labels` at classifier-free
        guidance `guidance` (guidance.py), only at the steps whose half-log-SNR λ lies in
        `guidance_interval` when one is given, and autoguided by `guide` with weight `autoguidance`
        at every step; a v-prediction turned into ε̂."""
        guided_steps = None
        if guidance_interval is not None and labels is not None:
            low, high = guidance_interval
            lam = half_log_snr(self.schedule.alphas_cumprod)
            guided_steps = ((lam >= low) & (lam <= high)).to(labels.device)
        denoiser = autoguided(mixed_precision(model), None if guide is None else mixed_precision(guide), autoguidance)
        guided = guided_model(denoiser, labels, guidance, num_classes, guided_steps)
        if self.config.prediction == "eps":
            return guided
        return lambda x, t: self.schedule.eps_from_velocity(x, t, guided(x, t))

    def sample(self, model: ConditionalModel, shape: tuple[int, ...], sampler: SamplerConfig, *,
               labels: torch.Tensor | None = None, guidance: float = 1.0, num_classes: int = 0,
               guidance_interval: tuple[float, float] | None = None, guide: ConditionalModel | None = None,
               autoguidance: float = 1.0, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", progress: bool = False,
               callback: Callback | None = None, edit: Edit | None = None) -> torch.Tensor:
        """Samples of shape [N x ...] from noise with `sampler` (see `eps_model` for the prompt),
        or from given latents as `edit` says (editing.py)."""
        eps = self.eps_model(model, labels, guidance, num_classes, guidance_interval, guide, autoguidance)
        return sampler.run(eps, self.schedule, shape, generator=generator, device=device, progress=progress,
                           callback=callback, edit=edit)
