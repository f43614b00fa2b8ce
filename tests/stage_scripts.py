"""Running the stage scripts as a user does (a subprocess each), for the end-to-end tests, or in
this process (`run_inline`: the same parsing and error handling, without paying a torch import)."""

import contextlib
import gzip
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from ldm import launch

ROOT = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu"]
SMOKE = ["--preset", "smoke", *CPU]  # the training stages and studies; sampling has no preset


def _quiet(name: str) -> list[str]:
    return ["--no-progress"]  # stderr then holds only errors


def run_script(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", f"scripts.{name}", *map(str, args), *_quiet(name)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run_inline(name: str, *args) -> subprocess.CompletedProcess:
    """`scripts.<name>` run through `launch.run` in this process, as `run_script` would run it; any
    exception that `launch.run` lets through (a traceback for a user) fails the test."""
    module = importlib.import_module(f"scripts.{name}")
    argv = [f"scripts/{name}.py", *map(str, args), *_quiet(name)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            launch.run(module.parser(), module.main)
            status = 0
        except SystemExit as e:
            status = e.code
    return subprocess.CompletedProcess(argv, status, stdout.getvalue(), stderr.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_synthetic_mnist(folder: Path, train: int = 64, test: int = 32) -> Path:
    """Random pixels and labels in the four IDX files: enough for every stage to run."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def run_checked(name: str, *args) -> subprocess.CompletedProcess:
    """`run_inline`, which must succeed."""
    result = run_inline(name, *args)
    assert result.returncode == 0, result.stderr
    return result


def run_smoke_pipeline(tmp: Path) -> dict:
    """Every stage with the `smoke` preset on synthetic MNIST, each script run in this process
    (the same parsing and error handling as a command; tests that need a real process run their
    own); returns the folders and the evaluate result."""
    data, ckpt, reports = write_synthetic_mnist(tmp / "data"), tmp / "ckpt", tmp / "reports"
    run_checked("prepare_data", "--data-dir", data, "--out", ckpt / "data.json")
    run_checked("train_classifier", "--data-dir", data, *SMOKE, "--out", ckpt / "classifier.safetensors")
    run_checked("train_vae", "--data-dir", data, *SMOKE, "--out", ckpt / "vae.safetensors",
               "--grid", reports / "vae.png")
    run_checked("encode_latents", "--data-dir", data, "--vae", ckpt / "vae.safetensors",
               "--out", ckpt / "latents.safetensors")
    run_checked("train_diffusion", "--latents", ckpt / "latents.safetensors", *SMOKE, "--out", ckpt / "unet.safetensors",
               "--fid-every", 2, "--fid-images", 12, "--data-dir", data, "--classifier", ckpt / "classifier.safetensors",
               "--vae", ckpt / "vae.safetensors")
    models = ["--unet", ckpt / "unet.safetensors", "--vae", ckpt / "vae.safetensors"]
    for sampler, steps in (("ddpm", 5), ("ddim", 3)):
        run_checked("sample", *models, *CPU, "--sampler", sampler, "--steps", steps, "--num-samples", 16,
                   "--out", ckpt / f"samples_{sampler}.safetensors")
    run_checked("sample", *models, *CPU, "--digit", "all", "--num-samples", 20, "--strip",
               "--out", ckpt / "samples_digits.safetensors")
    evaluate = run_checked("evaluate", "--data-dir", data, "--classifier", ckpt / "classifier.safetensors",
                          "--vae", ckpt / "vae.safetensors", "--num-images", 16, "--out-dir", reports,
                          "--device", "cpu", "--samples", ckpt / "samples_ddpm.safetensors",
                          ckpt / "samples_ddim.safetensors", ckpt / "samples_digits.safetensors")
    return {"data": data, "ckpt": ckpt, "reports": reports, "models": models, "evaluate": evaluate}
