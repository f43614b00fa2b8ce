"""Every stage script, end to end, on a small synthetic MNIST with the `smoke` preset (the
`pipeline` fixture, tests/conftest.py); the refusals of bad inputs are in test_bad_inputs.py."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from safetensors import safe_open

from ldm import __version__, save_grid
from ldm.bench import GUIDANCE_SCALES, TRAINING_CHOICES
from ldm.checkpoint import load_checkpoint, load_model
from ldm.classifier import Classifier
from ldm.data import load_mnist
from ldm.errors import LdmError
from ldm.monitor import read_log
from ldm.pipeline import LatentDiffusion
from ldm.presets import PRESETS
from ldm.prompt import PROMPT_GUIDANCE, PROMPT_GUIDANCE_INTERVAL
from ldm.sampler_study import TOLERANCE, choose_default
from ldm.samples import load_samples
from ldm.sampling import DEFAULT_SAMPLER, UNCONDITIONAL_DEFAULTS
from ldm.scoring import TestSetFID as FID  # not collected as a test class
from stage_scripts import CPU, ROOT, SMOKE, run_inline, run_script


def test_every_stage_writes_its_outputs(pipeline):
    ckpt, reports = pipeline["ckpt"], pipeline["reports"]
    assert json.loads((ckpt / "data.json").read_text())["train"]["count"] == 64
    for name in ("classifier", "vae", "latents", "unet", "samples_ddpm", "samples_ddim"):
        assert (ckpt / f"{name}.safetensors").is_file(), name
    assert (ckpt / "samples_ddim.png").is_file() and (reports / "vae.png").is_file()
    samples = load_samples(ckpt / "samples_ddpm.safetensors")
    assert samples.images.shape == (16, 28, 28) and samples.name == "DDPM-5, random digits"
    latents = load_checkpoint(ckpt / "latents.safetensors", "latents")
    vae = load_checkpoint(ckpt / "vae.safetensors", "vae")
    assert latents.info["vae_fingerprint"] == vae.fingerprint
    assert latents.tensors["train_mean"].shape == (64, 2, 7, 7) and latents.tensors["test_logvar"].shape == (32, 2, 7, 7)


def test_every_training_stage_logs_its_curves(pipeline):
    """Training lines after step 1 and at the end, held-out validation every 2 steps (the smoke
    preset) and at the end, and for the UNet the FID of samples; a PNG of the curves beside each."""
    ckpt = pipeline["ckpt"]
    for stage, parts in (("classifier", {"accuracy"}), ("vae", {"recon", "kl"}), ("unet", {"q0", "q1", "q2", "q3"})):
        log = read_log(ckpt / f"{stage}.log.jsonl")
        steps = [e["step"] for e in log]
        assert steps == sorted(steps), stage
        assert [(e["step"], e["kind"]) for e in log if e["kind"] != "fid"] == [
            (1, "train"), (2, "validation"), (3, "train"), (3, "validation")], stage
        train = [e for e in log if e["kind"] == "train"]
        assert all(e["lr"] > 0 and e["loss"] > 0 for e in train), stage
        validation = [e for e in log if e["kind"] == "validation"]
        assert all(parts <= e.keys() and e["seconds"] >= 0 for e in validation), stage
        assert (ckpt / f"{stage}.curves.png").stat().st_size > 0
    fid = [e for e in read_log(ckpt / "unet.log.jsonl") if e["kind"] == "fid"]
    assert [e["step"] for e in fid] == [2, 3] and all(e["fid"] > 0 and e["images"] == 12 for e in fid)


def test_every_output_records_seed_and_versions(pipeline):
    ckpt, reports = pipeline["ckpt"], pipeline["reports"]
    for name in ("classifier", "vae", "latents", "unet", "samples_ddpm", "samples_digits"):
        with safe_open(str(ckpt / f"{name}.safetensors"), "pt") as f:
            metadata = f.metadata()
        assert metadata["torch_version"] == torch.__version__ and metadata["ldm_version"] == __version__, name
        assert json.loads(metadata["info"])["seed"] == 0, name
    for report in (ckpt / "data.json", reports / "fid.json"):
        written = json.loads(report.read_text())
        assert written["torch_version"] == torch.__version__ and written["ldm_version"] == __version__, report
    assert json.loads((reports / "fid.json").read_text())["seed"] == 0


def test_fid_table_has_every_row(pipeline):
    report = json.loads((pipeline["reports"] / "fid.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == ["Validation", "Random", "VAE", "VAE reconstruction", "Diffusion DDPM-5, random digits",
                     "Diffusion DDIM-3, random digits", f"Diffusion DPM++2M-10, digits 0-9, guidance {PROMPT_GUIDANCE:g} at λ "
                     "{:g}..{:g}".format(*PROMPT_GUIDANCE_INTERVAL)]
    assert report["num_images"] == 16 and all(np.isfinite(row["fid"]) for row in report["rows"])
    for row in report["rows"]:
        assert Path(row["grid"]).is_file()
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and sum(row["class_counts"]) == 16
        assert (row["memorisation"] is None) == (row["name"] in ("Validation", "VAE reconstruction"))
    prompted = report["rows"][-1]
    assert 0 <= prompted["recognised"] <= 1 and len(prompted["recognised_per_digit"]) == 10
    table = (pipeline["reports"] / "fid.md").read_text()
    assert all(name in table for name in names) and "not comparable to Inception FID" in table


def test_prompted_samples_carry_their_labels_and_pictures(pipeline):
    samples = load_checkpoint(pipeline["ckpt"] / "samples_digits.safetensors", "samples")
    assert samples.tensors["labels"].tolist() == [i % 10 for i in range(20)]
    assert samples.info["guidance"] == PROMPT_GUIDANCE and samples.info["digit"] == "all"
    assert samples.info["guidance_interval"] == list(PROMPT_GUIDANCE_INTERVAL)
    assert (pipeline["ckpt"] / "samples_digits.png").is_file()
    assert (pipeline["ckpt"] / "samples_digits_process.png").is_file()


def test_unprompted_samples_draw_digits_from_the_training_labels(pipeline, tmp_path):
    unet = load_checkpoint(pipeline["ckpt"] / "unet.safetensors", "unet")
    train_labels = load_checkpoint(pipeline["ckpt"] / "latents.safetensors", "latents").tensors["train_labels"]
    frequencies = torch.bincount(train_labels, minlength=10) / len(train_labels)
    assert unet.info["label_frequencies"] == pytest.approx(frequencies.tolist())
    drawn = load_checkpoint(pipeline["ckpt"] / "samples_ddpm.safetensors", "samples")
    assert drawn.info["digit"] == "any" and drawn.info["guidance"] == 1 and drawn.tensors["labels"].shape == (16,)
    # the draws follow the recorded frequencies: chi-square test on many draws
    model = LatentDiffusion.load(pipeline["ckpt"] / "unet.safetensors", pipeline["ckpt"] / "vae.safetensors",
                                 torch.device("cpu"))
    counts = torch.bincount(model.prompt().labels(100_000, 0, model.label_frequencies), minlength=10).double()
    expected = frequencies.double() * 100_000
    present = expected > 0
    assert (counts[~present] == 0).all()
    statistic = (((counts - expected)[present]) ** 2 / expected[present]).sum().item()
    assert statistic < scipy.stats.chi2.ppf(0.999, int(present.sum()) - 1)
    run_script("sample", *pipeline["models"], *CPU, "--digit", "none", "--num-samples", 4,
               "--out", tmp_path / "none.safetensors")
    no_label = load_samples(tmp_path / "none.safetensors")
    # the "no label" branch's default sampler is its own, SDE-DPM-Solver++ (UNCONDITIONAL_DEFAULTS)
    default = UNCONDITIONAL_DEFAULTS[DEFAULT_SAMPLER]
    assert no_label.labels is None and no_label.name == f"DPM++2M-{default['steps']} η={default['eta']:g}, no label"


@pytest.mark.slow
def test_sampling_with_the_same_seed_is_byte_identical(pipeline, tmp_path):
    for name in ("a", "b"):
        run_script("sample", *pipeline["models"], *CPU, "--seed", 1,
                   "--num-samples", 8, "--out", tmp_path / f"{name}.safetensors")
    a = load_checkpoint(tmp_path / "a.safetensors", "samples").tensors["images"]
    b = load_checkpoint(tmp_path / "b.safetensors", "samples").tensors["images"]
    assert a.numpy().tobytes() == b.numpy().tobytes()


def test_the_python_api_gives_what_the_script_wrote(pipeline, tmp_path, default_precision):
    """LatentDiffusion.from_pretrained + pipe(...) asked what `make sample` was asked for the digits
    file (every sampling default left to both doors) reproduces its images byte for byte."""
    pipe = LatentDiffusion.from_pretrained(pipeline["ckpt"], device="cpu")
    images = pipe(num_images=20, digit="all", seed=0)
    written = load_checkpoint(pipeline["ckpt"] / "samples_digits.safetensors", "samples").tensors["images"]
    assert images.dtype == torch.uint8 and torch.equal(images, written)
    sevens = pipe(num_images=3, digit=7, guidance=2.0, sampler="ddpm", steps=4, seed=1)
    assert sevens.shape == (3, 28, 28) and not torch.equal(sevens[0], sevens[1])
    save_grid(sevens, tmp_path / "sevens.png")
    assert (tmp_path / "sevens.png").stat().st_size > 0
    with pytest.raises(LdmError, match="unet.safetensors: file not found"):
        LatentDiffusion.from_pretrained(tmp_path, device="cpu")


def test_every_script_has_help():
    """Every script's --help through the same entry point as a command (in this process), and one
    as a real command."""
    for script in sorted((ROOT / "scripts").glob("[a-z]*.py")):
        result = run_inline(script.stem, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout and "python -m scripts." in result.stdout, script
    result = subprocess.run([sys.executable, "-m", "scripts.sample", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage: " in result.stdout and "--digit" in result.stdout


@pytest.mark.slow
def test_training_options_reach_the_checkpoint_and_it_samples(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    run_script("train_diffusion", "--latents", ckpt / "latents.safetensors", "--preset", "smoke", "--device", "cpu",
               "--schedule", "linear", "--prediction", "eps", "--min-snr-gamma", 5, "--ema-power", 0.5,
               "--out", tmp_path / "v.safetensors")
    unet = load_checkpoint(tmp_path / "v.safetensors", "unet")
    diffusion, steps = unet.info["diffusion"], PRESETS["smoke"].unet.steps
    assert (diffusion["schedule"], diffusion["prediction"], diffusion["min_snr_gamma"]) == ("linear", "eps", 5)
    # the EMA's decay after `steps` updates, with the requested warm-up power
    assert unet.info["ema_decay"] == pytest.approx(1 - (1 + steps) ** -0.5)
    run_script("sample", "--unet", tmp_path / "v.safetensors", "--vae", ckpt / "vae.safetensors", *CPU,
               "--num-samples", 4, "--out", tmp_path / "s.safetensors")


def test_a_narrow_unet_trained_as_a_guide_autoguides_sampling_and_is_recorded(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    assert run_inline("train_diffusion", "--latents", ckpt / "latents.safetensors", *SMOKE, "--base-channels", 4,
                      "--out", tmp_path / "guide.safetensors").returncode == 0
    assert load_checkpoint(tmp_path / "guide.safetensors", "unet").config["base_channels"] == 4
    common = ["--unet", ckpt / "unet.safetensors", "--vae", ckpt / "vae.safetensors", *CPU, "--num-samples", 8,
              "--digit", "none"]
    for name, extra in (("plain", []), ("auto", ["--guide", tmp_path / "guide.safetensors", "--autoguidance", 2]),
                        ("self", ["--guide", ckpt / "unet.safetensors", "--autoguidance", 2])):
        assert run_inline("sample", *common, *extra, "--out", tmp_path / f"{name}.safetensors").returncode == 0
    plain, auto, itself = (load_samples(tmp_path / f"{name}.safetensors") for name in ("plain", "auto", "self"))
    assert not torch.equal(auto.images, plain.images)
    assert torch.equal(itself.images, plain.images)  # guided by itself: D + w (D - D) = D
    guide = load_checkpoint(tmp_path / "guide.safetensors", "unet")
    assert auto.info["autoguidance"] == 2.0 and auto.info["guide_fingerprint"] == guide.fingerprint
    assert auto.name.endswith("no label, autoguidance 2") and plain.info["guide_fingerprint"] is None


def test_the_unet_run_writes_its_guide_from_its_own_early_weights(pipeline, tmp_path):
    ckpt, out, guide_path = pipeline["ckpt"], tmp_path / "unet.safetensors", tmp_path / "guide.safetensors"
    command = ["train_diffusion", "--latents", ckpt / "latents.safetensors", *SMOKE, "--steps", 16, "--out", out,
               "--guide-out", guide_path]
    assert run_inline(*command).returncode == 0
    unet, guide = load_checkpoint(out, "unet"), load_checkpoint(guide_path, "unet")
    assert guide.info["guide_step"] == 2 and guide.info["run"] == unet.info["run"]  # an eighth of 16 steps
    assert guide.config == unet.config
    assert any(not torch.equal(guide.tensors[k], unet.tensors[k]) for k in guide.tensors)
    assert [e["step"] for e in read_log(tmp_path / "unet.log.jsonl") if e["kind"] == "guide"] == [2]
    pipe = LatentDiffusion.load(out, ckpt / "vae.safetensors", "cpu", guide_path=guide_path)  # it fits its UNet
    assert not torch.equal(pipe(4, digit="none", autoguidance=2, seed=0), pipe(4, digit="none", seed=0))
    # rerun without the guide: the run resumes from its snapshot past the guide's step and cannot write it
    guide_path.unlink()
    before = out.read_bytes()
    result = run_inline(*command)
    assert result.returncode == 2 and "guide.safetensors: missing" in result.stderr
    assert "delete the snapshot" in result.stderr and out.read_bytes() == before


@pytest.mark.slow
def test_compiled_unet_computes_what_the_eager_one_does(pipeline, tmp_path):
    """--compile trains and samples (the flag reaches both); and on non-trivial weights (the
    smoke UNet's output layers are still near their zero initialisation) the compiled forward
    pass equals the eager one to float32 rounding: fused kernels sum in another order, which moves
    a result by a few float32 epsilons (1.2e-7) per operation, far below 1e-4 of the output's scale."""
    ckpt = pipeline["ckpt"]
    run_script("train_diffusion", "--latents", ckpt / "latents.safetensors", *SMOKE, "--compile",
               "--out", tmp_path / "u.safetensors")
    assert load_checkpoint(tmp_path / "u.safetensors", "unet").info["compiled"] is True
    run_script("sample", *pipeline["models"], *CPU, "--compile", "--sampler", "ddim", "--steps", 3, "--num-samples", 4,
               "--out", tmp_path / "s.safetensors")
    unet = LatentDiffusion.from_pretrained(ckpt, device="cpu").unet
    torch.manual_seed(0)
    for module in unet.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    x, t, labels = torch.randn(8, 2, 7, 7), torch.randint(0, 1000, (8,)), torch.randint(0, 11, (8,))
    with torch.no_grad():
        eager, compiled = unet(x, t, labels), torch.compile(unet)(x, t, labels)
    assert eager.abs().max() > 0.1  # a non-trivial output
    assert (compiled - eager).abs().max() <= 1e-4 * eager.abs().max()


@pytest.mark.slow
def test_bench_scores_every_study_against_one_floor(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    run_script("bench", "--data-dir", pipeline["data"], "--preset", "smoke", "--device", "cpu",
               "--classifier", ckpt / "classifier.safetensors", "--vae", ckpt / "vae.safetensors",
               "--unet", ckpt / "unet.safetensors", "--latents", ckpt / "latents.safetensors",
               "--out-dir", tmp_path, "--work-dir", tmp_path / "work")
    report = json.loads((tmp_path / "bench.json").read_text())
    studies = [row["study"] for row in report["rows"]]
    assert studies.count("floor") == 1 and studies.count("sampler") == 10 and studies.count("guidance") == len(set(GUIDANCE_SCALES) | {PROMPT_GUIDANCE})
    assert [row["name"] for row in report["rows"] if row["study"] == "training"] == list(TRAINING_CHOICES)
    by_name = {row["name"]: row for row in report["rows"]}
    assert by_name["DDPM-1000 σ²=β, random digits"]["images"] == 8
    assert by_name["DDIM-50, random digits"]["images"] == 16 and "recognised" not in by_name["DDIM-50, random digits"]
    assert by_name["DDIM-50, no label"]["images"] == 16
    assert len(by_name["DDIM-50, digits 0-9, guidance 1"]["recognised_per_digit"]) == 10
    assert by_name["linear, v"]["diffusion"]["prediction"] == "v"
    assert by_name["cosine, v"]["diffusion"]["schedule"] == "cosine"
    assert by_name["cosine, v, 20% labels dropped"]["diffusion"]["label_dropout"] == 0.2
    for picture in ("bench_digits.png", "bench_process.png", "bench.md"):
        assert (tmp_path / picture).is_file()


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_to_the_same_weights(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    args = ["-m", "scripts.train_diffusion", "--latents", str(ckpt / "latents.safetensors"), "--preset", "smoke",
            "--device", "cpu", "--steps", "200", "--save-every", "10", "--validate-every", "10", "--no-progress"]
    killed_out = tmp_path / "killed.safetensors"
    state = tmp_path / "killed.state.safetensors"
    process = subprocess.Popen([sys.executable, *args, "--out", str(killed_out)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not killed_out.exists()
    steps_done = load_checkpoint(state, "training_state").info["step"]
    assert 0 < steps_done < 200
    resumed = run_script("train_diffusion", *args[2:-1], "--out", killed_out)
    assert f"resuming after step {steps_done}" in resumed.stdout
    run_script("train_diffusion", *args[2:-1], "--out", tmp_path / "straight.safetensors")
    a = load_checkpoint(killed_out, "unet").tensors
    b = load_checkpoint(tmp_path / "straight.safetensors", "unet").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # one continuous log: every line of the uninterrupted run, none twice (timings aside)
    untimed = lambda path: [{k: v for k, v in e.items() if k not in ("seconds", "train_seconds")}
                            for e in read_log(path)]
    assert untimed(tmp_path / "killed.log.jsonl") == untimed(tmp_path / "straight.log.jsonl")
    # the training clock counts on across the resume: it never goes back
    clock = [e["train_seconds"] for e in read_log(tmp_path / "killed.log.jsonl")]
    assert clock == sorted(clock) and clock[0] >= 0
    assert len(untimed(tmp_path / "straight.log.jsonl")) == 5 + 20  # train: 1, 50, 100, 150, 200; validation every 10


def test_dpm_solver_samples_prompted_and_guided(pipeline, tmp_path):
    out = tmp_path / "sevens.safetensors"
    run_script("sample", *pipeline["models"], *CPU, "--sampler", "dpm++2m", "--steps", 4, "--digit", 7,
               "--guidance", 2, "--num-samples", 8, "--out", out)
    samples = load_samples(out)
    assert samples.info["sampler"] == {"sampler": "dpm++2m", "steps": 4, "eta": 0.0, "variance": "beta_tilde",
                                       "spacing": "logsnr"}
    assert samples.name == "DPM++2M-4, digit 7, guidance 2"
    assert samples.images.shape == (8, 28, 28) and (samples.labels == 7).all()


@pytest.mark.slow
def test_sampler_study_reports_every_row_and_picks_a_default(pipeline, tmp_path, default_precision):
    ckpt = pipeline["ckpt"]
    run_script("samplers", "--data-dir", pipeline["data"], "--classifier", ckpt / "classifier.safetensors",
               *pipeline["models"], *CPU, "--num-images", 16, "--seeds", 0, 1, "--nfe", 2, 50,
               "--families", "ddim", "dpm++2m-sde", "--out-dir", tmp_path)
    report = json.loads((tmp_path / "samplers.json").read_text())
    labels = [("DDIM-2", 2), ("DDIM-50", 50), ("DPM++2M-2 η=1", 2), ("DPM++2M-50 η=1", 50)]
    assert [(r["branch"], r["label"], r["nfe"]) for r in report["rows"]] == \
        [(branch, *label) for branch in ("random digits", "no label") for label in labels]
    for row in report["rows"]:
        assert row["seeds"] == [0, 1] and row["images"] == 16 and len(row["fids"]) == 2
    assert len(report["floor"]["fids"]) == 2 and set(report["defaults"]) == {"random digits", "no label"}
    # each cell is the FID of what the pipeline samples with that prompt and seed, scored independently here
    fid = fid_of_test_set(pipeline)
    pipe = LatentDiffusion.from_pretrained(ckpt, device="cpu")
    for seed in (0, 1):
        assert report["rows"][2]["fids"][seed] == pytest.approx(fid(pipe(16, steps=2, eta=1, seed=seed)), rel=1e-9)
        no_label = pipe(16, digit="none", sampler="ddim", steps=2, seed=seed)
        assert report["rows"][4]["fids"][seed] == pytest.approx(fid(no_label), rel=1e-9)
    assert (tmp_path / "samplers.png").stat().st_size > 0 and "DPM++2M-2 η=1" in (tmp_path / "samplers.md").read_text()


@pytest.mark.slow
def test_guidance_study_scores_every_setting_and_chooses_among_the_recognisable(pipeline, tmp_path, default_precision):
    ckpt = pipeline["ckpt"]
    assert run_inline("train_diffusion", "--latents", ckpt / "latents.safetensors", *SMOKE, "--out",
                      tmp_path / "u.safetensors", "--guide-out", tmp_path / "guide.safetensors").returncode == 0
    run_script("guidance", "--data-dir", pipeline["data"], "--classifier", ckpt / "classifier.safetensors",
               *pipeline["models"], *CPU, "--num-images", 20, "--seeds", 0, 1, "--scales", 2, "--interval", -2, 2,
               "--guide", tmp_path / "guide.safetensors", "--autoguidance", 1, 1.5, "--out-dir", tmp_path)
    report = json.loads((tmp_path / "guidance.json").read_text())
    assert [(r["digit"], r["guidance"], r["interval"], r["autoguidance"]) for r in report["rows"]] == [
        ("all", 1.0, None, 1.0), ("all", 2.0, None, 1.0), ("all", 2.0, [-2.0, 2.0], 1.0),
        ("all", 2.0, None, 1.5), ("all", 2.0, [-2.0, 2.0], 1.5), ("any", 1.0, None, 1.0), ("any", 2.0, [-2.0, 2.0], 1.0),
        ("any", 1.0, None, 1.5), ("any", 2.0, [-2.0, 2.0], 1.5), ("none", None, None, 1.0), ("none", None, None, 1.5)]
    # each cell is what the pipeline samples with that prompt and seed, scored independently here
    fid = fid_of_test_set(pipeline)
    pipe = LatentDiffusion.load(ckpt / "unet.safetensors", ckpt / "vae.safetensors", "cpu",
                                guide_path=tmp_path / "guide.safetensors")
    for seed in (0, 1):
        images = pipe(20, digit="all", guidance=2.0, guidance_interval=(-2, 2), autoguidance=1.5, seed=seed)
        assert report["rows"][4]["fids"][seed] == pytest.approx(fid(images), rel=1e-9)
        random = pipe(20, digit="any", guidance=2.0, guidance_interval=(-2, 2), autoguidance=1.5, seed=seed)
        assert report["rows"][8]["fids"][seed] == pytest.approx(fid(random), rel=1e-9)
        assert report["rows"][10]["fids"][seed] == pytest.approx(fid(pipe(20, digit="none", autoguidance=1.5,
                                                                           seed=seed)), rel=1e-9)
    recognisable = [r for r in report["rows"][:5] if min(r["recognised"]) >= 0.99]
    assert report["chosen"] == (min(recognisable, key=lambda r: r["fid_mean"]) if recognisable else None)
    assert report["chosen_random"] == min(report["rows"][5:9], key=lambda r: r["fid_mean"])
    assert report["chosen_no_label"] == min(report["rows"][9:], key=lambda r: r["fid_mean"])
    table = (tmp_path / "guidance.md").read_text()
    assert (tmp_path / "guidance.png").stat().st_size > 0 and "λ -2..2" in table and "| no label | — |" in table
    assert "| random digits | 2 | λ -2..2 | 1.5 |" in table


@pytest.mark.slow
def test_length_study_reuses_the_stage_unet_and_trains_the_other_lengths(pipeline, tmp_path, default_precision):
    ckpt = pipeline["ckpt"]
    args = ["--data-dir", pipeline["data"], "--classifier", ckpt / "classifier.safetensors", *pipeline["models"],
            "--latents", ckpt / "latents.safetensors", *SMOKE, "--num-images", 16, "--out-dir", tmp_path,
            "--work-dir", tmp_path / "work"]
    run_script("training_length", *args, "--steps", 1, PRESETS["smoke"].unet.steps)
    report = json.loads((tmp_path / "training_length.json").read_text())
    assert [r["steps"] for r in report["rows"]] == [1, PRESETS["smoke"].unet.steps]
    assert report["rows"][0]["checkpoint"] == str(tmp_path / "work" / "unet_1.safetensors")
    assert report["rows"][1]["checkpoint"] == str(ckpt / "unet.safetensors")  # the stage's own run, not retrained
    assert load_checkpoint(report["rows"][0]["checkpoint"], "unet").info["training"]["steps"] == 1
    # the stage's own UNet's cells, scored independently here
    fid, pipe = fid_of_test_set(pipeline), LatentDiffusion.from_pretrained(ckpt, device="cpu")
    assert report["rows"][1]["random digits"] == pytest.approx(fid(pipe(16, seed=0)), rel=1e-9)
    assert report["rows"][1]["no label"] == pytest.approx(fid(pipe(16, digit="none", seed=0)), rel=1e-9)
    assert (tmp_path / "training_length.png").stat().st_size > 0
    assert "| 1 |" in (tmp_path / "training_length.md").read_text()


def fid_of_test_set(pipeline) -> FID:
    classifier, _ = load_model(pipeline["ckpt"] / "classifier.safetensors", Classifier)
    return FID(classifier, load_mnist(pipeline["data"], "test")[0], torch.device("cpu"))


def test_the_default_is_the_cheapest_setting_the_best_does_not_beat_beyond_tolerance_and_noise():
    def row(label, nfe, fids):
        return {"family": "f", "sampler": "s", "spacing": "t", "eta": 0.0, "label": label, "nfe": nfe,
                "fids": fids, "fid_mean": sum(fids) / len(fids)}
    best = row("e-50", 50, [10.0, 10.0])
    margin = TOLERANCE * 10.0
    rows = [row("a-10", 10, [10.0 + margin + 0.02] * 2),  # worse by a steady 5% and a bit: not as good
            row("b-15", 15, [10.0 + margin - 0.05, 10.0 + margin + 0.05]),  # by 5% in the mean: as good
            row("c-15", 15, [10.0 + margin - 0.01, 10.0 + margin - 0.03]),  # as good, and lower
            row("d-10", 10, [9.0, 12.0 + 2 * margin]), best]  # worse by 1.0 in the mean, but the seeds disagree by 4
    assert choose_default(rows)["label"] == "d-10"
    chosen = choose_default(rows[:3] + [best])
    assert chosen["label"] == "c-15" and chosen["best"] == "e-50" and chosen["best_fid_mean"] == 10.0
    assert choose_default(rows[:1] + [best])["label"] == "e-50"  # the best itself when nothing cheaper is close enough
    assert choose_default([]) is None
