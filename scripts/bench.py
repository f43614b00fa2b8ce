"""Benchmark: samplers, guidance and training choices, each scored in one run against the same
classifier, with the Validation floor measured at the same number of images.

  samplers   the trained UNet (checkpoints/unet.safetensors) with DDIM at 10/20/50/100/250
             steps, DDPM-100 and DDPM-1000 with σ² = β̃ and σ² = β; images/s for each; then
             DDIM-50 and DDPM-100 on the "no label" branch
  guidance   digit prompts 0-9 in turn (balanced) at several guidance scales with DDIM-50: FID,
             and how often the classifier recognises the requested digit
  training   linear vs cosine schedule, ε vs v prediction, min-SNR-γ = 5, label dropout, each
             trained for the same number of steps from the same latents and sampled with DDIM-50

Sampler and training rows are unprompted samples as scripts/sample.py makes them by default:
with a class-conditional UNet, each image is prompted with a digit drawn from the training label
frequencies, at guidance 1.

Writes reports/bench.json, reports/bench.md, reports/bench_digits.png (one row per digit) and
reports/bench_process.png (x̂_0 across the chain). Row sizes come from the preset's `bench`
settings; with the cpu preset DDPM-1000 rows use a subset, and every row is also scored on that
subset so that all rows can be compared at one size.

    python -m scripts.bench --data-dir ../shared/data/mnist
    python -m scripts.bench --data-dir ../shared/data/mnist --preset smoke --skip-training   # a quick look
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ldm import __version__
from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import StageParser, add_compile_arg, add_data_arg, add_device_args, add_preset_arg, positive_int, run
from ldm.data import load_mnist
from ldm.evaluation import RealFeatures, score_images, validation_images
from ldm.images import digit_rows, save_rows
from ldm.latent_training import save_unet, train_unet
from ldm.latents import load_latent_cache
from ldm.pipeline import LatentDiffusion
from ldm.presets import get_preset
from ldm.utils import check_writable, describe_device, resolve_device, set_seed, write_text_atomic

DDIM_STEPS = (10, 20, 50, 100, 250)
GUIDANCE_SCALES = (1.0, 1.5, 2.0, 4.0)  # the preset's scale is added if missing
# name: DiffusionObjective fields changed from the preset's. The cosine schedule is paired with v:
# with ε, x̂_0 at t = T-1 divides the model's error by √ᾱ ≈ 5e-5 and the first step ruins the chain.
TRAINING_CHOICES = {
    "linear, ε": {"schedule": "linear", "prediction": "eps"},
    "linear, v": {"schedule": "linear", "prediction": "v"},
    "cosine, v": {"schedule": "cosine", "prediction": "v"},
    "linear, ε, min-SNR-5": {"schedule": "linear", "prediction": "eps", "min_snr_gamma": 5.0},
    "cosine, v, 20% labels dropped": {"schedule": "cosine", "prediction": "v", "label_dropout": 0.2},
}


def main() -> None:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    parser.add_argument("--classifier", default="checkpoints/classifier.safetensors", help="feature extractor")
    parser.add_argument("--vae", default="checkpoints/vae.safetensors", help="VAE (decoder)")
    parser.add_argument("--unet", default="checkpoints/unet.safetensors", help="UNet of the sampler study")
    parser.add_argument("--latents", default="checkpoints/latents.safetensors", help="latent cache for the training study")
    parser.add_argument("--num-images", type=positive_int, help="images per row (unset: the preset's)")
    parser.add_argument("--skip-training", action="store_true", help="leave out the training-choice study")
    parser.add_argument("--out-dir", default="reports", help="bench.json, bench.md and pictures go here")
    parser.add_argument("--work-dir", default="checkpoints/bench", help="UNets of the training study go here")
    add_device_args(parser)
    add_compile_arg(parser)
    args = parser.parse_args()

    out_dir, work_dir = Path(args.out_dir), Path(args.work_dir)
    check_writable(out_dir / "bench.json", work_dir / "unet.safetensors")
    device = resolve_device(args.device)
    preset = get_preset(args.preset, device)
    n = args.num_images or preset.bench.images
    subset = min(n, preset.bench.ddpm1000_images)
    progress = not args.no_progress
    set_seed(args.seed)

    classifier, classifier_ckpt = load_model(args.classifier, Classifier, device)
    train_images, _ = load_mnist(args.data_dir, "train")
    test_images, _ = load_mnist(args.data_dir, "test")
    validation = validation_images(train_images, n, torch.Generator().manual_seed(args.seed))
    real = RealFeatures.compute(classifier, train_images, test_images, device, progress=progress)
    rows = []

    def score(study: str, name: str, images: torch.Tensor, labels=None, seconds=None, **extra) -> None:
        row = {"study": study, "name": name, "images": len(images),
               **score_images(classifier, real, images, device, labels=labels, from_training_set=study == "floor",
                              fid_subset=subset)}
        if seconds is not None:
            row["images_per_second"] = len(images) / seconds
        rows.append(dict(row, **extra))
        tqdm.write(f"{study:>9} | {name:<28} FID {row['fid']:8.3f}  precision {row['precision']:.3f}  "
                   f"recall {row['recall']:.3f}" + (f"  {row['images_per_second']:.1f} img/s" if seconds else ""))

    def timed_sample(model: LatentDiffusion, count: int, **sampler_args) -> tuple[torch.Tensor, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.time()
        images = model.sample(count, seed=args.seed, batch_size=preset.sample_batch_size, progress=progress,
                              **sampler_args)
        return images, time.time() - start

    # 1. the floor, at the same sizes as every other row
    score("floor", "Validation", validation)

    # 2. samplers, on the trained UNet
    model = LatentDiffusion.load(args.unet, args.vae, device, compile=args.compile)
    samplers = [(f"DDIM-{s}", n, dict(sampler="ddim", steps=s)) for s in DDIM_STEPS]
    samplers += [("DDPM-100 σ²=β̃", n, dict(sampler="ddpm", steps=100, variance="beta_tilde")),
                 ("DDPM-1000 σ²=β̃", subset, dict(sampler="ddpm", steps=1000, variance="beta_tilde")),
                 ("DDPM-1000 σ²=β", subset, dict(sampler="ddpm", steps=1000, variance="beta"))]
    for name, count, sampler_args in samplers:
        labels = model.unprompted_labels(count, args.seed)
        images, seconds = timed_sample(model, count, labels=labels, **sampler_args)
        score("sampler", name, images, seconds=seconds, **sampler_args)
    if model.num_classes:
        for name, sampler_args in [("DDIM-50, no label", dict(sampler="ddim", steps=50)),
                                   ("DDPM-100 σ²=β̃, no label", dict(sampler="ddpm", steps=100))]:
            images, seconds = timed_sample(model, n, **sampler_args)
            score("sampler", name, images, seconds=seconds, **sampler_args)
    save_rows(model.denoising_strip(8, sampler="ddim", steps=50, seed=args.seed,
                                    labels=model.unprompted_labels(8, args.seed)), out_dir / "bench_process.png")

    # 3. digit prompts with classifier-free guidance, DDIM-50
    if model.num_classes:
        labels = torch.arange(n) % 10
        for scale in sorted(set(GUIDANCE_SCALES) | {preset.guidance}):
            images, seconds = timed_sample(model, n, sampler="ddim", steps=50, labels=labels, guidance=scale)
            score("guidance", f"digits 0-9, guidance {scale:g}", images, labels=labels, seconds=seconds,
                  guidance=scale)
            if scale == preset.guidance and n >= 10:
                save_rows(digit_rows(images, labels, min(10, n // 10)), out_dir / "bench_digits.png")

    # 4. training choices at equal steps, each sampled with DDIM-50
    if not args.skip_training:
        cache = load_latent_cache(args.latents, device)
        settings = dataclasses.replace(preset.diffusion, steps=preset.bench.train_steps)
        for name, change in TRAINING_CHOICES.items():
            objective = dataclasses.replace(preset.objective, **change)
            ema_model, raw_model, info = train_unet(cache, preset.unet_model, objective, settings, seed=args.seed,
                                                    device=device, progress=progress, desc=name,
                                                    compile=args.compile)
            path = work_dir / f"unet_{len(rows)}.safetensors"
            save_unet(path, ema_model, raw_model, info)
            trained = LatentDiffusion.load(path, args.vae, device, compile=args.compile)
            labels = trained.unprompted_labels(n, args.seed)
            images, seconds = timed_sample(trained, n, labels=labels, sampler="ddim", steps=50)
            score("training", name, images, seconds=seconds, train_steps=settings.steps,
                  latents_per_second=info["latents_per_second"], objective=info["diffusion"], checkpoint=str(path))

    report = {"rows": rows, "num_images": n, "subset": subset, "preset": preset.name, "seed": args.seed,
              "compiled": args.compile, "device": describe_device(device), "unet": args.unet,
              "unet_training": model.unet_ckpt.info,
              "classifier_test_accuracy": classifier_ckpt.info.get("test_accuracy"), "data_dir": args.data_dir,
              "train_images": len(train_images), "torch_version": torch.__version__, "ldm_version": __version__}
    write_text_atomic(out_dir / "bench.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / "bench.md", bench_markdown(report))
    print(bench_markdown(report))
    print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}")


def bench_markdown(report: dict) -> str:
    n, subset = report["num_images"], report["subset"]
    floor = report["rows"][0]
    lines = ["# Benchmark", "",
             f"{report['device']}; preset {report['preset']}; data {report['data_dir']} "
             f"({report['train_images']} training images); seed {report['seed']}; torch {report['torch_version']}.",
             f"FID in this project's classifier features against the MNIST test set, {n} images per row unless "
             f"the row says otherwise; FID@{subset} scores every row's first {subset} images, for comparison with "
             "the smaller rows. Floor: real training images. Sampler and training rows are unprompted samples: "
             "each image prompted with a digit drawn from the training label frequencies, at guidance 1; "
             "\"no label\" rows sample the unconditional branch instead.", "",
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
    guided = [r for r in report["rows"] if "recognised_per_digit" in r]
    if guided:
        lines += ["", "Recognised, per prompted digit:", "",
                  "| prompts | " + " | ".join(str(d) for d in range(10)) + " |", "|---|" + "---:|" * 10]
        lines += [f"| {r['name'].removeprefix('digits 0-9, ')} | "
                  + " | ".join("—" if v is None else f"{v:.1%}" for v in r["recognised_per_digit"]) + " |"
                  for r in guided]
    trained = [r for r in report["rows"] if r["study"] == "training"]
    if trained:
        lines += ["", f"Training study: {trained[0]['train_steps']} steps each, "
                      f"{trained[0]['latents_per_second']:.0f} latents/s for the first."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run(main)
