"""Guidance study (`make guidance`): classifier-free guidance on every step against guidance on an
interval of noise levels only (Kynkäänniemi et al. 2024), at several scales, on digits 0-9 with
the default sampler, and with a guide each at several autoguidance weights (Karras et al. 2024),
"no label" too; FID and recognition of each, several seeds from the same noise. Run it after
`make all`: it reads the classifier, VAE, UNet and guide from checkpoints/ (ldm/guidance_study.py
describes the study and how it chooses).

Writes reports/guidance.json, reports/guidance.md and reports/guidance.png (FID against
recognition).

    python -m scripts.guidance --data-dir ../shared/data/mnist                     # 5,000 images, seeds 0 1
    python -m scripts.guidance --data-dir ../shared/data/mnist --scales 2 3 --interval -2 2 --interval 0 4
    python -m scripts.guidance --data-dir ../shared/data/mnist --scales 1.25 --interval -2 2 --autoguidance 1 1.25 1.5
"""

from __future__ import annotations

from pathlib import Path

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_guide_arg, add_study_dirs,
                     add_unet_runtime_args, check_outputs, positive_float, scored_images, seed)
from ldm.data import load_mnist_splits
from ldm.errors import LdmError
from ldm.guidance_study import AUTOGUIDANCE, INTERVALS, SCALES, SEEDS, run_guidance_study, settings, write_report
from ldm.launch import run
from ldm.pipeline import LatentDiffusion, resolve_guide
from ldm.runtime import resolve_device
from ldm.sampling import SamplerConfig


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_checkpoint_args(parser, "classifier", "vae", "unet")
    parser.add_argument("--num-images", type=scored_images, default=5000, help="images per row and seed")
    parser.add_argument("--seeds", type=seed, nargs="+", default=list(SEEDS), help="seeds of every row")
    parser.add_argument("--scales", dest="guidance", type=positive_float, nargs="+", default=list(SCALES),
                        help="guidance scales")
    parser.add_argument("--interval", dest="guidance_interval", type=float, nargs=2, action="append",
                        metavar=("LOW", "HIGH"),
                        help="guide only where λ = log(α/σ) is in [LOW, HIGH]; repeat for several (unset: "
                             + ", ".join("{:g} {:g}".format(*i) for i in INTERVALS) + "); guidance on every step "
                             "is always measured")
    add_guide_arg(parser)
    parser.add_argument("--autoguidance", type=float, nargs="+",
                        help="autoguidance weights, each with every scale and interval, and the \"no label\" "
                             "branch at each (needs a guide; unset: " + " ".join(f"{w:g}" for w in AUTOGUIDANCE)
                             + " with a guide, else 1)")
    add_study_dirs(parser, "guidance")
    add_unet_runtime_args(parser)
    return parser


def main(args) -> None:
    out_dir = Path(args.out_dir)
    args.guide = resolve_guide(args.unet, args.guide)  # a file, so that no output may replace it
    check_outputs(args, out_dir / "guidance.json")
    device = resolve_device(args.device)
    model = LatentDiffusion.load(args.unet, args.vae, device, compile=args.compile, guide_path=args.guide)
    if not model.num_classes:
        raise LdmError(f"{args.unet}: this UNet is unconditional; there is no guidance to study")
    intervals = [None, *(INTERVALS if args.guidance_interval is None else map(tuple, args.guidance_interval))]
    weights = args.autoguidance or (AUTOGUIDANCE if model.guide is not None else [1.0])
    prompts = settings(args.guidance, intervals, tuple(dict.fromkeys(weights)))
    for prompt in prompts:  # checked as every Prompt is, and against the model
        model.prompt(prompt.digit, prompt.guidance, prompt.guidance_interval, prompt.autoguidance)
    classifier, _ = load_model(args.classifier, Classifier, device)
    (train_images, _), (test_images, _) = load_mnist_splits(args.data_dir)
    report = run_guidance_study(model, classifier, train_images, test_images, num_images=args.num_images, prompts=prompts,
                                seeds=sorted(set(args.seeds)), sampler=SamplerConfig(), device=device,
                                progress=not args.no_progress)
    print(write_report(report, out_dir))
    print(f"wrote {out_dir / 'guidance.json'}, {out_dir / 'guidance.md'} and {out_dir / 'guidance.png'}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
