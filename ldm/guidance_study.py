"""The guidance study of `make guidance`: which guidance gives the best prompted digits at
matched recognition, and the best "no label" samples.

Every setting samples the digits 0-9 in turn, as `make all`'s prompted row does, with the
default sampler from the same noise at each seed, and is scored by FID and by how often the
classifier recognises the prompted digit. The settings: a guidance scale on every step, and the
same scales on an interval of noise levels only (Kynkäänniemi et al. 2024, arXiv:2404.07724;
guidance.py), in the half-log-SNR λ = log(α/σ) the samplers step in; with a guide (a weaker UNet,
guidance.autoguided), each of them at every autoguidance weight asked for. Random digits (drawn
from the training label frequencies, `make all`'s first row) are sampled unguided and at each
scale on each interval, at every weight; the "no label" branch at each weight. The chosen digits
setting is the one with the lowest mean FID among those that recognise at least `RECOGNITION` of
the prompted digits at every seed; the chosen random-digits and "no label" settings, those with
the lowest mean FID.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from .classifier import Classifier
from .distributed import describe_device
from .outputs import Outputs, write_study
from .pipeline import LatentDiffusion
from .plots import new_figure, save_figure
from .prompt import GUIDED_AUTOGUIDANCE, Prompt, interval_name
from .sampling import SamplerConfig
from .scoring import Scorer
from .version import __version__

# around the defaults (prompt.py); other scales and intervals were measured with flags (docs/results.md)
SCALES = (1.25, 1.35)
# besides every step; the default sampler's 10 steps run from λ = -5.1 to about 6 (sampling.py)
INTERVALS = ((-2.0, 2.0),)
# with a guide: every weight of the guided defaults, and 1 (classifier-free guidance alone)
AUTOGUIDANCE = tuple(sorted({1.0, *GUIDED_AUTOGUIDANCE.values()}))
SEEDS = (0, 1)
RECOGNITION = 0.99  # the share of prompted digits the classifier must recognise (issue target: >= 99%)


def settings(scales=SCALES, intervals=(None, *INTERVALS), autoguidance=(1.0,)) -> list[Prompt]:
    """Digits 0-9 at guidance 1 (the conditional model alone, for reference), then at every scale ×
    interval (None: every step) × autoguidance weight; random digits at every weight, unguided
    and at every scale on each interval (not every step: they should keep their diversity); with
    weights other than 1, the "no label" branch at each. Each setting once: a scale of 1 guides
    nothing, so it has no interval."""
    def prompt(digit, scale, interval, weight):
        return Prompt(digit, scale, None if scale == 1 else interval, weight)

    digits = [prompt("all", 1.0, None, 1.0)] + [prompt("all", scale, interval, weight) for weight in autoguidance
                                                for interval in intervals for scale in scales]
    random = [prompt("any", scale, interval, weight) for weight in autoguidance
              for scale, interval in [(1.0, None)] + [(s, i) for i in intervals if i is not None for s in scales]]
    no_label = [Prompt("none", autoguidance=weight) for weight in autoguidance] if set(autoguidance) - {1.0} else []
    return list(dict.fromkeys(digits + random + no_label))


def run_guidance_study(model: LatentDiffusion, classifier: Classifier, train_images: torch.Tensor,
                       test_images: torch.Tensor, *, num_images: int, prompts: list[Prompt], seeds=SEEDS,
                       sampler: SamplerConfig, device: torch.device, progress: bool = False) -> dict:
    """Score every prompt at every seed; return the report (rows and the chosen settings). Digit
    prompts are sampled with `sampler`, "no label" with its branch's default (SamplerConfig.for_branch)."""
    scorer = Scorer.compute(classifier, train_images, test_images, device)
    guide = None if model.guide_ckpt is None else str(model.guide_ckpt.path)
    rows = []
    for prompt in prompts:
        fids, recognised, recall, seconds = [], [], [], 0.0
        branch_sampler = SamplerConfig.for_branch(True) if prompt.unconditional else sampler
        for seed in seeds:
            start = time.time()
            images = model.sample(num_images, branch_sampler, prompt, seed=seed, progress=progress)
            seconds += time.time() - start
            scores = scorer(images, labels=prompt.labels(num_images, seed, model.label_frequencies))
            fids.append(scores["fid"])
            recognised.append(scores.get("recognised"))
            recall.append(scores["recall"])
        rows.append({"name": prompt.name(), "digit": prompt.digit, "guidance": prompt.guidance,
                     "interval": prompt.guidance_interval, "autoguidance": prompt.autoguidance,
                     "sampler": branch_sampler.label, "fids": fids, "fid_mean": float(np.mean(fids)),
                     "recognised": None if prompt.unconditional else recognised,
                     "recall_mean": float(np.mean(recall)), "images_per_second": num_images * len(seeds) / seconds})
        print(f"{rows[-1]['name']:>40}: FID {rows[-1]['fid_mean']:.3f}"
              + ("" if prompt.unconditional else f", recognised {min(recognised):.1%}-{max(recognised):.1%}"),
              flush=True)
    return {"rows": rows, "chosen": choose(rows), "chosen_random": lowest_fid(rows, "any"),
            "chosen_no_label": lowest_fid(rows, "none"),
            "recognition": RECOGNITION, "num_images": num_images, "seeds": list(seeds), "sampler": sampler.label,
            "guide": guide, "device": describe_device(device), "torch_version": torch.__version__,
            "ldm_version": __version__}


