"""Where and how a run computes: seeding, the device, and the mixed-precision policy."""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RunContext:
    """What one run threads through every layer: the seed everything random derives from, the
    device, whether to show progress bars, and whether to torch.compile the UNet."""
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = True
    compile: bool = False
