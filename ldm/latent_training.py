"""Training the UNet on cached VAE latents; used by scripts/train_diffusion.py and the benchmark.

Each batch draws a fresh z = μ + σ·ε from the cached posteriors (the encoder never runs). With
a class-conditional UNet, labels are dropped to "no label" at `label_dropout`, so the same model
samples unconditionally and with classifier-free guidance; the checkpoint records how often each
digit occurs, the prior that unprompted samples draw their digits from.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from .checkpoint import save_model
from .data import BatchSampler
from .latents import LatentCache
from .objective import DiffusionObjective, diffusion_step_loss
from .snapshot import Snapshot
from .train import EMA, TrainSettings, run_training
from .unet import UNet, UNetConfig


def train_unet(cache: LatentCache, config: UNetConfig, objective: DiffusionObjective, settings: TrainSettings, *,
               seed: int, device: torch.device, progress: bool = True, desc: str = "diffusion",
               snapshot_to: str | os.PathLike | None = None, save_every: int = 0,
               compile: bool = False) -> tuple[UNet, UNet, dict]:
    """Train a UNet on `cache`; return (EMA model, raw model, info for the checkpoint).

    With `compile`, the training steps run the UNet through torch.compile; the weights, EMA and
    snapshots are those of the plain module either way.

    With `snapshot_to`, the training state is saved there every `save_every` steps and at the
    end, and a run with the same settings and latents resumes from it.
    """
    objective.validate()
    schedule = objective.noise_schedule()
    torch.manual_seed(seed)
    config = dataclasses.replace(config, in_channels=cache.latent_shape[0])
    unet = UNet(config).to(device)
    ema = EMA(unet, power=settings.ema_power)
    sampler = BatchSampler(len(cache.train_mean), settings.batch_size, seed)
    num_classes = config.num_classes
    snapshot = None
    if snapshot_to is not None:
        signature = {"stage": "diffusion", "objective": dataclasses.asdict(objective),
                     "training": dataclasses.asdict(settings), "config": dataclasses.asdict(config), "seed": seed,
                     "latents": cache.info.get("fingerprint")}
        snapshot = Snapshot(snapshot_to, save_every, signature, sampler)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor | None]:
        index = sampler.next().to(device)
        return cache.sample(index), cache.train_labels[index] if num_classes else None

    forward = torch.compile(unet) if compile else unet
    step_loss = diffusion_step_loss(forward, objective, schedule, next_batch, num_classes, device)
    start = time.time()
    logged = run_training(unet, step_loss, steps=settings.steps, lr=settings.lr,
                          warmup_steps=min(settings.warmup_steps, settings.steps), ema=ema, snapshot=snapshot,
                          desc=desc, progress=progress)
    seconds = time.time() - start
    # how often each digit occurs in training: unprompted samples draw their digits from it
    label_frequencies = (torch.bincount(cache.train_labels.cpu(), minlength=num_classes) / len(cache.train_labels)
                         ).tolist() if num_classes else None
    info = {"diffusion": dict(dataclasses.asdict(objective), scale_factor=cache.scale_factor,
                              label_dropout=objective.label_dropout if num_classes else None),
            "label_frequencies": label_frequencies,
            "vae_fingerprint": cache.vae_fingerprint, "training": dataclasses.asdict(settings), "seed": seed,
            "ema_decay": ema.decay(), "final_loss": logged, "train_seconds": seconds,
            "latents_per_second": settings.steps * settings.batch_size / seconds, "device": str(device),
            "compiled": compile}
    return ema.model, unet, info


def save_unet(path: str | os.PathLike, ema_model: UNet, raw_model: UNet, info: dict) -> None:
    """The EMA weights (used for sampling) as the model, the raw weights beside them under raw/."""
    raw = {f"raw/{k}": v for k, v in raw_model.state_dict().items()}
    save_model(path, ema_model, info, extra_tensors=raw)
