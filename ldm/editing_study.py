"""The editing study of `make editing`: what image-to-image and inpainting (editing.py) do to MNIST
test digits, measured with the classifier, and the pictures of all three edits.

Image-to-image: test digits, each prompted with another digit (the digits 0-9 in turn, the inputs
ordered so that each is prompted with its own digit + 5), at every strength: how often the
classifier recognises the prompted digit, and how often still the input's own; and the same
inputs through the "no label" branch, which should keep their digit.

Inpainting: test digits with one half kept (top, bottom, left, right), prompted with their own
digit and through the "no label" branch, without resampling, with `editing.RESAMPLE` tries per
step and with twice as many: how far the kept pixels move from the input against how far the
VAE's reconstruction moves them (mean absolute difference, 0-255), and from the reconstruction
itself (what the kept latents decode to on their own), and how often the completed digit is
recognised as the input's. A half of 14 rows or columns cuts a row of 4-pixel latent blocks in
two: that row is kept (editing.latent_mask), so 12 rows or columns are regenerated.
"""

from __future__ import annotations

import os
import time

import torch

from .classifier import Classifier
from .data import NUM_CLASSES, to_float, to_uint8
from .distributed import describe_device
from .editing import HALVES, RESAMPLE, half_mask
from .errors import LdmError
from .images import save_grid, save_rows
from .outputs import Outputs, write_study
from .pipeline import LatentDiffusion
from .plots import new_figure, save_figure
from .scoring import classify
from .version import __version__

STRENGTHS = tuple(round(0.1 * i, 1) for i in range(11))
SHIFT = 5  # img2img prompts each input with its own digit + SHIFT
RESAMPLES = (1, RESAMPLE, 2 * RESAMPLE)  # RePaint's tries per step: none, the default, twice as many
PICTURES = ("img2img.png", "inpainting.png", "interpolation.png")  # what draw_pictures writes
IMG2IMG_PICTURE = (0.5, 0.6, 0.7, 0.8, 1.0)  # below 0.5 the default sampler's last steps change little


