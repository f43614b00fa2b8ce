"""Stage 6: the FID table. Fréchet distance in the 128-d features of this project's MNIST
classifier (not comparable to Inception FID), against the full test set, with the same number
of images in every row:

  Validation   real training images: the floor
  Random       Gaussian noise with the training pixels' mean and std, clipped to [0, 1]
  VAE          the decoder applied to z ~ N(0, I)
  Diffusion    one row per samples file (scripts/sample.py)

Writes reports/fid.json, reports/fid.md and a PNG grid of each row's first 64 images.

    python -m scripts.evaluate --data-dir ../shared/data/mnist \
        --samples checkpoints/samples_ddpm.safetensors checkpoints/samples_ddim.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path

import torch

from ldm import __version__
from ldm.checkpoint import load_checkpoint, load_model
from ldm.classifier import Classifier
from ldm.cli import add_data_arg, add_device_args, positive_int, run
from ldm.data import load_mnist, to_float
from ldm.images import save_grid
from ldm.metrics import classifier_features, feature_statistics, frechet_distance
from ldm.pipeline import to_uint8
from ldm.utils import LdmError, check_writable, resolve_device, set_seed, write_text_atomic
from ldm.vae import VAE


def random_baseline(train_images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    pixels = to_float(train_images)
    noise = torch.randn((n, 1, 28, 28), generator=generator) * pixels.std() + pixels.mean()
    return to_uint8(noise)


@torch.no_grad()
def vae_prior_baseline(vae: VAE, n: int, generator: torch.Generator, device: torch.device,
                       batch_size: int = 1000) -> torch.Tensor:
    shape = (vae.config.latent_channels, 7, 7)
    return torch.cat([to_uint8(vae.decode(torch.randn((min(batch_size, n - i), *shape), generator=generator).to(device)))
                      for i in range(0, n, batch_size)])


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown_table(rows: list[dict], n: int, accuracy: float) -> str:
    lines = [f"| row | FID ({n} images) | × floor |", "|---|---:|---:|"]
    floor = rows[0]["fid"]
    lines += [f"| {r['name']} | {r['fid']:.3f} | {r['fid'] / floor:.1f} |" for r in rows]
    lines.append("")
    lines.append(f"Fréchet distance in the 128-d features of this project's MNIST classifier (test accuracy "
                 f"{accuracy:.2%}), reference: the full MNIST test set. "
                 "Not comparable to Inception FID.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    if n > len(train_images):
        raise LdmError(f"--num-images {n}: only {len(train_images)} training images for the Validation row")
    generator = torch.Generator().manual_seed(args.seed)

    rows = [("Validation", train_images[torch.randperm(len(train_images), generator=generator)[:n]], {}),
            ("Random", random_baseline(train_images, n, generator), {}),
            ("VAE", vae_prior_baseline(vae, n, generator, device), {"vae_fingerprint": vae_ckpt.fingerprint})]
    for path in args.samples:
        ckpt = load_checkpoint(path, "samples")
        images = ckpt.tensors["images"]
        if len(images) < n:
            raise LdmError(f"{path}: holds {len(images)} images, the table needs {n} per row (--num-images)")
        rows.append((f"Diffusion {ckpt.info['label']}", images[:n], dict(ckpt.info, file=str(path))))

    progress = not args.no_progress
    mu_ref, sigma_ref = feature_statistics(classifier_features(classifier, to_float(test_images), device,
                                                               progress=progress))
    out_dir = Path(args.out_dir)
    results = []
    for name, images, info in rows:
        mu, sigma = feature_statistics(classifier_features(classifier, to_float(images), device, progress=progress))
        fid = frechet_distance(mu, sigma, mu_ref, sigma_ref)
        grid = out_dir / f"grid_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png"
        save_grid(to_float(images[:64]), grid, nrow=8)
        results.append({"name": name, "fid": fid, "grid": str(grid), **({"source": info} if info else {})})
        print(f"{name:>24}: {fid:8.3f}")

    accuracy = classifier_ckpt.info.get("test_accuracy", float("nan"))
    report = {"rows": results, "num_images": n, "reference": f"MNIST test set ({len(test_images)} images)",
              "classifier_test_accuracy": accuracy, "classifier_fingerprint": classifier_ckpt.fingerprint,
              "data_dir": args.data_dir, "train_images": len(train_images), "seed": args.seed,
              "device": describe_device(device), "torch_version": torch.__version__, "ldm_version": __version__}
    table = markdown_table(results, n, accuracy)
    write_text_atomic(out_dir / "fid.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / "fid.md", f"# FID\n\n{table}\nDevice: {report['device']}; data: {args.data_dir} "
                                          f"({len(train_images)} training images).\n")
    print(table)
    print(f"wrote {out_dir / 'fid.json'} and {out_dir / 'fid.md'}")


if __name__ == "__main__":
    run(main)
