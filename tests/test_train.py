import math

import pytest
import torch

from ldm.train import EMA, get_lr, run_training
from ldm.utils import LdmError


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [get_lr(s, 1.0, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert get_lr(100, 1.0, 100, 10) == pytest.approx(0.1)


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
    final = run_training(model, loss_fn, steps=300, lr=0.05, progress=False)["loss"]
    assert math.isfinite(final) and final < 0.01 * initial


def test_non_finite_loss_stops_training_naming_the_step():
    model = torch.nn.Linear(1, 1)
    loss_fn = lambda step: (model(torch.ones(1, 1)).sum() * (float("nan") if step >= 3 else 1.0), {})
    with pytest.raises(LdmError, match="at step 3"):
        run_training(model, loss_fn, steps=10, lr=0.1, log_interval=1, progress=False)
