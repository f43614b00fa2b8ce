"""Stage 2: train the convolutional VAE (loss = reconstruction BCE + β·KL). Its metrics log
(training loss and terms; the same on held-out test images) and curves go beside --out.

    python -m scripts.train_vae --data-dir ../shared/data/mnist
    python -m scripts.train_vae --data-dir ../shared/data/mnist --preset smoke --out /tmp/v.safetensors  # seconds
"""

from __future__ import annotations

from ldm.cli import (StageParser, add_data_arg, add_preset_arg, add_runtime_args, add_training_args, prepare,
                     run_context, with_overrides)
from ldm.data import load_mnist_splits
from ldm.distributed import is_main
from ldm.images import save_rows
from ldm.launch import run
from ldm.outputs import written_together
from ldm.run_lock import run_lock
from ldm.stages import reconstruction_rows, train_vae
from ldm.training_files import TrainingFiles


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
    files = TrainingFiles.beside(args.out, args.log, args.curves)
    device, preset = prepare(args, *files.outputs, files.snapshot, args.grid)
    with run_lock(files.checkpoint):  # one run per output
        monitor = files.monitor(args.tensorboard)
        settings = with_overrides(preset.vae, args, "steps", "batch_size", "validate_every")
        train_images, test_images = (split[0].to(device) for split in load_mnist_splits(args.data_dir))
        trained = train_vae(train_images, test_images, preset.vae_model, settings, run_context(args, device),
                            snapshot_to=files.snapshot, save_every=args.save_every, monitor=monitor)
        trained.info.update(preset=preset.name, data_dir=args.data_dir)
        if is_main():
            with written_together() as outputs:  # the checkpoint, its grid and its curves appear together
                trained.save(files.checkpoint, outputs)
                save_rows(reconstruction_rows(trained.model, test_images), args.grid, outputs)
                files.draw_curves("VAE", outputs)
        print("vae test: " + ", ".join(f"{k} {v:.4f}" for k, v in trained.info["test"].items()))
        print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    run(parser(), main)
