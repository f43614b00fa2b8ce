"""Stage 6: the FID table. Fréchet distance in the 128-d features of this project's MNIST
classifier (not comparable to Inception FID), against the full test set, with the same number
of images in every row:

  Validation   real training images: the floor
  Random       Gaussian noise with the training pixels' mean and std, clipped to [0, 1]
  VAE          the decoder applied to z ~ N(0, I)
  VAE reconstruction   the Validation images encoded and decoded: the ceiling of latent diffusion
  Diffusion    one row per samples file (scripts/sample.py)

Each row also gets k-NN precision and recall, the classifier's digit histogram, a memorisation
ratio, and for prompted samples how often the classifier recognises the requested digit.
Writes reports/fid.json, reports/fid.md and a PNG grid of each row's first 64 images.

    python -m scripts.evaluate --data-dir ../shared/data/mnist \
        --samples checkpoints/samples_default.safetensors checkpoints/samples_nolabel.safetensors
"""

from __future__ import annotations

from pathlib import Path

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_runtime_args, check_outputs, run_context,
                     scored_images)
from ldm.data import load_mnist_splits
from ldm.distributed import describe_device, is_main
from ldm.fid_table import report_context, score_rows, table_rows, write_report
from ldm.launch import run
from ldm.outputs import written_together
from ldm.samples import load_samples
from ldm.scoring import Scorer
from ldm.vae import VAE


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae")
    parser.add_argument("--samples", nargs="*", default=[], help="samples files from scripts/sample.py, one row each")
    parser.add_argument("--num-images", type=scored_images, default=10_000, help="images per row")
    parser.add_argument("--out-dir", default="reports", help="fid.json, fid.md and grids go here")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    out_dir = Path(args.out_dir)
    check_outputs(args, out_dir / "fid.json", out_dir / "fid.md")
    context = run_context(args)
    # every input is read and checked before any work
    classifier, classifier_ckpt = load_model(args.classifier, Classifier, context.device)
    vae, vae_ckpt = load_model(args.vae, VAE, context.device)
    (train_images, _), (test_images, _) = load_mnist_splits(args.data_dir)
    samples = {path: load_samples(path) for path in args.samples}
    rows = table_rows(train_images, vae, vae_ckpt, samples, args.num_images, seed=context.seed,
                      device=context.device)
    scorer = Scorer.compute(classifier, train_images, test_images, context.device, context.progress)
    results = score_rows(scorer, rows)
    if not is_main():  # every rank scored every row; one writes
        return
    with written_together() as outputs:  # the grids and the report appear together, or none of them
        table = write_report(out_dir, rows, results,
                             report_context(classifier_ckpt, args.num_images, len(test_images), len(train_images),
                                            data_dir=args.data_dir, seed=context.seed,
                                            device=describe_device(context.device)),
                             outputs)
    print(table)
    print(f"wrote {out_dir / 'fid.json'} and {out_dir / 'fid.md'}")


if __name__ == "__main__":
    run(parser(), main)
