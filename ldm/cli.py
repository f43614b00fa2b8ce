"""What the stage scripts share: common flags, argument types, and turning every error into one
line. The library raises `ConfigError(field, ...)` where a setting is defined; only here is the
field translated into the command-line flag that set it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import distributed
from .data import default_data_dir
from .monitor import Monitor, curves_path, log_path, read_log
from .plots import plot_training_log
from .presets import Preset, get_preset
from .utils import DEVICES, ConfigError, LdmError, check_folder_writable, check_writable, resolve_device


class StageParser(argparse.ArgumentParser):
    """The scripts' parser: the docstring as description, and a bad option is one line on
    stderr, `error: argument --x: ...`, exit status 2, like every other refusal."""

    def __init__(self, description: str):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str):
        _fail(f"{message} (see --help)", 2, shared=True)

    def flag_for(self, field: str) -> str:
        """The option whose value lands in `field` (its dest), or the field's own name."""
        for action in self._actions:
            if action.dest == field and action.option_strings:
                return max(action.option_strings, key=len)
        return field


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:  # numpy's seeding range, used by set_seed and the toy data
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_runtime_args(parser: argparse.ArgumentParser, device: bool = True) -> None:
    group = parser.add_argument_group("runtime")
    if device:
        group.add_argument("--device", default="auto", help=f"where to run: {', '.join(DEVICES)} "
                                                            "(auto takes CUDA when available)")
    group.add_argument("--seed", type=seed, default=0, help="seeds data order, initialisation and noise")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_compile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet (pays a one-off compilation, about a minute, for faster steps)")


def add_training_args(parser: argparse.ArgumentParser, out: str, unit: str) -> None:
    """--steps/--batch-size (unset: the preset's), --out, and --save-every for snapshots."""
    group = parser.add_argument_group("optimization (unset: the preset's value)")
    group.add_argument("--steps", type=positive_int, help="optimizer steps")
    group.add_argument("--batch-size", type=positive_int, help=f"{unit} per step")
    group.add_argument("--save-every", type=non_negative_int, default=500,
                       help="snapshot the training state every N steps (and at the end) beside --out, so that "
                            "rerunning a killed command resumes; 0: only at the end")
    group.add_argument("--validate-every", type=non_negative_int,
                       help="steps between held-out validations (0: only at the end)")
    parser.add_argument("--out", default=out, help="checkpoint written here")
    group = parser.add_argument_group("monitoring")
    group.add_argument("--log", help="metrics log, one JSON line per logged step (default: beside --out, *.log.jsonl)")
    group.add_argument("--curves", help="PNG of the training and validation curves, drawn at the end "
                                        "(default: beside --out, *.curves.png)")
    group.add_argument("--tensorboard", metavar="DIR", help="also write the metrics as TensorBoard events into DIR "
                                                            "(needs the tensorboard package)")


def training_outputs(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(checkpoint, metrics log, curves PNG) of a training stage's flags."""
    return Path(args.out), Path(args.log or log_path(args.out)), Path(args.curves or curves_path(args.out))


def training_monitor(args: argparse.Namespace) -> Monitor:
    """The Monitor of a training stage's flags; --tensorboard without the package, or naming a
    folder that cannot be written, is refused here."""
    monitor = Monitor(training_outputs(args)[1], args.tensorboard)
    if args.tensorboard is not None:
        check_folder_writable(args.tensorboard)
    return monitor


def draw_curves(args: argparse.Namespace, title: str) -> None:
    """After a training stage: its log as a PNG (rank 0)."""
    if distributed.is_main():
        _, log, curves = training_outputs(args)
        plot_training_log(read_log(log), curves, title)


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder with the MNIST IDX files, or torchvision's root (default: $LDM_DATA_DIR or data/)")


CHECKPOINTS = {"classifier": "the classifier whose features FID uses", "vae": "the VAE (its decoder)",
               "unet": "the diffusion UNet", "latents": "the latent cache"}


def add_checkpoint_args(parser: argparse.ArgumentParser, *stages: str) -> None:
    """--classifier, --vae, --unet, --latents: the files `make all` writes into checkpoints/."""
    for stage in stages:
        parser.add_argument(f"--{stage}", default=f"checkpoints/{stage}.safetensors", help=CHECKPOINTS[stage])


def add_preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="auto", help="hyper-parameters: auto (by device), cpu, gpu or smoke")


def prepare(args: argparse.Namespace, *outputs) -> tuple[torch.device, Preset]:
    """What every stage does first: refuse unwritable outputs before any work, then resolve
    --device and --preset."""
    check_writable(*outputs)
    device = resolve_device(args.device)
    return device, get_preset(args.preset, device)


def with_overrides(config, args: argparse.Namespace, *fields: str):
    """`config` (a dataclass) with the given fields replaced by the flags that were set."""
    return dataclasses.replace(config, **{f: getattr(args, f) for f in fields if getattr(args, f) is not None})


def run(parser: StageParser, main: Callable[[argparse.Namespace], None], multiprocess: bool = True) -> None:
    """Parse the arguments and call main(args). A ConfigError becomes `error: --flag value: reason`,
    any other LdmError `error: ...`, on stderr with exit status 2.

    Under torchrun (`multiprocess` stages only) the process joins the group first (distributed.py);
    ranks other than 0 print nothing and show no progress. Any error then becomes one line naming
    the rank, printed at once by rank 0 for an LdmError (which every rank meets alike: a bad
    option or file, a diverged loss) and otherwise after `RANK_ERROR_GRACE` seconds. torchrun
    stops every rank as soon as one exits with an error, so the line that appears is the first
    failure's: an error every rank meets is reported once, and a collective that fails because
    another rank died is not reported at all (torchrun's own summary names the dead rank).
    """
    if distributed.launched():
        distributed.enter()  # so that even a bad option is reported with its rank, once
    warnings.showwarning = _show_warning
    args = parser.parse_args()
    try:
        if distributed.launched():
            if not multiprocess:
                raise LdmError("this stage runs as one process; start it without torchrun")
            distributed.init(args.device)
            if not distributed.is_main():
                args.no_progress = True
                sys.stdout = open(os.devnull, "w")
                warnings.simplefilter("ignore")
        main(args)
        distributed.shutdown(finished=True)
    except ConfigError as e:
        _fail(f"{parser.flag_for(e.field)} {e.value}: {e.reason}", 2, shared=True)
    except LdmError as e:
        _fail(str(e), 2, shared=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # on several processes: a failed collective or a bug, as one line per job
        if distributed.world().size == 1:
            raise
        _fail(f"{type(e).__name__}: {e}", 1, shared=False)
    finally:
        distributed.shutdown()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, like an error but without stopping: `warning: ...`."""
    print(f"warning: {message}", file=sys.stderr)


RANK_ERROR_GRACE = 3.0  # seconds; torchrun's monitor notices a failed rank within about one


def _fail(message: str, status: int, shared: bool) -> None:
    world = distributed.world()
    if world.size > 1:
        message = f"rank {world.rank} of {world.size}: {message}"
        if world.rank > 0 or not shared:
            time.sleep(RANK_ERROR_GRACE)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)
