"""Stage 2: train the convolutional VAE (loss = reconstruction BCE + β·KL). Its metrics log
(training loss and terms; the same on held-out test images) and curves go beside --out.

    python -m scripts.train_vae --data-dir ../shared/data/mnist
    python -m scripts.train_vae --data-dir ../shared/data/mnist --preset smoke --out /tmp/v.safetensors  # seconds
"""

from __future__ import annotations

from ldm.cli import (StageParser, add_data_arg, add_preset_arg, add_runtime_args, add_training_args, draw_curves,
                     prepare, run, training_monitor, training_outputs, with_overrides)
from ldm.data import load_mnist
from ldm.stages import train_vae
from ldm.utils import written_together


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_training_args(parser, out="checkpoints/vae.safetensors", unit="images")
    parser.add_argument("--grid", default="reports/vae_reconstructions.png",
                        help="PNG of test images (odd rows) over their reconstructions (even rows)")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    device, preset = prepare(args, *training_outputs(args), args.grid)
    monitor = training_monitor(args)
    settings = with_overrides(preset.vae, args, "steps", "batch_size", "validate_every")
    train_images = load_mnist(args.data_dir, "train")[0].to(device)
    test_images = load_mnist(args.data_dir, "test")[0].to(device)
    with written_together():  # the checkpoint, its grid and its curves appear together
        info = train_vae(train_images, test_images, preset.vae_model, settings, args.out, args.grid, seed=args.seed,
                         device=device, save_every=args.save_every, progress=not args.no_progress,
                         info={"preset": preset.name, "data_dir": args.data_dir}, monitor=monitor)
        draw_curves(args, "VAE")
    print("vae test: " + ", ".join(f"{k} {v:.4f}" for k, v in info["test"].items()))
    print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    run(parser(), main)
