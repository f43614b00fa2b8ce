"""Every stage script, end to end, on a small synthetic MNIST with the `smoke` preset, and the
one-line errors users see for bad inputs."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ldm.checkpoint import load_checkpoint
from ldm.data import write_idx
from ldm.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SMOKE_GUIDANCE = PRESETS["smoke"].guidance  # the scale make-style runs prompt with


def run_script(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    quiet = [] if name == "prepare_data" else ["--no-progress"]  # stderr then holds only errors
    result = subprocess.run([sys.executable, "-m", f"scripts.{name}", *map(str, args), *quiet], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    data, ckpt, reports = tmp / "data", tmp / "ckpt", tmp / "reports"
    data.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 32)):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    smoke = ["--preset", "smoke", "--device", "cpu"]
    run_script("prepare_data", "--data-dir", data, "--out", ckpt / "data.json")
    run_script("train_classifier", "--data-dir", data, *smoke, "--out", ckpt / "classifier.safetensors")
    run_script("train_vae", "--data-dir", data, *smoke, "--out", ckpt / "vae.safetensors",
               "--grid", reports / "vae.png")
    run_script("encode_latents", "--data-dir", data, "--vae", ckpt / "vae.safetensors",
               "--out", ckpt / "latents.safetensors")
    run_script("train_diffusion", "--latents", ckpt / "latents.safetensors", *smoke, "--out", ckpt / "unet.safetensors")
    models = ["--unet", ckpt / "unet.safetensors", "--vae", ckpt / "vae.safetensors"]
    for sampler in ("ddpm", "ddim"):
        run_script("sample", *models, *smoke, "--sampler", sampler, "--num-samples", 16,
                   "--out", ckpt / f"samples_{sampler}.safetensors")
    run_script("sample", *models, *smoke, "--digit", "all", "--num-samples", 20, "--strip",
               "--out", ckpt / "samples_digits.safetensors")
    evaluate = run_script("evaluate", "--data-dir", data, "--classifier", ckpt / "classifier.safetensors",
                          "--vae", ckpt / "vae.safetensors", "--num-images", 16, "--out-dir", reports,
                          "--device", "cpu", "--samples", ckpt / "samples_ddpm.safetensors",
                          ckpt / "samples_ddim.safetensors", ckpt / "samples_digits.safetensors")
    return {"data": data, "ckpt": ckpt, "reports": reports, "models": models, "evaluate": evaluate}


def test_every_stage_writes_its_outputs(pipeline):
    ckpt, reports = pipeline["ckpt"], pipeline["reports"]
    assert json.loads((ckpt / "data.json").read_text())["train"]["count"] == 64
    for name in ("classifier", "vae", "latents", "unet", "samples_ddpm", "samples_ddim"):
        assert (ckpt / f"{name}.safetensors").is_file(), name
    assert (ckpt / "samples_ddim.png").is_file() and (reports / "vae.png").is_file()
    samples = load_checkpoint(ckpt / "samples_ddpm.safetensors", "samples")
    assert samples.tensors["images"].shape == (16, 28, 28) and samples.info["label"] == "DDPM-5"
    latents = load_checkpoint(ckpt / "latents.safetensors", "latents")
    vae = load_checkpoint(ckpt / "vae.safetensors", "vae")
    assert latents.info["vae_fingerprint"] == vae.fingerprint
    assert latents.tensors["train_mean"].shape == (64, 2, 7, 7) and latents.tensors["test_logvar"].shape == (32, 2, 7, 7)


def test_fid_table_has_every_row(pipeline):
    report = json.loads((pipeline["reports"] / "fid.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == ["Validation", "Random", "VAE", "Diffusion DDPM-5", "Diffusion DDIM-3",
                     f"Diffusion DDIM-3, digits 0-9, guidance {SMOKE_GUIDANCE:g}"]
    assert report["num_images"] == 16 and all(np.isfinite(row["fid"]) for row in report["rows"])
    for row in report["rows"]:
        assert Path(row["grid"]).is_file()
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1 and sum(row["class_counts"]) == 16
        assert (row["memorisation"] is None) == (row["name"] == "Validation")
    prompted = report["rows"][-1]
    assert 0 <= prompted["recognised"] <= 1 and len(prompted["recognised_per_digit"]) == 10
    table = (pipeline["reports"] / "fid.md").read_text()
    assert all(name in table for name in names) and "not comparable to Inception FID" in table


def test_prompted_samples_carry_their_labels_and_pictures(pipeline):
    samples = load_checkpoint(pipeline["ckpt"] / "samples_digits.safetensors", "samples")
    assert samples.tensors["labels"].tolist() == [i % 10 for i in range(20)]
    assert samples.info["guidance"] == SMOKE_GUIDANCE and samples.info["digit"] == "all"
    assert (pipeline["ckpt"] / "samples_digits.png").is_file()
    assert (pipeline["ckpt"] / "samples_digits_process.png").is_file()


def test_sampling_with_the_same_seed_is_byte_identical(pipeline, tmp_path):
    for name in ("a", "b"):
        run_script("sample", *pipeline["models"], "--preset", "smoke", "--device", "cpu", "--seed", 1,
                   "--num-samples", 8, "--out", tmp_path / f"{name}.safetensors")
    a = load_checkpoint(tmp_path / "a.safetensors", "samples").tensors["images"]
    b = load_checkpoint(tmp_path / "b.safetensors", "samples").tensors["images"]
    assert a.numpy().tobytes() == b.numpy().tobytes()


def test_checkpoint_of_another_stage_is_refused(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    result = run_script("sample", "--unet", ckpt / "unet.safetensors", "--vae", ckpt / "classifier.safetensors",
                        "--out", tmp_path / "s.safetensors", check=False)
    assert_one_line_error(result, "classifier.safetensors", "expected a 'vae' checkpoint")
    assert not (tmp_path / "s.safetensors").exists()


def test_unet_with_another_vae_is_refused(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    run_script("train_vae", "--data-dir", pipeline["data"], "--preset", "smoke", "--device", "cpu", "--seed", 5,
               "--out", tmp_path / "other_vae.safetensors", "--grid", tmp_path / "g.png")
    result = run_script("sample", "--unet", ckpt / "unet.safetensors", "--vae", tmp_path / "other_vae.safetensors",
                        "--out", tmp_path / "s.safetensors", check=False)
    assert_one_line_error(result, "other_vae.safetensors", "is not the one the UNet")
    # samples decoded with the first VAE are stale beside the other one: evaluate refuses them
    result = run_script("evaluate", "--data-dir", pipeline["data"], "--classifier", ckpt / "classifier.safetensors",
                        "--vae", tmp_path / "other_vae.safetensors", "--num-images", 16, "--device", "cpu",
                        "--out-dir", tmp_path / "reports", "--samples", ckpt / "samples_ddim.safetensors", check=False)
    assert_one_line_error(result, "samples_ddim.safetensors", "not the VAE in", "rerun `make sample`")
    assert not (tmp_path / "reports" / "fid.json").exists()


def test_truncated_data_file_gives_one_line(pipeline, tmp_path):
    bad = tmp_path / "data"
    bad.mkdir()
    for f in pipeline["data"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    target = bad / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:500])
    result = run_script("prepare_data", "--data-dir", bad, "--out", tmp_path / "data.json", check=False)
    assert_one_line_error(result, str(target), "truncated")
    assert not (tmp_path / "data.json").exists()


def test_bad_options_exit_non_zero(pipeline, tmp_path):
    models = pipeline["models"]
    result = run_script("sample", *models, "--num-samples", 0, check=False)
    assert result.returncode == 2 and "must be a positive integer" in result.stderr
    result = run_script("sample", *models, "--eta", "-1", check=False)
    assert result.returncode == 2 and "must be >= 0" in result.stderr
    result = run_script("sample", *models, "--guidance", "-0.5", check=False)
    assert result.returncode == 2 and "--guidance" in result.stderr and "must be >= 0" in result.stderr
    result = run_script("sample", *models, "--digit", "11", check=False)
    assert result.returncode == 2 and "--digit" in result.stderr
    result = run_script("train_diffusion", "--latents", pipeline["ckpt"] / "latents.safetensors",
                        "--schedule", "sigmoid", "--out", tmp_path / "u.safetensors", check=False)
    assert_one_line_error(result, "--schedule", "sigmoid")
    result = run_script("prepare_data", "--data-dir", tmp_path / "missing", check=False)
    assert_one_line_error(result, "missing: data folder does not exist")


def test_cuda_without_a_gpu_is_one_line(pipeline):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_script("sample", *pipeline["models"], "--device", "cuda", check=False)
    assert_one_line_error(result, "--device cuda")


def test_unwritable_output_folder_is_one_line(pipeline, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_script("sample", *pipeline["models"], "--preset", "smoke", "--device", "cpu", "--num-samples", 2,
                        "--out", blocker / "s.safetensors", check=False)
    assert_one_line_error(result, "cannot write output folder")


def test_every_script_has_help():
    for script in sorted((ROOT / "scripts").glob("[a-z]*.py")):
        result = subprocess.run([sys.executable, "-m", f"scripts.{script.stem}", "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage:" in result.stdout and "python -m scripts." in result.stdout, script


def test_v_prediction_cosine_min_snr_model_trains_and_samples(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    run_script("train_diffusion", "--latents", ckpt / "latents.safetensors", "--preset", "smoke", "--device", "cpu",
               "--schedule", "cosine", "--prediction", "v", "--min-snr-gamma", 5, "--out", tmp_path / "v.safetensors")
    unet = load_checkpoint(tmp_path / "v.safetensors", "unet")
    assert unet.info["diffusion"]["prediction"] == "v" and unet.info["diffusion"]["min_snr_gamma"] == 5
    run_script("sample", "--unet", tmp_path / "v.safetensors", "--vae", ckpt / "vae.safetensors", "--preset", "smoke",
               "--device", "cpu", "--num-samples", 4, "--out", tmp_path / "s.safetensors")
    result = run_script("train_diffusion", "--latents", ckpt / "latents.safetensors", "--prediction", "x0",
                        "--out", tmp_path / "x.safetensors", check=False)
    assert_one_line_error(result, "--prediction", "x0")


def test_bench_scores_every_study_against_one_floor(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    run_script("bench", "--data-dir", pipeline["data"], "--preset", "smoke", "--device", "cpu",
               "--classifier", ckpt / "classifier.safetensors", "--vae", ckpt / "vae.safetensors",
               "--unet", ckpt / "unet.safetensors", "--latents", ckpt / "latents.safetensors",
               "--out-dir", tmp_path, "--work-dir", tmp_path / "work")
    report = json.loads((tmp_path / "bench.json").read_text())
    studies = [row["study"] for row in report["rows"]]
    assert studies.count("floor") == 1 and studies.count("sampler") == 8 and studies.count("guidance") == 4
    assert studies.count("training") == 4
    by_name = {row["name"]: row for row in report["rows"]}
    assert by_name["DDPM-1000 σ²=β"]["images"] == 8 and by_name["DDIM-50"]["images"] == 16
    assert all(row["images_per_second"] > 0 for row in report["rows"] if row["study"] != "floor")
    assert by_name["linear, v"]["objective"]["prediction"] == "v"
    for picture in ("bench_digits.png", "bench_process.png", "bench.md"):
        assert (tmp_path / picture).is_file()


def test_training_killed_with_sigkill_resumes_to_the_same_weights(pipeline, tmp_path):
    ckpt = pipeline["ckpt"]
    args = ["-m", "scripts.train_diffusion", "--latents", str(ckpt / "latents.safetensors"), "--preset", "smoke",
            "--device", "cpu", "--steps", "1000", "--save-every", "25", "--no-progress"]
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
    assert 0 < steps_done < 1000
    resumed = run_script("train_diffusion", *args[2:-1], "--out", killed_out)
    assert f"resuming after step {steps_done}" in resumed.stdout
    run_script("train_diffusion", *args[2:-1], "--out", tmp_path / "straight.safetensors")
    a = load_checkpoint(killed_out, "unet").tensors
    b = load_checkpoint(tmp_path / "straight.safetensors", "unet").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
