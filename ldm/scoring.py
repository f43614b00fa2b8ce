"""Scoring sets of images against real MNIST in the classifier's feature space.

`Scorer` holds what every row is compared with (test-set statistics for the Fréchet distance
and the precision/recall manifold, training features for the memorisation check) and turns one
set of images into one report row; `TestSetFID` is the FID alone, for studies that score many
sets. The baselines every table is read against are made here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import distributed
from .classifier import Classifier
from .data import IMAGE_SIZE, NUM_CLASSES, to_float, to_uint8
from .errors import ConfigError, check_finite
from .latents import encode_images
from .metrics import feature_statistics, frechet_distance, manifold_radii, nearest_neighbour_distance, precision_recall
from .vae import VAE, reparameterise

# Images per forward pass of the classifier: on a 2-core CPU batches of 100 ran 2.8x faster than
# batches of 1,000 (5,600 against 2,000 images/s, their activations fitting the caches) and gave
# the same features to the bit; a GPU wants large batches.
FEATURE_BATCH = {"cpu": 100, "cuda": 1000}


@torch.no_grad()
def classifier_features(classifier: torch.nn.Module, images: torch.Tensor, device: torch.device,
                        batch_size: int | None = None, progress: bool = False) -> np.ndarray:
    """Images [N x 1 x 28 x 28] in [0, 1] -> [N x D] float64 features, classifier in eval mode,
    in batches of `batch_size` (unset: FEATURE_BATCH of the device). On several processes each
    rank extracts its share of the batches and every rank gets all."""
    classifier.eval()
    batch_size = batch_size or FEATURE_BATCH.get(device.type, 1000)
    chunks = distributed.map_batches(len(images), batch_size,
                                     lambda i, batch: classifier.features(images[batch].to(device)).double().cpu(),
                                     desc="features", progress=progress)
    return check_finite(torch.cat(chunks), "the classifier's features are").numpy()


@dataclass
class RealFeatures:
    test: np.ndarray  # [N_test x D], the reference set
    train: np.ndarray  # [N_train x D], for nearest-neighbour distances
    mu: np.ndarray
    sigma: np.ndarray
    test_to_train: float  # mean distance from a test image to its nearest training image
    test_radii: np.ndarray  # [N_test], the test set's manifold for precision and recall

    @classmethod
    def compute(cls, classifier: Classifier, train_images: torch.Tensor, test_images: torch.Tensor,
                device: torch.device, progress: bool = False) -> "RealFeatures":
        test = classifier_features(classifier, to_float(test_images), device, progress=progress)
        train = classifier_features(classifier, to_float(train_images), device, progress=progress)
        mu, sigma = feature_statistics(test)
        return cls(test, train, mu, sigma, nearest_neighbour_distance(test, train), manifold_radii(test))


class TestSetFID:
    """The FID alone of uint8 images against the test set, for studies that score many sets:
    the test statistics are computed once."""

    def __init__(self, classifier: Classifier, test_images: torch.Tensor, device: torch.device):
        self.classifier, self.device = classifier, device
        self.mu, self.sigma = feature_statistics(classifier_features(classifier, to_float(test_images), device))

    def __call__(self, images: torch.Tensor) -> float:
        features = classifier_features(self.classifier, to_float(images), self.device)
        return frechet_distance(*feature_statistics(features), self.mu, self.sigma)


@dataclass
class Scorer:
    """Scores sets of images against the real features computed once: `scorer(images)` is one
    report row."""
    classifier: Classifier
    real: RealFeatures
    device: torch.device
    progress: bool = False

    @classmethod
    def compute(cls, classifier: Classifier, train_images: torch.Tensor, test_images: torch.Tensor,
                device: torch.device, progress: bool = False) -> "Scorer":
        return cls(classifier, RealFeatures.compute(classifier, train_images, test_images, device, progress),
                   device, progress)

    def __call__(self, images: torch.Tensor, *, labels: torch.Tensor | None = None, from_training_set: bool = False,
                 fid_subset: int | None = None) -> dict:
        return score_images(self.classifier, self.real, images, self.device, labels=labels,
                            from_training_set=from_training_set, fid_subset=fid_subset, progress=self.progress)


def predicted_digits(classifier: Classifier, features: np.ndarray, device: torch.device) -> torch.Tensor:
    """The classifier's verdict [N] on images whose `classifier_features` are given: its head's argmax."""
    with torch.no_grad():
        logits = classifier.head(torch.as_tensor(features, dtype=torch.float32, device=device))
    return logits.argmax(dim=1).cpu()


def classify(classifier: Classifier, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The classifier's verdict [N] on uint8 images [N x 28 x 28]."""
    return predicted_digits(classifier, classifier_features(classifier, to_float(images), device), device)


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
    precision, recall = precision_recall(real.test, features, real_radii=real.test_radii)
    predicted = predicted_digits(classifier, features, device)
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
    z = reparameterise(mean, logvar, torch.randn(mean.shape, generator=generator))
    return torch.cat([to_uint8(vae.decode(z[i:i + batch_size].to(device))) for i in range(0, len(z), batch_size)])
