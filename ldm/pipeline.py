"""A trained latent diffusion model as one object: UNet + diffusion process + VAE decoder.

    pipe = LatentDiffusion.from_pretrained("checkpoints")
    images = pipe(num_images=16, digit=7, guidance=1.5, steps=50, seed=0)   # uint8 [16 x 28 x 28]
    save_grid(images, "sevens.png")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import Checkpoint, build_config, check_made_with_vae, load_model
from .data import SAMPLE_BYTES, to_uint8
from .diffusion import Diffusion, DiffusionConfig
from .editing import RESAMPLE, Edit, as_images, as_mask, check_strength, latent_mask, slerp
from .errors import ConfigError, LdmError, check_choice, check_finite, is_number
from .latents import encode_images, scale_factor_problem
from .prompt import Prompt
from .runtime import check_fits_in_memory, resolve_device
from .sampling import ETA_SAMPLERS, Callback, SamplerConfig
from .unet import UNet
from .vae import VAE

WEIGHTS = ("ema", "raw")
# Images per sampling batch, for every door (this API, scripts/sample.py, the studies): batch i
# draws its noise from (seed, i), so the same seed gives the same images only at the same batch
# size. 500 rather than 2000 is ~35% faster on 2 CPU cores.
BATCH_SIZE = 500
GUIDE_NAME = "guide.safetensors"  # the guide `make all` trains, beside the UNet


def unet_info_problem(info: dict, num_classes: int) -> str | None:
    """What is wrong with what a UNet checkpoint records for sampling, or None: the diffusion
    config (checked by build_config), the latents' finite positive scale factor, and for a
    class-conditional UNet one finite non-negative frequency per digit, not all zero."""
    if not isinstance(info.get("diffusion"), dict):
        return "no diffusion config recorded"
    problem = scale_factor_problem(info.get("scale_factor"))
    if problem:
        return problem
    frequencies = info.get("label_frequencies")
    if num_classes and frequencies is not None and not (
            isinstance(frequencies, list) and len(frequencies) == num_classes
            and all(is_number(f) and f >= 0 for f in frequencies) and sum(frequencies) > 0):
        return f"label frequencies {frequencies!r}, expected {num_classes} numbers >= 0, not all zero"
    return None


def resolve_guide(unet_path: str | os.PathLike, guide_path: str | os.PathLike | None) -> Path | None:
    """The guide a UNet samples with: "auto" is GUIDE_NAME beside the UNet when there is one,
    "none" or None no guide, anything else that path."""
    if guide_path in (None, "none"):
        return None
    if guide_path == "auto":
        beside = Path(unet_path).with_name(GUIDE_NAME)
        return beside if beside.is_file() and beside != Path(unet_path) else None
    return Path(guide_path)


def load_guide(path: str | os.PathLike, unet: UNet, unet_ckpt: Checkpoint,
               device: torch.device) -> tuple[UNet, Checkpoint]:
    """A guide for `unet`: a UNet trained on the same latents (same VAE, scale factor and label
    frequencies) for the same diffusion process, with the same inputs and classes; its size and
    training length are free (being weaker is its purpose)."""
    guide, ckpt = load_model(path, UNet, device)
    mismatch = [key for key in ("vae_fingerprint", "scale_factor", "label_frequencies", "diffusion", "latent_target")
                if ckpt.info.get(key) != unet_ckpt.info.get(key)]
    mismatch += [key for key in ("in_channels", "num_classes")
                 if getattr(guide.config, key) != getattr(unet.config, key)]
    if mismatch:
        raise LdmError(f"{path}: cannot guide the UNet in {unet_ckpt.path}: its {', '.join(mismatch)} differ "
                       "(a guide is a weaker UNet trained on the same latents for the same process)")
    return guide, ckpt


def is_seed(value) -> bool:
    """A sampling seed is a whole number >= 0 (SeedSequence and the label draws take no other)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def check_seed(seed) -> None:
    if not is_seed(seed):
        raise ConfigError("seed", seed, "must be a whole number >= 0")