def digits_in_turn(images: torch.Tensor, labels: torch.Tensor, n: int, shift: int = 0) -> torch.Tensor:
    """Indices of `n` images whose labels run (shift, shift + 1, ...) mod 10: the k-th image of
    each digit in turn (from its first again when a digit has fewer), so that the prompt "all"
    (0, 1, 2, ...) asks image i for digit (label - shift)."""
    by_digit = [torch.nonzero(labels == d).flatten().tolist() for d in range(NUM_CLASSES)]
    missing = [d for d in range(NUM_CLASSES) if not by_digit[d]]
    if missing:
        raise LdmError(f"the test set has no image of digit {missing[0]}; the editing study edits every digit")
    return torch.tensor([by_digit[d][(i // NUM_CLASSES) % len(by_digit[d])]
                         for i, d in ((i, (i + shift) % NUM_CLASSES) for i in range(n))])


def run_editing_study(model: LatentDiffusion, classifier: Classifier, test_images: torch.Tensor,
                      test_labels: torch.Tensor, *, num_images: int, inpaint_images: int, seed: int,
                      device: torch.device, progress: bool = False) -> dict:
    img2img_rows, inpaint_rows = [], []
    index = digits_in_turn(test_images, test_labels, num_images, SHIFT)
    inputs, own = test_images[index], test_labels[index]
    prompted = torch.arange(num_images) % NUM_CLASSES
    for digit in ("all", None):
        for strength in STRENGTHS:
            start = time.time()
            out = model.img2img(inputs, strength, digit=digit, seed=seed, progress=progress)
            seconds = time.time() - start
            predicted = classify(classifier, out, device)
            img2img_rows.append({"prompt": "another digit" if digit else "no label", "strength": strength,
                                 "recognised_prompt": (predicted == prompted).double().mean().item() if digit else None,
                                 "recognised_own": (predicted == own).double().mean().item(),
                                 "pixel_change": (out.float() - inputs.float()).abs().mean().item(),
                                 "images_per_second": num_images / seconds})
            row = img2img_rows[-1]
            print(f"img2img {row['prompt']:>13} at {strength:.1f}: own digit {row['recognised_own']:.1%}"
                  + (f", prompted {row['recognised_prompt']:.1%}" if digit else ""), flush=True)
    index = digits_in_turn(test_images, test_labels, inpaint_images)
    inputs, own = test_images[index], test_labels[index]
    reconstruction = to_uint8(model.vae.decode(model.encode(inputs).to(model.device) / model.scale_factor))
    for half in HALVES:
        mask = half_mask(half)
        def kept_change(images: torch.Tensor, reference: torch.Tensor = inputs) -> float:
            return (images.float() - reference.float()).abs()[:, mask].mean().item()

        for digit in ("all", None):
            for resample in RESAMPLES:
                start = time.time()
                out = model.inpaint(inputs, mask, digit=digit, resample=resample, seed=seed, progress=progress)
                seconds = time.time() - start
                inpaint_rows.append({"kept": half, "prompt": "own digit" if digit else "no label",
                                     "resample": resample, "kept_change": kept_change(out),
                                     "reconstruction_change": kept_change(reconstruction),
                                     "from_reconstruction": kept_change(out, reconstruction),
                                     "recognised_own": (classify(classifier, out, device) == own).double().mean().item(),
                                     "images_per_second": inpaint_images / seconds})
                row = inpaint_rows[-1]
                print(f"inpaint {half:>6} {row['prompt']:>9} resample {resample}: kept pixels move "
                      f"{row['kept_change']:.2f} (VAE {row['reconstruction_change']:.2f}), own digit "
                      f"{row['recognised_own']:.1%}", flush=True)
    return {"img2img": img2img_rows, "inpaint": inpaint_rows, "num_images": num_images,
            "inpaint_images": inpaint_images, "seed": seed, "resample": RESAMPLE, "shift": SHIFT,
            "guide": None if model.guide_ckpt is None else str(model.guide_ckpt.path),
            "device": describe_device(device), "torch_version": torch.__version__, "ldm_version": __version__}


def editing_markdown(report: dict) -> str:
    guide = f", autoguided by {report['guide']}" if report["guide"] else ""
    lines = ["# Editing", "", f"{report['device']}; MNIST test digits, seed {report['seed']}, each edit with the "
             f"default sampler and prompt settings of its branch{guide}.", "",
             f"## Image-to-image ({report['num_images']} images)", "",
             f"Each input prompted with its own digit + {report['shift']} (\"another digit\"), or through the "
             "\"no label\" branch; recognised: the classifier's verdict on the result; pixel change: mean "
             "|result - input| (0-255).", "",
             "| prompt | strength | recognised as prompted | recognised as its own digit | pixel change | images/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["img2img"]:
        prompted = "—" if r["recognised_prompt"] is None else f"{r['recognised_prompt']:.1%}"
        lines.append(f"| {r['prompt']} | {r['strength']:.1f} | {prompted} | {r['recognised_own']:.1%} | "
                     f"{r['pixel_change']:.1f} | {r['images_per_second']:.0f} |")
    lines += ["", f"## Inpainting ({report['inpaint_images']} images)", "",
              "One half of each input kept, the other regenerated; kept pixels: mean |result - input| over the "
              "kept half (0-255), against the VAE reconstruction's over the same pixels (ratio: the first over "
              "the second), and from the reconstruction.", "",
              "| kept | prompt | resample | kept pixels move | VAE reconstruction | ratio | from the reconstruction "
              "| recognised as its own digit | images/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["inpaint"]:
        lines.append(f"| {r['kept']} | {r['prompt']} | {r['resample']} | {r['kept_change']:.2f} | "
                     f"{r['reconstruction_change']:.2f} | {r['kept_change'] / r['reconstruction_change']:.2f} | "
                     f"{r['from_reconstruction']:.2f} | {r['recognised_own']:.1%} | {r['images_per_second']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_editing(report: dict, path: str | os.PathLike, outputs: Outputs | None = None) -> None:
    fig, ax = new_figure()
    for prompt in ("another digit", "no label"):
        rows = [r for r in report["img2img"] if r["prompt"] == prompt]
        strengths = [r["strength"] for r in rows]
        ax.plot(strengths, [100 * r["recognised_own"] for r in rows], marker="o", label=f"{prompt}: its own digit")
        if prompt == "another digit":
            ax.plot(strengths, [100 * r["recognised_prompt"] for r in rows], marker="s", label=f"{prompt}: prompted")
    ax.set(xlabel="strength (share of the sampler's steps run)", ylabel="recognised (%)",
           title=f"image-to-image, {report['num_images']} MNIST test digits")
    ax.legend(fontsize=8)
    save_figure(fig, path, outputs)


def write_report(report: dict, out_dir: str | os.PathLike) -> str:
    table = editing_markdown(report)
    write_study(out_dir, "editing", report, table, lambda path, outputs: plot_editing(report, path, outputs),
                "recognition against image-to-image strength")
    return table


def draw_pictures(model: LatentDiffusion, test_images: torch.Tensor, test_labels: torch.Tensor,
                  out_dir: str | os.PathLike, seed: int) -> list[str]:
    """The README's pictures, into `out_dir`: img2img.png (eight digits, one per column, then
    down the rows at the strengths IMG2IMG_PICTURE, each prompted with its digit + SHIFT),
    inpainting.png (inputs, the kept top half, then completions from three seeds, prompted with
    their own digit) and interpolation.png (between two seeds of one digit, between two digits of
    one seed, and between two seeds of random digits). Returns the paths."""
    paths = [os.path.join(out_dir, name) for name in PICTURES]
    inputs = test_images[digits_in_turn(test_images, test_labels, 8, SHIFT)]
    rows = [inputs] + [model.img2img(inputs, s, digit="all", seed=seed) for s in IMG2IMG_PICTURE]
    save_grid(torch.cat(rows), paths[0], nrow=8)
    inputs = test_images[digits_in_turn(test_images, test_labels, 8)]
    mask = half_mask("top")
    masked = torch.where(mask, inputs, torch.full_like(inputs, 64))  # the regenerated half greyed
    rows = [inputs, masked] + [model.inpaint(inputs, mask, digit="all", seed=seed + k) for k in range(3)]
    save_grid(torch.cat(rows), paths[1], nrow=8)
    strips = [model.interpolate(10, seeds=(seed, seed + 1), digits=(2, 2)),
              model.interpolate(10, seeds=(seed, seed), digits=(3, 8)),
              model.interpolate(10, seeds=(seed + 2, seed + 3))]
    save_rows(to_float(torch.stack(strips).flatten(0, 1)).unflatten(0, (3, 10)), paths[2])
    return paths


def summary(report: dict) -> str:
    """One line per edit for the console."""
    best = max((r for r in report["img2img"] if r["recognised_prompt"] is not None),
               key=lambda r: r["recognised_prompt"])
    worst = max(report["inpaint"], key=lambda r: r["kept_change"] / r["reconstruction_change"])
    return (f"img2img: up to {best['recognised_prompt']:.1%} recognised as prompted (strength "
            f"{best['strength']:.1f}); inpainting: kept pixels move at most "
            f"{worst['kept_change'] / worst['reconstruction_change']:.2f}x the VAE reconstruction's change "
            f"({worst['kept']}, {worst['prompt']}, resample {worst['resample']})")
