"""What the stage scripts share: common flags, argument checks, and turning errors into one line."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .data import default_data_dir
from .utils import LdmError


class StageParser(argparse.ArgumentParser):
    """The scripts' parser: the docstring as description, and a bad option is one line on
    stderr, `error: argument --x: ...`, exit status 2, like every other refusal."""

    def __init__(self, description: str):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:  # numpy's seeding range, used by set_seed and the toy data
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to run; auto takes CUDA when available")
    group.add_argument("--seed", type=seed, default=0, help="seeds data order, initialisation and noise")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_compile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet (pays a one-off compilation, about a minute, for faster steps)")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_training_args(parser: argparse.ArgumentParser, out: str, unit: str) -> None:
    """--steps/--batch-size (unset: the preset's), --out, and --save-every for snapshots."""
    group = parser.add_argument_group("optimization (unset: the preset's value)")
    group.add_argument("--steps", type=positive_int, help="optimizer steps")
    group.add_argument("--batch-size", type=positive_int, help=f"{unit} per step")
    group.add_argument("--save-every", type=non_negative_int, default=500,
                       help="snapshot the training state every N steps (and at the end) beside --out, so that "
                            "rerunning a killed command resumes; 0: only at the end")
    parser.add_argument("--out", default=out, help="checkpoint written here")


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder with the MNIST IDX files, or torchvision's root (default: $LDM_DATA_DIR or data/)")


def add_preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="auto", help="hyper-parameters: auto (by device), cpu, gpu or smoke")


def run(main: Callable[[], None]) -> None:
    """Call main(); an LdmError becomes `error: ...` on stderr and exit status 2."""
    try:
        main()
    except LdmError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

