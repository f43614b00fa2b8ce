"""Every bad input a user can hand a stage script: one line on stderr naming the file or the
option, a non-zero exit status, and nothing written where the output was asked for.

Each case runs a script on the smoke pipeline's files (tests/conftest.py) or on a damaged copy
of them, with its outputs pointed into an empty folder that must stay empty.
"""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from stage_scripts import SMOKE, assert_one_line_error, run_script

from ldm.checkpoint import load_checkpoint
from ldm.data import write_idx


def damaged_data(pipeline: dict, folder: Path, damage: str) -> Path:
    """A copy of the smoke data with one file damaged."""
    shutil.copytree(pipeline["data"], folder)
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:500])
    elif damage == "magic":
        images.write_bytes(labels.read_bytes())  # a labels file where images are expected
    elif damage == "count":
        write_idx(labels, np.frombuffer(gzip.decompress(labels.read_bytes())[8:-1], dtype=np.uint8))  # one short
    return folder


def tampered_vae(pipeline: dict, path: Path) -> Path:
    """The smoke VAE with a config that does not fit its tensors (its fingerprint still valid)."""
    ckpt = load_checkpoint(pipeline["ckpt"] / "vae.safetensors", "vae")
    config = dict(ckpt.config, channels=[c * 2 for c in ckpt.config["channels"]])
    metadata = {"kind": "vae", "config": json.dumps(config), "info": "{}", "fingerprint": ckpt.fingerprint}
    save_file(ckpt.tensors, str(path), metadata=metadata)
    return path


