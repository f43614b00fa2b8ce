"""How far apart two sets of points are: the 1-Wasserstein distance, exact in 1-D (scipy) and
sliced in more dimensions (the mean 1-D distance of random projections, Rabin et al. 2011)."""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_projections: int = 256, seed: int = 0) -> float:
    """W1 between point sets a [N x D] and b [M x D]; for D = 1 the exact W1, for D > 1 averaged
    over `num_projections` random unit directions (the same directions for a given seed)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need [N x D] and [M x D] arrays, got shapes {a.shape} and {b.shape}")
    if a.shape[1] == 1:
        return float(wasserstein_distance(a[:, 0], b[:, 0]))
    directions = np.random.default_rng(seed).standard_normal((num_projections, a.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return float(np.mean([wasserstein_distance(a @ d, b @ d) for d in directions]))
