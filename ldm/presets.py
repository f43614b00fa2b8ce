"""Hyper-parameter presets: `cpu` fits `make all` into 45 minutes on 2 cores, `gpu` is for the
best result on a CUDA GPU, `smoke` is a seconds-long run for tests. `auto` picks by device.

Every value was chosen by measurement (docs/results.md, `make bench`, `make recipes`): the
diffusion process is DiffusionConfig's default (cosine schedule, v-prediction, logit-normal
timesteps, 50% of labels dropped), and the UNet computes in bf16 where the CPU does natively
(runtime.autocast_dtypes). Both won `make recipes` at equal wall-clock, together by the most;
the `cpu` UNet's steps are those that fit `make all` into 45 minutes on a 2-core CPU with native
bf16 where the fp32 recipe trains 500 latents/s (docs/results.md: a CPU without it computes in
fp32 and takes longer). The EMA keeps
k-diffusion's warm-up power 2/3: in `make all` with the same weights and noise, power 0.85 (decay
0.9991 rather than 0.996 after 4000 steps) scored "no label" DDPM-100 15.97 and DDIM-50 21.50
against 16.64 and 22.66, but guided 32.54 against 26.46. Label dropout stays at 50% (`make recipes`,
docs/results.md "Label dropout"): 20% scores random digits 1.2 lower and digits 0-9 at >= 99%
recognised about 4 lower, but the "no label" branch, which learns only from the dropped share,
6.9 higher; 10% loses on every row but random digits. The VAE's KL weight stays 0.1: at 0.01 its latents
carry less posterior noise and reconstruct a little better, but a whole `make all` scored every
sampled row worse (random digits +0.1, "no label" +2.5, digits 0-9 +0.8; docs/results.md "A VAE
with less posterior noise"). Sampling settings (sampler, steps, batch size) are not a preset's: each has one
default, in sampling.py and pipeline.py, for the API and the scripts alike. A UNet takes as many
input channels as the latents it is trained on have. The guide, a weaker UNet that autoguides
sampling (guidance.autoguided), is the UNet's own EMA weights after an eighth of its steps, written
by the same run: against a separate run of the same UNet an eighth as long it scored digits 0-9
0.3-0.5 lower at >= 99% recognised, and random digits and "no label" within 0.1-0.2, for no
training of its own; a separate run beat a half-width guide by 0.9 on digits 0-9 (docs/results.md,
"With a guide", "The guide from the UNet's own run").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .diffusion import DiffusionConfig
from .errors import check_choice
from .train import TrainSettings
from .unet import UNetConfig
from .vae import VAEConfig


@dataclass(frozen=True)
class BenchSettings:
    images: int  # images per row of `make bench`
    ddpm1000_images: int  # DDPM-1000 rows cost 20x DDIM-50, so on a CPU they get a subset
    train_steps: int  # steps of each training-choice run (equal for all)


@dataclass(frozen=True)
class Preset:
    name: str
    classifier: TrainSettings
    vae: TrainSettings
    unet: TrainSettings
    vae_model: VAEConfig
    unet_model: UNetConfig
    bench: BenchSettings
    fid_every: int  # steps between FIDs of the UNet's samples during training (0: none)
    fid_images: int  # images per FID during training, from the default sampler
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # the guide that autoguides sampling is the UNet's own EMA after this share of its steps
    guide_fraction: float = 1 / 8


PRESETS = {
    "cpu": Preset(
        name="cpu",
        classifier=TrainSettings(steps=800, batch_size=128, lr=1e-3, warmup_steps=50, validate_every=200),
        vae=TrainSettings(steps=1500, batch_size=128, lr=2e-3, warmup_steps=100, validate_every=250),
        unet=TrainSettings(steps=4500, batch_size=256, lr=1e-3, warmup_steps=200, validate_every=1000),
        vae_model=VAEConfig(latent_channels=4, channels=(32, 64), beta=0.1),
        unet_model=UNetConfig(base_channels=48, channel_mult=(1, 2), num_res_blocks=2, num_classes=10),
        bench=BenchSettings(images=2000, ddpm1000_images=1000, train_steps=1000), fid_every=1000, fid_images=1000,
    ),
    "gpu": Preset(
        name="gpu",
        classifier=TrainSettings(steps=4000, batch_size=256, lr=1e-3, warmup_steps=200, validate_every=500),
        vae=TrainSettings(steps=20_000, batch_size=256, lr=1e-3, warmup_steps=500, validate_every=2000),
        unet=TrainSettings(steps=60_000, batch_size=512, lr=5e-4, warmup_steps=1000, validate_every=5000),
        vae_model=VAEConfig(latent_channels=4, channels=(64, 128), beta=0.1),
        unet_model=UNetConfig(base_channels=128, channel_mult=(1, 2), num_res_blocks=2, num_classes=10),
        bench=BenchSettings(images=10_000, ddpm1000_images=10_000, train_steps=20_000), fid_every=5000,
        fid_images=5000,
    ),
    "smoke": Preset(
        name="smoke",
        classifier=TrainSettings(steps=3, batch_size=16, lr=1e-3, validate_every=2),
        vae=TrainSettings(steps=3, batch_size=16, lr=1e-3, validate_every=2),
        unet=TrainSettings(steps=3, batch_size=16, lr=1e-3, validate_every=2),
        vae_model=VAEConfig(latent_channels=2, channels=(8, 8), beta=0.1),
        unet_model=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=10),
        bench=BenchSettings(images=16, ddpm1000_images=8, train_steps=3), fid_every=0, fid_images=16,
    ),
}


def get_preset(name: str, device: torch.device) -> Preset:
    """'auto' means 'gpu' on CUDA and 'cpu' otherwise."""
    check_choice("preset", name, ("auto", *PRESETS))
    if name == "auto":
        name = "gpu" if device.type == "cuda" else "cpu"
    return PRESETS[name]