def choose(rows: list[dict]) -> dict | None:
    """The digits 0-9 row of lowest mean FID among those recognising >= RECOGNITION at every seed."""
    good = [r for r in rows if r["digit"] == "all" and min(r["recognised"]) >= RECOGNITION]
    return min(good, key=lambda r: r["fid_mean"]) if good else None


def lowest_fid(rows: list[dict], digit: str) -> dict | None:
    """The row of lowest mean FID among those prompted with `digit` ("any" or "none"), if any."""
    rows = [r for r in rows if r["digit"] == digit]
    return min(rows, key=lambda r: r["fid_mean"]) if rows else None


def interval_label(interval) -> str:
    """A row's interval as tables and legends write it: "every step" or "λ -2..2"."""
    return "every step" if interval is None else interval_name(interval)


PROMPT_LABELS = {"all": "digits 0-9", "any": "random digits", "none": "no label"}


def guidance_markdown(report: dict) -> str:
    seeds = ", ".join(map(str, report["seeds"]))
    guide = f" Autoguidance by the guide {report['guide']}." if report["guide"] else ""
    lines = ["# Guidance at matched recognition", "",
             f"{report['device']}; digits 0-9 in turn and random digits, {report['num_images']} images per seed "
             f"(seeds {seeds}, the same noise for every row), sampled with {report['sampler']} (\"no label\" with "
             "its branch's default). FID in this project's classifier features against the MNIST test set (mean "
             "over the seeds, then each seed's); recall: k-NN recall, the diversity guidance costs; recognised: the "
             "classifier agrees with the prompted digit (lowest and highest seed). λ = log(α/σ): guidance only at "
             f"the steps in the interval.{guide}", "",
             "| prompt | guidance | interval | autoguidance | FID | per seed | recall | recognised | images/s |",
             "|---|---:|---|---:|---:|---|---:|---|---:|"]
    for r in report["rows"]:
        no_label = r["digit"] == "none"
        guidance = "—" if no_label else f"{r['guidance']:g}"
        recognised = "—" if no_label else f"{min(r['recognised']):.2%}-{max(r['recognised']):.2%}"
        lines.append(f"| {PROMPT_LABELS[r['digit']]} | {guidance} | "
                     f"{'—' if no_label else interval_label(r['interval'])} | {r['autoguidance']:g} | "
                     f"{r['fid_mean']:.3f} | {' / '.join(f'{f:.3f}' for f in r['fids'])} | {r['recall_mean']:.3f} | "
                     f"{recognised} | {r['images_per_second']:.1f} |")
    chosen = report["chosen"]
    lines.append("")
    lines.append(f"Digits 0-9, lowest FID with at least {report['recognition']:.0%} recognised at every seed: "
                 + (f"**{chosen['name']}** ({chosen['fid_mean']:.3f})." if chosen else "none."))
    for key, label in (("chosen_random", "Random digits"), ("chosen_no_label", "\"No label\"")):
        if report.get(key):
            lines.append(f"{label}, lowest FID: **{report[key]['name']}** ({report[key]['fid_mean']:.3f}).")
    return "\n".join(lines) + "\n"


def plot_guidance(report: dict, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    """Digits 0-9: FID against recognition, one line per interval (and autoguidance weight) through
    its scales."""
    def line(r: dict) -> str:
        weight = r["autoguidance"]
        return interval_label(r["interval"]) + ("" if weight == 1 else f", autoguidance {weight:g}")

    digits = [r for r in report["rows"] if r["digit"] == "all"]
    fig, ax = new_figure()
    for label in dict.fromkeys(line(r) for r in digits):
        rows = [r for r in digits if line(r) == label]
        ax.plot([100 * np.mean(r["recognised"]) for r in rows], [r["fid_mean"] for r in rows], marker="o", label=label)
        for r in rows:
            ax.annotate(f"{r['guidance']:g}", (100 * np.mean(r["recognised"]), r["fid_mean"]), fontsize=7)
    ax.axvline(100 * report["recognition"], color="grey", lw=1, ls="--")
    ax.set(xlabel="recognised prompted digits (%)", ylabel="FID (classifier features)",
           title=f"digits 0-9, {report['num_images']} images per seed; labels: guidance scale")
    ax.legend(fontsize=8)
    save_figure(fig, path, outputs)


def write_report(report: dict, out_dir: str | os.PathLike) -> str:
    """guidance.{json,md,png} into `out_dir`; returns the table."""
    table = guidance_markdown(report)
    write_study(out_dir, "guidance", report, table, lambda path, outputs: plot_guidance(report, path, outputs),
                "FID against recognition, by guidance setting")
    return table
