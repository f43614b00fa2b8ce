"""Editing images with a trained diffusion model: what a sampling chain must respect when it
starts from an image rather than from noise alone.

Image-to-image (SDEdit, Meng et al. 2022, arXiv:2108.01073): the image's latent z_0 is noised to
a level part-way along the sampler's chain, x_t = √ᾱ_t z_0 + √(1-ᾱ_t) ε (eq. 4 of Ho et al.
2020, arXiv:2006.11239), and only the chain's remaining steps are run. `strength` is the share of
the sampler's steps that run (as diffusers counts it): 0 runs none and returns z_0, 1 runs them
all from the noise alone, which is plain sampling (every chain treats its first level as pure
noise).

Inpainting (RePaint, Lugmayr et al. 2022, arXiv:2201.09865, Algorithm 1): after every step to
level s, the latents to keep are replaced by z_0 noised to s with fresh noise, so that the
generated part is denoised beside a kept part at the same noise level; to make the two agree,
each step is taken `resample` times, the merged x_s re-noised to the step's level t between
tries, x_t ~ q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 - ᾱ_t/ᾱ_s) I). The last step, to ᾱ = 1,
leaves the kept latents exactly z_0.

In latent space a mask is coarse: one latent position decodes to a 4 x 4 block of pixels (and,
through the decoder's convolutions, its neighbours'), so a pixel mask becomes a latent one by
`latent_mask`: a position is kept when at least half of its block's pixels are (the mask
downsampled to the nearer value). A boundary inside a block moves to the block's edge, and the
decoder blends the kept and generated latents across it: kept pixels near the boundary move by
more than the VAE's own error, which `make editing` measures.

Interpolation (`slerp`): between the noise of two seeds along the great circle, which keeps the
norm Gaussian noise concentrates on (Song et al. 2020, arXiv:2010.02502, section 5.3, with a
deterministic sampler).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import IMAGE_SIZE
from .errors import ConfigError, is_number

# One latent position per block of pixels: the VAE downsamples 28 x 28 by 4 to 7 x 7.
BLOCK = 4
HALVES = ("top", "bottom", "left", "right")  # the masks `half_mask` makes
# RePaint's tries per step for inpainting unless told: `make editing` measures it against none and
# twice as many (docs/results.md)
RESAMPLE = 5


def noised(z: torch.Tensor, alpha_bar: float, noise: torch.Tensor) -> torch.Tensor:
    """√ᾱ z + √(1 - ᾱ) noise: z taken to level ᾱ of the forward process (eq. 4 of 2006.11239)."""
    return alpha_bar ** 0.5 * z + (1 - alpha_bar) ** 0.5 * noise


def check_strength(strength) -> float:
    if not (is_number(strength) and 0 <= strength <= 1):
        raise ConfigError("strength", strength, "must be a number in [0, 1] (0: the image itself, 1: plain sampling)")
    return float(strength)


@dataclass(frozen=True)
class Edit:
    """What a sampling chain is given besides its prompt (the module docstring): the latents of
    images, which it starts from at `strength` and keeps where `mask` is True (taking each step
    `resample` times), and the noise it starts from instead of its generator's first draw."""
    latents: torch.Tensor | None = None  # z_0 [N x C x 7 x 7], the images' scaled latents
    strength: float = 1.0
    mask: torch.Tensor | None = None  # bool [N x 1 x 7 x 7]: True where z_0 is kept
    resample: int = 1
    noise: torch.Tensor | None = None  # x_T [N x C x 7 x 7]

    def __post_init__(self):
        object.__setattr__(self, "strength", check_strength(self.strength))
        if not (isinstance(self.resample, int) and not isinstance(self.resample, bool) and self.resample >= 1):
            raise ConfigError("resample", self.resample, "must be a whole number >= 1")
        if self.resample > 1 and self.mask is None:
            raise ConfigError("resample", self.resample, "only inpainting (with a mask) resamples its steps")
        if self.latents is None and self.mask is not None:
            raise ConfigError("mask", "given", "needs the latents of the images edited")
        if self.latents is None and self.strength < 1:
            raise ConfigError("strength", self.strength, "needs the latents of the images edited")

    def __getitem__(self, index: slice) -> "Edit":
        """The edit of the images in `index` (one sampling batch)."""
        return dataclasses.replace(self, **{name: None if value is None else value[index] for name, value in
                                            (("latents", self.latents), ("mask", self.mask), ("noise", self.noise))})

    def start(self, noise: torch.Tensor, timesteps: list[int], alphas_cumprod: list[float],
              ) -> tuple[torch.Tensor, list[int]]:
        """The chain's first x and the steps it runs: the last strength × steps (rounded) of
        `timesteps`, from z_0 noised to the first of them with `noise` (the chain's own first
        draw unless the edit gives its own, so that every strength starts from the same noise)."""
        if self.noise is not None:
            noise = self.noise.to(noise)
        kept = int(self.strength * len(timesteps) + 0.5)  # rounded half up
        if kept == len(timesteps):
            return noise, timesteps
        if kept == 0:
            return self.latents.to(noise.device), []
        return noised(self.latents.to(noise.device), alphas_cumprod[timesteps[-kept]], noise), timesteps[-kept:]

    def keep(self, x: torch.Tensor, alpha_bar: float, draw) -> torch.Tensor:
        """x at level ᾱ with the kept latents replaced by z_0 noised to the same level (`draw()`:
        fresh noise like x); at ᾱ = 1, by z_0 itself."""
        if self.mask is None:
            return x
        latents = self.latents.to(x.device)
        known = latents if alpha_bar == 1.0 else noised(latents, alpha_bar, draw())
        return torch.where(self.mask.to(x.device), known, x)

    @staticmethod
    def renoise(x: torch.Tensor, alpha_bar_t: float, alpha_bar_s: float, noise: torch.Tensor) -> torch.Tensor:
        """x_s taken back to the noisier level t: a draw of q(x_t | x_s), the forward process from
        s to t, whose ᾱ is their ratio."""
        return noised(x, alpha_bar_t / alpha_bar_s, noise)


