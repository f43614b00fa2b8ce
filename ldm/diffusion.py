"""What a denoiser learns and how it is used, for any data shape: the UNet on VAE latents and the
MLP on toy vectors go through this same code.

`DiffusionConfig` is the process (β schedule, T, what the network predicts, loss weighting, label
dropout); it travels in every denoiser checkpoint. `Diffusion` owns its noise schedule and gives
the training loss of DDPM (Ho et al. 2020, arXiv:2006.11239) for an ε- or v-predictor (Salimans &
Ho 2022, arXiv:2202.00512), optionally min-SNR-γ weighted (Hang et al. 2023, arXiv:2303.09556), and
the ε-model that samplers see, with classifier-free guidance. `train_denoiser` is the set-up both
denoisers are trained with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from . import distributed
from .data import BatchSampler
from .guidance import ConditionalModel, drop_labels, guided_model
from .monitor import Check, Monitor
from .sampling import Callback, EpsModel, SamplerConfig
from .schedule import BETA_SCHEDULES, NoiseSchedule
from .snapshot import Snapshot
from .train import EMA, StepLoss, TrainSettings, run_training
from .utils import ConfigError, autocast, check_choice

PREDICTIONS = ("eps", "v")


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process a denoiser is trained for; validated here once. The defaults are the
    project's measured choice for MNIST latents (docs/results.md)."""
    schedule: str = "cosine"  # linear (Ho et al.) or cosine (Nichol & Dhariwal); cosine won at equal steps
    num_timesteps: int = 1000  # T, the length of the chain
    prediction: str = "v"  # what the network outputs: eps or v; v beat ε at equal steps (cosine needs v)
    min_snr_gamma: float | None = None  # min-SNR-γ loss weighting; None: the plain MSE
    label_dropout: float = 0.5  # fraction of labels replaced by "no label" (class-conditional models only)

    def __post_init__(self):
        check_choice("schedule", self.schedule, BETA_SCHEDULES)
        check_choice("prediction", self.prediction, PREDICTIONS)
        if self.num_timesteps <= 0 or (self.schedule == "linear" and self.num_timesteps < 20):
            raise ConfigError("num_timesteps", self.num_timesteps,
                              "must be positive (at least 20 for the linear schedule, whose β_T = 20/T)")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ConfigError("min_snr_gamma", self.min_snr_gamma, "must be > 0")
        if not 0 <= self.label_dropout <= 1:
            raise ConfigError("label_dropout", self.label_dropout, "must be in [0, 1]")


# next_batch() -> (x_0 [N x ...], labels [N] or None), on the model's device
BatchFn = Callable[[], tuple[torch.Tensor, torch.Tensor | None]]


