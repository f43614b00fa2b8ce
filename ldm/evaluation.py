"""Scoring sets of images against real MNIST in the classifier's feature space.

One `RealFeatures` holds what every row is compared with (test-set statistics for the Fréchet
distance and the precision/recall manifold, training features for the memorisation check);
`score_images` turns one set of images into one row of the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .classifier import Classifier
from .data import NUM_CLASSES, to_float
from .latents import encode_images
from .metrics import (classifier_features, feature_statistics, frechet_distance, nearest_neighbour_distance,
                      precision_recall)
from .pipeline import to_uint8
from .utils import LdmError
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
        raise LdmError(f"--num-images {n}: only {len(train_images)} training images for the Validation row")
    return train_images[torch.randperm(len(train_images), generator=generator)[:n]]


def random_baseline(train_images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise with the training pixels' mean and std, clipped to the pixel range."""
    pixels = to_float(train_images)
    return to_uint8(torch.randn((n, 1, 28, 28), generator=generator) * pixels.std() + pixels.mean())


@torch.no_grad()
def vae_prior_baseline(vae: VAE, n: int, generator: torch.Generator, device: torch.device,
                       batch_size: int = 1000) -> torch.Tensor:
    """The VAE's decoder applied to z ~ N(0, I): what the latent model has to beat."""
    shape = (vae.config.latent_channels, 7, 7)
    return torch.cat([to_uint8(vae.decode(torch.randn((min(batch_size, n - i), *shape), generator=generator).to(device)))
                      for i in range(0, n, batch_size)])


@torch.no_grad()
def vae_reconstructions(vae: VAE, images: torch.Tensor, generator: torch.Generator, device: torch.device,
                        batch_size: int = 1000) -> torch.Tensor:
    """Images through the VAE, decoding z = μ + σ·ε: the best a model of the latents can reach."""
    mean, logvar = encode_images(vae, images, device, batch_size)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
    return torch.cat([to_uint8(vae.decode(z[i:i + batch_size].to(device))) for i in range(0, len(z), batch_size)])


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
