"""Toy distributions in 1-D and 2-D (numpy, seedable), the classic test beds of DDPM tutorials.

Each returns raw points [N x D] and a label per point ("left" 0 / "right" 1: the mixture
component; 0 for the others). Models are trained on standardised data (see run.py), and every
comparison is made in the raw units below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import check_choice


def mixture(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussians, std 0.2: weight 0.3 at -0.5 ("left"), 0.7 at +0.5 ("right")."""
    labels = (rng.random(n) >= 0.3).astype(np.int64)
    x = np.where(labels == 1, 0.5, -0.5) + 0.2 * rng.standard_normal(n)
    return x[:, None], labels


def ramp(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """min(U, U') on [0, 1]: density 2(1 - x), a ramp with a hard edge at 0."""
    return np.minimum(rng.random(n), rng.random(n))[:, None], np.zeros(n, dtype=np.int64)


def spiral(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """u ~ U(0, 1): radius 0.25 + 0.65u + 0.15·U(0, 1), angle 3πu."""
    u = rng.random(n)
    radius = 0.25 + 0.65 * u + 0.15 * rng.random(n)
    angle = 3 * np.pi * u
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), np.zeros(n, dtype=np.int64)


def swiss_roll(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D swiss roll: s ~ 1.5π(1 + 2U(0, 1)), the point s·(cos s, sin s) / 10 plus N(0, 0.05²)."""
    s = 1.5 * np.pi * (1 + 2 * rng.random(n))
    points = s[:, None] * np.stack([np.cos(s), np.sin(s)], axis=1) / 10
    return points + 0.05 * rng.standard_normal((n, 2)), np.zeros(n, dtype=np.int64)


@dataclass(frozen=True)
class ToyDataset:
    name: str
    dim: int
    draw: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    label_names: tuple[str, ...] = ()  # conditions a model can be prompted with

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n points [n x dim] float64 and their labels [n], reproducible from `seed`."""
        return self.draw(n, np.random.default_rng(seed))


TOY_DATASETS = {d.name: d for d in (
    ToyDataset("mixture", 1, mixture, label_names=("left", "right")),
    ToyDataset("ramp", 1, ramp),
    ToyDataset("spiral", 2, spiral),
    ToyDataset("swiss_roll", 2, swiss_roll),
)}


def get_toy_dataset(name: str) -> ToyDataset:
    check_choice("data", name, TOY_DATASETS)
    return TOY_DATASETS[name]
