"""Benchmark (`make bench`): samplers, guidance and training choices, each scored in one run
against the same classifier, with the Validation floor measured at the same number of images
(the studies are described in ldm/bench.py). Run it after `make all`: it reads the classifier,
VAE, UNet and latent cache from checkpoints/.

Writes reports/bench.json, reports/bench.md, reports/bench_digits.png (one row per digit) and
reports/bench_process.png (x̂_0 across the chain). Row sizes come from the preset's `bench`
settings; with the cpu preset DDPM-1000 rows use a subset, and every row is also scored on that
subset so that all rows can be compared at one size.

    python -m scripts.bench --data-dir ../shared/data/mnist
    python -m scripts.bench --data-dir ../shared/data/mnist --preset smoke --skip-training   # a quick look
"""

from __future__ import annotations

from pathlib import Path

from ldm.bench import BenchInputs, run_bench
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_preset_arg, add_study_dirs,
                     add_unet_runtime_args, prepare, run_context, scored_images)
from ldm.launch import run


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae", "unet", "latents")
    parser.add_argument("--num-images", type=scored_images, help="images per row (unset: the preset's)")
    parser.add_argument("--skip-training", action="store_true", help="leave out the training-choice study")
    add_study_dirs(parser, "bench", "UNets of the training study")
    add_unet_runtime_args(parser)
    return parser


def main(args) -> None:
    out_dir, work_dir = Path(args.out_dir), Path(args.work_dir)
    device, preset = prepare(args, out_dir / "bench.json", work_dir / "unet.safetensors")
    inputs = BenchInputs(args.data_dir, args.classifier, args.vae, args.unet, args.latents)
    table = run_bench(preset, inputs, run_context(args, device), num_images=args.num_images or preset.bench.images,
                      skip_training=args.skip_training, out_dir=out_dir, work_dir=work_dir)
    print(table)
    print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}")

if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
