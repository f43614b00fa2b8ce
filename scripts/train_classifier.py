"""Stage 1: train the MNIST CNN whose 128-d features define the Fréchet distance.

    python -m scripts.train_classifier --data-dir ../shared/data/mnist
    python -m scripts.train_classifier --data-dir ../shared/data/mnist --preset smoke --out /tmp/c.safetensors  # seconds
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ldm.checkpoint import fingerprint, save_model
from ldm.classifier import Classifier, ClassifierConfig
from ldm.cli import StageParser, add_data_arg, add_device_args, add_preset_arg, add_training_args, run
from ldm.data import BatchSampler, load_mnist, to_float
from ldm.presets import get_preset
from ldm.snapshot import Snapshot, snapshot_path
from ldm.train import run_training
from ldm.utils import check_writable, resolve_device, set_seed


@torch.no_grad()
def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = sum((model(to_float(images[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def main() -> None:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_training_args(parser, out="checkpoints/classifier.safetensors", unit="images")
    add_device_args(parser)
    args = parser.parse_args()

    check_writable(args.out)
    device = resolve_device(args.device)
    settings = get_preset(args.preset, device).classifier
    steps, batch_size = args.steps or settings.steps, args.batch_size or settings.batch_size
    set_seed(args.seed)
    train_images, train_labels = (t.to(device) for t in load_mnist(args.data_dir, "train"))
    test_images, test_labels = (t.to(device) for t in load_mnist(args.data_dir, "test"))

    model = Classifier(ClassifierConfig()).to(device)
    sampler = BatchSampler(len(train_images), batch_size, args.seed)
    signature = {"stage": "classifier", "steps": steps, "batch_size": batch_size, "lr": settings.lr,
                 "seed": args.seed, "config": dataclasses.asdict(model.config),
                 "data": fingerprint({"images": train_images, "labels": train_labels})}
    snapshot = Snapshot(snapshot_path(args.out), args.save_every, signature, sampler)

    def step_loss(step):
        idx = sampler.next().to(device)
        return F.cross_entropy(model(to_float(train_images[idx])), train_labels[idx]), {}

    run_training(model, step_loss, steps=steps, lr=settings.lr, warmup_steps=min(settings.warmup_steps, steps),
                 snapshot=snapshot, desc="classifier", progress=not args.no_progress)
    test_accuracy = accuracy(model, test_images, test_labels)
    print(f"classifier test accuracy: {test_accuracy:.4f} ({len(test_images)} test images, "
          f"trained on {len(train_images)} for {steps} steps)")
    info = {"test_accuracy": test_accuracy, "train_images": len(train_images), "steps": steps,
            "batch_size": batch_size, "seed": args.seed, "preset": args.preset, "data_dir": args.data_dir}
    save_model(args.out, model, info)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run(main)
