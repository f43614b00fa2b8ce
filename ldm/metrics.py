"""Fréchet distance between Gaussians fitted to classifier features ("FID" in this project's own
128-d MNIST classifier features; not comparable to Inception FID)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N x D] features -> (mean [D], covariance [D x D]), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need an [N x D] array with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix, eigenvalues clamped at 0."""
    eigvals, eigvecs = np.linalg.eigh(matrix)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² = |μ1 - μ2|² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½.

    tr (Σ1 Σ2)^½ is computed through the symmetric matrix Σ1^½ Σ2 Σ1^½, whose eigenvalues are
    those of Σ1 Σ2, with `eigh`; this avoids the complex results of a general `sqrtm`.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"mismatched statistics: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away rounding
    trace_sqrt = np.sqrt(np.clip(eigvals, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


@torch.no_grad()
def classifier_features(classifier: torch.nn.Module, images: torch.Tensor, device: torch.device,
                        batch_size: int = 1000, progress: bool = False) -> np.ndarray:
    """Images [N x 1 x 28 x 28] in [0, 1] -> [N x D] float64 features, classifier in eval mode."""
    classifier.eval()
    chunks = [classifier.features(images[i:i + batch_size].to(device)).double().cpu()
              for i in tqdm(range(0, len(images), batch_size), desc="features", leave=False, disable=not progress)]
    return torch.cat(chunks).numpy()
