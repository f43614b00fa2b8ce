"""The diffusion core on toy distributions: for each of a 1-D two-Gaussian mixture, a 1-D ramp,
a 2-D spiral and a 2-D swiss roll, train the MLP denoiser (CPU, about a minute each), sample it
with DDPM-1000, DDIM-50 and annealed Langevin dynamics, and compare with fresh data by the
(sliced) 1-Wasserstein distance. The mixture model is also prompted "left" / "right" through
classifier-free guidance. Writes <out-dir>/<data>.png, toy.json and toy.md, and each model's
training log and loss curves, <data>.log.jsonl and <data>_curves.png.

    python -m scripts.toy
    python -m scripts.toy --data mixture --settings fast --out-dir /tmp/toy   # seconds
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldm import __version__
from ldm.cli import StageParser, add_runtime_args, at_least, check_outputs
from ldm.distributed import describe_device
from ldm.launch import run
from ldm.monitor import Monitor, read_log
from ldm.outputs import write_text_atomic, written_together
from ldm.plots import plot_training_log
from ldm.toy.data import TOY_DATASETS, get_toy_dataset
from ldm.toy.plots import save_toy_figure
from ldm.toy.run import TOY_SETTINGS, evaluate_toy, toy_markdown, train_toy


def parser() -> StageParser:
    parser = StageParser(__doc__)
    parser.add_argument("--data", nargs="+", default=list(TOY_DATASETS), help=f"of {', '.join(TOY_DATASETS)}")
    parser.add_argument("--settings", default="full", choices=list(TOY_SETTINGS),
                        help="full: the make toy run; fast: the size the tests use")
    points = at_least(2, "the Gaussian baseline needs a covariance", bytes_each=16)  # 2-D float64 points
    parser.add_argument("--num-samples", type=points, default=4000, help="samples per sampler and data set")
    parser.add_argument("--out-dir", default="reports/toy", help="PNGs, toy.json and toy.md go here")
    add_runtime_args(parser, device=False)
    return parser


def main(args) -> None:
    datasets = [get_toy_dataset(name) for name in args.data]
    out_dir = Path(args.out_dir)
    check_outputs(args, out_dir / "toy.json")
    rows = []
    for dataset in datasets:
        log = out_dir / f"{dataset.name}.log.jsonl"
        model = train_toy(dataset, TOY_SETTINGS[args.settings], conditional=bool(dataset.label_names),
                          seed=args.seed, progress=not args.no_progress, monitor=Monitor(log))
        plot_training_log(read_log(log), out_dir / f"{dataset.name}_curves.png", f"toy {dataset.name}")
        row, fresh, samples = evaluate_toy(model, dataset, args.num_samples, args.seed)
        save_toy_figure(fresh, samples, out_dir / f"{dataset.name}.png")
        distances = ", ".join(f"{name} {s['distance']:.4f}" for name, s in row["samplers"].items())
        print(f"{dataset.name}: trained in {model.train_seconds:.0f}s; W1 to fresh data: floor {row['floor']:.4f}, "
              f"Gaussian {row['gaussian']:.4f}, {distances}; wrote {out_dir / (dataset.name + '.png')}")
        rows.append(row)
    report = {"settings": args.settings, "num_samples": args.num_samples, "seed": args.seed,
              "device": describe_device(torch.device("cpu")), "torch_version": torch.__version__,
              "ldm_version": __version__, "rows": rows}
    with written_together():
        write_text_atomic(out_dir / "toy.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out_dir / "toy.md", toy_markdown(rows))
    print(f"wrote {out_dir / 'toy.json'} and {out_dir / 'toy.md'}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
