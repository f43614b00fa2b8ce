"""Training a denoiser on a diffusion process (diffusion.py): the loss of each step over the
global batch, the held-out check that watches it, and the set-up both denoisers (the UNet on
VAE latents, the toy MLP) are trained with."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from . import distributed
from .data import BatchSampler
from .diffusion import Diffusion, mixed_precision
from .guidance import ConditionalModel, drop_labels
from .monitor import Check, Monitor
from .runtime import RunContext
from .snapshot import Snapshot
from .train import EMA, StepLoss, TrainSettings, run_training, seeded_model

# next_batch() -> (x_0 [N x ...], labels [N] or None), on the model's device
BatchFn = Callable[[], tuple[torch.Tensor, torch.Tensor | None]]


def timestep_quarter(t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Which quarter of the timestep range each t falls in (0: least noise), as losses are logged."""
    edges = torch.tensor([0.25, 0.5, 0.75], device=t.device) * num_timesteps
    return torch.bucketize(t, edges, right=True)


def step_loss(diffusion: Diffusion, model: ConditionalModel, next_batch: BatchFn, num_classes: int,
              device: torch.device) -> StepLoss:
    """The StepLoss of `run_training` for a denoiser model(x_t, t, labels): the mean of
    `diffusion.losses` over a batch, logged also per quarter of the timestep range (q0 = least
    noise) to see where the model struggles. Labels are dropped at the config's rate and
    timesteps drawn from its density.

    `next_batch` gives the global batch; its randomness (dropped labels, t, ε) is drawn for the
    whole of it, as one process would, and this rank trains on its `distributed.shard`."""
    forward = mixed_precision(model)
    num_timesteps = diffusion.schedule.num_timesteps

    def loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, labels = next_batch()
        if num_classes:
            labels = drop_labels(labels, num_classes, diffusion.config.label_dropout)
        t = diffusion.draw_timesteps(len(x0), device)
        noise = torch.randn_like(x0)
        mine = distributed.shard(len(x0))
        losses, _ = diffusion.losses(lambda x, t: forward(x, t, None if labels is None else labels[mine]),
                                     x0[mine], t[mine], noise[mine])
        # per-quarter means over the global batch: this rank's sums over the global counts, times
        # the number of ranks (run_training averages shares over ranks)
        quarter = timestep_quarter(t, num_timesteps)
        sums = torch.zeros(4, device=device).index_add_(0, quarter[mine], losses.detach())
        counts = torch.bincount(quarter, minlength=4).clamp(min=1)
        shares = sums / counts * distributed.world().size
        return losses.mean(), {f"q{i}": v for i, v in enumerate(shares)}

    return loss


def held_out_check(diffusion: Diffusion, x0: torch.Tensor, labels: torch.Tensor | None, num_classes: int,
                   points: int = 8, seed: int = 0,
                   batch_size: int = 1000) -> Callable[[nn.Module, nn.Module | None], dict]:
    """`diffusion.losses` of held-out `x0` as a monitor Check's run: at `points` evenly spaced
    timesteps (the midpoints of equal ranges) with noise and dropped labels drawn once from
    `seed`, so that successive values differ only by the model being trained. Returns the mean
    over the grid and the means over each quarter of the timestep range (q0 = least noise), as
    training logs them."""
    num_timesteps = diffusion.schedule.num_timesteps
    generator = torch.Generator().manual_seed(seed)
    grid = ((torch.arange(points) + 0.5) * num_timesteps / points).long()
    quarters = timestep_quarter(grid, num_timesteps)
    noise = torch.randn((points, *x0.shape), generator=generator).to(x0.device)
    if num_classes:
        labels = drop_labels(labels, num_classes, diffusion.config.label_dropout, generator)

    def run(model: nn.Module, ema_model: nn.Module | None) -> dict:
        forward = mixed_precision(model)
        per_point = torch.zeros(points, dtype=torch.float64)
        for i in range(0, len(x0), batch_size):
            part = slice(i, i + batch_size)
            for j, t in enumerate(grid.tolist()):
                losses, _ = diffusion.losses(lambda x, t_: forward(x, t_, None if labels is None else labels[part]),
                                             x0[part], torch.full((len(x0[part]),), t, device=x0.device),
                                             noise[j, part])
                per_point[j] += losses.double().sum().item()
        per_point /= len(x0)
        return {"loss": per_point.mean().item(),
                **{f"q{q}": per_point[quarters == q].mean().item() for q in range(4) if (quarters == q).any()}}

    return run


@dataclass
class TrainedDenoiser:
    ema_model: nn.Module  # what samples are drawn with
    model: nn.Module  # the raw weights
    ema_decay: float  # the EMA's decay at the end
    logged: dict[str, float]  # the last logged metrics
    seconds: float
    steps: int  # the optimizer steps taken (settings.steps, unless a time budget ended the run)


def train_denoiser(make_model: Callable[[], nn.Module], diffusion: Diffusion, num_examples: int,
                   batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]], settings: TrainSettings,
                   run: RunContext, *, desc: str, snapshot: Snapshot | None = None, monitor: Monitor | None = None,
                   checks: Sequence[Check] = (), time_budget: float | None = None) -> TrainedDenoiser:
    """Train the denoiser `make_model()` (its config says num_classes) on `num_examples`
    examples, batches of indices drawn in a seeded order and turned into (x_0, labels) by
    `batch`, keeping an EMA of the weights.

    With `run.compile`, the steps run the network through torch.compile; weights, EMA and
    snapshots are those of the plain module either way. `snapshot`, `monitor`, `checks` and
    `time_budget`: see run_training.
    """
    model = seeded_model(make_model, run)
    ema = EMA(model, settings.ema_power)
    sampler = BatchSampler(num_examples, settings.batch_size, run.seed)
    forward = distributed.wrap(model)
    forward = torch.compile(forward) if run.compile else forward
    loss = step_loss(diffusion, forward, lambda: batch(sampler.next().to(run.device)), model.config.num_classes,
                     run.device)
    start = time.time()
    logged = run_training(model, loss, settings, ema=ema, sampler=sampler, snapshot=snapshot,
                          monitor=monitor, checks=checks, desc=desc, progress=run.progress, time_budget=time_budget)
    return TrainedDenoiser(ema.model, model, ema.decay(), logged, time.time() - start, ema.num_updates)
