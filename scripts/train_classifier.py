"""Stage 1: train the MNIST CNN whose 128-d features define the Fréchet distance. Its metrics log
(training loss; held-out loss and accuracy on test images) and curves go beside --out.

    python -m scripts.train_classifier --data-dir ../shared/data/mnist
    python -m scripts.train_classifier --data-dir ../shared/data/mnist --preset smoke --out /tmp/c.safetensors  # seconds
"""

from __future__ import annotations

from ldm.cli import (StageParser, add_data_arg, add_preset_arg, add_runtime_args, add_training_args, prepare,
                     run_context, with_overrides)
from ldm.data import load_mnist_splits
from ldm.launch import run
from ldm.outputs import written_together
from ldm.run_lock import run_lock
from ldm.stages import train_classifier
from ldm.training_files import TrainingFiles


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_training_args(parser, out="checkpoints/classifier.safetensors", unit="images")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    files = TrainingFiles.beside(args.out, args.log, args.curves)
    device, preset = prepare(args, *files.outputs, files.snapshot)
    with run_lock(files.checkpoint):  # one run per output
        monitor = files.monitor(args.tensorboard)
        settings = with_overrides(preset.classifier, args, "steps", "batch_size", "validate_every")
        train, test = (tuple(t.to(device) for t in split) for split in load_mnist_splits(args.data_dir))
        trained = train_classifier(train, test, settings, run_context(args, device), snapshot_to=files.snapshot,
                                   save_every=args.save_every, monitor=monitor)
        trained.info.update(preset=preset.name, data_dir=args.data_dir)
        with written_together() as outputs:  # the checkpoint and its curves appear together
            trained.save(files.checkpoint, outputs)
            files.draw_curves("classifier", outputs)
        info = trained.info
        print(f"classifier test accuracy: {info['test_accuracy']:.4f} ({info['test_images']} test images, "
              f"trained on {info['train_images']} for {settings.steps} steps); wrote {args.out}")


if __name__ == "__main__":
    run(parser(), main)
