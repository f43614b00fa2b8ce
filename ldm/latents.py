"""The latent cache: VAE posteriors of the whole dataset, encoded once.

It stores each image's posterior mean and log-variance (not one sample), so the diffusion
trainer draws a fresh z = μ + σ·ε every batch without running the encoder, and the scale
factor that gives scaled latents unit variance (the `scaling_factor` of latent diffusion).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, check_made_with_vae, load_checkpoint, save_checkpoint
from .data import labels_problem, to_float
from .errors import LdmError, check_choice, check_finite, is_number
from .vae import LATENT_SIZE, VAE, reparameterise

# What the UNet is trained to generate: a fresh posterior sample z = μ + σ·ε each time, or the
# posterior mean μ (whose decodings lose a little detail but carry no encoder noise).
LATENT_TARGETS = ("sample", "mean")


@torch.no_grad()
def encode_images(vae: VAE, images: torch.Tensor, device: torch.device, batch_size: int = 1000,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N x 28 x 28], or floats [N x 1 x 28 x 28] in [0, 1], -> (mean, logvar) float32
    on the CPU, [N x C x 7 x 7] each."""
    means, logvars = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="encode", leave=False, disable=not progress):
        batch = images[i:i + batch_size]
        mean, logvar = vae.encode((to_float(batch) if batch.dtype == torch.uint8 else batch).to(device))
        check_finite(torch.stack([mean, logvar]), "the VAE's encodings are")
        means.append(mean.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(means), torch.cat(logvars)


def estimate_scale_factor(mean: torch.Tensor, logvar: torch.Tensor | None) -> float:
    """1 / std of z = μ + σ·ε over data and noise, in closed form: Var z = E[μ² + σ²] - (E μ)²;
    without `logvar`, of μ alone."""
    mean64 = mean.double()
    spread = mean64.pow(2) if logvar is None else mean64.pow(2) + logvar.double().exp()
    return float((spread.mean() - mean64.mean().pow(2)).rsqrt())


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
    target: str = "sample"  # one of LATENT_TARGETS: what `sample` and `held_out` give

    def with_target(self, target: str) -> "LatentCache":
        """The same cache giving `target` latents, with the scale factor that gives them unit variance."""
        check_choice("latent target", target, LATENT_TARGETS)
        if target == self.target:
            return self
        logvar = self.train_logvar if target == "sample" else None
        return dataclasses.replace(self, target=target, scale_factor=estimate_scale_factor(self.train_mean, logvar))

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
        """Scaled latents of the first `n` test images (for a sample target, with ε drawn once
        from `seed`), and their labels."""
        mean, logvar = self.test_mean[:n], self.test_logvar[:n]
        if self.target == "mean":
            return self.scale_factor * mean, self.test_labels[:n]
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed)).to(mean.device)
        return self.scale_factor * reparameterise(mean, logvar, noise), self.test_labels[:n]

    def sample(self, index: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled training latents for the examples in `index`: scale·(μ + σ·ε) with fresh ε for
        a sample target, scale·μ for a mean target."""
        if self.target == "mean":
            return self.scale_factor * self.train_mean[index]
        return self.scale_factor * reparameterise(self.train_mean[index], self.train_logvar[index], noise)


TENSORS = ("train_mean", "train_logvar", "test_mean", "test_logvar", "train_labels", "test_labels")


def save_latent_cache(path: str | os.PathLike, cache: LatentCache) -> str:
    info = dict(cache.info, scale_factor=cache.scale_factor, vae_fingerprint=cache.vae_fingerprint)
    tensors = {name: getattr(cache, name) for name in TENSORS}
    return save_checkpoint(path, tensors, "latents", info=info)


def load_latent_cache(path: str | os.PathLike, device: torch.device | str = "cpu") -> LatentCache:
    """Read a latent cache and check everything the stages after it trust (see `cache_problem`);
    any problem is one LdmError naming the file."""
    ckpt = load_checkpoint(path, "latents")
    problem = cache_problem(ckpt.tensors, ckpt.info)
    if problem:
        raise LdmError(f"{path}: {problem}; rerun `make latents`")
    t = {name: ckpt.tensors[name].to(device) for name in TENSORS}
    return LatentCache(**t, scale_factor=float(ckpt.info["scale_factor"]),
                       vae_fingerprint=ckpt.info["vae_fingerprint"], info=dict(ckpt.info, fingerprint=ckpt.fingerprint))


# The scale factor is 1 / the latents' standard deviation. A KL-regularised VAE keeps that of
# order 1 (here 1.0 for posterior samples, 1.8 for posterior means; Stable Diffusion's VAE, with a
# KL weight of 1e-6, 0.18): a factor outside this range is three orders of magnitude off, so
# sampled latents would decode to nearly the same image (or saturate).
SCALE_FACTOR_RANGE = (1e-3, 1e3)


def scale_factor_problem(scale) -> str | None:
    """What is wrong with a recorded scale factor (a latent cache's, a UNet's), or None."""
    if not is_number(scale) or scale <= 0:
        return f"scale factor {scale!r}, expected a finite number > 0"
    low, high = SCALE_FACTOR_RANGE
    if not low <= scale <= high:
        return (f"scale factor {scale:g}, outside {low:g}..{high:g}: the latents' standard deviation would be "
                f"{1 / scale:g}, where the VAE's is of order 1")
    return None


def shape_name(shape) -> str:
    """A latent's C x H x W as messages write it: "4x7x7"."""
    return "x".join(map(str, shape))


def check_cache_fits_vae(path: str | os.PathLike, cache: LatentCache, vae: VAE, vae_ckpt: Checkpoint,
                         remedy: str) -> None:
    """Refuse a latent cache made by another VAE than `vae`, or whose latents it could not decode."""
    check_made_with_vae(path, cache.vae_fingerprint, vae_ckpt, remedy)
    if cache.latent_shape != vae.latent_shape:
        raise LdmError(f"{path}: latents are {shape_name(cache.latent_shape)}, the VAE in {vae_ckpt.path} makes "
                       f"{shape_name(vae.latent_shape)}; {remedy}")


def cache_problem(tensors: dict[str, torch.Tensor], info: dict) -> str | None:
    """What is wrong with a latent cache's tensors and info, or None: every tensor present, float
    posteriors [N x C x H x W] (both splits alike, μ and log σ² alike, N > 0), int64 labels [N] of
    digits 0-9, a finite positive scale factor, the VAE's fingerprint. (Finiteness is
    load_checkpoint's.)"""
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        return f"latent cache lacks {', '.join(missing)}"
    for split in ("train", "test"):
        mean, logvar, labels = (tensors[f"{split}_{part}"] for part in ("mean", "logvar", "labels"))
        if not mean.is_floating_point() or mean.ndim != 4 or logvar.shape != mean.shape or logvar.dtype != mean.dtype:
            return (f"{split} posteriors are {mean.dtype} {tuple(mean.shape)} and {logvar.dtype} "
                    f"{tuple(logvar.shape)}, expected two float tensors [N x C x H x W] alike")
        if len(mean) == 0:
            return f"no {split} latents"
        if mean.shape[1:] != tensors["train_mean"].shape[1:]:
            train_shape = tuple(tensors["train_mean"].shape[1:])
            return f"test latents are {tuple(mean.shape[1:])}, training latents {train_shape}"
        if mean.shape[2:] != (LATENT_SIZE, LATENT_SIZE):
            return f"{split} latents are {shape_name(mean.shape[1:])}, the VAE makes C x {LATENT_SIZE} x {LATENT_SIZE}"
        problem = labels_problem(labels, len(mean))
        if problem:
            return f"{split} {problem}"
    problem = scale_factor_problem(info.get("scale_factor"))
    if problem:
        return problem
    if not isinstance(info.get("vae_fingerprint"), str):
        return "no fingerprint of the VAE that made it"
    return None
