"""The sampler study of `make samplers`: FID against the number of model evaluations (NFE) for
DDIM and DPM-Solver++(2M) (log-SNR and time spacing), several seeds each, beside the Validation
floor measured on as many real subsets of the same size. It picks the default sampler: the
cheapest setting whose mean FID is within one standard deviation of DDIM-50's.

Every row samples unprompted images as `make all` does (digits drawn from the training label
frequencies, guidance 1), seed s drawing both the digits and the noise, so that rows of one seed
differ only in the sampler. Only the FID is computed (no nearest-neighbour metrics), to spend the
time on seeds.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from .classifier import Classifier
from .distributed import describe_device
from .outputs import Outputs, write_study
from .pipeline import BATCH_SIZE, LatentDiffusion
from .plots import log_axes, new_figure, save_figure
from .sampling import SamplerConfig
from .scoring import TestSetFID, validation_images
from .version import __version__

NFES = (5, 10, 20, 50)
SEEDS = (0, 1, 2)
# (sampler, spacing): DDIM as `make all` runs it, DPM-Solver++ in its own variable and in t
FAMILIES = (("ddim", "time"), ("dpm++2m", "logsnr"), ("dpm++2m", "time"))
REFERENCE = SamplerConfig("ddim", 50, spacing="time")  # what the default must match


def run_sampler_study(model: LatentDiffusion, classifier: Classifier, train_images: torch.Tensor,
                      test_images: torch.Tensor, *, num_images: int, nfes=NFES, seeds=SEEDS, families=FAMILIES,
                      batch_size: int = BATCH_SIZE, device: torch.device, progress: bool = False) -> dict:
    """Score every (family, NFE) on `seeds`; return the report (rows, floor, the chosen default)."""
    fid = TestSetFID(classifier, test_images, device)
    floor = [fid(validation_images(train_images, num_images, torch.Generator().manual_seed(seed))) for seed in seeds]
    rows = []
    for sampler_name, spacing in families:
        for nfe in nfes:
            sampler = SamplerConfig(sampler_name, nfe, spacing=spacing)
            fids, seconds = [], 0.0
            for seed in seeds:
                start = time.time()
                images = model.sample(num_images, sampler, model.prompt("any"), seed=seed, batch_size=batch_size,
                                      progress=progress)
                seconds += time.time() - start
                fids.append(fid(images))
            rows.append({"sampler": sampler_name, "spacing": spacing, "label": sampler.label, "nfe": nfe,
                         "seeds": list(seeds), "images": num_images, **summary(fids),
                         "images_per_second": num_images * len(seeds) / seconds})
            print(f"{sampler.label:>22}: FID {rows[-1]['fid_mean']:.3f} ± {rows[-1]['fid_std']:.3f} "
                  f"({rows[-1]['images_per_second']:.1f} images/s)", flush=True)
    return {"rows": rows, "floor": summary(floor),
            "default": choose_default(rows), "num_images": num_images, "seeds": list(seeds),
            "device": describe_device(device), "torch_version": torch.__version__, "ldm_version": __version__}


def summary(fids: list[float]) -> dict:
    """The FIDs of one row over the seeds, their mean and sample standard deviation."""
    return {"fids": fids, "fid_mean": float(np.mean(fids)),
            "fid_std": float(np.std(fids, ddof=1)) if len(fids) > 1 else 0.0}


def choose_default(rows: list[dict]) -> dict | None:
    """The row with the fewest NFE (then the lowest mean FID) whose mean FID is within one
    standard deviation (DDIM-50's) of DDIM-50's mean; None without a DDIM-50 row."""
    reference = next((r for r in rows if r["sampler"] == REFERENCE.sampler and r["nfe"] == REFERENCE.steps
                      and r["spacing"] == REFERENCE.spacing), None)
    if reference is None:
        return None
    good = [r for r in rows if r["fid_mean"] <= reference["fid_mean"] + reference["fid_std"]]
    best = min(good, key=lambda r: (r["nfe"], r["fid_mean"]))
    return {"label": best["label"], "sampler": best["sampler"], "spacing": best["spacing"], "nfe": best["nfe"],
            "fid_mean": best["fid_mean"], "reference": reference["label"], "reference_fid_mean": reference["fid_mean"],
            "reference_fid_std": reference["fid_std"]}


def samplers_markdown(report: dict) -> str:
    floor = report["floor"]
    lines = ["# Samplers", "",
             f"{report['device']}; {report['num_images']} unprompted images per seed (digits drawn from the "
             f"training label frequencies, guidance 1); seeds {', '.join(map(str, report['seeds']))}; FID in this "
             "project's classifier features against the MNIST test set, mean ± standard deviation over the seeds.", "",
             "| sampler | NFE | FID | × floor | images/s |", "|---|---:|---:|---:|---:|",
             f"| Validation (real subsets) | — | {floor['fid_mean']:.3f} ± {floor['fid_std']:.3f} | 1.0 | — |"]
    for r in report["rows"]:
        lines.append(f"| {r['label']} | {r['nfe']} | {r['fid_mean']:.3f} ± {r['fid_std']:.3f} | "
                     f"{r['fid_mean'] / floor['fid_mean']:.2f} | {r['images_per_second']:.1f} |")
    default = report["default"]
    if default:
        lines += ["", f"Cheapest setting within one standard deviation of {default['reference']} "
                      f"({default['reference_fid_mean']:.3f} ± {default['reference_fid_std']:.3f}): "
                      f"**{default['label']}** ({default['fid_mean']:.3f})."]
    return "\n".join(lines) + "\n"


def plot_samplers(report: dict, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    """FID against NFE, one line per sampler family with error bars, the floor as a band."""
    fig, ax = new_figure()
    labels = {("ddim", "time"): "DDIM", ("dpm++2m", "logsnr"): "DPM-Solver++(2M), log-SNR spacing",
              ("dpm++2m", "time"): "DPM-Solver++(2M), time spacing"}
    for family in dict.fromkeys((r["sampler"], r["spacing"]) for r in report["rows"]):
        rows = [r for r in report["rows"] if (r["sampler"], r["spacing"]) == family]
        ax.errorbar([r["nfe"] for r in rows], [r["fid_mean"] for r in rows], yerr=[r["fid_std"] for r in rows],
                    marker="o", capsize=3, label=labels.get(family, " ".join(family)))
    floor = report["floor"]
    ax.axhspan(floor["fid_mean"] - floor["fid_std"], floor["fid_mean"] + floor["fid_std"], color="grey", alpha=0.3)
    ax.axhline(floor["fid_mean"], color="grey", lw=1, label="Validation floor (real images)")
    ax.set(xlabel="model evaluations (NFE)", ylabel="FID (classifier features)",
           title=f"{report['num_images']} images, seeds {', '.join(map(str, report['seeds']))}")
    log_axes(ax, sorted({r["nfe"] for r in report["rows"]}))
    ax.legend(fontsize=8)
    save_figure(fig, path, outputs)


def write_report(report: dict, out_dir: str | os.PathLike) -> str:
    """samplers.{json,md,png} into `out_dir`; returns the table."""
    table = samplers_markdown(report)
    write_study(out_dir, "samplers", report, table, lambda path, outputs: plot_samplers(report, path, outputs),
                "FID against NFE")
    return table
