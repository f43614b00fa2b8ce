"""Editing study (`make editing`): image-to-image on MNIST test digits at every strength, prompted
with another digit and through the "no label" branch (how often the classifier recognises the
prompted digit, and the input's own), and inpainting with one half kept (how far the kept pixels
move against the VAE reconstruction, and how often the completed digit is recognised), with and
without RePaint's resampling; then the pictures of image-to-image, inpainting and interpolation.
Run it after `make all`: it reads the classifier, VAE, UNet and guide from checkpoints/
(ldm/editing_study.py describes the study).

Writes reports/editing.{json,md,png} and reports/img2img.png, reports/inpainting.png and
reports/interpolation.png.

    python -m scripts.editing --data-dir ../shared/data/mnist
    python -m scripts.editing --data-dir ../shared/data/mnist --num-images 200 --inpaint-images 100
"""

from __future__ import annotations

from pathlib import Path

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_guide_arg, add_study_dirs,
                     add_unet_runtime_args, check_outputs, positive_int, run_context)
from ldm.data import load_mnist
from ldm.editing_study import PICTURES, draw_pictures, run_editing_study, summary, write_report
from ldm.launch import run
from ldm.pipeline import LatentDiffusion, resolve_guide


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae", "unet")
    add_guide_arg(parser)
    parser.add_argument("--num-images", type=positive_int, default=1000, help="test digits edited image-to-image")
    parser.add_argument("--inpaint-images", type=positive_int, default=300, help="test digits inpainted per setting")
    add_study_dirs(parser, "editing")
    add_unet_runtime_args(parser)
    return parser


def main(args) -> None:
    out_dir = Path(args.out_dir)
    args.guide = resolve_guide(args.unet, args.guide)
    pictures = [out_dir / name for name in PICTURES]
    check_outputs(args, out_dir / "editing.json", *pictures)
    context = run_context(args)
    model = LatentDiffusion.load(args.unet, args.vae, context.device, compile=context.compile, guide_path=args.guide)
    classifier, _ = load_model(args.classifier, Classifier, context.device)
    test_images, test_labels = load_mnist(args.data_dir, "test")
    report = run_editing_study(model, classifier, test_images, test_labels, num_images=args.num_images,
                               inpaint_images=args.inpaint_images, seed=context.seed, device=context.device,
                               progress=context.progress)
    print(write_report(report, out_dir))
    draw_pictures(model, test_images, test_labels, out_dir, context.seed)
    print(summary(report))
    print(f"wrote {out_dir / 'editing.json'}, {out_dir / 'editing.md'}, {out_dir / 'editing.png'} and "
          + ", ".join(map(str, pictures)))


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
