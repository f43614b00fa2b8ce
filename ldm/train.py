"""The step loop every training stage uses: LR schedule, gradient clipping, EMA, logging."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed
from .data import BatchSampler
from .errors import LdmError
from .monitor import Check, Monitor
from .runtime import RunContext, set_seed
from .snapshot import Snapshot


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int
    lr: float  # peak learning rate of Adam, after the warm-up
    warmup_steps: int = 0  # linear warm-up; a run shorter than this warms up over all its steps
    ema_power: float = 2 / 3  # warm-up power of the weight EMA, for the denoisers that keep one (see EMA)
    validate_every: int = 0  # steps between held-out validations (monitor.py); there is always one at the end


# A step function returns the loss to minimise and detached scalar tensors to log. On several
# processes both are this rank's share, scaled so that their mean over the ranks is the value
# of the global batch (for the loss: the mean over the rank's equal shard).
StepLoss = Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def due(step: int, total: int, every: int) -> bool:
    """After finishing `step` of `total` steps (1-based), is a periodic task (a check, a snapshot)
    due? Every `every` steps (0: never) and at the end."""
    return step == total or (every > 0 and step % every == 0)


def seeded_model(make_model: Callable[[], torch.nn.Module], run: RunContext) -> torch.nn.Module:
    """The one place a training run is seeded: every global RNG from `run.seed`, then the model
    initialised from it and moved to `run.device`. Batches, noise and dropout that follow draw
    from the same seeded state."""
    set_seed(run.seed)
    return make_model().to(run.device)


def get_lr(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay from base_lr to min_ratio * base_lr at total_steps."""
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class EMA:
    """Exponential moving average of a model's weights with a warm-up on the decay:
    decay(n) = 1 - (1 + n / inv_gamma)^-power, clipped to [0, max_decay] (the EMAWarmup of
    k-diffusion; power 2/3 reaches 0.999 after ~30k steps, so short runs are not stuck near init;
    a larger power averages over more of a short run: 0.85 reaches 0.999 after ~3.4k steps)."""

    def __init__(self, model: torch.nn.Module, power: float, inv_gamma: float = 1.0, max_decay: float = 0.9999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma, self.max_decay = power, inv_gamma, max_decay
        self.num_updates = 0

    def decay(self) -> float:
        value = 1.0 - (1.0 + self.num_updates / self.inv_gamma) ** -self.power
        return min(max(value, 0.0), self.max_decay)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.decay()
        ema_params, params = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(ema_params, params, weight)
        for ema_buf, buf in zip(self.model.buffers(), model.buffers()):
            ema_buf.copy_(buf)
        self.num_updates += 1


def run_training(model: torch.nn.Module, step_loss: StepLoss, settings: TrainSettings, *, grad_clip: float = 1.0,
                 ema: EMA | None = None, log_interval: int = 50, sampler: BatchSampler | None = None,
                 snapshot: Snapshot | None = None,
                 monitor: Monitor | None = None, checks: Sequence[Check] = (), desc: str = "train",
                 progress: bool = True, time_budget: float | None = None) -> dict[str, float]:
    """Optimise `model` for `settings.steps` steps with Adam at the `get_lr` schedule; return the
    last logged metrics.

    On several processes, `step_loss` runs this rank's shard of the global batch through the
    model's DistributedDataParallel wrapper (distributed.py), which averages the gradients; every
    rank then takes the same optimizer and EMA step, and logged metrics are averaged over ranks.
    Metrics are read back (a device sync) only every `log_interval` steps. The first step whose
    loss is not finite on any rank is tracked on the device; at the next read-back every rank stops
    with an LdmError naming it, before any snapshot of the diverged weights is written. With a
    `snapshot`, the run resumes from it when possible and rank 0 saves it when due, with the
    position of the batch `sampler` the steps draw from. With a
    `monitor`, the read-back metrics and the learning rate are logged after step 1, every
    `log_interval` steps and at the end, and the `checks` run when due (monitor.py); a run that
    fails with no snapshot to resume from removes its log.

    With a `time_budget` (seconds on the monitor's clock, which leaves the checks out), the run
    is one of equal wall-clock rather than equal steps: it ends after the first step that
    finishes past the budget, however many steps that takes, and the learning-rate schedule runs
    to the step count the clock extrapolates to (`settings.steps` until a first log line gives a
    rate), so that the decay ends when the time does.
    """
    if time_budget is not None and monitor is None:
        raise ValueError("a time budget needs the monitor's clock")
    planned, lr = settings.steps, settings.lr
    steps = planned if time_budget is None else torch.iinfo(torch.int64).max  # until the time is up
    distributed.check_divisible("batch_size", settings.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start, logged = snapshot.restore(model, optimizer, ema, sampler) if snapshot is not None else (0, {})
    model.train()
    never = torch.tensor(steps, device=next(model.parameters()).device)
    first_bad_step = never

    def check_finite() -> None:
        bad = distributed.minimum(first_bad_step).item()
        if bad < steps:
            raise LdmError(f"{desc}: the loss became non-finite at step {bad}; stopped, "
                           "and nothing after the last good snapshot was saved (try a lower learning rate)")

    bar = tqdm(range(start, steps), initial=start, total=planned, desc=desc, dynamic_ncols=True, disable=not progress)
    finished = False
    try:
        if monitor is not None:
            monitor.open(start)
        for step in bar:
            done = step + 1
            if time_budget is None:
                total = steps
            else:  # the steps the budget buys at the rate so far
                seconds = monitor.train_seconds()
                total = planned if step < log_interval or seconds <= 0 else round(step * time_budget / seconds)
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, lr, total, settings.warmup_steps)
            loss, metrics = step_loss(step)
            first_bad_step = torch.where(~torch.isfinite(loss.detach()) & (first_bad_step == never), step,
                                         first_bad_step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            if time_budget is not None and distributed.maximum(
                    torch.tensor(float(monitor.train_seconds() >= time_budget), device=never.device)).item() > 0:
                steps = done  # this is the last step: the checks and snapshot due at the end run now
            if done == 1 or done % log_interval == 0 or done == steps:
                check_finite()
                names = ["loss", *metrics]
                values = distributed.mean(torch.stack([loss.detach(), *metrics.values()]).float()).tolist()
                logged = dict(zip(names, values))
                bar.set_postfix({k: f"{v:.4g}" for k, v in logged.items()})
                if monitor is not None:
                    monitor.write(done, "train", dict(logged, lr=optimizer.param_groups[0]["lr"]))
            checks_due = [check for check in checks if (done == check.at if check.at else due(done, steps, check.every))
                          ] if monitor is not None else []
            if checks_due:
                check_finite()  # no check on diverged weights
                monitor.run_checks(checks_due, done, model, None if ema is None else ema.model)
            if snapshot is not None and due(done, steps, snapshot.every):
                check_finite()
                if distributed.is_main():
                    snapshot.save(done, model, optimizer, ema, sampler, logged)
            if done == steps:
                break
        finished = True
    finally:
        if monitor is not None:
            # a run that failed with nothing to resume from leaves no log either
            monitor.close(discard=not finished and not (snapshot is not None and snapshot.path.is_file()))
    model.eval()
    return logged
