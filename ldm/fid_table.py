"""The FID table of `make all`: the Validation floor, the Random and VAE baselines, the VAE
reconstructions and one row per samples file, the same number of images each, scored in the
classifier's features (scoring.py) and written as fid.json, fid.md and a grid per row.

`table_rows` gathers the images of every row, `score_rows` scores them, `write_report` writes
the files; scripts/evaluate.py wires the three.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import Checkpoint, check_made_with_vae
from .data import NUM_CLASSES
from .errors import LdmError, is_number
from .images import save_grid
from .outputs import Outputs, write_text_atomic
from .samples import Samples
from .scoring import Scorer, random_baseline, vae_prior_baseline, vae_reconstructions, validation_images
from .vae import VAE
from .version import __version__


@dataclass
class TableRow:
    name: str
    images: torch.Tensor  # uint8 [N x 28 x 28]
    labels: torch.Tensor | None = None  # the prompted digits, to score recognition
    source: dict = field(default_factory=dict)  # what made the images, recorded in fid.json
    from_training_set: bool = False  # made from training images: no memorisation score


def table_rows(train_images: torch.Tensor, vae: VAE, vae_ckpt: Checkpoint, samples: dict[str, Samples], n: int, *,
               seed: int, device: torch.device) -> list[TableRow]:
    """The floor and baselines (their images drawn from `seed`), then one row per samples file
    (path: samples), each cut to `n` images; a samples file with fewer, or made with another VAE,
    is refused."""
    for path, loaded in samples.items():
        if len(loaded.images) < n:
            raise LdmError(f"{path}: holds {len(loaded.images)} images, the table needs {n} per row")
        # a stale file beside a retrained VAE
        check_made_with_vae(path, loaded.info["vae_fingerprint"], vae_ckpt, "rerun `make sample`")
    generator = torch.Generator().manual_seed(seed)
    validation = validation_images(train_images, n, generator)
    vae_source = {"vae_fingerprint": vae_ckpt.fingerprint}
    return [TableRow("Validation", validation, from_training_set=True),
            TableRow("Random", random_baseline(train_images, n, generator)),
            TableRow("VAE", vae_prior_baseline(vae, n, generator, device), source=vae_source),
            TableRow("VAE reconstruction", vae_reconstructions(vae, validation, generator, device), source=vae_source,
                     from_training_set=True),
            *[TableRow(f"Diffusion {loaded.name}", loaded.images[:n],
                       None if loaded.labels is None else loaded.labels[:n], dict(loaded.info, file=str(path)))
              for path, loaded in samples.items()]]


def score_rows(scorer: Scorer, rows: list[TableRow]) -> list[dict]:
    """One scored row (score_images' keys, name, source) per table row, printed as it is done."""
    results = []
    for row in rows:
        result = {"name": row.name, **scorer(row.images, labels=row.labels, from_training_set=row.from_training_set)}
        results.append(dict(result, source=row.source) if row.source else result)
        print(f"{row.name:>24}: FID {result['fid']:8.3f}, precision {result['precision']:.3f}, "
              f"recall {result['recall']:.3f}")
    return results


def grid_name(row_name: str) -> str:
    """grid_<row name in lower case, runs of other characters as one _>.png"""
    return f"grid_{re.sub(r'[^a-z0-9]+', '_', row_name.lower()).strip('_')}.png"


def write_report(out_dir: str | os.PathLike, rows: list[TableRow], results: list[dict], context: dict,
                 outputs: Outputs) -> str:
    """fid.json (the scored rows and `context`: the run's settings and inputs), fid.md and a grid
    of each row's first 64 images into `out_dir`, as members of `outputs`; returns the table."""
    out_dir = Path(out_dir)
    results = [dict(result, grid=str(out_dir / grid_name(result["name"]))) for result in results]
    accuracy = context["classifier_test_accuracy"]
    table = markdown_table(results)
    notes = (f"{context['num_images']} images per row. FID: Fréchet distance in the 128-d features of this "
             f"project's MNIST classifier (test accuracy {accuracy:.2%}) against the full test set; not comparable "
             "to Inception FID. Precision/recall: k-NN manifolds, k = 3. Memorisation: mean feature distance to the "
             "nearest training image, divided by the test images' (≈ 1 healthy, → 0 copying). Recognised: the "
             "classifier agrees with the prompted digit.")
    for row, result in zip(rows, results):
        save_grid(row.images[:64], result["grid"], nrow=8, outputs=outputs)
    write_text_atomic(out_dir / "fid.json", json.dumps({"rows": results, **context}, indent=2) + "\n", outputs)
    write_text_atomic(out_dir / "fid.md", f"# FID\n\n{table}\n{notes}\n\n## Digits the classifier sees\n\n"
                                          f"{class_histogram_table(results)}\nDevice: {context['device']}; "
                                          f"data: {context['data_dir']} ({context['train_images']} training images); "
                                          f"seed {context['seed']}; torch {torch.__version__}; ldm {__version__}.\n",
                      outputs)
    return table


def report_context(classifier_ckpt: Checkpoint, n: int, test_images: int, train_images: int, **settings) -> dict:
    """What fid.json records beside the rows: the images per row, the reference, the classifier and
    the run's `settings` (seed, device, data_dir)."""
    accuracy = classifier_ckpt.info.get("test_accuracy")
    return {"num_images": n, "reference": f"MNIST test set ({test_images} images)",
            "classifier_test_accuracy": accuracy if is_number(accuracy) else float("nan"),  # only reported
            "classifier_fingerprint": classifier_ckpt.fingerprint, "train_images": train_images, **settings,
            "torch_version": torch.__version__, "ldm_version": __version__}


def markdown_table(rows: list[dict]) -> str:
    """rows: dicts with name and score_images' keys; the first row is the floor."""
    floor = rows[0]["fid"]
    lines = ["| row | FID | × floor | precision | recall | memorisation | recognised |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        memo = "—" if r["memorisation"] is None else f"{r['memorisation']:.2f}"
        recognised = f"{r['recognised']:.1%}" if "recognised" in r else "—"
        lines.append(f"| {r['name']} | {r['fid']:.3f} | {r['fid'] / floor:.1f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {memo} | {recognised} |")
    return "\n".join(lines) + "\n"


def class_histogram_table(rows: list[dict]) -> str:
    """How often the classifier sees each digit in each row."""
    lines = ["| row | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " |",
             "|---|" + "---:|" * NUM_CLASSES]
    lines += [f"| {r['name']} | " + " | ".join(str(c) for c in r["class_counts"]) + " |" for r in rows]
    return "\n".join(lines) + "\n"


