"""The latent cache: VAE posteriors of the whole dataset, encoded once.

It stores each image's posterior mean and log-variance (not one sample), so the diffusion
trainer draws a fresh z = μ + σ·ε every batch without running the encoder, and the scale
factor that gives scaled latents unit variance (the `scaling_factor` of latent diffusion).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import to_float
from .vae import VAE


@torch.no_grad()
def encode_images(vae: VAE, images: torch.Tensor, device: torch.device, batch_size: int = 1000,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N x 28 x 28] -> (mean, logvar) float32 on the CPU, [N x C x 7 x 7] each."""
    means, logvars = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="encode", leave=False, disable=not progress):
        mean, logvar = vae.encode(to_float(images[i:i + batch_size]).to(device))
        means.append(mean.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(means), torch.cat(logvars)


def estimate_scale_factor(mean: torch.Tensor, logvar: torch.Tensor) -> float:
    """1 / std of z = μ + σ·ε over data and noise, in closed form: Var z = E[μ² + σ²] - (E μ)²."""
    mean64, var64 = mean.double(), logvar.double().exp()
    variance = (mean64.pow(2) + var64).mean() - mean64.mean().pow(2)
    return float(variance.rsqrt())


@dataclass
class LatentCache:
    train_mean: torch.Tensor  # [N_train x C x 7 x 7]
    train_logvar: torch.Tensor
    test_mean: torch.Tensor  # [N_test x C x 7 x 7], for held-out checks
    test_logvar: torch.Tensor
    scale_factor: float
    vae_fingerprint: str  # identity of the VAE that made this cache; checked by later stages
    info: dict

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.train_mean.shape[1:])

    def sample(self, index: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latents scale·(μ + σ·ε) for the examples in `index`, with fresh ε."""
        mean, logvar = self.train_mean[index], self.train_logvar[index]
        noise = torch.randn_like(mean) if noise is None else noise
        return self.scale_factor * (mean + torch.exp(0.5 * logvar) * noise)


def save_latent_cache(path: str | os.PathLike, cache: LatentCache) -> str:
    info = dict(cache.info, scale_factor=cache.scale_factor, vae_fingerprint=cache.vae_fingerprint)
    tensors = {name: getattr(cache, name) for name in ("train_mean", "train_logvar", "test_mean", "test_logvar")}
    return save_checkpoint(path, tensors, "latents", info=info)


def load_latent_cache(path: str | os.PathLike, device: torch.device | str = "cpu") -> LatentCache:
    ckpt = load_checkpoint(path, "latents")
    t = {name: tensor.to(device) for name, tensor in ckpt.tensors.items()}
    return LatentCache(t["train_mean"], t["train_logvar"], t["test_mean"], t["test_logvar"],
                       float(ckpt.info["scale_factor"]), ckpt.info["vae_fingerprint"], ckpt.info)
