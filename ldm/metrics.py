"""Sample-quality metrics on feature vectors (here the 128-d features of this project's MNIST
classifier, scoring.py): the Fréchet distance ("FID"; not comparable to Inception FID), k-NN
precision and recall, and nearest-neighbour distances for a memorisation check. Pure functions
of arrays."""

from __future__ import annotations

import numpy as np
import torch


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


# ---- nearest-neighbour metrics

def _min_distances(queries: torch.Tensor, reference: torch.Tensor, k: int = 1, exclude_self: bool = False,
                   chunk: int = 2048) -> torch.Tensor:
    """[N] distance from each query row to its k-th nearest reference row (Euclidean).

    Computed in chunks so that 10k x 60k distances never sit in memory at once. With
    exclude_self, queries are the reference itself and each row's zero distance is skipped.
    """
    out = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start:start + chunk], reference)  # (chunk, M)
        if exclude_self:
            rows = torch.arange(len(d))
            d[rows, rows + start] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).values[:, k - 1])
    return torch.cat(out)


def manifold_radii(points: np.ndarray, k: int = 3) -> np.ndarray:
    """[N] distance from each point to its k-th nearest other point of the set: the radii of the
    balls whose union is the set's manifold in `precision_recall`."""
    points_t = torch.as_tensor(points, dtype=torch.float64)
    return _min_distances(points_t, points_t, k, exclude_self=True).numpy()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour in the same set. Precision: the fraction of fake points inside the real manifold;
    recall: the fraction of real points inside the fake manifold. `real_radii`, the real set's
    `manifold_radii` at this k, saves computing them again for every fake set.
    """
    real_t, fake_t = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)

    def coverage(points: torch.Tensor, centres: torch.Tensor, radii: np.ndarray) -> float:
        radii_t = torch.as_tensor(radii, dtype=torch.float64)
        inside = [(torch.cdist(points[i:i + 2048], centres) <= radii_t).any(dim=1)
                  for i in range(0, len(points), 2048)]
        return torch.cat(inside).double().mean().item()

    real_radii = manifold_radii(real, k) if real_radii is None else real_radii
    return coverage(fake_t, real_t, real_radii), coverage(real_t, fake_t, manifold_radii(fake, k))


def nearest_neighbour_distance(queries: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance from each query to its nearest reference point (e.g. samples to training images)."""
    return _min_distances(torch.as_tensor(queries, dtype=torch.float64),
                          torch.as_tensor(reference, dtype=torch.float64)).mean().item()
