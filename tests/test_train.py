import math

import pytest
import torch

from ldm.checkpoint import load_checkpoint
from ldm.data import BatchSampler
from ldm.errors import LdmError
from ldm.monitor import Check, Monitor, read_log
from ldm.snapshot import Snapshot
from ldm.stages import train_unet
from ldm.train import EMA, TrainSettings, get_lr, run_training


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [get_lr(s, 1.0, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert get_lr(100, 1.0, 100, 10) == pytest.approx(0.1)
    # a run shorter than its warm-up warms up over all of its steps
    assert [get_lr(s, 1.0, 4, 10) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_ema_decay_warms_up_and_averages():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, power=2 / 3, max_decay=0.999)
    assert ema.decay() == 0.0  # the first update copies the weights
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    assert ema.model.weight.item() == 2.0
    ema.num_updates = 10
    assert ema.decay() == pytest.approx(1 - 11 ** (-2 / 3))
    ema.num_updates = 10 ** 9
    assert ema.decay() == 0.999
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(2.0 + 0.001 * 1.0)


def test_training_converges_on_a_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = torch.nn.Linear(4, 1)
    loss_fn = lambda step: ((model(x).squeeze(1) - y).pow(2).mean(), {})
    initial = loss_fn(0)[0].item()
    final = run_training(model, loss_fn, TrainSettings(300, batch_size=1, lr=0.05), progress=False)["loss"]
    assert math.isfinite(final) and final < 0.01 * initial


def test_non_finite_loss_stops_training_naming_the_step():
    model = torch.nn.Linear(1, 1)
    loss_fn = lambda step: (model(torch.ones(1, 1)).sum() * (float("nan") if step >= 3 else 1.0), {})
    with pytest.raises(LdmError, match="at step 3"):
        run_training(model, loss_fn, TrainSettings(10, batch_size=1, lr=0.1), log_interval=1, progress=False)
    # between read-backs the first bad step is still the one named
    model = torch.nn.Linear(1, 1)
    with pytest.raises(LdmError, match="at step 3"):
        run_training(model, loss_fn, TrainSettings(10, batch_size=1, lr=0.1), log_interval=50, progress=False)


def noisy_regression_run(tmp_path, steps: int, every: int, stop_after: int | None = None):
    """A run that uses every piece of state a snapshot must carry: global RNG (noise in the
    loss), the batch sampler, Adam's moments and the EMA."""
    torch.manual_seed(0)
    data = torch.randn(64, 4)
    model = torch.nn.Linear(4, 1)
    ema = EMA(model, power=2 / 3)
    sampler = BatchSampler(64, 8, seed=1)
    snapshot = Snapshot(tmp_path / "m.state.safetensors", every, {"run": "test"})

    def loss_fn(step):
        if stop_after is not None and step == stop_after:
            raise KeyboardInterrupt  # a kill between two snapshots
        x = data[sampler.next()]
        target = x.sum(1, keepdim=True) + 0.1 * torch.randn(len(x), 1)
        return (model(x) - target).pow(2).mean(), {}

    run_training(model, loss_fn, TrainSettings(steps, batch_size=1, lr=0.01), ema=ema, sampler=sampler,
                 snapshot=snapshot, progress=False)
    return model, ema


def test_a_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path):
    straight, straight_ema = noisy_regression_run(tmp_path / "a", steps=40, every=10)
    with pytest.raises(KeyboardInterrupt):
        noisy_regression_run(tmp_path / "b", steps=40, every=10, stop_after=25)
    assert load_checkpoint(tmp_path / "b" / "m.state.safetensors", "training_state").info["step"] == 20
    resumed, resumed_ema = noisy_regression_run(tmp_path / "b", steps=40, every=10)
    for a, b in zip([*straight.parameters(), *straight_ema.model.parameters()],
                    [*resumed.parameters(), *resumed_ema.model.parameters()]):
        assert torch.equal(a, b)


def test_a_snapshot_of_another_run_is_ignored(tmp_path, capsys):
    noisy_regression_run(tmp_path, steps=20, every=10)
    model = torch.nn.Linear(4, 1)
    snapshot = Snapshot(tmp_path / "m.state.safetensors", 10, {"run": "other"})
    run_training(model, lambda step: (model(torch.ones(1, 4)).pow(2).sum(), {}), TrainSettings(2, batch_size=1, lr=0.1),
                 snapshot=snapshot, progress=False)
    assert "starting afresh" in capsys.readouterr().out


def test_divergence_keeps_the_last_good_snapshot(tmp_path):
    model = torch.nn.Linear(1, 1)
    snapshot = Snapshot(tmp_path / "m.state.safetensors", 5, {"run": "nan"})
    loss_fn = lambda step: (model(torch.ones(1, 1)).sum() * (float("inf") if step >= 7 else 1.0), {})
    with pytest.raises(LdmError, match="at step 7"):
        run_training(model, loss_fn, TrainSettings(20, batch_size=1, lr=0.1), snapshot=snapshot, progress=False)
    state = load_checkpoint(tmp_path / "m.state.safetensors", "training_state")
    assert state.info["step"] == 5 and torch.isfinite(state.tensors["model/weight"]).all()


def test_a_time_budget_ends_the_run_on_time_with_the_learning_rate_decayed(tmp_path, monkeypatch):
    """Steps that take 1/8 s on the monitor's clock: a 15/8 s budget ends the run after step 15,
    whose learning rate is the end of the schedule; the checks and the snapshot due at the end run."""
    now = [0.0]
    monkeypatch.setattr("ldm.monitor.time.time", lambda: now[0])
    model = torch.nn.Linear(1, 1)
    lrs = []

    def loss_fn(step):
        now[0] += 0.125
        return model(torch.ones(1, 1)).pow(2).sum(), {}

    class RecordingAdam(torch.optim.Adam):
        def step(self, *args, **kwargs):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    monitor = Monitor(tmp_path / "log.jsonl")
    checks = [Check("validation", 0, lambda m, ema: {"loss": 0.0})]
    snapshot = Snapshot(tmp_path / "state.safetensors", 0, {"run": 1})
    settings = TrainSettings(100, batch_size=1, lr=0.1)  # the first estimate: 100 steps
    run_training(model, loss_fn, settings, monitor=monitor, checks=checks, snapshot=snapshot, log_interval=5,
                 progress=False, time_budget=1.875)
    log = read_log(tmp_path / "log.jsonl")
    assert len(lrs) == 15 and log[-1]["step"] == 15 and log[-1]["kind"] == "validation"
    assert log[-2]["train_seconds"] == 1.875
    assert lrs[-1] == pytest.approx(get_lr(14, 0.1, 15, 0))  # the schedule ends with the run
    assert lrs[0] == pytest.approx(get_lr(0, 0.1, 100, 0))  # before any rate is known, the estimate
    assert load_checkpoint(tmp_path / "state.safetensors", "training_state").info["step"] == 15


def test_a_time_budget_needs_a_monitor():
    with pytest.raises(ValueError, match="monitor"):
        run_training(torch.nn.Linear(1, 1), lambda step: (torch.zeros((), requires_grad=True), {}),
                     TrainSettings(2, batch_size=1, lr=0.1), progress=False, time_budget=1.0)


def test_a_check_at_a_step_runs_once_after_it_and_sees_the_weights_of_then(tmp_path):
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, 2 / 3)
    seen = []
    checks = [Check("guide", 0, lambda m, e: seen.append((m.weight.item(), e.weight.item())) or {}, at=3)]
    weights = []

    def loss_fn(step):
        weights.append(model.weight.item())  # before this step's update
        return model(torch.ones(1, 1)).pow(2).sum(), {}

    run_training(model, loss_fn, TrainSettings(6, batch_size=1, lr=0.1), ema=ema, monitor=Monitor(tmp_path / "l.jsonl"),
                 checks=checks, progress=False)
    assert len(seen) == 1 and seen[0][0] == weights[3]  # after step 3, before step 4; not again at the end
    assert seen[0][1] != ema.model.weight.item()
    assert [e["step"] for e in read_log(tmp_path / "l.jsonl") if e["kind"] == "guide"] == [3]


def test_a_guide_without_a_monitor_is_refused_before_any_work():
    # the checks that write a guide run only with a monitor
    with pytest.raises(ValueError, match="monitor"):
        train_unet(None, None, None, TrainSettings(2, batch_size=1, lr=0.1), None, guide_to="guide.safetensors",
                   guide_step=1)
