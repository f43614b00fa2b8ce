"""Training-recipe study (`make recipes`): the preset's UNet recipe and variants of it, each with
one change, trained on `make all`'s latents for the same wall-clock budget, then scored by FID in
the three rows of `make all` (random digits, "no label", digits 0-9 with recognition) from the
same noise at each of --seeds, so that differences to the baseline are paired.

A finished recipe is reused while its settings are unchanged (--work-dir), so the study grows a
recipe, or a seed, at a time. Writes reports/recipes.json, reports/recipes.md and
reports/recipes.png (FID of 1,000 images against training wall-clock). ldm/recipe_study.py
describes the study; its RECIPES are the candidates.

    python -m scripts.recipes --data-dir ../shared/data/mnist                       # every recipe, 10 min each
    python -m scripts.recipes --data-dir ../shared/data/mnist --recipes bf16 --budget-minutes 5
"""

from __future__ import annotations

import math
from pathlib import Path

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_preset_arg, add_runtime_args, add_study_dirs,
                     non_negative_int, positive_float, prepare, run_context, scored_images)
from ldm.data import load_mnist_splits
from ldm.errors import ConfigError
from ldm.latents import check_cache_fits_vae, load_latent_cache
from ldm.launch import run
from ldm.recipe_study import RECIPES, StudyInputs, run_recipe_study, write_report
from ldm.vae import VAE


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae")
    parser.add_argument("--latents", default="checkpoints/latents.safetensors", help="latent cache to train on")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="RECIPE",
                        help=f"recipes to run (the baseline always runs): {', '.join(RECIPES)}")
    parser.add_argument("--budget-minutes", type=positive_float, default=10.0,
                        help="training wall-clock of every recipe, checks excluded")
    parser.add_argument("--num-images", type=scored_images, default=10_000, help="images per FID row")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1],
                        help="noise seeds every row is sampled with (at least 2 to see the noise)")
    add_study_dirs(parser, "recipes", "each recipe's UNet, log and scores")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    out_dir = Path(args.out_dir)
    if not math.isfinite(args.budget_minutes):
        raise ConfigError("budget-minutes", args.budget_minutes, "must be finite")
    device, preset = prepare(args, out_dir / "recipes.json", Path(args.work_dir) / "baseline.safetensors")
    cache = load_latent_cache(args.latents, device)
    vae, vae_ckpt = load_model(args.vae, VAE, device)
    check_cache_fits_vae(args.latents, cache, vae, vae_ckpt, "rerun `make latents`")
    classifier, _ = load_model(args.classifier, Classifier, device)
    train_images, test_images = (split[0].to(device) for split in load_mnist_splits(args.data_dir))
    inputs = StudyInputs(preset, cache, vae, vae_ckpt, classifier, train_images, test_images, Path(args.vae))
    report = run_recipe_study(inputs, run_context(args, device), recipes=args.recipes,
                              budget_seconds=60 * args.budget_minutes, work_dir=args.work_dir,
                              num_images=args.num_images, seeds=sorted(set(args.seeds)))
    print(write_report(report, out_dir))
    print(f"wrote {out_dir / 'recipes.json'}, {out_dir / 'recipes.md'} and {out_dir / 'recipes.png'}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
