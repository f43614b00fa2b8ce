"""What the stage scripts' command lines share: the parser, argument types and flag groups, and
the run context the flags make. The library raises `ConfigError(field, ...)` where a setting is
defined; only here is the field translated into the command-line flag that set it
(`StageParser.flag_for`). Running a script and printing its errors is launch.py's job."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

import torch

from .data import FILE_STEMS, SAMPLE_BYTES, default_data_dir, find_idx_file
from .errors import LdmError
from .outputs import check_writable
from .pipeline import GUIDE_NAME
from .presets import Preset, get_preset
from .prompt import GUIDED_AUTOGUIDANCE, GUIDED_PROMPT_GUIDANCE, PROMPT_GUIDANCE, PROMPT_GUIDANCE_INTERVAL
from .runtime import DEVICES, PRECISIONS, RunContext, memory_problem, resolve_device
from .sampling import (DEFAULT_SAMPLER, DEFAULT_STEPS, ETA_SAMPLERS, SAMPLERS, SPACINGS, UNCONDITIONAL_DEFAULTS,
                       VARIANCES)


class UsageError(LdmError):
    """A command line argparse cannot parse; launch.run prints it as one line, exit status 2."""


class StageParser(argparse.ArgumentParser):
    """The scripts' parser: the docstring as description, and a bad option raises UsageError,
    which launch.run prints as one line, `error: argument --x: ...`, like every other refusal."""

    def __init__(self, description: str):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str):
        raise UsageError(message)

    def flag_for(self, field: str) -> str:
        """The option whose value lands in `field` (its dest), or the field's own name."""
        for action in self._actions:
            if action.dest == field and action.option_strings:
                return max(action.option_strings, key=len)
        return field


INT_LIMIT = 2**63  # counts become int64 tensors and step counters: larger ones cannot be held


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    if value >= INT_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2**63, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if not 0 <= value < INT_LIMIT:
        raise argparse.ArgumentTypeError(f"must be >= 0 and below 2**63, got {value}")
    return value