def batch_generator(seed: int, index: int) -> torch.Generator:
    """The noise of batch `index` of a sampling run with `seed`. A CPU generator keeps only the
    low 32 bits of its seed, so (seed, index) is hashed into 32 bits by NumPy's SeedSequence
    rather than packed into one integer."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


@dataclass
class LatentDiffusion:
    unet: UNet
    vae: VAE
    diffusion: Diffusion
    scale_factor: float  # latents were multiplied by it before diffusion
    label_frequencies: list[float] | None  # how often each digit occurs in training
    unet_ckpt: Checkpoint | None = None  # None for a UNet still in training
    vae_ckpt: Checkpoint | None = None
    denoiser: torch.nn.Module | None = None  # what the samplers call: the UNet (unset), or torch.compile(UNet)
    guide: UNet | None = None  # a weaker UNet of the same process, for autoguidance (guidance.autoguided)
    guide_ckpt: Checkpoint | None = None

    def __post_init__(self):
        if self.denoiser is None:
            self.denoiser = self.unet

    @classmethod
    def load(cls, unet_path: str | os.PathLike, vae_path: str | os.PathLike, device: torch.device | str = "auto",
             weights: str = "ema", compile: bool = False, guide_path: str | os.PathLike | None = None,
             ) -> "LatentDiffusion":
        """Load both models and check that the UNet was trained on latents of this very VAE;
        `weights` "ema" (for sampling) or "raw"; with `compile`, sample through torch.compile(UNet).
        `guide_path`: a weaker UNet for autoguidance (its EMA weights), which must have been trained
        for the same process on the same latents; "auto" takes GUIDE_NAME beside the UNet when there
        is one, as `make all` writes it (what `from_pretrained` and scripts/sample.py do); None (the
        default, which the studies keep), no guide."""
        check_choice("weights", weights, WEIGHTS)
        device = resolve_device(device) if isinstance(device, str) else device
        unet, unet_ckpt = load_model(unet_path, UNet, device, prefix="" if weights == "ema" else "raw/")
        vae, vae_ckpt = load_model(vae_path, VAE, device)
        check_made_with_vae(unet_path, unet_ckpt.info.get("vae_fingerprint"), vae_ckpt,
                            "rerun `make latents diffusion`")
        problem = unet_info_problem(unet_ckpt.info, unet.config.num_classes)
        if problem:
            raise LdmError(f"{unet_ckpt.path}: {problem}; rerun `make diffusion`")
        if unet.config.in_channels != vae.config.latent_channels:
            raise LdmError(f"{unet_ckpt.path}: takes {unet.config.in_channels} latent channels, the VAE in "
                           f"{vae_ckpt.path} makes {vae.config.latent_channels}")
        diffusion = Diffusion(build_config(DiffusionConfig, unet_ckpt.info["diffusion"], unet_ckpt.path))
        guide_path = resolve_guide(unet_path, guide_path)
        guide, guide_ckpt = (None, None) if guide_path is None else load_guide(guide_path, unet, unet_ckpt, device)
        return cls(unet, vae, diffusion, float(unet_ckpt.info["scale_factor"]), unet_ckpt.info.get("label_frequencies"),
                   unet_ckpt, vae_ckpt, torch.compile(unet) if compile else None, guide, guide_ckpt)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike = "checkpoints", device: torch.device | str = "auto",
                        weights: str = "ema", compile: bool = False) -> "LatentDiffusion":
        """The UNet and VAE that `make all` writes into `folder` (unet.safetensors, vae.safetensors),
        and its guide (guide.safetensors) when there is one."""
        folder = Path(folder)
        return cls.load(folder / "unet.safetensors", folder / "vae.safetensors", device, weights, compile, "auto")

    @property
    def num_classes(self) -> int:
        return self.unet.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def prompt(self, digit: int | str | None = None, guidance: float | None = None,
               guidance_interval: tuple[float, float] | None = None, autoguidance: float | None = None) -> Prompt:
        """The Prompt this model takes (prompt.py): unset `digit` is "any" for a class-conditional
        UNet and "none" for an unconditional one, which refuses any other; autoguidance needs a
        guide."""
        try:
            prompt = Prompt.for_model(digit, guidance, bool(self.num_classes), guidance_interval, autoguidance,
                                      guided=self.guide is not None)
        except ConfigError:  # a setting, named by its field
            raise
        except LdmError as e:  # this model cannot take the prompt
            raise LdmError(f"{self._unet_name}: {e}") from e
        if prompt.autoguidance != 1 and self.guide is None:
            raise ConfigError("autoguidance", prompt.autoguidance, "needs a guide, a weaker UNet (--guide)")
        return prompt

    @property
    def fingerprints(self) -> dict[str, str | None]:
        """The fingerprints of the UNet, VAE and guide (None without one), as samples files record them."""
        return {"unet_fingerprint": self.unet_ckpt.fingerprint, "vae_fingerprint": self.vae_ckpt.fingerprint,
                "guide_fingerprint": None if self.guide_ckpt is None else self.guide_ckpt.fingerprint}

    @property
    def _unet_name(self) -> str:
        return str(self.unet_ckpt.path) if self.unet_ckpt is not None else "the UNet in training"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> [N x 1 x 28 x 28] images in [0, 1]; non-finite latents or images stop
        the run (a diverged model or an absurd guidance scale would otherwise give black images)."""
        check_finite(z, f"{self._unet_name}: its sampled latents are")
        images = self.vae.decode(z.float() / self.scale_factor)
        vae = self.vae_ckpt.path if self.vae_ckpt is not None else "the VAE"
        return check_finite(images, f"{vae}: its decoded images are")

    @torch.no_grad()
    def sample_latents(self, num_images: int, sampler: SamplerConfig, *, labels: torch.Tensor | None = None,
                       guidance: float = 1.0, guidance_interval: tuple[float, float] | None = None,
                       autoguidance: float = 1.0, generator: torch.Generator | None = None, progress: bool = False,
                       callback: Callback | None = None, edit: Edit | None = None) -> torch.Tensor:
        """One batch of scaled latents [N x C x 7 x 7]; `callback(i, t, x_t, x̂_0)` after every step;
        `edit`: what the chain is given besides the prompt (editing.py)."""
        device = self.device
        return self.diffusion.sample(self.denoiser, (num_images, *self.vae.latent_shape), sampler,
                                     labels=None if labels is None else labels.to(device), guidance=guidance,
                                     num_classes=self.num_classes, guidance_interval=guidance_interval,
                                     guide=self.guide, autoguidance=autoguidance, generator=generator, device=device,
                                     progress=progress, callback=callback, edit=edit).float()

    @torch.no_grad()
    def sample(self, num_images: int, sampler: SamplerConfig, prompt: Prompt, *, seed: int = 0,
               batch_size: int = BATCH_SIZE, progress: bool = False, edit: Edit | None = None) -> torch.Tensor:
        """Decoded images [N x 28 x 28] uint8 of `prompt`, whose labels are drawn from `seed`; with an
        `edit` of N images, edited from them (editing.py).

        Batch i draws its noise from its own CPU generator, seeded by (seed, i): the images depend
        on (seed, batch_size) alone, not on the device nor on how many processes share the work.
        On several processes, rank r samples batches r, r + N, ... and every rank returns them all.
        """
        check_fits_in_memory("num_images", num_images, num_images * SAMPLE_BYTES)  # all held at the end
        check_seed(seed)
        labels = prompt.labels(num_images, seed, self.label_frequencies)
        return self._sample_batches(num_images, sampler, prompt, labels, seed, batch_size, progress, edit)

    def _sample_batches(self, num_images: int, sampler: SamplerConfig, prompt: Prompt, labels: torch.Tensor | None,
                        seed: int, batch_size: int, progress: bool, edit: Edit | None) -> torch.Tensor:
        """`sample` with the labels given: ints [N], mixes [N x (classes + 1)] or None."""
        def sample_batch(i: int, batch: slice) -> torch.Tensor:
            z = self.sample_latents(batch.stop - batch.start, sampler, labels=None if labels is None else labels[batch],
                                    guidance=prompt.scale, guidance_interval=prompt.guidance_interval,
                                    autoguidance=prompt.autoguidance, generator=batch_generator(seed, i),
                                    progress=progress, edit=None if edit is None else edit[batch])
            return to_uint8(self.decode(z))

        return torch.cat(distributed.map_batches(num_images, batch_size, sample_batch, desc="batches",
                                                 progress=progress))

    def __call__(self, num_images: int = 16, *, digit: int | str | None = None, guidance: float | None = None,
                 guidance_interval: tuple[float, float] | None = None, autoguidance: float | None = None,
                 sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                 variance: str = "beta_tilde", spacing: str | None = None, seed: int = 0,
                 batch_size: int = BATCH_SIZE, progress: bool = False) -> torch.Tensor:
        """`num_images` images [N x 28 x 28] uint8. digit: 0-9, "all", "any" or "none"; guidance,
        the classifier-free guidance scale, guidance_interval and autoguidance (with a guide
        loaded) as in Prompt; sampler (one of SAMPLERS), steps, eta, variance and spacing as in
        SamplerConfig, unset ones the defaults of the branch sampled (SamplerConfig.for_branch).
        scripts/sample.py with the same settings writes the same images."""
        prompt = self.prompt(digit, guidance, guidance_interval, autoguidance)
        return self.sample(num_images, SamplerConfig.for_branch(prompt.unconditional, sampler, steps, eta, variance,
                                                                spacing),
                           prompt, seed=seed, batch_size=batch_size, progress=progress)

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """Images (editing.as_images: uint8 or floats in [0, 1], [N x 28 x 28]) -> their scaled
        latents z_0 [N x C x 7 x 7]: the VAE posterior means, the single most likely latent of each,
        so that an edit of an image depends on the image alone. Decoded, they are the VAE
        reconstruction (what an edit at strength 0 returns)."""
        mean, _ = encode_images(self.vae, as_images(images), self.device, batch_size=BATCH_SIZE)
        return self.scale_factor * mean.to(self.device)

    def edit_settings(self, digit, guidance, guidance_interval, autoguidance, sampler, steps, eta, spacing,
                       ) -> tuple[Prompt, SamplerConfig]:
        """An edit's prompt (unset digit: the "no label" branch, which keeps the image's own digit) and
        its sampler (the branch's default unless told)."""
        prompt = self.prompt("none" if digit is None else digit, guidance, guidance_interval, autoguidance)
        return prompt, SamplerConfig.for_branch(prompt.unconditional, sampler, steps, eta, spacing=spacing)

    def img2img(self, images, strength: float = 0.6, *, digit: int | str | None = None, guidance: float | None = None,
                guidance_interval: tuple[float, float] | None = None, autoguidance: float | None = None,
                sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                spacing: str | None = None, seed: int = 0, batch_size: int = BATCH_SIZE,
                progress: bool = False) -> torch.Tensor:
        """Image-to-image (SDEdit, editing.py): each image's latent noised to `strength` of the
        sampler's chain and denoised with the prompt, uint8 [N x 28 x 28]. Strength 0 returns the
        VAE reconstruction, 1 the plain samples of the same seed; a prompted digit turns the
        images into that digit as strength grows. Unset `digit`: the "no label" branch."""
        strength = check_strength(strength)
        prompt, config = self.edit_settings(digit, guidance, guidance_interval, autoguidance, sampler, steps, eta,
                                             spacing)
        latents = self.encode(images)
        return self.sample(len(latents), config, prompt, seed=seed, batch_size=batch_size, progress=progress,
                           edit=Edit(latents, strength))

    def inpaint(self, images, mask, *, digit: int | str | None = None, resample: int = RESAMPLE,
                guidance: float | None = None, guidance_interval: tuple[float, float] | None = None,
                autoguidance: float | None = None, sampler: str | None = None, steps: int | None = None,
                eta: float | None = None, spacing: str | None = None, seed: int = 0, batch_size: int = BATCH_SIZE,
                progress: bool = False) -> torch.Tensor:
        """Inpainting (RePaint, editing.py): keep each image where `mask` is True (or 1; [28 x 28]
        for all images or one per image) and regenerate the rest with the prompt, each step taken
        `resample` times; uint8 [N x 28 x 28]. The mask is carried to the 7 x 7 latents by
        editing.latent_mask. Unset `digit`: the "no label" branch."""
        prompt, config = self.edit_settings(digit, guidance, guidance_interval, autoguidance, sampler, steps, eta,
                                             spacing)
        latents = self.encode(images)
        mask = latent_mask(as_mask(mask, len(latents)))
        return self.sample(len(latents), config, prompt, seed=seed, batch_size=batch_size, progress=progress,
                           edit=Edit(latents, mask=mask, resample=resample))

    @torch.no_grad()
    def interpolate(self, frames: int = 8, *, seeds: tuple[int, int] = (0, 1),
                    digits: tuple[int | str | None, int | str | None] = (None, None), guidance: float | None = None,
                    guidance_interval: tuple[float, float] | None = None, autoguidance: float | None = None,
                    sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
                    batch_size: int = BATCH_SIZE, progress: bool = False) -> torch.Tensor:
        """`frames` images [frames x 28 x 28] uint8 from the first image of seed and digit
        `seeds[0]`, `digits[0]` to that of `seeds[1]`, `digits[1]`: their initial noise
        interpolated spherically (editing.slerp) and their labels' embeddings linearly, sampled
        with a deterministic sampler (the branch's, at η = 0). The ends are the plain samples
        `pipe(1, digit=d, seed=s, eta=0)` of the same settings. Both ends take the same guidance:
        two digits 0-9, or one prompt (a single `digits` serves both; "any" draws each end's digit
        from its seed)."""
        if not (isinstance(frames, int) and not isinstance(frames, bool) and 2 <= frames <= 10_000):
            raise ConfigError("frames", frames, "must be a whole number in 2..10000 (the two ends and those between)")
        if not (isinstance(seeds, (tuple, list)) and len(seeds) == 2 and all(map(is_seed, seeds))):
            raise ConfigError("seeds", seeds, "must be two seeds, whole numbers >= 0, one for each end")
        if not isinstance(digits, (tuple, list)):  # one prompt for both ends
            digits = (digits, digits)
        if len(digits) != 2:
            raise ConfigError("digits", digits, "must be two digits, one for each end, or one for both")
        ends = [self.prompt(digit, guidance, guidance_interval, autoguidance) for digit in digits]
        if len({(p.scale, p.guidance_interval, p.autoguidance) for p in ends}) > 1:
            raise ConfigError("digits", tuple(digits), "both ends must be sampled alike: two digits 0-9, or the same "
                                                       "prompt at both")
        config = SamplerConfig.for_branch(ends[0].unconditional, sampler, steps, 0.0, spacing=spacing)
        if config.sampler not in ETA_SAMPLERS:  # deterministic at η = 0
            raise ConfigError("sampler", config.sampler,
                              f"interpolation needs a deterministic sampler: {' or '.join(ETA_SAMPLERS)}")
        weights = torch.linspace(0, 1, frames, dtype=torch.float64)
        noise = slerp(*(torch.randn((1, *self.vae.latent_shape), generator=batch_generator(seed, 0))[0]
                        for seed in seeds), weights)
        labels = None
        if self.num_classes and not all(p.unconditional for p in ends):
            one_hot = [F.one_hot(torch.tensor(self.num_classes if p.unconditional else
                                              int(p.labels(1, seed, self.label_frequencies)[0])),
                                 self.num_classes + 1).double() for p, seed in zip(ends, seeds)]
            labels = ((1 - weights[:, None]) * one_hot[0] + weights[:, None] * one_hot[1]).float()
        # the chains start from the interpolated noise; the generator's draws go unused at η = 0
        return self._sample_batches(frames, config, ends[0], labels, seeds[0], batch_size, progress, Edit(noise=noise))

    @torch.no_grad()
    def denoising_strip(self, num_images: int, sampler: SamplerConfig, prompt: Prompt, *, seed: int = 0,
                        columns: int = 10) -> torch.Tensor:
        """The decoded prediction x̂_0 at `columns` evenly spaced steps of the chain, then the final
        sample: [num_images x (columns + 1) x 1 x 28 x 28], one row per sample. Its noise is that of
        `sample`'s first batch, so a deterministic sampler's strip of a prompt with the same labels
        ends in its first images."""
        check_seed(seed)
        predictions = []  # x̂_0 latents of every step; decoded only where kept
        labels = prompt.labels(num_images, seed, self.label_frequencies)
        z = self.sample_latents(num_images, sampler, labels=labels, guidance=prompt.scale,
                                guidance_interval=prompt.guidance_interval, autoguidance=prompt.autoguidance,
                                generator=batch_generator(seed, 0),
                                callback=lambda i, t, x, x0: predictions.append(x0))
        keep = np.linspace(0, len(predictions) - 1, columns).round().astype(int)
        frames = [self.decode(predictions[i]) for i in keep] + [self.decode(z)]
        return torch.stack(frames, dim=1).clamp(0, 1).cpu()  # (N, columns + 1, 1, 28, 28)
