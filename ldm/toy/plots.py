"""Pictures of toy samples next to the data, drawn with Pillow alone: 1-D histograms (the data
filled grey, the samples as a black outline) and 2-D density images (darker = denser)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from ..utils import atomic_path

PANEL = 200  # pixels per side of a plot
TITLE = 16  # pixels above each plot for its title
BINS_1D = 60
BINS_2D = 100


def _histogram_1d(data: np.ndarray, samples: np.ndarray | None, edges: np.ndarray) -> Image.Image:
    image = Image.new("L", (PANEL, PANEL), 255)
    draw = ImageDraw.Draw(image)
    data_density, _ = np.histogram(data, edges, density=True)
    sample_density = None if samples is None else np.histogram(samples, edges, density=True)[0]
    top = 1.1 * max(data_density.max(), 0 if sample_density is None else sample_density.max())
    width = PANEL / BINS_1D

    def height(d: float) -> float:
        return PANEL - 1 - d / top * (PANEL - 1)

    for i, d in enumerate(data_density):
        draw.rectangle([i * width, height(d), (i + 1) * width, PANEL - 1], fill=190)
    if sample_density is not None:
        points = []
        for i, d in enumerate(sample_density):  # a step line along the bin tops
            points += [(i * width, height(d)), ((i + 1) * width, height(d))]
        draw.line(points, fill=0, width=2)
    return image


def _density_2d(points: np.ndarray, edges: tuple[np.ndarray, np.ndarray]) -> Image.Image:
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=edges)
    shade = np.sqrt(counts / max(counts.max(), 1))  # the square root keeps sparse arms visible
    pixels = (255 * (1 - shade)).astype(np.uint8).T[::-1]  # rows = y, top = high y
    return Image.fromarray(pixels, mode="L").resize((PANEL, PANEL), Image.NEAREST)


def save_toy_figure(data: np.ndarray, samples: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """One row of panels: the data alone, then each named set of samples [N x D] over the data
    (1-D) or beside it (2-D), on the data's range plus a margin."""
    low, high = data.min(0), data.max(0)
    margin = 0.1 * (high - low)
    low, high = low - margin, high + margin
    if data.shape[1] == 1:
        edges = np.linspace(low[0], high[0], BINS_1D + 1)
        panels = [("data", _histogram_1d(data[:, 0], None, edges))]
        panels += [(name, _histogram_1d(data[:, 0], x[:, 0], edges)) for name, x in samples.items()]
    else:
        edges = (np.linspace(low[0], high[0], BINS_2D + 1), np.linspace(low[1], high[1], BINS_2D + 1))
        panels = [(name, _density_2d(x, edges)) for name, x in [("data", data), *samples.items()]]
    figure = Image.new("L", (len(panels) * (PANEL + 8), PANEL + TITLE), 255)
    draw = ImageDraw.Draw(figure)
    for i, (name, panel) in enumerate(panels):
        x = i * (PANEL + 8)
        draw.text((x + 4, 2), name, fill=0)
        figure.paste(panel, (x, TITLE))
        draw.rectangle([x, TITLE, x + PANEL - 1, TITLE + PANEL - 1], outline=120)
    with atomic_path(path) as tmp:
        figure.save(tmp, format="PNG")
