"""Stage 0: check the MNIST IDX files and record what was found.

    python -m scripts.prepare_data --data-dir ../shared/data/mnist
    python -m scripts.prepare_data --data-dir data --download   # fetches missing files (ldm/download.py)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldm import __version__
from ldm.cli import StageParser, add_data_arg, check_outputs
from ldm.data import FILE_STEMS, find_idx_file, load_mnist_splits
from ldm.download import MNIST_FILES, download_mnist
from ldm.errors import LdmError
from ldm.launch import run
from ldm.outputs import write_text_atomic


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    parser.add_argument("--download", action="store_true",
                        help="download the missing files from the MNIST mirrors (MD5-checked; $LDM_MNIST_MIRROR "
                             "replaces the mirror list)")
    parser.add_argument("--out", default="checkpoints/data.json", help="summary written here")
    parser.add_argument("--no-progress", action="store_true", help="hide the download's progress bars")
    return parser


def main(args) -> None:
    check_outputs(args, args.out)
    if args.download:
        download_mnist(args.data_dir, {name: md5 for name, md5 in MNIST_FILES.items() if missing(args.data_dir, name)},
                       progress=not args.no_progress)

    summary = {"data_dir": str(Path(args.data_dir).resolve()), "torch_version": torch.__version__,
               "ldm_version": __version__}
    for split, (images, labels) in zip(("train", "test"), load_mnist_splits(args.data_dir)):
        summary[split] = {"count": len(images), "class_counts": torch.bincount(labels, minlength=10).tolist(),
                          "files": [str(find_idx_file(args.data_dir, stem)) for stem in FILE_STEMS[split]]}
        print(f"{split}: {len(images)} images, class counts {summary[split]['class_counts']}")
    write_text_atomic(args.out, json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


def missing(data_dir, name: str) -> bool:
    """Whether the IDX file `name` (.gz) is in none of the places find_idx_file looks."""
    try:
        find_idx_file(data_dir, name.removesuffix(".gz"))
    except LdmError:
        return True
    return False


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
