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
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import load_model
from .classifier import Classifier
from .data import NUM_CLASSES, load_mnist_splits
from .distributed import describe_device
from .images import digit_rows, save_rows
from .latents import check_cache_fits_vae, load_latent_cache
from .outputs import write_text_atomic, written_together
from .pipeline import LatentDiffusion
from .presets import Preset
from .prompt import PROMPT_GUIDANCE, Prompt
from .runtime import RunContext
from .samples import row_name
from .sampling import SamplerConfig
from .scoring import Scorer, validation_images
from .stages import train_unet
from .version import __version__

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


@dataclass(frozen=True)
class BenchInputs:
    """The files `make bench` reads: the `make all` checkpoints and the data."""
    data_dir: str
    classifier: str | os.PathLike
    vae: str | os.PathLike
    unet: str | os.PathLike
    latents: str | os.PathLike


def run_bench(preset: Preset, inputs: BenchInputs, run: RunContext, *, num_images: int, skip_training: bool,
              out_dir: str | os.PathLike, work_dir: str | os.PathLike) -> str:
    """Run every study; write bench.json, bench.md, bench_digits.png (one row per digit) and
    bench_process.png (x̂_0 across the chain) into `out_dir`; return the table. DDPM-1000 rows
    use the preset's smaller subset, and every row is also scored on that subset."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    n, seed, device = num_images, run.seed, run.device
    subset = min(n, preset.bench.ddpm1000_images)
    # every input is read and checked before any work
    classifier, classifier_ckpt = load_model(inputs.classifier, Classifier, device)
    (train_images, _), (test_images, _) = load_mnist_splits(inputs.data_dir)
    model = LatentDiffusion.load(inputs.unet, inputs.vae, device, compile=run.compile)
    cache = None if skip_training else load_latent_cache(inputs.latents, device)
    if cache is not None:
        check_cache_fits_vae(inputs.latents, cache, model.vae, model.vae_ckpt, "rerun `make latents`")
    validation = validation_images(train_images, n, torch.Generator().manual_seed(seed))
    scorer = Scorer.compute(classifier, train_images, test_images, device, progress=run.progress)
    rows = []

    def score(study: str, name: str, images: torch.Tensor, labels=None, seconds=None, **extra) -> None:
        row = {"study": study, "name": name, "images": len(images),
               **scorer(images, labels=labels, from_training_set=study == "floor", fid_subset=subset)}
        if seconds is not None:
            row["images_per_second"] = len(images) / seconds
        rows.append(dict(row, **extra))
        tqdm.write(f"{study:>9} | {name:<36} FID {row['fid']:8.3f}  precision {row['precision']:.3f}  "
                   f"recall {row['recall']:.3f}" + (f"  {row['images_per_second']:.1f} img/s" if seconds else ""))

    def sample_and_score(study: str, model: LatentDiffusion, count: int, sampler: SamplerConfig,
                         prompt: Prompt | None = None, name: str | None = None,
                         **extra) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample `count` images of `prompt` (unset: the model's default), time and score them;
        return (images, prompted labels)."""
        prompt = prompt or model.prompt()
        labels = prompt.labels(count, seed, model.label_frequencies)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.time()
        images = model.sample(count, sampler, prompt, seed=seed, progress=run.progress)
        score(study, name or row_name(sampler, prompt, bool(model.num_classes)), images,
              labels=labels if prompt.digit not in ("any", "none") else None, seconds=time.time() - start,
              sampler=dataclasses.asdict(sampler), digit=prompt.digit, guidance=prompt.guidance, **extra)
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
            sample_and_score("sampler", model, n, sampler, Prompt("none"))
    strip = model.denoising_strip(8, SamplerConfig("ddim", 50), model.prompt(), seed=seed)

    # 3. digit prompts with classifier-free guidance, DDIM-50
    digits = None  # the rows of bench_digits.png
    if model.num_classes:
        for scale in sorted(set(GUIDANCE_SCALES) | {PROMPT_GUIDANCE}):
            images, labels = sample_and_score("guidance", model, n, SamplerConfig("ddim", 50), Prompt("all", scale))
            if scale == PROMPT_GUIDANCE and n >= 10:
                digits = digit_rows(images, labels, min(10, n // 10))

    # 4. training choices at equal steps, each sampled with DDIM-50
    if cache is not None:
        settings = dataclasses.replace(preset.unet, steps=preset.bench.train_steps)
        for name, change in TRAINING_CHOICES.items():
            diffusion_config = dataclasses.replace(preset.diffusion, **change)
            trained = train_unet(cache, preset.unet_model, diffusion_config, settings, run, desc=name)
            path = work_dir / f"unet_{len(rows)}.safetensors"
            trained.save(path)
            sample_and_score("training", LatentDiffusion.load(path, inputs.vae, device, compile=run.compile), n,
                             SamplerConfig("ddim", 50), name=name, train_steps=settings.steps,
                             latents_per_second=trained.info["latents_per_second"],
                             diffusion=trained.info["diffusion"], checkpoint=str(path))

    report = {"rows": rows, "num_images": n, "subset": subset, "preset": preset.name, "seed": seed,
              "compiled": run.compile, "device": describe_device(device), "unet": str(inputs.unet),
              "unet_training": model.unet_ckpt.info,
              "classifier_test_accuracy": classifier_ckpt.info.get("test_accuracy"), "data_dir": inputs.data_dir,
              "train_images": len(train_images), "torch_version": torch.__version__, "ldm_version": __version__}
    table = bench_markdown(report)
    with written_together() as outputs:  # the pictures and the report appear together
        save_rows(strip, out_dir / "bench_process.png", outputs)
        if digits is not None:
            save_rows(digits, out_dir / "bench_digits.png", outputs)
        write_text_atomic(out_dir / "bench.json", json.dumps(report, indent=2) + "\n", outputs)
        write_text_atomic(out_dir / "bench.md", table, outputs)
    return table


def bench_markdown(report: dict) -> str:
    """The table of `make bench` (ldm/bench.py): every row beside the floor at its own size."""
    n, subset = report["num_images"], report["subset"]
    floor = report["rows"][0]
    lines = ["# Benchmark", "",
             f"{report['device']}; preset {report['preset']}; data {report['data_dir']} "
             f"({report['train_images']} training images); seed {report['seed']}; torch {report['torch_version']}.",
             f"FID in this project's classifier features against the MNIST test set, {n} images per row unless "
             f"the row says otherwise; FID@{subset} scores every row's first {subset} images, for comparison with "
             "the smaller rows. Floor: real training images. \"random digits\": each image prompted with a digit "
             "drawn from the training label frequencies, at guidance 1; \"no label\": the unconditional branch.", "",
             f"| study | row | images | FID | × floor | FID@{subset} | precision | recall | recognised | images/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor_sub = floor.get(f"fid_{subset}", floor["fid"])
    for r in report["rows"]:
        fid_sub = r.get(f"fid_{subset}", r["fid"] if r["images"] == subset else None)
        same_size_floor = floor["fid"] if r["images"] == n else floor_sub
        lines.append(
            f"| {r['study']} | {r['name']} | {r['images']} | {r['fid']:.2f} | {r['fid'] / same_size_floor:.1f} | "
            + (f"{fid_sub:.2f}" if fid_sub is not None else "—")
            + f" | {r['precision']:.3f} | {r['recall']:.3f} | "
            + (f"{r['recognised']:.1%}" if "recognised" in r else "—") + " | "
            + (f"{r['images_per_second']:.1f}" if "images_per_second" in r else "—") + " |")
    guided = [r for r in report["rows"] if r["study"] == "guidance"]
    if guided:
        lines += ["", "Recognised, per prompted digit:", "",
                  "| prompts | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " |",
                  "|---|" + "---:|" * NUM_CLASSES]
        lines += [f"| guidance {r['guidance']:g} | "
                  + " | ".join("—" if v is None else f"{v:.1%}" for v in r["recognised_per_digit"]) + " |"
                  for r in guided]
    trained = [r for r in report["rows"] if r["study"] == "training"]
    if trained:
        lines += ["", f"Training study: {trained[0]['train_steps']} steps each, "
                      f"{trained[0]['latents_per_second']:.0f} latents/s for the first."]
    return "\n".join(lines) + "\n"
