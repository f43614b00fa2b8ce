"""Where and how a run computes: seeding, the device, and the mixed-precision policy."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, check_choice


def set_seed(seed: int) -> None:
    """Seed every global RNG in one place; explicit generators are derived from the same seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def physical_memory() -> int:
    """This machine's RAM in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_problem(nbytes: int) -> str | None:
    """Why a request that would hold `nbytes` at once cannot run here (more than this machine's
    RAM: it could only fail after a long wait, or take the machine down with it), or None."""
    memory = physical_memory()
    if nbytes > memory:
        return (f"would hold {nbytes / 2**30:,.1f} GiB at once, more than this machine's "
                f"{memory / 2**30:,.1f} GiB of memory")
    return None


def check_fits_in_memory(field: str, value, nbytes: int) -> None:
    """Refuse a request (`field` = `value`) that would hold `nbytes` at once (`memory_problem`)."""
    problem = memory_problem(nbytes)
    if problem:
        raise ConfigError(field, value, problem)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Map auto|cpu|cuda to a torch.device; 'auto' takes CUDA when it is available."""
    check_choice("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "no CUDA GPU is available (use cpu or auto)")
    return torch.device(name)


@functools.cache  # asked at every policy change; the CPU does not change under a process
def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), by /proc/cpuinfo's flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def cpu_class() -> str:
    """The CPU's vector instructions as torch dispatches to them (AVX512, AVX2, ...), and whether
    it computes bf16 natively: what makes CPU timings differ up to 3x between machines."""
    return torch.backends.cpu.get_cpu_capability() + (" with native bf16" if native_bf16_cpu() else "")


PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtypes(precision: str) -> dict[str, torch.dtype]:
    """The dtype the denoiser's forward pass runs in under `precision`, by device type (full
    precision where none is named). auto: bf16 on CUDA and on a CPU that computes bf16 natively,
    where `make recipes` measured about 1.7× fp32's throughput (docs/results.md); full
    precision on other CPUs, which would emulate bf16 slowly. fp32 and bf16: that everywhere."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp32":
        return {}
    if precision == "bf16" or native_bf16_cpu():
        return {"cuda": torch.bfloat16, "cpu": torch.bfloat16}
    return {"cuda": torch.bfloat16}


# The process's one mixed-precision policy, read by `autocast`: auto unless a block says
# otherwise (`precision_policy`; a script's --precision holds while it runs, launch.py).
AUTOCAST_DTYPES = autocast_dtypes("auto")


def _set_policy(dtypes: dict[str, torch.dtype]) -> None:
    AUTOCAST_DTYPES.clear()
    AUTOCAST_DTYPES.update(dtypes)


@contextlib.contextmanager
def precision_policy(name: str):
    """Within the block, the denoiser runs at precision `name` (PRECISIONS); then as before."""
    before = dict(AUTOCAST_DTYPES)
    _set_policy(autocast_dtypes(name))
    try:
        yield
    finally:
        _set_policy(before)


def autocast(device: torch.device):
    dtype = AUTOCAST_DTYPES.get(device.type)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def precision_name(device: torch.device) -> str:
    """The precision the denoiser runs in on `device` under the current policy: bf16 or fp32."""
    return "bf16" if AUTOCAST_DTYPES.get(device.type) == torch.bfloat16 else "fp32"


@dataclass(frozen=True)
class RunContext:
    """What one run threads through every layer: the seed everything random derives from, the
    device, whether to show progress bars, and whether to torch.compile the UNet."""
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = True
    compile: bool = False
