"""Small helpers every stage needs: errors, seeding, devices, mixed precision, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import math
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


def is_number(value) -> bool:
    """A finite int or float from JSON or a caller (not a bool, a string, None, NaN or ±inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(**fields) -> None:
    """Refuse a size (a width, a count, a weight) that is not > 0."""
    for field, value in fields.items():
        for v in value if isinstance(value, tuple) else (value,):
            if not v > 0:
                raise ConfigError(field, value, "must be positive")


def check_fraction(field: str, value: float) -> None:
    """Refuse a probability outside [0, 1), such as a dropout rate."""
    if not 0 <= value < 1:
        raise ConfigError(field, value, "must be in [0, 1)")


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


def write_error(path: str | os.PathLike, e: OSError) -> LdmError:
    """An OSError met while writing `path` as the one line a user reads."""
    if e.errno == errno.ENOSPC:
        return LdmError(f"no space left on device writing {path}")
    return LdmError(f"cannot write {path} ({e.strerror or e})")


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise LdmError(f"{path}: is a directory; name a file to write")


def check_folder_writable(folder: str | os.PathLike) -> None:
    """Fail before any work is done if an output folder cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise _folder_error(folder, e) from e


def check_writable(*paths: str | os.PathLike) -> None:
    """Fail before any work is done if an output names a directory, or its folder cannot be
    created or written."""
    for path in paths:
        path = Path(path)
        _refuse_directory(path)
        check_folder_writable(path.parent)


def check_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor`, or one LdmError saying that `what` holds NaN or infinity."""
    if not torch.isfinite(tensor).all():
        raise LdmError(f"{what} not finite (NaN or infinite values)")
    return tensor


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


class _Outputs:
    """Files being written together: each to a hidden temporary file beside it, renamed into place
    only when all are written."""

    def __init__(self):
        self.pending: list[tuple[Path, Path]] = []  # (temporary file, destination)

    def reserve(self, path: Path) -> Path:
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        except OSError as e:
            raise _folder_error(folder, e) from e
        os.close(fd)
        self.pending.append((Path(tmp), path))
        return Path(tmp)

    def commit(self) -> None:
        for _, path in self.pending:  # before the first rename, so that none happens
            _refuse_directory(path)
        mask = os.umask(0)  # mkstemp makes files private; give them the mode any new file gets
        os.umask(mask)
        for tmp, path in self.pending:
            try:
                os.chmod(tmp, 0o666 & ~mask)
                os.replace(tmp, path)
            except OSError as e:
                raise write_error(path, e) from e

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)


_writing: list[_Outputs] = []  # the group being written, if any


@contextlib.contextmanager
def written_together(separate: bool = False) -> Iterator[None]:
    """Every `atomic_path` inside the block belongs to one group: the files appear together when
    the block ends, or (on any error, a full disk included) none does and every temporary file is
    removed, so that an existing good output is never replaced by a partial set. An OSError while
    writing or renaming becomes one LdmError naming the file. Nested blocks join the outermost group, except a
    `separate` one, whose files are written when it ends (training snapshots, during a stage whose
    outputs form a group)."""
    if _writing and not separate:
        yield
        return
    group = _Outputs()
    _writing.append(group)
    try:
        try:
            yield
        finally:
            _writing.pop()
        group.commit()
    finally:
        group.discard()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder as `path`; it is renamed into place when the
    write (or the enclosing `written_together` group) succeeds.

    An interrupted write leaves at most a hidden temporary file, never a truncated `path` that a
    later stage would accept. An OSError while writing becomes one LdmError naming `path`.
    """
    path = Path(path)
    with written_together():
        tmp = _writing[-1].reserve(path)
        try:
            yield tmp
        except OSError as e:
            raise write_error(path, e) from e


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
