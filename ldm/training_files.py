"""The files a training stage writes: its checkpoint, and beside it the metrics log, the curves
and the snapshot a killed run resumes from; the monitor that writes the log, and the curves drawn
from it at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import distributed
from .monitor import Monitor, read_log
from .outputs import Outputs, check_folder_writable
from .plots import plot_training_log
from .snapshot import snapshot_path


@dataclass(frozen=True)
class TrainingFiles:
    checkpoint: Path
    log: Path  # one JSON line per logged step (monitor.py)
    curves: Path  # PNG of the training and validation curves
    snapshot: Path  # the training state (snapshot.py)

    @classmethod
    def beside(cls, out: str | os.PathLike, log: str | os.PathLike | None = None,
               curves: str | os.PathLike | None = None) -> "TrainingFiles":
        """The files of the run writing checkpoint `out`; log and curves (unset) beside it:
        unet.safetensors -> unet.log.jsonl, unet.curves.png, unet.state.safetensors."""
        out = Path(out)
        return cls(out, Path(log or out.with_name(f"{out.stem}.log.jsonl")),
                   Path(curves or out.with_name(f"{out.stem}.curves.png")), snapshot_path(out))

    @property
    def outputs(self) -> tuple[Path, Path, Path]:
        """What the stage writes at its end or while it runs (the snapshot goes beside the checkpoint)."""
        return self.checkpoint, self.log, self.curves

    def monitor(self, tensorboard: str | os.PathLike | None = None) -> Monitor:
        """The Monitor writing the log (and, with `tensorboard`, events into that folder); a missing
        tensorboard package, or a folder that cannot be written, is refused here, before any work."""
        monitor = Monitor(self.log, tensorboard)
        if tensorboard is not None:
            check_folder_writable(tensorboard)
        return monitor

    def draw_curves(self, title: str, outputs: Outputs | None = None) -> None:
        """The log as a PNG (rank 0; with `outputs`, as one of that group)."""
        if distributed.is_main():
            plot_training_log(read_log(self.log), self.curves, title, outputs)