def _mixed_precision(model: ConditionalModel) -> ConditionalModel:
    """The denoiser's forward pass under the project's autocast policy (bf16 on CUDA)."""
    def forward(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        with autocast(x.device):
            return model(x, t, labels)
    return forward


class Diffusion:
    """A DiffusionConfig with its noise schedule; the network is an argument of each method."""

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.schedule = NoiseSchedule.from_name(config.schedule, config.num_timesteps)

    def losses(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_start: torch.Tensor,
               t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example MSE of the model's prediction; for ε the "simple" loss of eq. (14) of 2006.11239.

        :param model: (x_t, t) -> ε̂ or v̂, as the config's `prediction` says.
        :param x_start: [N x ...] clean data.
        :param t: [N] timesteps; uniform over 0..T-1 when None.
        :return: (losses [N], t [N]) so callers can log the loss per timestep range. With
            min_snr_gamma, each example is weighted by min(SNR, γ)/SNR for ε (min(SNR, γ)/(SNR + 1)
            for v), i.e. the x_0-MSE clipped at γ, so that easy low-noise steps stop dominating.
        """
        config, schedule = self.config, self.schedule
        if t is None:
            t = torch.randint(0, schedule.num_timesteps, (len(x_start),), device=x_start.device)
        noise = torch.randn_like(x_start) if noise is None else noise
        output = model(schedule.q_sample(x_start, t, noise), t)
        target = noise if config.prediction == "eps" else schedule.velocity(x_start, t, noise)
        losses = (output - target).pow(2).flatten(1).mean(dim=1)
        if config.min_snr_gamma is not None:
            ratio = schedule.snr(t)
            denominator = ratio if config.prediction == "eps" else ratio + 1
            losses = losses * ratio.clamp(max=config.min_snr_gamma) / denominator
        return losses, t

    def step_loss(self, model: ConditionalModel, next_batch: BatchFn, num_classes: int,
                  device: torch.device) -> StepLoss:
        """The StepLoss of `run_training` for a denoiser model(x_t, t, labels): the mean of `losses`
        over a batch, logged also per quarter of the timestep range (q0 = least noise) to see where
        the model struggles. Labels are dropped at the config's rate.

        `next_batch` gives the global batch; its randomness (dropped labels, t, ε) is drawn for
        the whole of it, as one process would, and this rank trains on its `distributed.shard`."""
        quartile_edges = torch.tensor([0.25, 0.5, 0.75], device=device) * self.schedule.num_timesteps
        forward = _mixed_precision(model)

        def step_loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            x0, labels = next_batch()
            if num_classes:
                labels = drop_labels(labels, num_classes, self.config.label_dropout)
            t = torch.randint(0, self.schedule.num_timesteps, (len(x0),), device=device)
            noise = torch.randn_like(x0)
            mine = distributed.shard(len(x0))
            losses, _ = self.losses(lambda x, t: forward(x, t, None if labels is None else labels[mine]),
                                    x0[mine], t[mine], noise[mine])
            # per-quartile means over the global batch: this rank's sums over the global counts,
            # times the number of ranks (run_training averages shares over ranks)
            quartile = torch.bucketize(t, quartile_edges, right=True)
            sums = torch.zeros(4, device=device).index_add_(0, quartile[mine], losses.detach())
            counts = torch.bincount(quartile, minlength=4).clamp(min=1)
            shares = sums / counts * distributed.world().size
            return losses.mean(), {f"q{i}": v for i, v in enumerate(shares)}

        return step_loss

    def held_out_check(self, x0: torch.Tensor, labels: torch.Tensor | None, num_classes: int, points: int = 8,
                       seed: int = 0, batch_size: int = 1000) -> Callable[[nn.Module, nn.Module | None], dict]:
        """The `losses` of held-out `x0` as a monitor Check's run: at `points` evenly spaced timesteps
        (the midpoints of equal ranges) with noise and dropped labels drawn once from `seed`, so that
        successive values differ only by the model being trained. Returns the mean over the grid and
        the means over each quarter of the timestep range (q0 = least noise), as training logs them."""
        generator = torch.Generator().manual_seed(seed)
        grid = ((torch.arange(points) + 0.5) * self.schedule.num_timesteps / points).long()
        quarters = torch.bucketize(grid, torch.tensor([0.25, 0.5, 0.75]) * self.schedule.num_timesteps, right=True)
        noise = torch.randn((points, *x0.shape), generator=generator).to(x0.device)
        if num_classes:
            dropped = torch.rand(labels.shape, generator=generator).to(labels.device) < self.config.label_dropout
            labels = torch.where(dropped, torch.full_like(labels, num_classes), labels)

        def run(model: nn.Module, ema_model: nn.Module | None) -> dict:
            forward = _mixed_precision(model)
            per_point = torch.zeros(points, dtype=torch.float64)
            for i in range(0, len(x0), batch_size):
                part = slice(i, i + batch_size)
                for j, t in enumerate(grid.tolist()):
                    losses, _ = self.losses(lambda x, t_: forward(x, t_, None if labels is None else labels[part]),
                                            x0[part], torch.full((len(x0[part]),), t, device=x0.device), noise[j, part])
                    per_point[j] += losses.double().sum().item()
            per_point /= len(x0)
            return {"loss": per_point.mean().item(),
                    **{f"q{q}": per_point[quarters == q].mean().item() for q in range(4) if (quarters == q).any()}}

        return run

    def eps_model(self, model: ConditionalModel, labels: torch.Tensor | None = None, guidance: float = 1.0,
                  num_classes: int = 0) -> EpsModel:
        """The (x_t, t) -> ε̂ function samplers call: `model` prompted with `labels` at classifier-free
        guidance `guidance` (guidance.py), a v-prediction turned into ε̂."""
        guided = guided_model(_mixed_precision(model), labels, guidance, num_classes)
        if self.config.prediction == "eps":
            return guided
        return lambda x, t: self.schedule.eps_from_velocity(x, t, guided(x, t))

    def sample(self, model: ConditionalModel, shape: tuple[int, ...], sampler: SamplerConfig, *,
               labels: torch.Tensor | None = None, guidance: float = 1.0, num_classes: int = 0,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu", progress: bool = False,
               callback: Callback | None = None) -> torch.Tensor:
        """Samples of shape [N x ...] from noise with `sampler` (see `eps_model` for the prompt)."""
        eps = self.eps_model(model, labels, guidance, num_classes)
        return sampler.run(eps, self.schedule, shape, generator=generator, device=device, progress=progress,
                           callback=callback)


@dataclass
class TrainedDenoiser:
    ema_model: nn.Module  # what samples are drawn with
    model: nn.Module  # the raw weights
    ema_decay: float  # the EMA's decay at the end
    logged: dict[str, float]  # the last logged metrics
    seconds: float


def train_denoiser(make_model: Callable[[], nn.Module], diffusion: Diffusion, num_examples: int,
                   batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]], settings: TrainSettings,
                   *, seed: int, device: torch.device, desc: str, progress: bool = True,
                   snapshot_to=None, save_every: int = 0, signature: dict | None = None,
                   compile: bool = False, monitor: Monitor | None = None,
                   checks: Sequence[Check] = ()) -> TrainedDenoiser:
    """Train the denoiser `make_model()` (initialised from `seed`; its config says num_classes)
    on `num_examples` examples, batches of indices drawn in a seeded order and turned into
    (x_0, labels) by `batch`, keeping an EMA of the weights.

    With `compile`, the steps run the network through torch.compile; weights, EMA and snapshots
    are those of the plain module either way. With `snapshot_to`, the training state is saved
    there every `save_every` steps and at the end, and a run of the same `signature` resumes from it.
    `monitor` and `checks`: see run_training.
    """
    torch.manual_seed(seed)
    model = make_model().to(device)
    ema = EMA(model, settings.ema_power)
    sampler = BatchSampler(num_examples, settings.batch_size, seed)
    snapshot = None if snapshot_to is None else Snapshot(snapshot_to, save_every, signature, sampler)
    forward = distributed.wrap(model)
    forward = torch.compile(forward) if compile else forward
    step_loss = diffusion.step_loss(forward, lambda: batch(sampler.next().to(device)), model.config.num_classes,
                                    device)
    start = time.time()
    logged = run_training(model, step_loss, settings, ema=ema, snapshot=snapshot, monitor=monitor, checks=checks,
                          desc=desc, progress=progress)
    return TrainedDenoiser(ema.model, model, ema.decay(), logged, time.time() - start)
