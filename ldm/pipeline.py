"""A trained latent diffusion model as one object: UNet + noise schedule + VAE decoder."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, load_model
from .diffusion import as_eps_model
from .guidance import guided_model
from .sampling import SAMPLERS, run_sampler
from .schedule import NoiseSchedule
from .unet import UNet
from .utils import LdmError
from .vae import VAE


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N x 1 x 28 x 28] floats in [0, 1] -> [N x 28 x 28] uint8, the representation of MNIST itself."""
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@dataclass
class LatentDiffusion:
    unet: UNet
    vae: VAE
    schedule: NoiseSchedule
    scale_factor: float
    prediction: str  # what the UNet outputs: eps or v
    unet_ckpt: Checkpoint
    vae_ckpt: Checkpoint
    denoiser: torch.nn.Module  # what the samplers call: the UNet, or torch.compile(UNet)

    @classmethod
    def load(cls, unet_path: str | os.PathLike, vae_path: str | os.PathLike, device: torch.device,
             weights: str = "ema", compile: bool = False) -> "LatentDiffusion":
        """Load both models and check that the UNet was trained on latents of this very VAE;
        with `compile`, sample through torch.compile(UNet)."""
        if weights not in ("ema", "raw"):
            raise LdmError(f"--weights {weights!r}: choose ema or raw")
        unet, unet_ckpt = load_model(unet_path, UNet, device, prefix="" if weights == "ema" else "raw/")
        vae, vae_ckpt = load_model(vae_path, VAE, device)
        if unet_ckpt.info.get("vae_fingerprint") != vae_ckpt.fingerprint:
            raise LdmError(f"{vae_path}: VAE {vae_ckpt.fingerprint} is not the one the UNet in {unet_path} "
                           f"was trained with ({unet_ckpt.info.get('vae_fingerprint')}); rerun `make latents diffusion`")
        diffusion = unet_ckpt.info["diffusion"]
        schedule = NoiseSchedule.from_name(diffusion["schedule"], diffusion["num_timesteps"])
        return cls(unet, vae, schedule, float(diffusion["scale_factor"]), diffusion.get("prediction", "eps"),
                   unet_ckpt, vae_ckpt, torch.compile(unet) if compile else unet)

    @property
    def num_classes(self) -> int:
        return self.unet.config.num_classes

    def draw_labels(self, num_samples: int, seed: int) -> torch.Tensor:
        """[N] digits drawn independently from their frequencies in the training set. Prompting
        with them at guidance 1 samples p(x) = Σ_y p(y) p(x | y), as a class-conditional model's
        unprompted samples; the "no label" branch learns p(x) only from the dropped labels."""
        if not self.num_classes:
            raise LdmError(f"{self.unet_ckpt.path}: this UNet is unconditional; it has no digits to draw")
        frequencies = self.unet_ckpt.info.get("label_frequencies")
        if frequencies is None:
            raise LdmError(f"{self.unet_ckpt.path}: no label frequencies recorded; retrain with `make diffusion`")
        generator = torch.Generator().manual_seed(seed)
        return torch.multinomial(torch.tensor(frequencies, dtype=torch.float64), num_samples, replacement=True,
                                 generator=generator)

    def unprompted_labels(self, num_samples: int, seed: int) -> torch.Tensor | None:
        """What unprompted samples are prompted with: digits from `draw_labels` for a
        class-conditional UNet, None (no labels at all) for an unconditional one."""
        return self.draw_labels(num_samples, seed) if self.num_classes else None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> [N x 1 x 28 x 28] images in [0, 1]."""
        return self.vae.decode(z.float() / self.scale_factor)

    @torch.no_grad()
    def sample_latents(self, num_samples: int, *, sampler: str = "ddim", steps: int | None = None,
                       eta: float = 0.0, variance: str = "beta_tilde", labels: torch.Tensor | None = None,
                       guidance: float = 1.0, generator: torch.Generator | None = None, progress: bool = False,
                       callback=None) -> torch.Tensor:
        """One batch of scaled latents [N x C x 7 x 7] (see `sample` for the arguments);
        `callback(i, t, x_t, x̂_0)` is called after every step."""
        if sampler not in SAMPLERS:
            raise LdmError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if labels is not None and not self.num_classes:
            raise LdmError(f"{self.unet_ckpt.path}: this UNet is unconditional; it cannot be prompted with digits")
        device = next(self.unet.parameters()).device
        model = as_eps_model(guided_model(self.denoiser, None if labels is None else labels.to(device), guidance,
                                          self.num_classes), self.schedule, self.prediction)
        shape = (num_samples, self.unet.config.in_channels, 7, 7)
        kwargs = dict(generator=generator, device=device, progress=progress, callback=callback)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return run_sampler(sampler, model, self.schedule, shape, steps=steps, eta=eta, variance=variance,
                               **kwargs).float()

    @torch.no_grad()
    def sample(self, num_samples: int, *, seed: int = 0, batch_size: int = 1000, labels: torch.Tensor | None = None,
               progress: bool = True, **sampler_args) -> torch.Tensor:
        """Generate decoded images, [N x 28 x 28] uint8. Noise comes from one CPU generator seeded
        with `seed`, so the result depends on (seed, batch_size), not on the device.

        :param labels: [N] digits to prompt with (classifier-free guidance of scale `guidance`),
            or None for the unconditional model (a class-conditional UNet's "no label" branch).
        :param sampler_args: sampler ("ddpm" or "ddim"), steps, eta, variance, guidance.
        """
        generator = torch.Generator().manual_seed(seed)
        out = []
        for start in tqdm(range(0, num_samples, batch_size), desc="batches", disable=not progress):
            n = min(batch_size, num_samples - start)
            batch_labels = None if labels is None else labels[start:start + n]
            z = self.sample_latents(n, labels=batch_labels, generator=generator, progress=progress, **sampler_args)
            out.append(to_uint8(self.decode(z)))
        return torch.cat(out)

    @torch.no_grad()
    def denoising_strip(self, num_samples: int = 8, columns: int = 10, *, seed: int = 0,
                        **sampler_args) -> torch.Tensor:
        """The decoded prediction x̂_0 at `columns` evenly spaced steps of the chain, then the final
        sample: [num_samples x (columns + 1) x 1 x 28 x 28], one row per sample."""
        predictions = []  # x̂_0 latents of every step; decoded only where kept
        z = self.sample_latents(num_samples, generator=torch.Generator().manual_seed(seed),
                                callback=lambda i, t, x, x0: predictions.append(x0), **sampler_args)
        keep = np.linspace(0, len(predictions) - 1, columns).round().astype(int)
        frames = [self.decode(predictions[i]) for i in keep] + [self.decode(z)]
        return torch.stack(frames, dim=1).clamp(0, 1).cpu()  # (N, columns + 1, 1, 28, 28)