def at_least(minimum: int, why: str, bytes_each: int) -> Callable[[str], int]:
    """An argument type: a count of at least `minimum` (`why` says why), and few enough that the
    items counted, `bytes_each` apiece, fit in this machine's memory."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} ({why}), got {value}")
        problem = memory_problem(value * bytes_each)
        if problem:
            raise argparse.ArgumentTypeError(f"{value} {problem}")
        return value
    return parse


# images to score: each row's images are held in memory
fid_images = at_least(2, "a covariance needs two", SAMPLE_BYTES)
scored_images = at_least(4, "precision and recall compare each image with its 3 nearest neighbours", SAMPLE_BYTES)


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:  # numpy's seeding range, used by set_seed and the toy data
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
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
                        help="torch.compile the UNet (a one-off compilation of about a minute; on a 2-core CPU in "
                             "bf16 its steps measured slower, docs/results.md)")


def add_unet_runtime_args(parser: argparse.ArgumentParser) -> None:
    """The runtime flags of a script that runs the UNet: add_runtime_args, --compile, --precision."""
    add_runtime_args(parser)
    add_compile_arg(parser)
    add_precision_arg(parser)


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    """--precision: the mixed-precision policy while the script runs (launch.run enters it)."""
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the UNet's forward passes: auto (bf16 on CUDA and on CPUs with native bf16, "
                             "fp32 elsewhere), fp32 or bf16")


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


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder with the MNIST IDX files, or torchvision's root (default: $LDM_DATA_DIR or data/)")


CHECKPOINTS = {"classifier": "the classifier whose features FID uses", "vae": "the VAE (its decoder)",
               "unet": "the diffusion UNet", "latents": "the latent cache"}


def add_study_dirs(parser: argparse.ArgumentParser, stem: str, work: str | None = None,
                   work_dir: str | None = None) -> None:
    """--out-dir for a study's <stem>.{json,md,png} and, for one that trains, --work-dir
    (default checkpoints/<work_dir or stem>) for its models (`work` says what goes there), which
    a rerun reuses."""
    parser.add_argument("--out-dir", default="reports", help=f"{stem}.json, {stem}.md and pictures go here")
    if work is not None:
        parser.add_argument("--work-dir", default=f"checkpoints/{work_dir or stem}",
                            help=f"{work} go here (reused by a rerun)")


def add_checkpoint_args(parser: argparse.ArgumentParser, *stages: str) -> None:
    """--classifier, --vae, --unet, --latents: the files `make all` writes into checkpoints/."""
    for stage in stages:
        parser.add_argument(f"--{stage}", default=f"checkpoints/{stage}.safetensors", help=CHECKPOINTS[stage])


def add_guide_arg(parser) -> None:
    """--guide: the weaker UNet that autoguides sampling; resolve it with `pipeline.resolve_guide`
    before `check_outputs`, so that no output may replace it."""
    parser.add_argument("--guide", default="auto",
                        help="a weaker UNet trained on the same latents (`train_diffusion --guide-out`: the same "
                             "run's weights after an eighth of its steps) to autoguide with (Karras et al. 2024); "
                             f"'auto': {GUIDE_NAME} beside --unet if there is one, as `make all` writes it; 'none': "
                             "no guide")


def add_sampler_args(parser: argparse.ArgumentParser, variance: bool = True) -> None:
    """The sampler group: --sampler, --steps, --eta, --spacing (and DDPM's --variance), each unset
    one the default of the branch sampled (SamplerConfig.for_branch)."""
    group = parser.add_argument_group("sampler")
    group.add_argument("--sampler",
                       help=f"{', '.join(SAMPLERS)}: ancestral DDPM, DDIM, DPM-Solver++(2M) or annealed Langevin "
                            f"dynamics (unset: {DEFAULT_SAMPLER})")
    group.add_argument("--steps", type=positive_int,
                       help="denoising steps or Langevin noise levels (unset: "
                            + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
                            + "; the \"no label\" branch: " + ", ".join(f"{k} {v['steps']}" for k, v in
                                                                     UNCONDITIONAL_DEFAULTS.items())
                            + "; DDPM with fewer than T steps is respaced)")
    group.add_argument("--eta", type=float,
                       help=f"noise scale of {' and '.join(ETA_SAMPLERS)}: 0 deterministic (the ODE), 1 the reverse "
                            "SDE (DDPM's step) (unset: 0; the \"no label\" branch: "
                            + ", ".join(f"{k} {v['eta']:g}" for k, v in UNCONDITIONAL_DEFAULTS.items()) + ")")
    if variance:
        group.add_argument("--variance", default="beta_tilde", help=f"DDPM step variance σ²: {', '.join(VARIANCES)}")
    group.add_argument("--spacing", help=f"steps evenly spaced in {' or '.join(SPACINGS)} (unset: log-SNR for "
                                         "dpm++2m, time for the others)")


def add_prompt_args(parser: argparse.ArgumentParser, digit_help: str, digit: bool = True) -> None:
    """The prompt group: --digit (`digit_help` says what it takes; `digit` False leaves it out),
    --guidance, --guidance-interval, --guide and --autoguidance, unset ones the defaults of
    Prompt.for_model."""
    group = parser.add_argument_group("prompt")
    if digit:
        group.add_argument("--digit", help=digit_help)
    group.add_argument("--guidance", type=float,
                       help="classifier-free guidance scale: 0 unconditional, 1 conditional, >1 guided "
                            f"(unset: 1 for --digit any, else {PROMPT_GUIDANCE:g} on λ "
                            "{:g}..{:g}, the choice of `make guidance`; a scale given alone guides every "
                            "step)".format(*PROMPT_GUIDANCE_INTERVAL))
    group.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="guide only the steps whose half-log-SNR λ = log(α/σ) lies in [LOW, HIGH] "
                            "(Kynkäänniemi et al. 2024), plainly conditional elsewhere (unset: every step)")
    add_guide_arg(group)
    group.add_argument("--autoguidance", type=float,
                       help="autoguidance weight w >= 1: D_guide + w (D - D_guide) (unset with a guide: "
                            + ", ".join(f"{k} {v:g}" for k, v in GUIDED_AUTOGUIDANCE.items())
                            + f", and digits at guidance {GUIDED_PROMPT_GUIDANCE:g} on the same interval; "
                            "without: 1, none)")


def add_preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="auto", help="hyper-parameters: auto (by device), cpu, gpu or smoke")


def input_files(args: argparse.Namespace) -> dict[str, object]:
    """The files a script reads, by the flag that names them: its checkpoints, samples files and
    the MNIST files found in --data-dir."""
    inputs = {f"--{name}": getattr(args, name) for name in (*CHECKPOINTS, "samples", "guide")
              if getattr(args, name, None)}
    if getattr(args, "data_dir", None) is not None:
        found = []
        for stem in (stem for stems in FILE_STEMS.values() for stem in stems):
            try:
                found.append(find_idx_file(args.data_dir, stem))
            except LdmError:  # missing data is the data stage's to report
                pass
        if found:
            inputs["--data-dir"] = found
    return inputs


def check_outputs(args: argparse.Namespace, *outputs) -> None:
    """Refuse, before any work, outputs that cannot be written or would replace an input
    (outputs.check_writable against input_files)."""
    check_writable(*outputs, inputs=input_files(args))


def prepare(args: argparse.Namespace, *outputs) -> tuple[torch.device, Preset]:
    """What every stage does first: refuse unwritable outputs before any work (check_outputs),
    then resolve --device and --preset."""
    check_outputs(args, *outputs)
    device = resolve_device(args.device)
    return device, get_preset(args.preset, device)


def with_overrides(config, args: argparse.Namespace, *fields: str):
    """`config` (a dataclass) with the given fields replaced by the flags that were set."""
    return dataclasses.replace(config, **{f: getattr(args, f) for f in fields if getattr(args, f) is not None})


def run_context(args: argparse.Namespace, device: torch.device | None = None) -> RunContext:
    """The RunContext of the runtime flags (--device, --seed, --no-progress, --compile)."""
    return RunContext(seed=args.seed, device=device if device is not None else resolve_device(args.device),
                      progress=not args.no_progress, compile=getattr(args, "compile", False))
