"""The sampler study of `make samplers`: FID against the number of model evaluations (NFE) for
DDIM, DPM-Solver++(2M) (log-SNR and time spacing) and its stochastic form (η = 1), several seeds
each, for each branch of the model (a class-conditional UNet: random digits and the "no label"
branch), beside the Validation floor measured on as many real subsets of the same size. It picks
each branch's default: the cheapest setting that the best of its branch (the lowest mean FID)
beats by no more than `TOLERANCE` plus the seed-to-seed standard deviation of their paired
difference.

Every row samples as `make all` does: random digits are drawn from the training label
frequencies at guidance 1, the "no label" branch is the unconditional model; seed s draws both the
digits and the noise, so that rows of one seed and branch differ only in the sampler. Only the FID
is computed (no nearest-neighbour metrics), to spend the time on seeds.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from .classifier import Classifier
from .distributed import describe_device
from .errors import check_choice
from .outputs import Outputs, write_study
from .pipeline import BATCH_SIZE, LatentDiffusion
from .plots import log_axes, new_figure, save_figure
from .sampling import SamplerConfig
from .scoring import TestSetFID, validation_images
from .version import __version__

NFES = (10, 15, 20, 30)
SEEDS = (0, 1)
# name: (sampler, spacing, η) — DDIM as it is usually run, DPM-Solver++ in its own variable and
# in t, and SDE-DPM-Solver++ (η = 1), whose noise corrects the errors an ODE solver keeps
FAMILIES = {"ddim": ("ddim", "time", 0.0), "dpm++2m": ("dpm++2m", "logsnr", 0.0),
            "dpm++2m-t": ("dpm++2m", "time", 0.0), "dpm++2m-sde": ("dpm++2m", "logsnr", 1.0)}
# what a run compares unless told: DPM-Solver++ in t lost to log-SNR from 10 NFE on (docs/results.md)
DEFAULT_FAMILIES = ("ddim", "dpm++2m", "dpm++2m-sde")
FAMILY_LABELS = {"ddim": "DDIM", "dpm++2m": "DPM-Solver++(2M), log-SNR spacing",
                 "dpm++2m-t": "DPM-Solver++(2M), time spacing", "dpm++2m-sde": "SDE-DPM-Solver++(2M) (η = 1), log-SNR"}
# a setting this close to the best of its branch is as good for practical purposes, and its fewer
# NFE are worth more: 5% of the FID, and whatever the sampling noise of the comparison adds
TOLERANCE = 0.05


def branches(model: LatentDiffusion) -> dict[str, object]:
    """The branches a study samples: random digits and "no label" of a class-conditional UNet,
    the model itself of an unconditional one."""
    if model.num_classes:
        return {"random digits": model.prompt("any"), "no label": model.prompt("none")}
    return {"unconditional": model.prompt()}


def run_sampler_study(model: LatentDiffusion, classifier: Classifier, train_images: torch.Tensor,
                      test_images: torch.Tensor, *, num_images: int, nfes=NFES, seeds=SEEDS, families=DEFAULT_FAMILIES,
                      batch_size: int = BATCH_SIZE, device: torch.device, progress: bool = False) -> dict:
    """Score every (branch, family, NFE) on `seeds`; return the report (rows, floor, each branch's
    default)."""
    for family in families:
        check_choice("family", family, FAMILIES)
    fid = TestSetFID(classifier, test_images, device)
    floor = [fid(validation_images(train_images, num_images, torch.Generator().manual_seed(seed))) for seed in seeds]
    rows = []
    for branch, prompt in branches(model).items():
        for family in families:
            sampler_name, spacing, eta = FAMILIES[family]
            for nfe in nfes:
                sampler = SamplerConfig(sampler_name, nfe, eta=eta, spacing=spacing)
                fids, seconds = [], 0.0
                for seed in seeds:
                    start = time.time()
                    images = model.sample(num_images, sampler, prompt, seed=seed, batch_size=batch_size,
                                          progress=progress)
                    seconds += time.time() - start
                    fids.append(fid(images))
                rows.append({"branch": branch, "family": family, "sampler": sampler_name, "spacing": spacing,
                             "eta": eta, "label": sampler.label, "nfe": nfe, "seeds": list(seeds),
                             "images": num_images, **summary(fids),
                             "images_per_second": num_images * len(seeds) / seconds})
                print(f"{branch:>14} {sampler.label:>22}: FID {rows[-1]['fid_mean']:.3f} ± "
                      f"{rows[-1]['fid_std']:.3f} ({rows[-1]['images_per_second']:.1f} images/s)", flush=True)
    defaults = {branch: choose_default([r for r in rows if r["branch"] == branch])
                for branch in dict.fromkeys(r["branch"] for r in rows)}
    return {"rows": rows, "floor": summary(floor), "defaults": defaults, "tolerance": TOLERANCE,
            "num_images": num_images, "seeds": list(seeds), "device": describe_device(device),
            "torch_version": torch.__version__, "ldm_version": __version__}


def summary(fids: list[float]) -> dict:
    """The FIDs of one row over the seeds, their mean and sample standard deviation."""
    return {"fids": fids, "fid_mean": float(np.mean(fids)),
            "fid_std": float(np.std(fids, ddof=1)) if len(fids) > 1 else 0.0}


def as_good(row: dict, best: dict) -> bool:
    """Whether `best` beats `row` by at most TOLERANCE of its FID plus one standard deviation of
    their difference over the seeds (the rows are paired: the same noise at each seed)."""
    differences = np.subtract(row["fids"], best["fids"])
    noise = float(np.std(differences, ddof=1)) if len(differences) > 1 else 0.0
    return differences.mean() <= TOLERANCE * best["fid_mean"] + noise


def choose_default(rows: list[dict]) -> dict | None:
    """Of one branch's rows, the one with the fewest NFE (then the lowest mean FID) that is as good
    as the row with the lowest mean FID; None without rows."""
    if not rows:
        return None
    best = min(rows, key=lambda r: r["fid_mean"])
    chosen = min((r for r in rows if as_good(r, best)), key=lambda r: (r["nfe"], r["fid_mean"]))
    return {"label": chosen["label"], "family": chosen["family"], "sampler": chosen["sampler"],
            "spacing": chosen["spacing"], "eta": chosen["eta"], "nfe": chosen["nfe"],
            "fid_mean": chosen["fid_mean"], "best": best["label"], "best_fid_mean": best["fid_mean"]}


def samplers_markdown(report: dict) -> str:
    floor = report["floor"]
    lines = ["# Samplers", "",
             f"{report['device']}; {report['num_images']} images per row and seed (random digits: drawn from the "
             "training label frequencies, guidance 1; no label: the unconditional branch); seeds "
             f"{', '.join(map(str, report['seeds']))}; FID in this project's classifier features against the MNIST "
             "test set, mean ± standard deviation over the seeds.", "",
             "| branch | sampler | NFE | FID | × floor | images/s |", "|---|---|---:|---:|---:|---:|",
             f"| Validation (real subsets) | — | — | {floor['fid_mean']:.3f} ± {floor['fid_std']:.3f} | 1.0 | — |"]
    for r in report["rows"]:
        lines.append(f"| {r['branch']} | {r['label']} | {r['nfe']} | {r['fid_mean']:.3f} ± {r['fid_std']:.3f} | "
                     f"{r['fid_mean'] / floor['fid_mean']:.2f} | {r['images_per_second']:.1f} |")
    lines.append("")
    for branch, default in report["defaults"].items():
        lines.append(f"- {branch}: the cheapest setting that the best ({default['best']}, "
                     f"{default['best_fid_mean']:.3f}) beats by no more than {report['tolerance']:.0%} plus the "
                     f"paired noise is **{default['label']}** ({default['fid_mean']:.3f}).")
    return "\n".join(lines) + "\n"


def plot_samplers(report: dict, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    """FID against NFE, one line per branch (line style) and sampler family (colour) with error
    bars, the floor as a band."""
    fig, ax = new_figure()
    styles = dict(zip(dict.fromkeys(r["branch"] for r in report["rows"]), ("-", "--", ":")))
    colours = dict(zip(FAMILIES, (f"C{i}" for i in range(len(FAMILIES)))))
    for branch, family in dict.fromkeys((r["branch"], r["family"]) for r in report["rows"]):
        rows = [r for r in report["rows"] if (r["branch"], r["family"]) == (branch, family)]
        ax.errorbar([r["nfe"] for r in rows], [r["fid_mean"] for r in rows], yerr=[r["fid_std"] for r in rows],
                    marker="o", capsize=3, linestyle=styles[branch], color=colours[family],
                    label=f"{branch}: {FAMILY_LABELS[family]}")
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
