"""A trained latent diffusion model as one object: UNet + noise schedule + VAE decoder."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, load_model
from .sampling import ddim_sample, ddpm_sample
from .schedule import NoiseSchedule
from .unet import UNet
from .utils import LdmError
from .vae import VAE

SAMPLERS = ("ddpm", "ddim")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N x 1 x 28 x 28] floats in [0, 1] -> [N x 28 x 28] uint8, the representation of MNIST itself."""
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@dataclass
class LatentDiffusion:
    unet: UNet
    vae: VAE
    schedule: NoiseSchedule
    scale_factor: float
    unet_ckpt: Checkpoint
    vae_ckpt: Checkpoint

    @classmethod
    def load(cls, unet_path: str | os.PathLike, vae_path: str | os.PathLike, device: torch.device,
             weights: str = "ema") -> "LatentDiffusion":
        """Load both models and check that the UNet was trained on latents of this very VAE."""
        if weights not in ("ema", "raw"):
            raise LdmError(f"--weights {weights!r}: choose ema or raw")
        unet, unet_ckpt = load_model(unet_path, UNet, device, prefix="" if weights == "ema" else "raw/")
        vae, vae_ckpt = load_model(vae_path, VAE, device)
        if unet_ckpt.info.get("vae_fingerprint") != vae_ckpt.fingerprint:
            raise LdmError(f"{vae_path}: VAE {vae_ckpt.fingerprint} is not the one the UNet in {unet_path} "
                           f"was trained with ({unet_ckpt.info.get('vae_fingerprint')}); rerun `make latents diffusion`")
        diffusion = unet_ckpt.info["diffusion"]
        schedule = NoiseSchedule.from_name(diffusion["schedule"], diffusion["num_timesteps"])
        return cls(unet, vae, schedule, float(diffusion["scale_factor"]), unet_ckpt, vae_ckpt)

    @torch.no_grad()
    def sample(self, num_samples: int, *, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
               variance: str = "beta_tilde", seed: int = 0, batch_size: int = 1000,
               progress: bool = True) -> torch.Tensor:
        """Generate decoded images, [N x 28 x 28] uint8. Noise comes from one CPU generator seeded
        with `seed`, so the result depends on (seed, batch_size), not on the device."""
        if sampler not in SAMPLERS:
            raise LdmError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        device = next(self.unet.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        shape = (self.unet.config.in_channels, 7, 7)
        use_bf16 = device.type == "cuda"
        out = []
        for start in tqdm(range(0, num_samples, batch_size), desc=f"{sampler} batches", disable=not progress):
            n = min(batch_size, num_samples - start)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                kwargs = dict(generator=generator, device=device, progress=progress)
                if sampler == "ddpm":
                    z = ddpm_sample(self.unet, self.schedule, (n, *shape), steps=steps, variance=variance, **kwargs)
                else:
                    z = ddim_sample(self.unet, self.schedule, (n, *shape), steps=steps or 50, eta=eta, **kwargs)
            out.append(to_uint8(self.vae.decode(z.float() / self.scale_factor)))
        return torch.cat(out)
