"""PNG grids of 28x28 images."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from .data import to_float
from .outputs import Outputs, atomic_path


def grid_array(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Images as one grayscale uint8 array [H x W], `nrow` images per row (default: a square grid):
    uint8 [N x H x W] as the pipeline and MNIST hold them, or floats [N x 1 x H x W] in [0, 1]."""
    if images.dtype == torch.uint8:
        images = to_float(images)
    images = images.detach().float().clamp(0, 1).cpu()
    n, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = np.zeros((ncol * (h + padding) + padding, nrow * (w + padding) + padding), dtype=np.uint8)
    pixels = (images[:, 0].numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + h, x:x + w] = pixels[i]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2,
              outputs: Outputs | None = None) -> None:
    """Write `grid_array` of the images as a PNG (with `outputs`, as one of that group)."""
    with atomic_path(path, outputs) as tmp:
        Image.fromarray(grid_array(images, nrow, padding), mode="L").save(tmp, format="PNG")


def save_rows(rows: torch.Tensor, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    """Write [R x C x 1 x H x W] images in [0, 1] as a grid of R rows and C columns."""
    save_grid(rows.flatten(0, 1), path, nrow=rows.shape[1], outputs=outputs)


def digit_rows(images: torch.Tensor, labels: torch.Tensor, per_digit: int = 10) -> torch.Tensor:
    """The first `per_digit` uint8 images [N x 28 x 28] of each label 0-9 as [10 x per_digit x 1 x 28 x 28]
    floats, for `save_rows`: one row per digit."""
    order = torch.cat([torch.nonzero(labels == d).flatten()[:per_digit] for d in range(10)])
    return to_float(images[order]).unflatten(0, (10, per_digit))
