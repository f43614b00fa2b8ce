"""How sample quality moves with training length (`make lengths`): UNets trained for several step
counts with the preset's other settings, each scored by the FID of unprompted images (random
digits, and the "no label" branch) from the default sampler, beside the Validation floor.

Every length is its own run: the learning rate decays over the whole run (train.get_lr), so the
first 2,000 steps of an 8,000-step run are not a 2,000-step run. The run whose length is the
preset's is `make all`'s UNet, read rather than retrained when its checkpoint records the same
settings; the others are trained into the work folder, where a finished one is reused and a
killed one resumes from its snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .distributed import describe_device
from .latents import LatentCache
from .outputs import Outputs, write_study
from .pipeline import LatentDiffusion
from .plots import log_axes, new_figure, save_figure
from .presets import Preset
from .prompt import Prompt
from .runtime import RunContext
from .sampling import SamplerConfig
from .scoring import TestSetFID, validation_images
from .snapshot import snapshot_path
from .stages import train_unet
from .version import __version__

PROMPTS = {"random digits": Prompt("any"), "no label": Prompt("none")}


def default_lengths(preset: Preset) -> list[int]:
    """A quarter, half and all of the preset's training steps."""
    steps = preset.unet.steps
    return sorted({max(1, steps // 4), max(1, steps // 2), steps})


def trained_unet(preset: Preset, cache: LatentCache, steps: int, run: RunContext, *, unet_path: str | os.PathLike,
                 work_dir: Path) -> Path:
    """The checkpoint of the preset's UNet trained for `steps`: `unet_path` if it records exactly
    these settings, else work_dir/unet_<steps>.safetensors, trained (or resumed) if missing."""
    settings = dataclasses.replace(preset.unet, steps=steps)
    wanted = json.loads(json.dumps({"training": dataclasses.asdict(settings), "seed": run.seed,
                                    "diffusion": dataclasses.asdict(preset.diffusion),
                                    "vae_fingerprint": cache.vae_fingerprint}))
    config = dataclasses.replace(preset.unet_model, in_channels=cache.latent_shape[0])

    def matches(path: Path) -> bool:
        if not path.is_file():
            return False
        ckpt = load_checkpoint(path, "unet")
        return ckpt.config == json.loads(json.dumps(dataclasses.asdict(config))) and all(
            ckpt.info.get(k) == v for k, v in wanted.items())

    for path in (Path(unet_path), work_dir / f"unet_{steps}.safetensors"):
        if matches(path):
            return path
    trained = train_unet(cache, preset.unet_model, preset.diffusion, settings, run, snapshot_to=snapshot_path(path),
                         desc=f"{steps} steps")
    trained.info.update(preset=preset.name)
    trained.save(path)
    return path


def run_length_study(preset: Preset, cache: LatentCache, fid: TestSetFID, train_images: torch.Tensor,
                     run: RunContext, *, lengths: list[int], unet_path: str | os.PathLike, vae_path: str | os.PathLike,
                     work_dir: str | os.PathLike, num_images: int) -> dict:
    """One row per training length; return the report."""
    work_dir, seed = Path(work_dir), run.seed
    floor = fid(validation_images(train_images, num_images, torch.Generator().manual_seed(seed)))
    rows = []
    for steps in sorted(lengths):
        path = trained_unet(preset, cache, steps, run, unet_path=unet_path, work_dir=work_dir)
        model = LatentDiffusion.load(path, vae_path, run.device)
        training = model.unet_ckpt.info
        row = {"steps": steps, "checkpoint": str(path), "train_seconds": training["train_seconds"],
               "final_loss": training["final_loss"]["loss"]}
        for name, prompt in PROMPTS.items():
            row[name] = fid(model.sample(num_images, SamplerConfig.for_branch(prompt.unconditional), prompt, seed=seed,
                                         progress=run.progress))
        rows.append(row)
        print(f"{steps:>6} steps ({row['train_seconds'] / 60:.1f} min): FID random digits "
              f"{row['random digits']:.3f}, no label {row['no label']:.3f}", flush=True)
    return {"rows": rows, "floor": floor, "sampler": SamplerConfig.defaults_label(), "num_images": num_images, "seed": seed,
            "preset": preset.name, "batch_size": preset.unet.batch_size, "device": describe_device(run.device),
            "torch_version": torch.__version__, "ldm_version": __version__}


def lengths_markdown(report: dict) -> str:
    floor = report["floor"]
    lines = ["# Training length", "",
             f"{report['device']}; the `{report['preset']}` preset's UNet trained for each length (batch "
             f"{report['batch_size']}, learning rate decayed over the whole run), seed {report['seed']}; "
             f"{report['num_images']} unprompted images per cell from {report['sampler']}; FID in this project's "
             f"classifier features against the MNIST test set. Validation floor: {floor:.3f}.", "",
             "| steps | training time | final loss | random digits | × floor | no label | × floor |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['steps']} | {r['train_seconds'] / 60:.1f} min | {r['final_loss']:.4f} | "
                     f"{r['random digits']:.3f} | {r['random digits'] / floor:.2f} | {r['no label']:.3f} | "
                     f"{r['no label'] / floor:.2f} |")
    return "\n".join(lines) + "\n"


def plot_lengths(report: dict, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    fig, ax = new_figure()
    steps = [r["steps"] for r in report["rows"]]
    for name in PROMPTS:
        ax.plot(steps, [r[name] for r in report["rows"]], marker="o", label=name)
    ax.axhline(report["floor"], color="grey", lw=1, label="Validation floor (real images)")
    ax.set(xlabel="UNet training steps", ylabel="FID (classifier features)",
           title=f"{report['sampler']}, {report['num_images']} images per point")
    log_axes(ax, steps)
    ax.legend(fontsize=8)
    save_figure(fig, path, outputs)


def write_report(report: dict, out_dir: str | os.PathLike) -> str:
    """training_length.{json,md,png} into `out_dir`; returns the table."""
    table = lengths_markdown(report)
    write_study(out_dir, "training_length", report, table, lambda path, outputs: plot_lengths(report, path, outputs),
                "FID against training steps")
    return table
