"""What a denoiser learns, and the training step that teaches it, for any data shape: the UNet on
VAE latents and the MLP on toy vectors are trained by this same code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .diffusion import PREDICTIONS, training_losses
from .guidance import ConditionalModel, drop_labels
from .schedule import BETA_SCHEDULES, NoiseSchedule
from .train import StepLoss
from .utils import LdmError

# next_batch() -> (x_0 [N x ...], labels [N] or None), on the model's device
BatchFn = Callable[[], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class DiffusionObjective:
    """Stored in every checkpoint so that sampling rebuilds the same process."""
    schedule: str = "linear"  # β schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)
    num_timesteps: int = 1000
    prediction: str = "eps"  # eps or v
    min_snr_gamma: float | None = None  # min-SNR-γ loss weighting; None: the plain MSE
    label_dropout: float = 0.1  # fraction of labels replaced by "no label" (conditional models only)

    def validate(self) -> None:
        if self.schedule not in BETA_SCHEDULES:
            raise LdmError(f"--schedule {self.schedule!r}: choose one of {', '.join(BETA_SCHEDULES)}")
        if self.prediction not in PREDICTIONS:
            raise LdmError(f"--prediction {self.prediction!r}: choose one of {', '.join(PREDICTIONS)}")
        if self.num_timesteps <= 0:
            raise LdmError(f"--timesteps {self.num_timesteps}: must be positive")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_name(self.schedule, self.num_timesteps)


def diffusion_step_loss(model: ConditionalModel, objective: DiffusionObjective, schedule: NoiseSchedule,
                        next_batch: BatchFn, num_classes: int, device: torch.device) -> StepLoss:
    """The StepLoss of `run_training` for a denoiser model(x_t, t, labels): the mean of
    `training_losses` over a batch, logged also per quarter of the timestep range (q0 = least
    noise) to see where the model struggles. Labels are dropped at the objective's rate."""
    quartile_edges = torch.tensor([0.25, 0.5, 0.75], device=device) * schedule.num_timesteps

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0, labels = next_batch()
        if num_classes:
            labels = drop_labels(labels, num_classes, objective.label_dropout)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses, t = training_losses(lambda x, t: model(x, t, labels), schedule, x0,
                                        prediction=objective.prediction, min_snr_gamma=objective.min_snr_gamma)
        losses = losses.float()
        quartile = torch.bucketize(t, quartile_edges, right=True)
        sums = torch.zeros(4, device=device).index_add_(0, quartile, losses.detach())
        counts = torch.bincount(quartile, minlength=4).clamp(min=1)
        return losses.mean(), {f"q{i}": v for i, v in enumerate(sums / counts)}

    return step_loss
