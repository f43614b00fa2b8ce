"""Small helpers every stage needs: errors, seeding, devices, mixed precision, atomic writes."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


class LdmError(Exception):
    """A problem with the user's input (a file, an option); scripts print it as one line."""


class ConfigError(LdmError, ValueError):
    """A setting outside its domain, raised once, where the setting is defined. `field` is the
    setting's name in its config or call; `ldm.cli` turns it into the flag that set it."""

    def __init__(self, field: str, value, reason: str):
        super().__init__(f"{field}={value}: {reason}")
        self.field, self.value, self.reason = field, value, reason


def check_choice(field: str, value, choices) -> None:
    """Refuse a mode outside its closed set, listing the valid ones."""
    if value not in choices:
        raise ConfigError(field, value, f"choose one of {', '.join(map(str, choices))}")


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


def _folder_error(folder: Path, e: OSError) -> LdmError:
    return LdmError(f"{folder}: cannot write output folder ({e.strerror or e})")


def check_writable(*paths: str | os.PathLike) -> None:
    """Fail before any work is done if an output's folder cannot be created or written."""
    for path in paths:
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise _folder_error(folder, e) from e


def describe_device(device: torch.device) -> str:
    """For reports: the GPU's name, or the CPU's architecture and thread count; and how many
    processes shared the work."""
    from . import distributed  # which imports this module
    processes = distributed.world().size
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return name + (f", {processes} processes" if processes > 1 else "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder as `path`; rename it into place on success.

    An interrupted write leaves only a hidden temporary file, never a truncated `path`
    that a later stage would accept.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _folder_error(folder, e) from e
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
