"""Training-length study (`make lengths`): the preset's UNet trained for a quarter, half and all
of its steps (or --steps), each sampled with the default sampler (random digits, and the "no
label" branch) and scored by FID, beside the Validation floor. Run it after `make all`: the run
of the preset's own length is checkpoints/unet.safetensors when that records the same settings;
the others are trained into --work-dir (a killed run resumes; a finished one is reused).

Writes reports/training_length.json, reports/training_length.md and reports/training_length.png
(FID against training steps). ldm/length_study.py describes the study.

    python -m scripts.training_length --data-dir ../shared/data/mnist          # cpu preset: 1125, 2250, 4500
    python -m scripts.training_length --data-dir ../shared/data/mnist --steps 1000 2000 --num-images 2000
"""

from __future__ import annotations

from pathlib import Path

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_precision_arg, add_preset_arg,
                     add_runtime_args, add_study_dirs, fid_images, positive_int, prepare, run_context)
from ldm.data import load_mnist_splits
from ldm.latents import check_cache_fits_vae, load_latent_cache
from ldm.launch import run
from ldm.length_study import default_lengths, run_length_study, write_report
from ldm.pipeline import LatentDiffusion
from ldm.scoring import TestSetFID


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae", "unet")
    parser.add_argument("--latents", default="checkpoints/latents.safetensors", help="latent cache to train on")
    parser.add_argument("--steps", type=positive_int, nargs="+",
                        help="training lengths (unset: a quarter, half and all of the preset's steps)")
    parser.add_argument("--num-images", type=fid_images, default=10_000, help="images per FID")
    add_study_dirs(parser, "training_length", "UNets of the other lengths", work_dir="lengths")
    add_runtime_args(parser)
    add_precision_arg(parser)
    return parser


def main(args) -> None:
    out_dir = Path(args.out_dir)
    device, preset = prepare(args, out_dir / "training_length.json", Path(args.work_dir) / "unet.safetensors")
    cache = load_latent_cache(args.latents, device)
    model = LatentDiffusion.load(args.unet, args.vae, device)  # both checked before any training
    check_cache_fits_vae(args.latents, cache, model.vae, model.vae_ckpt, "rerun `make latents`")
    classifier, _ = load_model(args.classifier, Classifier, device)
    (train_images, _), (test_images, _) = load_mnist_splits(args.data_dir)
    report = run_length_study(preset, cache, TestSetFID(classifier, test_images, device), train_images,
                              run_context(args, device), lengths=args.steps or default_lengths(preset),
                              unet_path=args.unet, vae_path=args.vae, work_dir=args.work_dir,
                              num_images=args.num_images)
    print(write_report(report, out_dir))
    print(f"wrote {out_dir / 'training_length.json'}, {out_dir / 'training_length.md'} and "
          f"{out_dir / 'training_length.png'}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
