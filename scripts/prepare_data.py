"""Stage 0: check the MNIST IDX files and record what was found.

    python -m scripts.prepare_data --data-dir ../shared/data/mnist
    python -m scripts.prepare_data --data-dir data --download   # needs torchvision and a network
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldm import __version__
from ldm.cli import StageParser, add_data_arg
from ldm.data import FILE_STEMS, download_mnist, find_idx_file, load_mnist
from ldm.errors import LdmError
from ldm.launch import run
from ldm.outputs import check_writable, write_text_atomic


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    parser.add_argument("--download", action="store_true",
                        help="download missing files with torchvision (optional extra: pip install 'ldm[download]')")
    parser.add_argument("--out", default="checkpoints/data.json", help="summary written here")
    return parser


def main(args) -> None:
    check_writable(args.out)
    if args.download:
        try:
            for stems in FILE_STEMS.values():
                for stem in stems:
                    find_idx_file(args.data_dir, stem)
        except LdmError:
            Path(args.data_dir).mkdir(parents=True, exist_ok=True)
            download_mnist(args.data_dir)

    summary = {"data_dir": str(Path(args.data_dir).resolve()), "torch_version": torch.__version__,
               "ldm_version": __version__}
    for split in FILE_STEMS:
        images, labels = load_mnist(args.data_dir, split)
        summary[split] = {"count": len(images), "class_counts": torch.bincount(labels, minlength=10).tolist(),
                          "files": [str(find_idx_file(args.data_dir, stem)) for stem in FILE_STEMS[split]]}
        print(f"{split}: {len(images)} images, class counts {summary[split]['class_counts']}")
    write_text_atomic(args.out, json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)
