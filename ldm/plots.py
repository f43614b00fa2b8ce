"""Figures of the studies and training curves, drawn with matplotlib (imported only here, and
only when a figure is drawn, with the file-only Agg backend)."""

from __future__ import annotations

import os

from .outputs import Outputs, atomic_path


def new_figure(width: float = 6, height: float = 4, panels: int = 1):
    """(figure, axes): one Axes, or a list of `panels` side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, panels, figsize=(width, height), dpi=120, squeeze=False)
    return fig, axes[0, 0] if panels == 1 else list(axes[0])


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


def save_figure(fig, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    """Write the figure as a PNG atomically (with `outputs`, as one of that group) and free it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_path(path, outputs) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_training_log(entries: list[dict], path: str | os.PathLike, title: str, outputs: Outputs | None = None) -> None:
    """A training run's curves from its metrics log (monitor.py), one panel each: the loss on
    training batches against the held-out validation loss; the loss's parts (the VAE's terms, the
    diffusion loss per quarter of the timestep range), training thin and validation with markers
    in one colour per part; held-out accuracy; the FID of samples."""
    train = [e for e in entries if e["kind"] == "train"]
    validation = [e for e in entries if e["kind"] == "validation"]
    fid = [e for e in entries if e["kind"] == "fid"]
    not_parts = ("step", "kind", "loss", "lr", "seconds", "train_seconds")
    parts = [k for k in (train or validation or [{}])[0] if k not in not_parts]
    panels = ["loss"] + (["parts"] if parts else []) + (["accuracy"] if any("accuracy" in e for e in validation)
                                                       else []) + (["fid"] if fid else [])
    fig, axes = new_figure(4.2 * len(panels), 3.6, len(panels))
    axes = axes if len(panels) > 1 else [axes]

    def line(ax, rows, key, **style):
        ax.plot([e["step"] for e in rows if key in e], [e[key] for e in rows if key in e], **style)

    for ax, panel in zip(axes, panels):
        if panel == "loss":
            line(ax, train, "loss", lw=1, label="training batches")
            line(ax, validation, "loss", marker="o", label="held-out validation")
            ax.set(title=f"{title}: loss", ylabel="loss")
            ax.set_yscale("log")
        elif panel == "parts":
            for i, key in enumerate(parts):
                line(ax, train, key, lw=0.8, alpha=0.6, color=f"C{i}", label=f"{key}, training")
                line(ax, validation, key, marker="o", ms=3, color=f"C{i}", label=f"{key}, validation")
            ax.set(title="loss by part (q0: least noise)" if "q0" in parts else "loss by part", ylabel="loss")
            ax.set_yscale("log")
        elif panel == "accuracy":
            line(ax, validation, "accuracy", marker="o")
            ax.set(title="held-out accuracy", ylabel="accuracy")
        else:
            line(ax, fid, "fid", marker="o", color="C3")
            ax.set(title=f"FID of {fid[-1]['images']} samples (EMA weights)", ylabel="FID")
            log_axes(ax, logx=False)
        ax.set_xlabel("training step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, path, outputs)
