"""The three training stages, each from tensors to a written checkpoint: the classifier whose
features define FID, the VAE, and the UNet on the cached latents. Scripts load the data, call
one of these and print what it returns; `make bench` trains UNets through `train_unet` too.

Every stage snapshots its training state beside its output (snapshot.py), so rerunning a killed
command resumes; models are initialised from `seed` after it is set here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import Checkpoint, fingerprint, save_model
from .classifier import Classifier, ClassifierConfig
from .data import BatchSampler, to_float
from .diffusion import Diffusion, DiffusionConfig, train_denoiser
from .evaluation import TestSetFID
from .images import save_grid
from .latents import LatentCache
from .monitor import Check, Monitor
from .pipeline import LatentDiffusion
from .sampling import SamplerConfig
from .snapshot import Snapshot, run_signature, snapshot_path
from .train import TrainSettings, run_training
from .unet import UNet, UNetConfig
from .utils import set_seed
from .vae import VAE, VAEConfig, vae_loss

CheckRun = Callable[[torch.nn.Module, torch.nn.Module | None], dict]
Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 images [N x 28 x 28], int64 labels [N]) on the device
# Held-out examples of each validation (the first of the test split): a few percent of a stage's time
VALIDATION_EXAMPLES = 2000  # images, for the classifier and the VAE
VALIDATION_LATENTS = 1000  # test latents for the UNet, each at Diffusion.held_out_check's 8 timesteps


# ---- classifier

@torch.no_grad()
def classifier_accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = sum((model(to_float(images[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def classifier_validation(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> CheckRun:
    """Cross-entropy and accuracy on held-out images, as a monitor Check's run."""
    def run(model: Classifier, _) -> dict:
        logits = torch.cat([model(to_float(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])
        return {"loss": F.cross_entropy(logits, labels).item(), "accuracy": (logits.argmax(1) == labels).double().mean().item()}
    return run


def train_classifier(train: Split, test: Split, settings: TrainSettings, out: str | os.PathLike, *, seed: int,
                     device: torch.device, save_every: int = 500, progress: bool = True,
                     info: dict | None = None, monitor: Monitor | None = None) -> dict:
    """Train the FID classifier by cross-entropy, write it to `out` with its test accuracy; return
    its info. With a `monitor`, validated on the first VALIDATION_EXAMPLES test images."""
    images, labels = train
    set_seed(seed)
    model = Classifier(ClassifierConfig()).to(device)
    sampler = BatchSampler(len(images), settings.batch_size, seed)
    signature = run_signature("classifier", seed, fingerprint({"images": images, "labels": labels}),
                              training=settings, config=model.config)
    snapshot = Snapshot(snapshot_path(out), save_every, signature, sampler)

    forward = distributed.wrap(model)

    def step_loss(step):
        idx = sampler.next().to(device)  # the global batch and its dropout masks; this rank keeps its shard
        mask, mine = model.dropout_mask(len(idx), device), distributed.shard(len(idx))
        return F.cross_entropy(forward(to_float(images[idx[mine]]), mask[mine]), labels[idx[mine]]), {}

    validation = Check("validation", settings.validate_every,
                       classifier_validation(test[0][:VALIDATION_EXAMPLES], test[1][:VALIDATION_EXAMPLES]))
    run_training(model, step_loss, settings, snapshot=snapshot, monitor=monitor, checks=[validation],
                 desc="classifier", progress=progress)
    info = dict(info or {}, test_accuracy=classifier_accuracy(model, *test), train_images=len(images),
                test_images=len(test[0]), training=dataclasses.asdict(settings), seed=seed)
    if distributed.is_main():
        save_model(out, model, info)
    return info


# ---- VAE

@torch.no_grad()
def evaluate_vae(vae: VAE, images: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Test-set reconstruction error (decoding the posterior mean) and the ELBO terms per image."""
    totals = {"recon_bce": 0.0, "kl": 0.0, "mse_per_pixel": 0.0}
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size])
        recon, kl = vae_loss(vae, x)
        mean, _ = vae.encode(x)
        totals["recon_bce"] += recon.item() * len(x)
        totals["kl"] += kl.item() * len(x)
        totals["mse_per_pixel"] += F.mse_loss(vae.decode(mean), x, reduction="sum").item() / x[0].numel()
    return {k: v / len(images) for k, v in totals.items()}


def vae_validation(images: torch.Tensor, beta: float, latent_shape: tuple[int, ...], seed: int = 0,
                   batch_size: int = 1000) -> CheckRun:
    """The negative ELBO and its terms on held-out images, with the posterior's ε drawn once from
    `seed` (successive values differ only by the model), as a monitor Check's run."""
    noise = torch.randn((len(images), *latent_shape), generator=torch.Generator().manual_seed(seed)).to(images.device)

    def run(vae: VAE, _) -> dict:
        totals = torch.zeros(2, dtype=torch.float64)
        for i in range(0, len(images), batch_size):
            x = to_float(images[i:i + batch_size])
            totals += torch.stack(vae_loss(vae, x, noise[i:i + batch_size])).double().cpu() * len(x)
        recon, kl = (totals / len(images)).tolist()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl}
    return run


def train_vae(train_images: torch.Tensor, test_images: torch.Tensor, config: VAEConfig, settings: TrainSettings,
              out: str | os.PathLike, grid: str | os.PathLike, *, seed: int, device: torch.device,
              save_every: int = 500, progress: bool = True, info: dict | None = None,
              monitor: Monitor | None = None) -> dict:
    """Train the VAE on the negative ELBO (reconstruction BCE + β·KL); write it to `out` with its
    test metrics, and `grid`, test images (odd rows) over their reconstructions (even rows). With a
    `monitor`, validated on the first VALIDATION_EXAMPLES test images."""
    set_seed(seed)
    vae = VAE(config).to(device)
    sampler = BatchSampler(len(train_images), settings.batch_size, seed)
    signature = run_signature("vae", seed, fingerprint({"images": train_images}), training=settings, config=config)
    snapshot = Snapshot(snapshot_path(out), save_every, signature, sampler)

    forward = distributed.wrap(vae)

    def step_loss(step):
        idx = sampler.next().to(device)  # the global batch and its ε; this rank keeps its shard
        noise, mine = torch.randn(len(idx), *vae.latent_shape, device=device), distributed.shard(len(idx))
        recon, kl = vae_loss(forward, to_float(train_images[idx[mine]]), noise[mine])
        return recon + config.beta * kl, {"recon": recon.detach(), "kl": kl.detach()}

    validation = Check("validation", settings.validate_every,
                       vae_validation(test_images[:VALIDATION_EXAMPLES], config.beta, vae.latent_shape))
    run_training(vae, step_loss, settings, snapshot=snapshot, monitor=monitor, checks=[validation], desc="vae",
                 progress=progress)
    metrics = evaluate_vae(vae, test_images)
    per_row = min(16, len(test_images))  # two rows of each when there are 32 test images
    with torch.no_grad():
        x = to_float(test_images[:2 * per_row if len(test_images) >= 2 * per_row else per_row])
        recon = vae.decode(vae.encode(x)[0])
    info = dict(info or {}, test=metrics, train_images=len(train_images), training=dataclasses.asdict(settings),
                seed=seed)
    if distributed.is_main():
        rows = [part for i in range(0, len(x), per_row) for part in (x[i:i + per_row], recon[i:i + per_row])]
        save_grid(torch.cat(rows), grid, nrow=per_row)
        save_model(out, vae, info)
    return info


# ---- UNet

@dataclass
class SampleQuality:
    """What the UNet's training needs to score its samples every `every` steps: the FID of
    `num_images` unprompted images (digits drawn from the training label frequencies, guidance 1)
    from the EMA weights with the default sampler, the same noise each time."""
    vae: VAE
    vae_ckpt: Checkpoint
    fid: TestSetFID
    every: int
    num_images: int
    batch_size: int
    seed: int = 0

    def check(self, diffusion: Diffusion, scale_factor: float, label_frequencies: list[float] | None) -> Check:
        def run(model: UNet, ema_model: UNet) -> dict:
            pipe = LatentDiffusion(ema_model, self.vae, diffusion, scale_factor, label_frequencies, None,
                                   self.vae_ckpt, ema_model)
            _, labels, guidance = pipe.prompt(None, self.num_images, self.seed)
            images = pipe.sample(self.num_images, SamplerConfig(), labels=labels, guidance=guidance, seed=self.seed,
                                 batch_size=self.batch_size)
            return {"fid": self.fid(images), "images": self.num_images, "samples": images}
        return Check("fid", self.every, run)


def train_unet(cache: LatentCache, config: UNetConfig, diffusion_config: DiffusionConfig, settings: TrainSettings,
               *, seed: int, device: torch.device, progress: bool = True, desc: str = "diffusion",
               snapshot_to: str | os.PathLike | None = None, save_every: int = 0, compile: bool = False,
               monitor: Monitor | None = None, quality: SampleQuality | None = None) -> tuple[UNet, UNet, dict]:
    """Train a UNet on `cache`; return (EMA model, raw model, info for the checkpoint).

    Each batch draws a fresh z = μ + σ·ε from the cached posteriors (the encoder never runs). A
    class-conditional UNet has its labels dropped to "no label" at the config's rate, so the same
    model samples unprompted and with classifier-free guidance; the info records how often each
    digit occurs, the prior that unprompted samples draw their digits from. With a `monitor`, the
    raw weights are validated on VALIDATION_LATENTS test latents, and with `quality` the EMA
    weights' samples are scored.
    """
    config = dataclasses.replace(config, in_channels=cache.latent_shape[0])
    num_classes = config.num_classes

    def batch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return cache.sample(index), cache.train_labels[index] if num_classes else None

    signature = run_signature("diffusion", seed, cache.info.get("fingerprint"), training=settings, config=config,
                              diffusion=diffusion_config)
    label_frequencies = (torch.bincount(cache.train_labels.cpu(), minlength=num_classes) / len(cache.train_labels)
                         ).tolist() if num_classes else None
    diffusion = Diffusion(diffusion_config)
    held_out, held_out_labels = cache.held_out(VALIDATION_LATENTS)
    checks = [Check("validation", settings.validate_every,
                    diffusion.held_out_check(held_out, held_out_labels if num_classes else None, num_classes))]
    if quality is not None and quality.every > 0:
        checks.append(quality.check(diffusion, cache.scale_factor, label_frequencies))
    trained = train_denoiser(lambda: UNet(config), diffusion, len(cache.train_mean), batch,
                             settings, seed=seed, device=device, desc=desc, progress=progress, snapshot_to=snapshot_to,
                             save_every=save_every, signature=signature, compile=compile, monitor=monitor,
                             checks=checks)
    info = {"diffusion": dataclasses.asdict(diffusion_config), "scale_factor": cache.scale_factor,
            "label_frequencies": label_frequencies, "vae_fingerprint": cache.vae_fingerprint,
            "training": dataclasses.asdict(settings), "seed": seed, "ema_decay": trained.ema_decay,
            "final_loss": trained.logged, "train_seconds": trained.seconds,
            "latents_per_second": settings.steps * settings.batch_size / trained.seconds, "device": str(device),
            "processes": distributed.world().size, "compiled": compile}
    return trained.ema_model, trained.model, info


def save_unet(path: str | os.PathLike, ema_model: UNet, raw_model: UNet, info: dict) -> None:
    """The EMA weights (used for sampling) as the model, the raw weights beside them under raw/;
    written by rank 0 alone."""
    if not distributed.is_main():
        return
    raw = {f"raw/{k}": v for k, v in raw_model.state_dict().items()}
    save_model(path, ema_model, info, extra_tensors=raw)
