"""Scoring sets of images against real MNIST in the classifier's feature space, and every report
table built from the scores.

One `RealFeatures` holds what every row is compared with (test-set statistics for the Fréchet
distance and the precision/recall manifold, training features for the memorisation check);
`score_images` turns one set of images into one row; `fid_report` is the table of `make all`,
`bench_markdown` the table of `make bench`; `row_name` names a row of samples from how they
were made (`samples_row_name`: from what a samples file records).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, distributed
from .checkpoint import Checkpoint, check_made_with_vae
from .classifier import Classifier
from .data import IMAGE_SIZE, NUM_CLASSES, to_float, to_uint8
from .images import save_grid
from .latents import encode_images
from .metrics import (classifier_features, feature_statistics, frechet_distance, nearest_neighbour_distance,
                      precision_recall)
from .samples import load_samples
from .sampling import SamplerConfig
from .utils import ConfigError, LdmError, describe_device, is_number, write_text_atomic, written_together
from .vae import VAE


@dataclass
class RealFeatures:
    test: np.ndarray  # [N_test x D], the reference set
    train: np.ndarray  # [N_train x D], for nearest-neighbour distances
    mu: np.ndarray
    sigma: np.ndarray
    test_to_train: float  # mean distance from a test image to its nearest training image

    @classmethod
    def compute(cls, classifier: Classifier, train_images: torch.Tensor, test_images: torch.Tensor,
                device: torch.device, progress: bool = False) -> "RealFeatures":
        test = classifier_features(classifier, to_float(test_images), device, progress=progress)
        train = classifier_features(classifier, to_float(train_images), device, progress=progress)
        mu, sigma = feature_statistics(test)
        return cls(test, train, mu, sigma, nearest_neighbour_distance(test, train))


class TestSetFID:
    """The FID alone of uint8 images against the test set, for studies that score many sets:
    the test statistics are computed once."""

    def __init__(self, classifier: Classifier, test_images: torch.Tensor, device: torch.device):
        self.classifier, self.device = classifier, device
        self.mu, self.sigma = feature_statistics(classifier_features(classifier, to_float(test_images), device))

    def __call__(self, images: torch.Tensor) -> float:
        features = classifier_features(self.classifier, to_float(images), self.device)
        return frechet_distance(*feature_statistics(features), self.mu, self.sigma)


def score_images(classifier: Classifier, real: RealFeatures, images: torch.Tensor, device: torch.device, *,
                 labels: torch.Tensor | None = None, from_training_set: bool = False, fid_subset: int | None = None,
                 progress: bool = False) -> dict:
    """One report row for uint8 images [N x 28 x 28].

    fid; precision/recall (k = 3) against the test set; class_counts, the classifier's verdict
    on every image (a missing or over-produced digit shows here); memorisation, the mean distance
    to the nearest training image divided by the test images' (≈ 1 is healthy, → 0 is copying;
    not defined for images taken from the training set); with prompted `labels`, recognised, the
    fraction classified as the requested digit, overall and per digit; with `fid_subset` < N,
    fid_<subset>, the FID of the first `fid_subset` images, to compare rows of different sizes.
    """
    features = classifier_features(classifier, to_float(images), device, progress=progress)
    mu, sigma = feature_statistics(features)
    precision, recall = precision_recall(real.test, features)
    with torch.no_grad():
        logits = classifier.head(torch.as_tensor(features, dtype=torch.float32, device=device))
    predicted = logits.argmax(dim=1).cpu()
    row = {"fid": frechet_distance(mu, sigma, real.mu, real.sigma), "precision": precision, "recall": recall,
           "class_counts": torch.bincount(predicted, minlength=NUM_CLASSES).tolist(),
           "memorisation": None if from_training_set
           else nearest_neighbour_distance(features, real.train) / real.test_to_train}
    if fid_subset is not None and len(images) > fid_subset:
        row[f"fid_{fid_subset}"] = frechet_distance(*feature_statistics(features[:fid_subset]), real.mu, real.sigma)
    if labels is not None:
        hits = (predicted == labels.cpu()).double()
        row["recognised"] = hits.mean().item()
        row["recognised_per_digit"] = [hits[labels.cpu() == d].mean().item() if (labels == d).any() else None
                                       for d in range(NUM_CLASSES)]
    return row


def validation_images(train_images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n real training images in random order: the floor every row is compared with."""
    if n > len(train_images):
        raise ConfigError("num_images", n, f"only {len(train_images)} training images for the Validation row")
    return train_images[torch.randperm(len(train_images), generator=generator)[:n]]


