"""The three training stages, one contract: training tensors, the stage's settings and the run's
context in; a `Trained` model out, with the info its checkpoint records, written by
`Trained.save`. The classifier's features define FID, the VAE makes the latents, and the UNet
learns to denoise them. Scripts load the data, call one of these and save what it returns;
`make bench` and `make lengths` train UNets through `train_unet` too.

Every stage given `snapshot_to` snapshots its training state there (snapshot.py), so rerunning
a killed command resumes; with a `monitor`, each validates on held-out data as it trains.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import Checkpoint, fingerprint, load_checkpoint, save_model
from .classifier import Classifier, ClassifierConfig
from .data import BatchSampler, to_float
from .diffusion import Diffusion, DiffusionConfig
from .diffusion_training import held_out_check, train_denoiser
from .errors import LdmError
from .latents import LatentCache
from .monitor import Check, Monitor
from .outputs import Outputs
from .pipeline import LatentDiffusion
from .runtime import RunContext, precision_name
from .sampling import SamplerConfig
from .scoring import TestSetFID
from .snapshot import Snapshot, run_signature
from .train import TrainSettings, run_training, seeded_model
from .unet import UNet, UNetConfig
from .vae import VAE, VAEConfig, elbo_terms, vae_loss

Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 images [N x 28 x 28], int64 labels [N]) on the device
# Held-out examples of each validation (the first of the test split): a few percent of a stage's time
VALIDATION_EXAMPLES = 2000  # images, for the classifier and the VAE
VALIDATION_LATENTS = 1000  # test latents for the UNet, each at held_out_check's 8 timesteps


@dataclass
class Trained:
    """A stage's result: the model later stages use (the UNet's EMA weights), the info its
    checkpoint records and, for the UNet, the raw weights kept beside it under raw/."""
    model: torch.nn.Module
    info: dict
    raw_model: torch.nn.Module | None = None

    def save(self, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
        """Write the checkpoint (rank 0 alone; with `outputs`, as one of that group)."""
        if not distributed.is_main():
            return
        raw = {} if self.raw_model is None else {f"raw/{k}": v for k, v in self.raw_model.state_dict().items()}
        save_model(path, self.model, self.info, extra_tensors=raw, outputs=outputs)


def _snapshot(snapshot_to: str | os.PathLike | None, save_every: int, signature: dict) -> Snapshot | None:
    return None if snapshot_to is None else Snapshot(snapshot_to, save_every, signature)


# ---- classifier

@torch.no_grad()
def classifier_metrics(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
                       batch_size: int = 1000) -> dict[str, float]:
    """Cross-entropy and accuracy on held-out images: the validation during training and the
    test accuracy the checkpoint records."""
    logits = torch.cat([model(to_float(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).double().mean().item()}


def train_classifier(train: Split, test: Split, settings: TrainSettings, run: RunContext, *,
                     snapshot_to: str | os.PathLike | None = None, save_every: int = 500,
                     monitor: Monitor | None = None) -> Trained:
    """The FID classifier trained by cross-entropy, with its test accuracy in the info."""
    images, labels = train
    model = seeded_model(lambda: Classifier(ClassifierConfig()), run)
    sampler = BatchSampler(len(images), settings.batch_size, run.seed)
    signature = run_signature("classifier", run.seed, fingerprint({"images": images, "labels": labels}),
                              training=settings, config=model.config)
    forward = distributed.wrap(model)

    def step_loss(step):
        idx = sampler.next().to(run.device)  # the global batch and its dropout masks; this rank keeps its shard
        mask, mine = model.dropout_mask(len(idx), run.device), distributed.shard(len(idx))
        return F.cross_entropy(forward(to_float(images[idx[mine]]), mask[mine]), labels[idx[mine]]), {}

    held_out = test[0][:VALIDATION_EXAMPLES], test[1][:VALIDATION_EXAMPLES]
    validation = Check("validation", settings.validate_every, lambda model, _: classifier_metrics(model, *held_out))
    run_training(model, step_loss, settings, sampler=sampler, snapshot=_snapshot(snapshot_to, save_every, signature),
                 monitor=monitor, checks=[validation], desc="classifier", progress=run.progress)
    info = {"test_accuracy": classifier_metrics(model, *test)["accuracy"], "train_images": len(images),
            "test_images": len(test[0]), "training": dataclasses.asdict(settings), "seed": run.seed}
    return Trained(model, info)


# ---- VAE

@torch.no_grad()
def vae_metrics(vae: VAE, images: torch.Tensor, noise: torch.Tensor | None = None,
                batch_size: int = 1000) -> dict[str, float]:
    """The negative ELBO's terms per image on held-out images (reconstruction BCE of z = μ + σ·ε,
    with `noise` as ε when given, and KL), and the per-pixel squared error of decoding the
    posterior mean."""
    totals = {"recon": 0.0, "kl": 0.0, "mse_per_pixel": 0.0}  # sums over images, in float64
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size])
        logits, mean, logvar = vae(x, None if noise is None else noise[i:i + batch_size])
        recon, kl = elbo_terms(x, logits, mean, logvar)
        totals["recon"] += recon.item() * len(x)
        totals["kl"] += kl.item() * len(x)
        totals["mse_per_pixel"] += F.mse_loss(vae.decode(mean), x, reduction="sum").item() / x[0].numel()
    return {k: v / len(images) for k, v in totals.items()}


def reconstruction_rows(vae: VAE, images: torch.Tensor) -> torch.Tensor:
    """Test images over their reconstructions (decoded posterior means), alternate rows of up to
    16, for `save_rows`: [R x C x 1 x 28 x 28]. Two pairs of rows when there are 32 images."""
    per_row = min(16, len(images))
    with torch.no_grad():
        x = to_float(images[:2 * per_row if len(images) >= 2 * per_row else per_row])
        recon = vae.decode(vae.encode(x)[0])
    rows = [part for i in range(0, len(x), per_row) for part in (x[i:i + per_row], recon[i:i + per_row])]
    return torch.stack(rows).cpu()


def train_vae(train_images: torch.Tensor, test_images: torch.Tensor, config: VAEConfig, settings: TrainSettings,
              run: RunContext, *, snapshot_to: str | os.PathLike | None = None, save_every: int = 500,
              monitor: Monitor | None = None) -> Trained:
    """The VAE trained on the negative ELBO (reconstruction BCE + β·KL), with its test metrics in
    the info. Validation draws the posterior's ε once from seed 0, so that successive values
    differ only by the model."""
    vae = seeded_model(lambda: VAE(config), run)
    sampler = BatchSampler(len(train_images), settings.batch_size, run.seed)
    signature = run_signature("vae", run.seed, fingerprint({"images": train_images}), training=settings,
                              config=config)
    forward = distributed.wrap(vae)

    def step_loss(step):
        idx = sampler.next().to(run.device)  # the global batch and its ε; this rank keeps its shard
        noise, mine = torch.randn(len(idx), *vae.latent_shape, device=run.device), distributed.shard(len(idx))
        recon, kl = vae_loss(forward, to_float(train_images[idx[mine]]), noise[mine])
        return recon + config.beta * kl, {"recon": recon.detach(), "kl": kl.detach()}

    held_out = test_images[:VALIDATION_EXAMPLES]
    noise = torch.randn((len(held_out), *vae.latent_shape), generator=torch.Generator().manual_seed(0)
                        ).to(held_out.device)

    def validate(vae: VAE, _) -> dict:
        metrics = vae_metrics(vae, held_out, noise)
        return {"loss": metrics["recon"] + config.beta * metrics["kl"], **metrics}

    run_training(vae, step_loss, settings, sampler=sampler, snapshot=_snapshot(snapshot_to, save_every, signature),
                 monitor=monitor, checks=[Check("validation", settings.validate_every, validate)], desc="vae",
                 progress=run.progress)
    info = {"test": vae_metrics(vae, test_images), "train_images": len(train_images),
            "training": dataclasses.asdict(settings), "seed": run.seed}
    return Trained(vae, info)


# ---- UNet

@dataclass
class SampleQuality:
    """What the UNet's training needs to score its samples every `every` steps: the FID of
    `num_images` images of the default prompt (random digits) from the EMA weights with the
    default sampler, the same noise each time."""
    vae: VAE
    vae_ckpt: Checkpoint
    fid: TestSetFID
    every: int
    num_images: int
    seed: int = 0

    def check(self, diffusion: Diffusion, scale_factor: float, label_frequencies: list[float] | None) -> Check:
        def run(model: UNet, ema_model: UNet) -> dict:
            pipe = LatentDiffusion(ema_model, self.vae, diffusion, scale_factor, label_frequencies,
                                   vae_ckpt=self.vae_ckpt)
            prompt = pipe.prompt()
            images = pipe.sample(self.num_images, SamplerConfig.for_branch(prompt.unconditional), prompt, seed=self.seed)
            return {"fid": self.fid(images), "images": self.num_images, "samples": images}
        return Check("fid", self.every, run)


def guide_check(path: str | os.PathLike, step: int, info: dict) -> Check:
    """Writes the EMA weights after `step` steps to `path`, as a guide with `info`."""
    def run(model: UNet, ema_model: UNet) -> dict:
        Trained(ema_model, info).save(path)
        return {"guide_step": step}
    return Check("guide", 0, run, at=step)


def check_guide_of_run(path: str | os.PathLike, run: str, step: int, snapshot_to: str | os.PathLike | None) -> None:
    """Refuse to finish without the guide this run wrote (one resumed past `step` never writes it)."""
    found = load_checkpoint(path, "unet").info.get("run") if Path(path).is_file() else None
    if found != run:
        raise LdmError(f"{path}: {'missing' if found is None else 'written by another run'}: the run writes its "
                       f"guide after step {step}, which a run resumed past it (from {snapshot_to}) skips; delete "
                       "the snapshot and rerun")


def train_unet(cache: LatentCache, config: UNetConfig, diffusion_config: DiffusionConfig, settings: TrainSettings,
               run: RunContext, *, snapshot_to: str | os.PathLike | None = None, save_every: int = 500,
               monitor: Monitor | None = None, quality: SampleQuality | None = None,
               guide_to: str | os.PathLike | None = None, guide_step: int = 0,
               desc: str = "diffusion", time_budget: float | None = None) -> Trained:
    """A UNet trained on `cache` (its EMA weights as the model, the raw ones beside them).

    Each batch draws a fresh z = μ + σ·ε from the cached posteriors, or takes μ itself when the
    cache's target is the mean (latents.LATENT_TARGETS); the encoder never runs. A
    class-conditional UNet has its labels dropped to "no label" at the config's rate, so the same
    model samples unprompted and with classifier-free guidance; the info records how often each
    digit occurs, the prior that unprompted samples draw their digits from. The UNet takes as
    many channels as the cache's latents have. With a `monitor`, the raw weights are validated on
    VALIDATION_LATENTS test latents, and with `quality` the EMA weights' samples are scored.
    With a `time_budget` (seconds) the run trains for that long rather than `settings.steps`
    (run_training), and the info records the steps it took.

    With `guide_to` (and a `monitor`, whose checks run it), the EMA weights after `guide_step`
    steps are written there as the guide that autoguides sampling (guidance.autoguided): the
    same UNet, earlier in the same run. A run resumed past that step needs the guide it wrote.
    """
    if guide_to is not None and monitor is None:
        raise ValueError("a guide is written by the monitor's checks: pass a monitor")
    config = dataclasses.replace(config, in_channels=cache.latent_shape[0])
    num_classes = config.num_classes

    def batch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return cache.sample(index), cache.train_labels[index] if num_classes else None

    signature = run_signature("diffusion", run.seed, cache.info.get("fingerprint"), training=settings, config=config,
                              diffusion=diffusion_config, latent_target=cache.target,
                              precision=precision_name(run.device))
    label_frequencies = (torch.bincount(cache.train_labels.cpu(), minlength=num_classes) / len(cache.train_labels)
                         ).tolist() if num_classes else None
    diffusion = Diffusion(diffusion_config)
    held_out, held_out_labels = cache.held_out(VALIDATION_LATENTS)
    checks = [Check("validation", settings.validate_every,
                    held_out_check(diffusion, held_out, held_out_labels if num_classes else None, num_classes))]
    if quality is not None and quality.every > 0:
        checks.append(quality.check(diffusion, cache.scale_factor, label_frequencies))
    # what a guide needs to match its UNet (pipeline.load_guide), and the run that wrote it
    shared_info = {"diffusion": dataclasses.asdict(diffusion_config), "scale_factor": cache.scale_factor,
                   "latent_target": cache.target, "label_frequencies": label_frequencies,
                   "vae_fingerprint": cache.vae_fingerprint, "seed": run.seed,
                   "run": fingerprint({}, json.dumps(signature, sort_keys=True))}
    if guide_to is not None:
        checks.append(guide_check(guide_to, guide_step, dict(shared_info, guide_step=guide_step)))
    trained = train_denoiser(lambda: UNet(config), diffusion, len(cache.train_mean), batch, settings, run, desc=desc,
                             snapshot=_snapshot(snapshot_to, save_every, signature), monitor=monitor, checks=checks,
                             time_budget=time_budget)
    if guide_to is not None:
        check_guide_of_run(guide_to, shared_info["run"], guide_step, snapshot_to)
    info = {**shared_info,
            "training": dataclasses.asdict(dataclasses.replace(settings, steps=trained.steps)),
            "ema_decay": trained.ema_decay,
            "final_loss": trained.logged, "train_seconds": trained.seconds,
            "latents_per_second": trained.steps * settings.batch_size / trained.seconds,
            "device": str(run.device), "processes": distributed.world().size, "compiled": run.compile,
            "precision": precision_name(run.device)}
    return Trained(trained.ema_model, info, raw_model=trained.model)
