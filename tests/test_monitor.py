"""The metrics log, its curves and TensorBoard (monitor.py, plots.py), and the held-out checks of
each stage: deterministic for fixed weights, and invisible to the training they watch."""

import importlib.util
import json

import pytest
import torch

from ldm.diffusion import Diffusion, DiffusionConfig
from ldm.diffusion_training import held_out_check, train_denoiser
from ldm.errors import LdmError
from ldm.monitor import TENSORBOARD_HINT, Check, Monitor, read_log
from ldm.plots import plot_training_log
from ldm.runtime import RunContext
from ldm.stages import classifier_metrics, vae_metrics
from ldm.toy.mlp import MLPConfig, MLPDenoiser
from ldm.train import TrainSettings, due
from ldm.vae import VAE, VAEConfig

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def write_steps(monitor: Monitor, steps) -> None:
    for step in steps:
        monitor.write(step, "train", {"loss": 1.0 / step})
        if step % 4 == 0:
            monitor.write(step, "validation", {"loss": 2.0 / step})


def test_a_resumed_log_continues_from_the_snapshot_step_without_gaps_or_repeats(tmp_path):
    path = tmp_path / "run.log.jsonl"
    straight = Monitor(tmp_path / "straight.log.jsonl")
    straight.open(0)
    write_steps(straight, range(1, 13))
    straight.close()

    killed = Monitor(path)
    killed.open(0)
    write_steps(killed, range(1, 11))  # the snapshot was at step 8; steps 9-10 are lost with the kill
    killed.close()
    with open(path, "a") as f:
        f.write('{"step": 11, "kind": "tr')  # a line cut short by the kill
    resumed = Monitor(path)
    resumed.open(8)
    write_steps(resumed, range(9, 13))
    resumed.close()
    untimed = lambda path: [{k: v for k, v in e.items() if k != "train_seconds"} for e in read_log(path)]
    assert untimed(path) == untimed(tmp_path / "straight.log.jsonl")
    assert [e["step"] for e in read_log(path) if e["kind"] == "train"] == list(range(1, 13))

    fresh = Monitor(path)  # a run that starts afresh starts a new log
    fresh.open(0)
    fresh.close()
    assert read_log(path) == []


