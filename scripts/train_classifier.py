"""Stage 1: train the MNIST CNN whose 128-d features define the Fréchet distance. Its metrics log
(training loss; held-out loss and accuracy on test images) and curves go beside --out.

    python -m scripts.train_classifier --data-dir ../shared/data/mnist
    python -m scripts.train_classifier --data-dir ../shared/data/mnist --preset smoke --out /tmp/c.safetensors  # seconds
"""

from __future__ import annotations

from ldm.cli import (StageParser, add_data_arg, add_preset_arg, add_runtime_args, add_training_args, draw_curves,
                     prepare, run, training_monitor, training_outputs, with_overrides)
from ldm.data import load_mnist
from ldm.stages import train_classifier
from ldm.utils import written_together


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_training_args(parser, out="checkpoints/classifier.safetensors", unit="images")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    device, preset = prepare(args, *training_outputs(args))
    monitor = training_monitor(args)
    settings = with_overrides(preset.classifier, args, "steps", "batch_size", "validate_every")
    train = tuple(t.to(device) for t in load_mnist(args.data_dir, "train"))
    test = tuple(t.to(device) for t in load_mnist(args.data_dir, "test"))
    with written_together():  # the checkpoint and its curves appear together
        info = train_classifier(train, test, settings, args.out, seed=args.seed, device=device,
                                save_every=args.save_every, progress=not args.no_progress,
                                info={"preset": preset.name, "data_dir": args.data_dir}, monitor=monitor)
        draw_curves(args, "classifier")
    print(f"classifier test accuracy: {info['test_accuracy']:.4f} ({info['test_images']} test images, "
          f"trained on {info['train_images']} for {settings.steps} steps); wrote {args.out}")


if __name__ == "__main__":
    run(parser(), main)