def random_baseline(train_images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise with the training pixels' mean and std, clipped to the pixel range."""
    pixels = to_float(train_images)
    return to_uint8(torch.randn((n, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator) * pixels.std() + pixels.mean())


@torch.no_grad()
def vae_prior_baseline(vae: VAE, n: int, generator: torch.Generator, device: torch.device,
                       batch_size: int = 1000) -> torch.Tensor:
    """The VAE's decoder applied to z ~ N(0, I): what the latent model has to beat."""
    return torch.cat([to_uint8(vae.decode(torch.randn((min(batch_size, n - i), *vae.latent_shape),
                                                      generator=generator).to(device)))
                      for i in range(0, n, batch_size)])


@torch.no_grad()
def vae_reconstructions(vae: VAE, images: torch.Tensor, generator: torch.Generator, device: torch.device,
                        batch_size: int = 1000) -> torch.Tensor:
    """Images through the VAE, decoding z = μ + σ·ε: the best a model of the latents can reach."""
    mean, logvar = encode_images(vae, images, device, batch_size)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
    return torch.cat([to_uint8(vae.decode(z[i:i + batch_size].to(device))) for i in range(0, len(z), batch_size)])


# ---- naming rows

def prompt_name(digit: int | str, guidance: float | None, conditional: bool) -> str:
    """How images were prompted, as reports say it ("" for an unconditional UNet)."""
    if digit == "none":
        return "no label" if conditional else ""
    prompt = {"all": "digits 0-9", "any": "random digits"}.get(digit, f"digit {digit}")
    return prompt + ("" if digit == "any" and guidance == 1 else f", guidance {guidance:g}")


def row_name(sampler: SamplerConfig, digit: int | str, guidance: float | None, conditional: bool) -> str:
    """A row of samples named by how they were made: "DDPM-100, random digits"."""
    prompt = prompt_name(digit, guidance, conditional)
    return sampler.label + (f", {prompt}" if prompt else "")


def samples_row_name(info: dict) -> str:
    """`row_name` from what a samples file records."""
    return row_name(SamplerConfig(**info["sampler"]), info["digit"], info["guidance"], info["conditional"])


# ---- the FID table of `make all`

def fid_report(classifier: Classifier, classifier_ckpt: Checkpoint, vae: VAE, vae_ckpt: Checkpoint,
               train_images: torch.Tensor, test_images: torch.Tensor, samples: list[str | os.PathLike], n: int, *,
               seed: int, device: torch.device, out_dir: str | os.PathLike, data_dir: str,
               progress: bool = False) -> str:
    """Score the Validation floor, the Random and VAE baselines, the VAE reconstructions and one
    row per samples file, `n` images each; write fid.json, fid.md and a grid of each row's first 64
    images into `out_dir` (on rank 0, once every row is scored); return the table. Samples files
    are checked before any work."""
    generator = torch.Generator().manual_seed(seed)
    diffusion_rows = []
    for path in samples:
        loaded = load_samples(path)
        images, labels = loaded.images, loaded.labels
        if len(images) < n:
            raise LdmError(f"{path}: holds {len(images)} images, the table needs {n} per row")
        # a stale file beside a retrained VAE
        check_made_with_vae(path, loaded.info["vae_fingerprint"], vae_ckpt, "rerun `make sample`")
        diffusion_rows.append((f"Diffusion {samples_row_name(loaded.info)}", images[:n],
                               None if labels is None else labels[:n], dict(loaded.info, file=str(path)), False))
    validation = validation_images(train_images, n, generator)
    vae_source = {"vae_fingerprint": vae_ckpt.fingerprint}
    # (name, images, prompted labels, source, made from training images: no memorisation score)
    rows = [("Validation", validation, None, {}, True),
            ("Random", random_baseline(train_images, n, generator), None, {}, False),
            ("VAE", vae_prior_baseline(vae, n, generator, device), None, vae_source, False),
            ("VAE reconstruction", vae_reconstructions(vae, validation, generator, device), None, vae_source, True),
            *diffusion_rows]

    real = RealFeatures.compute(classifier, train_images, test_images, device, progress=progress)
    out_dir = Path(out_dir)
    results = []
    for name, images, labels, info, from_training_set in rows:
        row = {"name": name, **score_images(classifier, real, images, device, labels=labels,
                                            from_training_set=from_training_set, progress=progress)}
        row["grid"] = str(out_dir / f"grid_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png")
        results.append(dict(row, source=info) if info else row)
        print(f"{name:>24}: FID {row['fid']:8.3f}, precision {row['precision']:.3f}, recall {row['recall']:.3f}")

    accuracy = classifier_ckpt.info.get("test_accuracy")
    accuracy = accuracy if is_number(accuracy) else float("nan")  # only reported
    report = {"rows": results, "num_images": n, "reference": f"MNIST test set ({len(test_images)} images)",
              "classifier_test_accuracy": accuracy, "classifier_fingerprint": classifier_ckpt.fingerprint,
              "data_dir": data_dir, "train_images": len(train_images), "seed": seed,
              "device": describe_device(device), "torch_version": torch.__version__, "ldm_version": __version__}
    table = markdown_table(results)
    notes = (f"{n} images per row. FID: Fréchet distance in the 128-d features of this project's MNIST classifier "
             f"(test accuracy {accuracy:.2%}) against the full test set; not comparable to Inception FID. "
             "Precision/recall: k-NN manifolds, k = 3. Memorisation: mean feature distance to the nearest "
             "training image, divided by the test images' (≈ 1 healthy, → 0 copying). Recognised: the "
             "classifier agrees with the prompted digit.")
    if not distributed.is_main():  # every rank scored every row; one writes
        return table
    with written_together():  # the grids and the report appear together, or none of them
        for (_, images, *_), row in zip(rows, results):
            save_grid(images[:64], row["grid"], nrow=8)
        write_text_atomic(out_dir / "fid.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out_dir / "fid.md", f"# FID\n\n{table}\n{notes}\n\n## Digits the classifier sees\n\n"
                                              f"{class_histogram_table(results)}\nDevice: {report['device']}; "
                                              f"data: {data_dir} ({len(train_images)} training images); "
                                              f"seed {seed}; torch {torch.__version__}; ldm {__version__}.\n")
    return table


# ---- tables

def markdown_table(rows: list[dict]) -> str:
    """rows: dicts with name and score_images' keys; the first row is the floor."""
    floor = rows[0]["fid"]
    lines = ["| row | FID | × floor | precision | recall | memorisation | recognised |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        memo = "—" if r["memorisation"] is None else f"{r['memorisation']:.2f}"
        recognised = f"{r['recognised']:.1%}" if "recognised" in r else "—"
        lines.append(f"| {r['name']} | {r['fid']:.3f} | {r['fid'] / floor:.1f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {memo} | {recognised} |")
    return "\n".join(lines) + "\n"


def class_histogram_table(rows: list[dict]) -> str:
    """How often the classifier sees each digit in each row."""
    lines = ["| row | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " |",
             "|---|" + "---:|" * NUM_CLASSES]
    lines += [f"| {r['name']} | " + " | ".join(str(c) for c in r["class_counts"]) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def bench_markdown(report: dict) -> str:
    """The table of `make bench` (ldm/bench.py): every row beside the floor at its own size."""
    n, subset = report["num_images"], report["subset"]
    floor = report["rows"][0]
    lines = ["# Benchmark", "",
             f"{report['device']}; preset {report['preset']}; data {report['data_dir']} "
             f"({report['train_images']} training images); seed {report['seed']}; torch {report['torch_version']}.",
             f"FID in this project's classifier features against the MNIST test set, {n} images per row unless "
             f"the row says otherwise; FID@{subset} scores every row's first {subset} images, for comparison with "
             "the smaller rows. Floor: real training images. \"random digits\": each image prompted with a digit "
             "drawn from the training label frequencies, at guidance 1; \"no label\": the unconditional branch.", "",
             f"| study | row | images | FID | × floor | FID@{subset} | precision | recall | recognised | images/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor_sub = floor.get(f"fid_{subset}", floor["fid"])
    for r in report["rows"]:
        fid_sub = r.get(f"fid_{subset}", r["fid"] if r["images"] == subset else None)
        same_size_floor = floor["fid"] if r["images"] == n else floor_sub
        lines.append(
            f"| {r['study']} | {r['name']} | {r['images']} | {r['fid']:.2f} | {r['fid'] / same_size_floor:.1f} | "
            + (f"{fid_sub:.2f}" if fid_sub is not None else "—")
            + f" | {r['precision']:.3f} | {r['recall']:.3f} | "
            + (f"{r['recognised']:.1%}" if "recognised" in r else "—") + " | "
            + (f"{r['images_per_second']:.1f}" if "images_per_second" in r else "—") + " |")
    guided = [r for r in report["rows"] if r["study"] == "guidance"]
    if guided:
        lines += ["", "Recognised, per prompted digit:", "",
                  "| prompts | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " |",
                  "|---|" + "---:|" * NUM_CLASSES]
        lines += [f"| guidance {r['guidance']:g} | "
                  + " | ".join("—" if v is None else f"{v:.1%}" for v in r["recognised_per_digit"]) + " |"
                  for r in guided]
    trained = [r for r in report["rows"] if r["study"] == "training"]
    if trained:
        lines += ["", f"Training study: {trained[0]['train_steps']} steps each, "
                      f"{trained[0]['latents_per_second']:.0f} latents/s for the first."]
    return "\n".join(lines) + "\n"
