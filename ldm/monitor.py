"""Watching a training run: a JSON-lines metrics log, held-out checks at fixed intervals, the
curves as a PNG, and optionally TensorBoard.

The log holds one JSON object per line, {"step": n, "kind": k, ...scalars}, where n counts the
optimizer steps done and k is "train" (the training metrics and learning rate, every logging
interval), "validation" (held-out loss) or "fid" (sample quality), each check at its own
interval and at the last step; a check's line also says how many seconds it took, and every line
the seconds the run has spent training so far ("train_seconds": wall-clock time less the checks'
time, counted on across a resume), which studies compare recipes by. Lines are
flushed as they are written, so a killed run's log survives; a resumed run first cuts its log
back to the step of the snapshot it resumes from, so that a killed-and-resumed run leaves the
same log as an uninterrupted one. Rank 0 alone writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import distributed
from .errors import LdmError
from .outputs import atomic_path, write_error

TENSORBOARD_HINT = "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install -e '.[tensorboard]')"


def log_path(out: str | os.PathLike) -> Path:
    """Where the run writing checkpoint `out` logs: beside it (unet.safetensors -> unet.log.jsonl)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.log.jsonl")


def curves_path(out: str | os.PathLike) -> Path:
    """The default picture of the run writing `out`, beside it (unet.safetensors -> unet.curves.png)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.curves.png")


def read_log(path: str | os.PathLike) -> list[dict]:
    """The entries of a log; a last line cut short by a kill is dropped."""
    path = Path(path)
    text = path.read_text()
    lines = text.split("\n")
    if lines[-1]:  # no newline after the last line: it was being written
        lines = lines[:-1]
    try:
        return [json.loads(line) for line in lines if line]
    except json.JSONDecodeError as e:
        raise LdmError(f"{path}: not a metrics log (line {e.lineno}: {e.msg}); delete it to start afresh") from e


def check_tensorboard() -> None:
    """Refuse --tensorboard at once, before any work, when the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise LdmError(TENSORBOARD_HINT)


@dataclass(frozen=True)
class Check:
    """A measurement taken during training: `run(model, ema_model)` (in eval mode, without
    gradients; ema_model None for a stage without EMA) returns scalars to log, and optionally
    "samples" (uint8 images [N x 28 x 28]) that go to TensorBoard only."""
    kind: str
    every: int  # steps between checks (0: only at the end); every check also runs at the last step
    run: Callable[[torch.nn.Module, torch.nn.Module | None], dict]
    at: int = 0  # > 0: once, after this step, instead of every `every` steps and at the end


class Monitor:
    """Where a run's metrics go: the JSON-lines log at `path` and, with `tensorboard`, event files
    in that folder."""

    def __init__(self, path: str | os.PathLike, tensorboard: str | os.PathLike | None = None):
        self.path, self.tensorboard = Path(path), tensorboard
        self._file = self._writer = None
        self._clock_start, self._check_seconds = time.time(), 0.0
        if tensorboard is not None:
            check_tensorboard()

    def open(self, start: int) -> None:
        """Start the log afresh, or at a resume after `start` steps keep only what came before."""
        if not distributed.is_main():
            return
        kept = [e for e in read_log(self.path) if e["step"] <= start] if start and self.path.is_file() else []
        before = kept[-1].get("train_seconds", 0.0) if kept else 0.0
        self._clock_start, self._check_seconds = time.time() - before, 0.0
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(e) + "\n" for e in kept))
        try:
            self._file = open(self.path, "a")
        except OSError as e:
            raise write_error(self.path, e) from e
        if self.tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events a killed run wrote after its snapshot
            try:
                self._writer = SummaryWriter(str(self.tensorboard), purge_step=start or None)
            except OSError as e:
                raise write_error(self.tensorboard, e) from e

    def train_seconds(self) -> float:
        """Seconds since the run started (less any it resumed after) spent outside the checks."""
        return time.time() - self._clock_start - self._check_seconds

    def write(self, step: int, kind: str, values: dict, images: torch.Tensor | None = None) -> None:
        if self._file is None:
            return
        values = dict(values, train_seconds=self.train_seconds())
        try:
            self._file.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
            self._file.flush()
        except OSError as e:
            raise write_error(self.path, e) from e
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"{kind}/{name}", value, step)
            if images is not None:
                from .images import grid_array
                self._writer.add_image(f"{kind}/samples", grid_array(images[:64]), step, dataformats="HW")
            self._writer.flush()

    def run_checks(self, checks: list[Check], step: int, model: torch.nn.Module,
                   ema_model: torch.nn.Module | None) -> None:
        """Run `checks` after `step` steps on every rank (sampling may be shared out) and log them."""
        model.eval()
        for check in checks:
            start = time.time()
            with torch.no_grad():
                values = check.run(model, ema_model)
            images = values.pop("samples", None)
            seconds = time.time() - start
            self._check_seconds += seconds
            self.write(step, check.kind, dict(values, seconds=seconds), images)
        model.train()

    def close(self, discard: bool = False) -> None:
        """Close the log (and TensorBoard); with `discard`, remove the log too."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # a failed write was reported already; closing retries its flush
                pass
            if discard:
                self.path.unlink(missing_ok=True)
        if self._writer is not None:
            self._writer.close()
        self._file = self._writer = None
