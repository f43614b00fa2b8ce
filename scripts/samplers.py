"""Sampler study (`make samplers`): FID against the number of model evaluations (NFE) for DDIM,
DPM-Solver++(2M) in log-SNR (and, asked for, in time spacing), and its stochastic form (η = 1), at
10, 15, 20 and 30 NFE, each on two seeds of random digits and of the "no label" branch (mean ±
standard deviation), beside the Validation floor on as many real subsets of the same size;
images/s for each row; the default of each branch. Run it after `make all`: it reads the classifier,
VAE and UNet from checkpoints/ (ldm/sampler_study.py describes the study).

Writes reports/samplers.json (one object per row), reports/samplers.md and reports/samplers.png
(FID against NFE with error bars).

    python -m scripts.samplers --data-dir ../shared/data/mnist                      # 5,000 images, seeds 0 1
    python -m scripts.samplers --data-dir ../shared/data/mnist --num-images 500 --seeds 0 1 --nfe 5 10
    python -m scripts.samplers --data-dir ../shared/data/mnist --families dpm++2m dpm++2m-sde --nfe 10 20
"""

from __future__ import annotations

from pathlib import Path

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_study_dirs, add_unet_runtime_args,
                     check_outputs, fid_images, positive_int, seed)
from ldm.data import load_mnist_splits
from ldm.launch import run
from ldm.pipeline import BATCH_SIZE, LatentDiffusion
from ldm.runtime import resolve_device
from ldm.sampler_study import DEFAULT_FAMILIES, FAMILIES, NFES, SEEDS, run_sampler_study, write_report


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae", "unet")
    parser.add_argument("--num-images", type=fid_images, default=5000, help="images per row and seed")
    parser.add_argument("--seeds", type=seed, nargs="+", default=list(SEEDS), help="seeds of every row")
    parser.add_argument("--nfe", type=positive_int, nargs="+", default=list(NFES), help="model evaluations per image")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(DEFAULT_FAMILIES), metavar="FAMILY",
                        help="samplers to compare: " + ", ".join(FAMILIES))
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                        help="images per sampling batch (the images depend on it)")
    add_study_dirs(parser, "samplers")
    add_unet_runtime_args(parser)
    return parser


def main(args) -> None:
    out_dir = Path(args.out_dir)
    check_outputs(args, out_dir / "samplers.json")
    device = resolve_device(args.device)
    model = LatentDiffusion.load(args.unet, args.vae, device, compile=args.compile)
    classifier, _ = load_model(args.classifier, Classifier, device)
    (train_images, _), (test_images, _) = load_mnist_splits(args.data_dir)
    report = run_sampler_study(model, classifier, train_images, test_images, num_images=args.num_images,
                               nfes=args.nfe, seeds=args.seeds, families=args.families, batch_size=args.batch_size,
                               device=device, progress=not args.no_progress)
    print(write_report(report, out_dir))
    print(f"wrote {out_dir / 'samplers.json'}, {out_dir / 'samplers.md'} and {out_dir / 'samplers.png'}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