def test_the_training_clock_leaves_out_checks_and_counts_on_after_a_resume(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr("ldm.monitor.time.time", lambda: now[0])

    def slow_check(model, ema):
        now[0] += 50.0  # a check of 50 s
        return {"loss": 0.5}

    model = torch.nn.Linear(2, 2)
    monitor = Monitor(tmp_path / "run.log.jsonl")
    monitor.open(0)
    now[0] += 3.0
    monitor.write(1, "train", {"loss": 1.0})
    monitor.run_checks([Check("validation", 1, slow_check)], 1, model, None)
    now[0] += 2.0
    monitor.write(2, "train", {"loss": 1.0})
    monitor.close()
    assert [e["train_seconds"] for e in read_log(tmp_path / "run.log.jsonl")] == [3.0, 3.0, 5.0]
    now[0] += 1000.0  # the run was killed after step 2 and restarts much later
    resumed = Monitor(tmp_path / "run.log.jsonl")
    resumed.open(2)
    now[0] += 4.0
    resumed.write(3, "train", {"loss": 1.0})
    resumed.close()
    assert read_log(tmp_path / "run.log.jsonl")[-1]["train_seconds"] == 9.0


def test_a_damaged_log_is_one_error_naming_it(tmp_path):
    path = tmp_path / "run.log.jsonl"
    path.write_text('{"step": 1, "kind": "train"}\nnot json\n{"step": 3}\n')
    with pytest.raises(LdmError, match="run.log.jsonl: not a metrics log"):
        Monitor(path).open(2)


def test_checks_run_when_due_in_eval_mode_and_log_their_time(tmp_path):
    model = torch.nn.Linear(2, 2)
    seen = []
    check = Check("validation", 3, lambda m, ema: seen.append(m.training) or {"loss": 0.5})
    assert [s for s in range(1, 11) if due(s, 10, check.every)] == [3, 6, 9, 10]
    monitor = Monitor(tmp_path / "log.jsonl")
    monitor.open(0)
    monitor.run_checks([check], 3, model, None)
    monitor.close()
    (entry,) = read_log(tmp_path / "log.jsonl")
    assert seen == [False] and model.training and entry["step"] == 3 and entry["loss"] == 0.5 and entry["seconds"] >= 0


def test_validation_is_deterministic_and_does_not_change_training(tmp_path):
    """The held-out checks draw their noise from their own generators: a run watched by them ends
    in the same weights as an unwatched one, and the same weights always score the same."""
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    labels = torch.randint(0, 3, (256,))
    diffusion = Diffusion(DiffusionConfig())
    settings = TrainSettings(steps=20, batch_size=32, lr=1e-3, validate_every=5)
    check = Check("validation", settings.validate_every, held_out_check(diffusion, x[:64], labels[:64], 3))

    def train(monitor=None, checks=()):
        return train_denoiser(lambda: MLPDenoiser(MLPConfig(dim=2, hidden=16, num_blocks=1, num_classes=3)),
                              diffusion, len(x), lambda index: (x[index], labels[index]), settings,
                              RunContext(progress=False), desc="test", monitor=monitor, checks=checks)

    watched = train(Monitor(tmp_path / "log.jsonl"), [check])
    plain = train()
    assert all(torch.equal(a, b) for a, b in zip(watched.model.state_dict().values(), plain.model.state_dict().values()))
    log = read_log(tmp_path / "log.jsonl")
    validations = [e for e in log if e["kind"] == "validation"]
    assert [e["step"] for e in validations] == [5, 10, 15, 20]
    assert [e["step"] for e in log if e["kind"] == "train"] == [1, 20]  # log_interval 50
    again = check.run(watched.model.eval(), None)
    assert again["loss"] == pytest.approx(validations[-1]["loss"], rel=1e-12)
    assert set(again) == {"loss", "q0", "q1", "q2", "q3"}
    assert again["loss"] == pytest.approx(sum(again[f"q{i}"] for i in range(4)) / 4)


def test_classifier_and_vae_validation_are_deterministic():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8)
    vae = VAE(VAEConfig(latent_channels=2, channels=(8, 8))).eval()
    noise = torch.randn(len(images), *vae.latent_shape)
    first, second = vae_metrics(vae, images, noise, batch_size=16), vae_metrics(vae, images, noise, batch_size=40)
    assert first.keys() == {"recon", "kl", "mse_per_pixel"}
    assert all(first[k] == pytest.approx(second[k], rel=1e-6) for k in first)  # batching changes only rounding

    class Constant(torch.nn.Module):  # always predicts digit 3 with probability 1/2
        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[:, 3] = torch.log(torch.tensor(9.0))
            return logits

    labels = torch.tensor([3, 3, 1, 2])
    scores = classifier_metrics(Constant(), images[:4], labels, batch_size=3)
    assert scores["accuracy"] == 0.5
    assert scores["loss"] == pytest.approx(-0.5 * torch.log(torch.tensor(0.5)).item() - 0.5 * torch.log(
        torch.tensor(1 / 18)).item())


def test_curves_are_drawn_for_every_kind_of_log(tmp_path):
    logs = {
        "classifier": [{"step": s, "kind": "train", "loss": 1 / s, "lr": 1e-3} for s in (1, 50, 100)]
        + [{"step": s, "kind": "validation", "loss": 1.2 / s, "accuracy": 0.9, "seconds": 0.1} for s in (50, 100)],
        "vae": [{"step": s, "kind": "train", "loss": 9 / s, "recon": 8 / s, "kl": 10.0, "lr": 1e-3} for s in (1, 50)]
        + [{"step": 50, "kind": "validation", "loss": 1.0, "recon": 0.5, "kl": 5.0, "seconds": 0.1}],
        "unet": [{"step": s, "kind": "train", "loss": 1 / s, **{f"q{i}": i / s for i in range(4)}, "lr": 1e-3}
                 for s in (1, 50)]
        + [{"step": 50, "kind": "fid", "fid": 30.0, "images": 1000, "seconds": 3.0}],
    }
    for name, entries in logs.items():
        plot_training_log(entries, tmp_path / f"{name}.png", name)
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_without_the_package_is_refused_with_the_way_to_install_it(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real_find_spec(name, *a))
    with pytest.raises(LdmError, match="pip install tensorboard") as error:
        Monitor(tmp_path / "log.jsonl", tensorboard=tmp_path / "tb")
    assert str(error.value) == TENSORBOARD_HINT


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install -e '.[tensorboard]')")
def test_tensorboard_receives_the_logged_scalars_and_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monitor = Monitor(tmp_path / "log.jsonl", tensorboard=tmp_path / "tb")
    monitor.open(0)
    write_steps(monitor, range(1, 5))
    monitor.write(4, "fid", {"fid": 12.5}, images=torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8))
    monitor.close()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert events.Scalars("validation/loss")[0].value == pytest.approx(0.5)
    assert events.Scalars("fid/fid")[0].value == pytest.approx(12.5) and events.Images("fid/samples")[0].step == 4
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["fid"] == 12.5