def _as_tensor(value, field: str) -> torch.Tensor:
    """A tensor, an array, a (list of) greyscale PIL image(s) or nested lists as a tensor."""
    if isinstance(value, Image.Image) or (isinstance(value, (list, tuple)) and value
                                          and all(isinstance(v, Image.Image) for v in value)):
        pictures = [value] if isinstance(value, Image.Image) else list(value)
        if any(p.mode not in ("L", "1") for p in pictures):
            raise ConfigError(field, f"of mode {pictures[0].mode}", "PIL images must be greyscale (mode L)")
        value = np.stack([np.asarray(p.convert("L")) for p in pictures])
    try:
        return torch.as_tensor(np.asarray(value) if isinstance(value, (list, tuple)) else value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(field, f"of type {type(value).__name__}", "must be a tensor, an array or greyscale PIL "
                                                                    "images") from None


def as_images(images, field: str = "images") -> torch.Tensor:
    """Greyscale 28 x 28 images as an edit takes them: uint8 (0-255) or floats in [0, 1], a tensor,
    an array or PIL images, [N x 28 x 28], [N x 1 x 28 x 28] or one [28 x 28] -> float
    [N x 1 x 28 x 28]."""
    images = _as_tensor(images, field)
    shape = tuple(images.shape)
    if images.dim() == 2:
        images = images[None]
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE) or not len(images):
        raise ConfigError(field, f"of shape {list(shape)}", f"must be greyscale {IMAGE_SIZE} x {IMAGE_SIZE} images: "
                          f"[N x {IMAGE_SIZE} x {IMAGE_SIZE}] or [N x 1 x {IMAGE_SIZE} x {IMAGE_SIZE}], N >= 1")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if images.dtype == torch.bool or not images.is_floating_point():
        raise ConfigError(field, f"of type {images.dtype}", "must be uint8 (0-255) or floats in [0, 1]")
    if not (torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise ConfigError(field, "outside [0, 1]", "floats must be finite and in [0, 1] (uint8 for 0-255)")
    return images.float()


def as_mask(mask, num_images: int) -> torch.Tensor:
    """A pixel mask, True (or 1) where the image is kept, for each of `num_images` images or one
    for all: bool or 0/1 values, [28 x 28], [N x 28 x 28] or [N x 1 x 28 x 28] -> bool
    [num_images x 1 x 28 x 28]."""
    mask = _as_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ConfigError("mask", "with values other than 0 and 1", "must be True/1 where kept, False/0 where "
                                                                       "regenerated")
        mask = mask == 1
    shape = tuple(mask.shape)
    mask = mask[None] if mask.dim() == 2 else mask
    mask = mask[:, None] if mask.dim() == 3 else mask
    if mask.dim() != 4 or tuple(mask.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE) or len(mask) not in (1, num_images):
        raise ConfigError("mask", f"of shape {list(shape)}", f"must be {IMAGE_SIZE} x {IMAGE_SIZE}, one for all "
                          f"images or one per image ({num_images})")
    return mask.expand(num_images, -1, -1, -1)


def half_mask(half: str) -> torch.Tensor:
    """bool [28 x 28], True on the kept half of an image: "top", "bottom", "left" or "right"."""
    if half not in HALVES:
        raise ConfigError("keep", half, f"choose one of {', '.join(HALVES)}")
    mask = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    cut = IMAGE_SIZE // 2
    rows, columns = {"top": (slice(None, cut), slice(None)), "bottom": (slice(cut, None), slice(None)),
                     "left": (slice(None), slice(None, cut)), "right": (slice(None), slice(cut, None))}[half]
    mask[rows, columns] = True
    return mask


def latent_mask(pixel_mask: torch.Tensor) -> torch.Tensor:
    """bool [N x 1 x 28 x 28] pixels to keep -> bool [N x 1 x 7 x 7] latent positions to keep:
    those with at least half of their 4 x 4 block of pixels kept."""
    return F.avg_pool2d(pixel_mask.float(), BLOCK) >= 0.5


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors of the same shape, one result per weight
    in [0, 1] (weight 0 gives `a`, 1 gives `b`, exactly): [len(weights) x *a.shape]. The angle is
    that between the flattened tensors; nearly parallel ones are interpolated linearly."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm())
    theta = torch.arccos(cos.clamp(-1, 1)).item()
    frames = []
    for w in weights.tolist():
        if w == 0 or w == 1:  # the ends exactly, whatever the rounding below
            frames.append((a if w == 0 else b).clone())
            continue
        if theta < 1e-6:
            mixed = (1 - w) * a64 + w * b64
        else:
            mixed = (math.sin((1 - w) * theta) * a64 + math.sin(w * theta) * b64) / math.sin(theta)
        frames.append(mixed.reshape(a.shape).to(a.dtype))
    return torch.stack(frames)
