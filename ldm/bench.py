"""The study behind the defaults (`make bench`): samplers, guidance and training choices, each
scored in one run against the same classifier, with the Validation floor at the same size.

  samplers   the trained UNet with DDIM at 10/20/50/100/250 steps, DDPM-100 and DDPM-1000 with
             σ² = β̃ and σ² = β, unprompted (random digits); images/s for each; then DDIM-50 and
             DDPM-100 on the "no label" branch
  guidance   digit prompts 0-9 in turn (balanced) at several guidance scales with DDIM-50: FID,
             and how often the classifier recognises the requested digit
  training   the schedule and prediction target, min-SNR-γ = 5 and label dropout, each trained
             for the same number of steps from the same latents and sampled with DDIM-50
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import check_made_with_vae, load_model
from .classifier import Classifier
from .data import load_mnist
from .evaluation import RealFeatures, bench_markdown, row_name, score_images, validation_images
from .guidance import PROMPT_GUIDANCE
from .images import digit_rows, save_rows
from .latents import load_latent_cache
from .pipeline import LatentDiffusion
from .presets import Preset
from .sampling import SamplerConfig
from .stages import save_unet, train_unet
from .utils import describe_device, write_text_atomic, written_together

DDIM_STEPS = (10, 20, 50, 100, 250)
GUIDANCE_SCALES = (1.0, 1.5, 2.0, 4.0)  # PROMPT_GUIDANCE is added if missing
# name: DiffusionConfig fields changed from the preset's. The cosine schedule is paired with v:
# with ε, x̂_0 at t = T-1 divides the model's error by √ᾱ ≈ 5e-5 and the first step ruins the chain.
TRAINING_CHOICES = {
    "linear, ε": {"schedule": "linear", "prediction": "eps"},
    "linear, v": {"schedule": "linear", "prediction": "v"},
    "cosine, v": {"schedule": "cosine", "prediction": "v"},
    "linear, ε, min-SNR-5": {"schedule": "linear", "prediction": "eps", "min_snr_gamma": 5.0},
    "cosine, v, 20% labels dropped": {"schedule": "cosine", "prediction": "v", "label_dropout": 0.2},
}


def run_bench(preset: Preset, *, data_dir: str, classifier_path: str | os.PathLike, vae_path: str | os.PathLike,
              unet_path: str | os.PathLike, latents_path: str | os.PathLike, num_images: int, skip_training: bool,
              out_dir: str | os.PathLike, work_dir: str | os.PathLike, seed: int, device: torch.device,
              compile: bool = False, progress: bool = True) -> str:
    """Run every study; write bench.json, bench.md, bench_digits.png (one row per digit) and
    bench_process.png (x̂_0 across the chain) into `out_dir`; return the table. DDPM-1000 rows
    use the preset's smaller subset, and every row is also scored on that subset."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    n = num_images
    subset = min(n, preset.bench.ddpm1000_images)
    # every input is read and checked before any work
    classifier, classifier_ckpt = load_model(classifier_path, Classifier, device)
    train_images, _ = load_mnist(data_dir, "train")
    test_images, _ = load_mnist(data_dir, "test")
    model = LatentDiffusion.load(unet_path, vae_path, device, compile=compile)
    cache = None if skip_training else load_latent_cache(latents_path, device)
    if cache is not None:
        check_made_with_vae(latents_path, cache.vae_fingerprint, model.vae_ckpt, "rerun `make latents`")
    validation = validation_images(train_images, n, torch.Generator().manual_seed(seed))
    real = RealFeatures.compute(classifier, train_images, test_images, device, progress=progress)
    rows = []

    def score(study: str, name: str, images: torch.Tensor, labels=None, seconds=None, **extra) -> None:
        row = {"study": study, "name": name, "images": len(images),
               **score_images(classifier, real, images, device, labels=labels, from_training_set=study == "floor",
                              fid_subset=subset)}
        if seconds is not None:
            row["images_per_second"] = len(images) / seconds
        rows.append(dict(row, **extra))
        tqdm.write(f"{study:>9} | {name:<36} FID {row['fid']:8.3f}  precision {row['precision']:.3f}  "
                   f"recall {row['recall']:.3f}" + (f"  {row['images_per_second']:.1f} img/s" if seconds else ""))

    def sample_and_score(study: str, model: LatentDiffusion, count: int, sampler: SamplerConfig, digit=None,
                         guidance=None, name: str | None = None, **extra) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample `count` images prompted with `digit` (see LatentDiffusion.prompt), time and score
        them; return (images, prompted labels)."""
        digit, labels, guidance = model.prompt(digit, count, seed, guidance)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.time()
        images = model.sample(count, sampler, labels=labels, guidance=guidance, seed=seed,
                              batch_size=preset.sample_batch_size, progress=progress)
        score(study, name or row_name(sampler, digit, guidance, bool(model.num_classes)), images,
              labels=labels if digit not in ("any", "none") else None, seconds=time.time() - start,
              sampler=dataclasses.asdict(sampler), digit=digit, guidance=None if labels is None else guidance, **extra)
        return images, labels

    # 1. the floor, at the same sizes as every other row
    score("floor", "Validation", validation)

    # 2. samplers, on the trained UNet
    samplers = [(n, SamplerConfig("ddim", s)) for s in DDIM_STEPS]
    samplers += [(n, SamplerConfig("ddpm", 100)), (subset, SamplerConfig("ddpm", 1000)),
                 (subset, SamplerConfig("ddpm", 1000, variance="beta"))]
    for count, sampler in samplers:
        sample_and_score("sampler", model, count, sampler)
    if model.num_classes:
        for sampler in (SamplerConfig("ddim", 50), SamplerConfig("ddpm", 100)):
            sample_and_score("sampler", model, n, sampler, digit="none")
    _, strip_labels, _ = model.prompt(None, 8, seed)
    save_rows(model.denoising_strip(8, SamplerConfig("ddim", 50), seed=seed, labels=strip_labels),
              out_dir / "bench_process.png")

    # 3. digit prompts with classifier-free guidance, DDIM-50
    if model.num_classes:
        for scale in sorted(set(GUIDANCE_SCALES) | {PROMPT_GUIDANCE}):
            images, labels = sample_and_score("guidance", model, n, SamplerConfig("ddim", 50), digit="all",
                                              guidance=scale)
            if scale == PROMPT_GUIDANCE and n >= 10:
                save_rows(digit_rows(images, labels, min(10, n // 10)), out_dir / "bench_digits.png")

    # 4. training choices at equal steps, each sampled with DDIM-50
    if cache is not None:
        settings = dataclasses.replace(preset.unet, steps=preset.bench.train_steps)
        for name, change in TRAINING_CHOICES.items():
            diffusion_config = dataclasses.replace(preset.diffusion, **change)
            ema_model, raw_model, info = train_unet(cache, preset.unet_model, diffusion_config, settings, seed=seed,
                                                    device=device, progress=progress, desc=name, compile=compile)
            path = work_dir / f"unet_{len(rows)}.safetensors"
            save_unet(path, ema_model, raw_model, info)
            trained = LatentDiffusion.load(path, vae_path, device, compile=compile)
            sample_and_score("training", trained, n, SamplerConfig("ddim", 50), name=name, train_steps=settings.steps,
                             latents_per_second=info["latents_per_second"], diffusion=info["diffusion"],
                             checkpoint=str(path))

    report = {"rows": rows, "num_images": n, "subset": subset, "preset": preset.name, "seed": seed,
              "compiled": compile, "device": describe_device(device), "unet": str(unet_path),
              "unet_training": model.unet_ckpt.info,
              "classifier_test_accuracy": classifier_ckpt.info.get("test_accuracy"), "data_dir": data_dir,
              "train_images": len(train_images), "torch_version": torch.__version__, "ldm_version": __version__}
    table = bench_markdown(report)
    with written_together():
        write_text_atomic(out_dir / "bench.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out_dir / "bench.md", table)
    return table