def truncated_copy(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def other_vae(pipeline, tmp_path_factory) -> Path:
    """A second VAE (another seed): the UNet and samples of the pipeline were not made with it."""
    path = tmp_path_factory.mktemp("other") / "other_vae.safetensors"
    run_script("train_vae", "--data-dir", pipeline["data"], *SMOKE, "--seed", 5, "--out", path,
               "--grid", path.with_suffix(".png"))
    return path


def sample(p, out, *args):
    return "sample", [*p["models"], *SMOKE, "--num-samples", 2, *args, "--out", out / "s.safetensors"]


def train_diffusion(p, out, *args):
    return "train_diffusion", ["--latents", p["ckpt"] / "latents.safetensors", *SMOKE, *args,
                               "--out", out / "unet.safetensors"]


def evaluate(p, out, vae, samples, num_images=16):
    return "evaluate", ["--data-dir", p["data"], "--classifier", p["ckpt"] / "classifier.safetensors", "--vae", vae,
                        "--num-images", num_images, "--device", "cpu", "--out-dir", out, "--samples", samples]


# id: (how to build the command from (pipeline, output folder, scratch folder, other VAE),
#      what the one line must contain)
CASES = {
    "missing data folder": (
        lambda p, out, tmp, other: ("prepare_data", ["--data-dir", tmp / "nowhere", "--out", out / "data.json"]),
        ["nowhere: data folder does not exist"]),
    "truncated .gz": (
        lambda p, out, tmp, other: ("train_classifier", ["--data-dir", damaged_data(p, tmp / "d", "truncated"),
                                                         *SMOKE, "--out", out / "c.safetensors"]),
        ["train-images-idx3-ubyte.gz", "truncated"]),
    "wrong magic number": (
        lambda p, out, tmp, other: ("train_vae", ["--data-dir", damaged_data(p, tmp / "d", "magic"), *SMOKE,
                                                  "--out", out / "v.safetensors", "--grid", out / "v.png"]),
        ["train-images-idx3-ubyte.gz", "wrong magic number"]),
    "image/label count mismatch": (
        lambda p, out, tmp, other: ("prepare_data", ["--data-dir", damaged_data(p, tmp / "d", "count"),
                                                     "--out", out / "data.json"]),
        ["train-labels-idx1-ubyte.gz", "63 labels for 64 images"]),
    "another stage's checkpoint as the VAE": (
        lambda p, out, tmp, other: ("encode_latents", ["--data-dir", p["data"], "--vae",
                                                       p["ckpt"] / "classifier.safetensors",
                                                       "--out", out / "latents.safetensors"]),
        ["classifier.safetensors", "expected a 'vae' checkpoint"]),
    "config that does not match the tensors": (
        lambda p, out, tmp, other: sample(p, out, "--vae", tampered_vae(p, tmp / "tampered.safetensors")),
        ["tampered.safetensors", "config does not match its tensors"]),
    "truncated safetensors": (
        lambda p, out, tmp, other: sample(p, out, "--unet", truncated_copy(p["ckpt"] / "unet.safetensors",
                                                                          tmp / "cut.safetensors")),
        ["cut.safetensors", "not a readable safetensors file"]),
    "missing checkpoint": (
        lambda p, out, tmp, other: sample(p, out, "--unet", tmp / "absent.safetensors"),
        ["absent.safetensors", "file not found"]),
    "UNet trained on latents of another VAE": (
        lambda p, out, tmp, other: sample(p, out, "--vae", other),
        ["unet.safetensors: made with VAE", "not with the VAE in", "other_vae.safetensors",
         "rerun `make latents diffusion`"]),
    "samples decoded by another VAE": (
        lambda p, out, tmp, other: evaluate(p, out, other, p["ckpt"] / "samples_ddim.safetensors"),
        ["samples_ddim.safetensors", "not with the VAE in", "rerun `make sample`"]),
    "unknown schedule": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--schedule", "sigmoid"),
        ["--schedule sigmoid: choose one of linear, cosine"]),
    "unknown prediction target": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--prediction", "x0"),
        ["--prediction x0: choose one of eps, v"]),
    "too few timesteps for the linear schedule": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--schedule", "linear", "--timesteps", 10),
        ["--timesteps 10: must be positive (at least 20 for the linear schedule"]),
    "unknown sampler": (
        lambda p, out, tmp, other: sample(p, out, "--sampler", "euler"),
        ["--sampler euler: choose one of ddpm, ddim, dpm++2m, langevin"]),
    "zero training steps": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--steps", 0),
        ["argument --steps: must be a positive integer, got 0"]),
    "negative batch size": (
        lambda p, out, tmp, other: ("train_vae", ["--data-dir", p["data"], *SMOKE, "--batch-size", -8,
                                                  "--out", out / "v.safetensors", "--grid", out / "v.png"]),
        ["argument --batch-size: must be a positive integer, got -8"]),
    "zero samples": (
        lambda p, out, tmp, other: sample(p, out, "--num-samples", 0),
        ["argument --num-samples: must be a positive integer, got 0"]),
    "zero images per FID row": (
        lambda p, out, tmp, other: ("evaluate", ["--data-dir", p["data"], "--num-images", 0, "--out-dir", out]),
        ["argument --num-images: must be a positive integer, got 0"]),
    "more images per row than the samples file holds": (
        lambda p, out, tmp, other: evaluate(p, out, p["ckpt"] / "vae.safetensors",
                                            p["ckpt"] / "samples_ddim.safetensors", num_images=17),
        ["samples_ddim.safetensors", "holds 16 images, the table needs 17"]),
    "negative seed": (
        lambda p, out, tmp, other: sample(p, out, "--seed", -1),
        ["argument --seed: must be in [0, 2**32), got -1"]),
    "negative seed of the toy script": (
        lambda p, out, tmp, other: ("toy", ["--seed", -1, "--out-dir", out]),
        ["argument --seed: must be in [0, 2**32), got -1"]),
    "negative guidance": (
        lambda p, out, tmp, other: sample(p, out, "--digit", 3, "--guidance", -0.5),
        ["--guidance -0.5: must be >= 0"]),
    "digit out of range": (
        lambda p, out, tmp, other: sample(p, out, "--digit", 11),
        ["--digit 11: must be a digit 0-9 or one of all, any, none"]),
    "unknown preset": (
        lambda p, out, tmp, other: sample(p, out, "--preset", "huge"),
        ["--preset huge: choose one of auto, cpu, gpu, smoke"]),
    "batch larger than the training set": (
        lambda p, out, tmp, other: ("train_classifier", ["--data-dir", p["data"], *SMOKE, "--batch-size", 100,
                                                         "--out", out / "c.safetensors"]),
        ["--batch-size 100: larger than the 64 training examples"]),
    "--device cuda without a GPU": (
        lambda p, out, tmp, other: ("sample", [*p["models"], "--device", "cuda", "--out", out / "s.safetensors"]),
        ["--device cuda: no CUDA GPU is available"]),
    "output folder that cannot be written": (
        lambda p, out, tmp, other: sample(p, tmp / "a_file"),
        ["a_file: cannot write output folder"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_writes_nothing(case, pipeline, other_vae, tmp_path):
    if case == "--device cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    build, fragments = CASES[case]
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "a_file").write_text("a file where an output folder should be")
    script, args = build(pipeline, out, scratch, other_vae)
    result = run_script(script, *args, check=False)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert written == [], written
