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
        --samples checkpoints/samples_ddpm.safetensors checkpoints/samples_ddim.safetensors
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ldm import __version__
from ldm.checkpoint import load_checkpoint, load_model
from ldm.classifier import Classifier
from ldm.cli import StageParser, add_data_arg, add_device_args, positive_int, run
from ldm.data import load_mnist, to_float
from ldm.evaluation import (RealFeatures, class_histogram_table, markdown_table, random_baseline, score_images,
                            vae_prior_baseline, vae_reconstructions, validation_images)
from ldm.images import save_grid
from ldm.utils import LdmError, check_writable, describe_device, resolve_device, set_seed, write_text_atomic
from ldm.vae import VAE


def main() -> None:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    parser.add_argument("--classifier", default="checkpoints/classifier.safetensors", help="feature extractor")
    parser.add_argument("--vae", default="checkpoints/vae.safetensors", help="VAE for the prior baseline")
    parser.add_argument("--samples", nargs="*", default=[], help="samples files from scripts/sample.py, one row each")
    parser.add_argument("--num-images", type=positive_int, default=10_000, help="images per row")
    parser.add_argument("--out-dir", default="reports", help="fid.json, fid.md and grids go here")
    add_device_args(parser)
    args = parser.parse_args()

    check_writable(Path(args.out_dir) / "fid.json")
    device = resolve_device(args.device)
    set_seed(args.seed)
    n = args.num_images
    classifier, classifier_ckpt = load_model(args.classifier, Classifier, device)
    vae, vae_ckpt = load_model(args.vae, VAE, device)
    train_images, _ = load_mnist(args.data_dir, "train")
    test_images, _ = load_mnist(args.data_dir, "test")
    generator = torch.Generator().manual_seed(args.seed)

    diffusion_rows = []
    for path in args.samples:  # checked before any work
        ckpt = load_checkpoint(path, "samples")
        images, labels = ckpt.tensors["images"], ckpt.tensors.get("labels")
        if len(images) < n:
            raise LdmError(f"{path}: holds {len(images)} images, the table needs {n} per row (--num-images)")
        if ckpt.info.get("vae_fingerprint") != vae_ckpt.fingerprint:  # a stale file beside a retrained VAE
            raise LdmError(f"{path}: decoded with VAE {ckpt.info.get('vae_fingerprint')}, not the VAE in {args.vae} "
                           f"({vae_ckpt.fingerprint}); rerun `make sample`")
        diffusion_rows.append((f"Diffusion {ckpt.info['label']}", images[:n],
                               None if labels is None else labels[:n], dict(ckpt.info, file=str(path)), False))
    validation = validation_images(train_images, n, generator)
    vae_source = {"vae_fingerprint": vae_ckpt.fingerprint}
    # (name, images, prompted labels, source, made from training images: no memorisation score)
    rows = [("Validation", validation, None, {}, True),
            ("Random", random_baseline(train_images, n, generator), None, {}, False),
            ("VAE", vae_prior_baseline(vae, n, generator, device), None, vae_source, False),
            ("VAE reconstruction", vae_reconstructions(vae, validation, generator, device), None, vae_source, True),
            *diffusion_rows]

    progress = not args.no_progress
    real = RealFeatures.compute(classifier, train_images, test_images, device, progress=progress)
    out_dir = Path(args.out_dir)
    results = []
    for name, images, labels, info, from_training_set in rows:
        row = {"name": name, **score_images(classifier, real, images, device, labels=labels,
                                            from_training_set=from_training_set, progress=progress)}
        row["grid"] = str(out_dir / f"grid_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png")
        save_grid(to_float(images[:64]), row["grid"], nrow=8)
        results.append(dict(row, source=info) if info else row)
        print(f"{name:>24}: FID {row['fid']:8.3f}, precision {row['precision']:.3f}, recall {row['recall']:.3f}")

    accuracy = classifier_ckpt.info.get("test_accuracy", float("nan"))
    report = {"rows": results, "num_images": n, "reference": f"MNIST test set ({len(test_images)} images)",
              "classifier_test_accuracy": accuracy, "classifier_fingerprint": classifier_ckpt.fingerprint,
              "data_dir": args.data_dir, "train_images": len(train_images), "seed": args.seed,
              "device": describe_device(device), "torch_version": torch.__version__, "ldm_version": __version__}
    table = markdown_table(results)
    notes = (f"{n} images per row. FID: Fréchet distance in the 128-d features of this project's MNIST classifier "
             f"(test accuracy {accuracy:.2%}) against the full test set; not comparable to Inception FID. "
             "Precision/recall: k-NN manifolds, k = 3. Memorisation: mean feature distance to the nearest "
             "training image, divided by the test images' (≈ 1 healthy, → 0 copying). Recognised: the "
             "classifier agrees with the prompted digit.")
    write_text_atomic(out_dir / "fid.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / "fid.md", f"# FID\n\n{table}\n{notes}\n\n## Digits the classifier sees\n\n"
                                          f"{class_histogram_table(results)}\nDevice: {report['device']}; "
                                          f"data: {args.data_dir} ({len(train_images)} training images); "
                                          f"seed {args.seed}; torch {torch.__version__}; ldm {__version__}.\n")
    print(table)
    print(f"wrote {out_dir / 'fid.json'} and {out_dir / 'fid.md'}")


if __name__ == "__main__":
    run(main)
