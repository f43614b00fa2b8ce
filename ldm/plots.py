"""Figures of the studies and training curves, drawn with matplotlib (imported only here, and
only when a figure is drawn, with the file-only Agg backend)."""

from __future__ import annotations

import os


def new_figure(width: float = 6, height: float = 4):
    """(figure, axes) of one panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(width, height), dpi=120)


def log_axes(ax, xticks=None, logx: bool = True) -> None:
    """Log-scaled y (and x) with plain numbers on the ticks; `xticks` labelled as given."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if xticks is not None:
        ax.set_xticks(list(xticks), [str(x) for x in xticks])


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write the figure as a PNG atomically and free it."""
    import matplotlib.pyplot as plt

    from .utils import atomic_path
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
