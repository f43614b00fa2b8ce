"""Where and how a run computes: seeding, the device, and the mixed-precision policy."""

from __future__ import annotations

import contextlib
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


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Map auto|cpu|cuda to a torch.device; 'auto' takes CUDA when it is available."""
    check_choice("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "no CUDA GPU is available (use cpu or auto)")
    return torch.device(name)


# The one mixed-precision policy: the dtype the denoiser's forward pass runs in, by device type;
# full precision where none is named (the CPU).
AUTOCAST_DTYPES = {"cuda": torch.bfloat16}


def autocast(device: torch.device):
    dtype = AUTOCAST_DTYPES.get(device.type)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


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


def _set_cpu_autocast(dtype: torch.dtype | None) -> None:
    if dtype is None:
        AUTOCAST_DTYPES.pop("cpu", None)
    else:
        AUTOCAST_DTYPES["cpu"] = dtype


@contextlib.contextmanager
def cpu_autocast(dtype: torch.dtype | None):
    """Within the block, the denoiser's forward pass on the CPU runs in `dtype` (None: fp32)."""
    before = AUTOCAST_DTYPES.get("cpu")
    _set_cpu_autocast(dtype)
    try:
        yield
    finally:
        _set_cpu_autocast(before)


@dataclass(frozen=True)
class RunContext:
    """What one run threads through every layer: the seed everything random derives from, the
    device, whether to show progress bars, and whether to torch.compile the UNet."""
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = True
    compile: bool = False
