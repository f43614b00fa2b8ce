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
from .utils import LdmError
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
    train_labels: torch.Tensor  # [N_train] int64 digit labels, for class-conditional training
    test_labels: torch.Tensor
    scale_factor: float
    vae_fingerprint: str  # identity of the VAE that made this cache; checked by later stages
    info: dict

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.train_mean.shape[1:])

    @classmethod
    def encode(cls, vae: VAE, vae_fingerprint: str, train: tuple[torch.Tensor, torch.Tensor],
               test: tuple[torch.Tensor, torch.Tensor], device: torch.device, info: dict,
               progress: bool = False) -> "LatentCache":
        """Encode (uint8 images, labels) of both splits and measure the scale factor on the training set."""
        train_mean, train_logvar = encode_images(vae, train[0], device, progress=progress)
        test_mean, test_logvar = encode_images(vae, test[0], device, progress=progress)
        return cls(train_mean, train_logvar, test_mean, test_logvar, train[1].long(), test[1].long(),
                   estimate_scale_factor(train_mean, train_logvar), vae_fingerprint, info)

    def held_out(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents of the first `n` test images, with ε drawn once from `seed`, and their labels."""
        mean, logvar = self.test_mean[:n], self.test_logvar[:n]
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed)).to(mean.device)
        return self.scale_factor * (mean + torch.exp(0.5 * logvar) * noise), self.test_labels[:n]

    def sample(self, index: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latents scale·(μ + σ·ε) for the examples in `index`, with fresh ε."""
        mean, logvar = self.train_mean[index], self.train_logvar[index]
        noise = torch.randn_like(mean) if noise is None else noise
        return self.scale_factor * (mean + torch.exp(0.5 * logvar) * noise)


TENSORS = ("train_mean", "train_logvar", "test_mean", "test_logvar", "train_labels", "test_labels")


def save_latent_cache(path: str | os.PathLike, cache: LatentCache) -> str:
    info = dict(cache.info, scale_factor=cache.scale_factor, vae_fingerprint=cache.vae_fingerprint)
    tensors = {name: getattr(cache, name) for name in TENSORS}
    return save_checkpoint(path, tensors, "latents", info=info)


def load_latent_cache(path: str | os.PathLike, device: torch.device | str = "cpu") -> LatentCache:
    ckpt = load_checkpoint(path, "latents")
    missing = [name for name in TENSORS if name not in ckpt.tensors]
    if missing:
        raise LdmError(f"{path}: latent cache lacks {', '.join(missing)} (made by an older version); "
                       "rerun `make latents`")
    t = {name: ckpt.tensors[name].to(device) for name in TENSORS}
    return LatentCache(**t, scale_factor=float(ckpt.info["scale_factor"]),
                       vae_fingerprint=ckpt.info["vae_fingerprint"], info=dict(ckpt.info, fingerprint=ckpt.fingerprint))
