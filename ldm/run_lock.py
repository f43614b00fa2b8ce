"""One training run per output: a lock file beside the checkpoint, taken before any work and
released on any exit, so that a second run started into the same output is refused instead of
overwriting the first one's snapshots.

The lock holds the host and process id of its owner. A lock whose owner is gone (a killed run, on
this host) is stale and taken over; one held by a live process, or written on another host (whose
processes cannot be checked from here), refuses the run with one line naming the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from . import distributed
from .errors import LdmError
from .outputs import folder_made_for


def lock_path(out: str | os.PathLike) -> Path:
    """unet.safetensors -> .unet.safetensors.lock, beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def _alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs. A killed process that its parent has not
    reaped yet (a zombie) still answers signal 0 but holds nothing, so it counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    if not os.path.isdir("/proc"):  # not Linux: signal 0 is all there is to ask
        return True
    try:  # the state is the field after the parenthesised name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # it ended meanwhile
        return False
    return state != "Z"


def _owner(path: Path) -> dict | None:
    """The lock's owner, or None when the file is gone or unreadable (a run dying as it wrote it)."""
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _take(path: Path) -> bool:
    """Create the lock file if there is none; True when this process now holds it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    return True


@contextlib.contextmanager
def run_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of output `out` while the block runs (rank 0 alone: the other ranks of a
    run write nothing)."""
    if not distributed.is_main():
        yield
        return
    path = lock_path(out)
    with folder_made_for(path.parent):
        with _held(path, out):
            yield


@contextlib.contextmanager
def _held(path: Path, out) -> Iterator[None]:
    if not _take(path):
        owner = _owner(path)
        here = owner is not None and owner.get("host") == socket.gethostname()
        if owner is not None and (not here or _alive(owner["pid"])):
            where = f"process {owner['pid']}" + ("" if here else f" on {owner.get('host')}")
            raise LdmError(f"{out}: another run is writing it ({where}, lock {path}); wait for it to end, or write "
                           "elsewhere")
        path.unlink(missing_ok=True)  # stale: its owner is gone
        if not _take(path):
            raise LdmError(f"{out}: another run took its lock {path} just now; wait for it to end, or write elsewhere")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
