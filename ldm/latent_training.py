"""Training the UNet on cached VAE latents; used by scripts/train_diffusion.py and the benchmark.

Each batch draws a fresh z = μ + σ·ε from the cached posteriors (the encoder never runs). With
a class-conditional UNet, labels are dropped to "no label" at `label_dropout`, so the same model
samples unconditionally and with classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch

from .checkpoint import save_model
from .data import BatchSampler
from .diffusion import PREDICTIONS, training_losses
from .guidance import drop_labels
from .latents import LatentCache
from .schedule import BETA_SCHEDULES, NoiseSchedule
from .snapshot import Snapshot
from .train import EMA, TrainSettings, run_training
from .unet import UNet, UNetConfig
from .utils import LdmError


@dataclass(frozen=True)
class DiffusionObjective:
    """What the UNet learns; stored in the checkpoint so that sampling rebuilds the same process."""
    schedule: str = "linear"  # β schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)
    num_timesteps: int = 1000
    prediction: str = "eps"  # eps or v
    min_snr_gamma: float | None = None  # min-SNR-γ loss weighting; None: the plain MSE
    label_dropout: float = 0.1  # fraction of labels replaced by "no label" (conditional UNets only)

    def validate(self) -> None:
        if self.schedule not in BETA_SCHEDULES:
            raise LdmError(f"--schedule {self.schedule!r}: choose one of {', '.join(BETA_SCHEDULES)}")
        if self.prediction not in PREDICTIONS:
            raise LdmError(f"--prediction {self.prediction!r}: choose one of {', '.join(PREDICTIONS)}")
        if self.num_timesteps <= 0:
            raise LdmError(f"--timesteps {self.num_timesteps}: must be positive")


def train_unet(cache: LatentCache, config: UNetConfig, objective: DiffusionObjective, settings: TrainSettings, *,
               seed: int, device: torch.device, progress: bool = True, desc: str = "diffusion",
               snapshot_to: str | os.PathLike | None = None, save_every: int = 0) -> tuple[UNet, UNet, dict]:
    """Train a UNet on `cache`; return (EMA model, raw model, info for the checkpoint).

    With `snapshot_to`, the training state is saved there every `save_every` steps and at the
    end, and a run with the same settings and latents resumes from it.
    """
    objective.validate()
    schedule = NoiseSchedule.from_name(objective.schedule, objective.num_timesteps)
    torch.manual_seed(seed)
    config = dataclasses.replace(config, in_channels=cache.latent_shape[0])
    unet = UNet(config).to(device)
    ema = EMA(unet)
    sampler = BatchSampler(len(cache.train_mean), settings.batch_size, seed)
    quartile_edges = torch.tensor([0.25, 0.5, 0.75], device=device) * schedule.num_timesteps
    num_classes = config.num_classes
    snapshot = None
    if snapshot_to is not None:
        signature = {"stage": "diffusion", "objective": dataclasses.asdict(objective),
                     "training": dataclasses.asdict(settings), "config": dataclasses.asdict(config), "seed": seed,
                     "latents": cache.info.get("fingerprint")}
        snapshot = Snapshot(snapshot_to, save_every, signature, sampler)

    def step_loss(step):
        index = sampler.next().to(device)
        x0 = cache.sample(index)
        labels = drop_labels(cache.train_labels[index], num_classes, objective.label_dropout) if num_classes else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses, t = training_losses(lambda x, t: unet(x, t, labels), schedule, x0,
                                        prediction=objective.prediction, min_snr_gamma=objective.min_snr_gamma)
        losses = losses.float()
        # mean loss per quarter of the timestep range, to see where the model struggles
        quartile = torch.bucketize(t, quartile_edges, right=True)
        sums = torch.zeros(4, device=device).index_add_(0, quartile, losses.detach())
        counts = torch.bincount(quartile, minlength=4).clamp(min=1)
        return losses.mean(), {f"q{i}": v for i, v in enumerate(sums / counts)}

    start = time.time()
    logged = run_training(unet, step_loss, steps=settings.steps, lr=settings.lr,
                          warmup_steps=min(settings.warmup_steps, settings.steps), ema=ema, snapshot=snapshot,
                          desc=desc, progress=progress)
    seconds = time.time() - start
    info = {"diffusion": dict(dataclasses.asdict(objective), scale_factor=cache.scale_factor,
                              label_dropout=objective.label_dropout if num_classes else None),
            "vae_fingerprint": cache.vae_fingerprint, "training": dataclasses.asdict(settings), "seed": seed,
            "ema_decay": ema.decay(), "final_loss": logged, "train_seconds": seconds,
            "latents_per_second": settings.steps * settings.batch_size / seconds, "device": str(device)}
    return ema.model, unet, info


def save_unet(path: str | os.PathLike, ema_model: UNet, raw_model: UNet, info: dict) -> None:
    """The EMA weights (used for sampling) as the model, the raw weights beside them under raw/."""
    raw = {f"raw/{k}": v for k, v in raw_model.state_dict().items()}
    save_model(path, ema_model, info, extra_tensors=raw)
