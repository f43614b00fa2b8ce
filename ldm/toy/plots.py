"""Pictures of toy samples next to the data, drawn with matplotlib (plots.py): 1-D histograms
(the data filled grey, each set of samples as a black outline) and 2-D density images, one panel
each, on the data's range plus a margin, with axes and titles."""

from __future__ import annotations

import os

import numpy as np

from ..outputs import Outputs
from ..plots import new_figure, save_figure

BINS_1D = 60
BINS_2D = 100


def save_toy_figure(data: np.ndarray, samples: dict[str, np.ndarray], path: str | os.PathLike,
                    outputs: Outputs | None = None) -> None:
    """One row of panels: the data alone, then each named set of samples [N x D] over the data
    (1-D, densities) or beside it (2-D, counts per bin, the square root shown so that sparse arms
    stay visible)."""
    low, high = data.min(0), data.max(0)
    margin = 0.1 * (high - low)
    low, high = low - margin, high + margin
    panels = [("data", None), *samples.items()] if data.shape[1] == 1 else [("data", data), *samples.items()]
    fig, axes = new_figure(3.2 * len(panels), 3.2, len(panels))
    axes = axes if len(panels) > 1 else [axes]
    for ax, (name, points) in zip(axes, panels):
        if data.shape[1] == 1:
            edges = np.linspace(low[0], high[0], BINS_1D + 1)
            ax.hist(data[:, 0], edges, density=True, color="0.75", label="data")
            if points is not None:
                ax.hist(points[:, 0], edges, density=True, histtype="step", color="black", lw=1.5, label="samples")
            ax.set(xlabel="x", ylabel="density")
        else:
            edges = (np.linspace(low[0], high[0], BINS_2D + 1), np.linspace(low[1], high[1], BINS_2D + 1))
            counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=edges)
            ax.imshow(np.sqrt(counts.T), origin="lower", extent=(low[0], high[0], low[1], high[1]), cmap="Greys",
                      aspect="auto")
            ax.set(xlabel="x₁", ylabel="x₂")
        ax.set_title(name, fontsize=9)
    if data.shape[1] == 1:
        axes[-1].legend(fontsize=7)
    save_figure(fig, path, outputs)
