"""Every bad input a user can hand a stage script: one line on stderr naming the file or the
option, exit status 2, and nothing written where the output was asked for.

Each case runs a script (in this process, through the same `cli.run` a user's command goes
through) on the smoke pipeline's files (tests/conftest.py) or on a damaged copy of them, with its
outputs pointed into an empty folder that must stay empty. Damaged checkpoints are made two ways:
`rewritten` saves bad content with a valid fingerprint (what a buggy writer would leave, so the
checks of the file kind itself are exercised), `edited` changes the metadata and keeps the old
fingerprint (what a hand edit leaves).
"""

import errno
import gzip
import json
import os
import shutil
import socket
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from ldm.checkpoint import load_checkpoint, save_checkpoint
from ldm.data import IMAGES_MAGIC, read_idx
from ldm.errors import ConfigError, LdmError
from ldm.pipeline import LatentDiffusion
from ldm.run_lock import lock_path
from ldm.runtime import physical_memory
from ldm.sampling import SamplerConfig
from stage_scripts import CPU, SMOKE, assert_one_line_error, run_inline, write_idx

# ---- damaged inputs


def damaged_data(pipeline: dict, folder: Path, damage: str) -> Path:
    """A copy of the smoke data with one file damaged."""
    shutil.copytree(pipeline["data"], folder)
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:500])
    elif damage == "magic":
        images.write_bytes(labels.read_bytes())  # a labels file where images are expected
    elif damage == "count":
        write_idx(labels, np.frombuffer(gzip.decompress(labels.read_bytes())[8:-1], dtype=np.uint8))  # one short
    elif damage == "empty test split":
        write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), dtype=np.uint8))
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(0, dtype=np.uint8))
    elif damage == "overflowing header":
        header = (0x803).to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big") * 3
        images.write_bytes(gzip.compress(header + raw[16:]))
    elif damage == "too long":
        images.write_bytes(gzip.compress(raw + bytes(784)))
    elif damage == "directory":
        images.unlink()
        images.mkdir()
    return folder


def rewritten(source: Path, path: Path, kind: str, tensors=None, config=None, info=None) -> Path:
    """`source` saved again with the changes each function makes (tensors, config, info -> new
    ones), under a valid fingerprint."""
    ckpt = load_checkpoint(source, kind)
    save_checkpoint(path, (tensors or dict)(dict(ckpt.tensors)), kind, config=(config or dict)(dict(ckpt.config)),
                    info=(info or dict)(dict(ckpt.info)))
    return path


def edited(source: Path, path: Path, kind: str, **metadata) -> Path:
    """`source` with metadata fields replaced (JSON) and the fingerprint left as it was."""
    ckpt = load_checkpoint(source, kind)
    fields = {"kind": kind, "config": json.dumps(ckpt.config), "info": json.dumps(ckpt.info),
              "fingerprint": ckpt.fingerprint}
    fields.update({k: json.dumps(v) for k, v in metadata.items()})
    save_file(ckpt.tensors, str(path), metadata=fields)
    return path


def with_nan(tensors: dict) -> dict:
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    return dict(tensors, **{name: torch.full_like(tensors[name], float("nan"))})


def ckpt(p, name):
    return p["ckpt"] / f"{name}.safetensors"


def bad_unet(p, tmp, **change):
    return rewritten(ckpt(p, "unet"), tmp / "bad_unet.safetensors", "unet", info=lambda i: dict(i, **change))


def bad_latents(p, tmp, tensors=None, info=None):
    return rewritten(ckpt(p, "latents"), tmp / "bad_latents.safetensors", "latents", tensors=tensors, info=info)


def bad_samples(p, tmp, tensors=None, info=None):
    return rewritten(ckpt(p, "samples_digits"), tmp / "bad_samples.safetensors", "samples", tensors=tensors, info=info)


def copied(source: Path, path: Path) -> Path:
    shutil.copy(source, path)
    return path


def linked(target: Path, path: Path) -> Path:
    path.symlink_to(target)
    return path


def copied_data(p, folder: Path) -> Path:
    shutil.copytree(p["data"], folder)
    return folder


@pytest.fixture(scope="module")
def other_vae(pipeline, tmp_path_factory) -> Path:
    """A second VAE (another seed): the UNet and samples of the pipeline were not made with it."""
    path = tmp_path_factory.mktemp("other") / "other_vae.safetensors"
    assert run_inline("train_vae", "--data-dir", pipeline["data"], *SMOKE, "--seed", 5, "--out", path,
                      "--grid", path.with_suffix(".png")).returncode == 0
    return path


# ---- the commands


def sample(p, out, *args):
    return "sample", [*p["models"], *CPU, "--num-samples", 2, *args, "--out", out / "s.safetensors"]


def train_diffusion(p, out, *args):
    return "train_diffusion", ["--latents", ckpt(p, "latents"), *SMOKE, *args, "--out", out / "unet.safetensors"]


def evaluate(p, out, vae, samples, num_images=16, classifier=None):
    return "evaluate", ["--data-dir", p["data"], "--classifier", classifier or ckpt(p, "classifier"), "--vae", vae,
                        "--num-images", num_images, "--device", "cpu", "--out-dir", out, "--samples", samples]


# id: (how to build the command from (pipeline, output folder, scratch folder, other VAE),
#      what the one line must contain)
CASES = {
    # outputs that would destroy an input, or each other
    "an output that is an input": (
        lambda p, out, tmp, other: ("sample", ["--unet", copied(ckpt(p, "unet"), tmp / "u.safetensors"),
                                               "--vae", ckpt(p, "vae"), *CPU, "--num-samples", 2,
                                               "--out", tmp / "u.safetensors"]),
        ["u.safetensors: is --unet", "an output must not replace an input"]),
    "an output that reaches an input through ..": (
        lambda p, out, tmp, other: ("prepare_data", ["--data-dir", copied_data(p, tmp / "d"),
                                                     "--out", tmp / "d" / ".." / "d" / "train-labels-idx1-ubyte.gz"]),
        ["is --data-dir", "train-labels-idx1-ubyte.gz, which this stage reads"]),
    "an output that reaches an input through a symbolic link": (
        lambda p, out, tmp, other: ("encode_latents", [
            "--data-dir", p["data"], "--vae", copied(ckpt(p, "vae"), tmp / "v.safetensors"),
            "--out", linked(tmp / "v.safetensors", tmp / "link.safetensors")]),
        ["link.safetensors: is --vae"]),
    "two outputs on one file (--curves equal to --out)": (
        lambda p, out, tmp, other: ("train_classifier", ["--data-dir", p["data"], *SMOKE, "--out", out / "c.safetensors",
                                                         "--curves", out / "c.safetensors"]),
        ["c.safetensors: two outputs of this stage would be written there"]),
    "a log on the training snapshot": (
        lambda p, out, tmp, other: ("train_vae", ["--data-dir", p["data"], *SMOKE, "--out", out / "v.safetensors",
                                                  "--log", out / "v.state.safetensors", "--grid", out / "v.png"]),
        ["v.state.safetensors: two outputs of this stage would be written there"]),
    "a path with a newline": (
        lambda p, out, tmp, other: ("sample", [*p["models"], *CPU, "--num-samples", 2, "--out", out / "two\nlines.txt"]),
        ["two\\nlines.txt: must end in .safetensors"]),
    # the data
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
    "empty test split": (
        lambda p, out, tmp, other: ("prepare_data", ["--data-dir", damaged_data(p, tmp / "d", "empty test split"),
                                                     "--out", out / "data.json"]),
        ["t10k-images-idx3-ubyte.gz: holds no images"]),
    "IDX header whose dimensions overflow": (
        lambda p, out, tmp, other: ("prepare_data", ["--data-dir", damaged_data(p, tmp / "d", "overflowing header"),
                                                     "--out", out / "data.json"]),
        ["train-images-idx3-ubyte.gz: header says shape (4294967295, 4294967295, 4294967295)", "(truncated?)"]),
    "IDX file too long": (
        lambda p, out, tmp, other: ("train_classifier", ["--data-dir", damaged_data(p, tmp / "d", "too long"), *SMOKE,
                                                         "--out", out / "c.safetensors"]),
        ["train-images-idx3-ubyte.gz: header says shape (64, 28, 28)", "too long"]),
    "directory where a data file should be": (
        lambda p, out, tmp, other: ("prepare_data", ["--data-dir", damaged_data(p, tmp / "d", "directory"),
                                                     "--out", out / "data.json"]),
        ["train-images-idx3-ubyte.gz: not a regular file"]),
    # checkpoints
    "another stage's checkpoint as the VAE": (
        lambda p, out, tmp, other: ("encode_latents", ["--data-dir", p["data"], "--vae", ckpt(p, "classifier"),
                                                       "--out", out / "latents.safetensors"]),
        ["classifier.safetensors", "expected a 'vae' checkpoint"]),
    "config that does not match the tensors": (
        lambda p, out, tmp, other: sample(p, out, "--vae", rewritten(
            ckpt(p, "vae"), tmp / "tampered.safetensors", "vae",
            config=lambda c: dict(c, channels=[x * 2 for x in c["channels"]]))),
        ["tampered.safetensors", "config does not match its tensors"]),
    "truncated safetensors": (
        lambda p, out, tmp, other: sample(p, out, "--unet", truncated_copy(ckpt(p, "unet"), tmp / "cut.safetensors")),
        ["cut.safetensors", "not a readable safetensors file"]),
    "missing checkpoint": (
        lambda p, out, tmp, other: sample(p, out, "--unet", tmp / "absent.safetensors"),
        ["absent.safetensors", "file not found"]),
    "directory as a checkpoint": (
        lambda p, out, tmp, other: sample(p, out, "--unet", tmp),
        ["scratch: not a regular file (a directory?)"]),
    "UNet trained on latents of another VAE": (
        lambda p, out, tmp, other: sample(p, out, "--vae", other),
        ["unet.safetensors: made with VAE", "not with the VAE in", "other_vae.safetensors",
         "rerun `make latents diffusion`"]),
    "samples decoded by another VAE": (
        lambda p, out, tmp, other: evaluate(p, out, other, ckpt(p, "samples_ddim")),
        ["samples_ddim.safetensors", "not with the VAE in", "rerun `make sample`"]),
    "UNet with NaN weights": (
        lambda p, out, tmp, other: sample(p, out, "--unet", rewritten(ckpt(p, "unet"), tmp / "nan.safetensors", "unet",
                                                                     tensors=with_nan)),
        ["nan.safetensors: tensor", "holds NaN or infinite values"]),
    "classifier with NaN weights": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), ckpt(p, "samples_ddim"), classifier=rewritten(
            ckpt(p, "classifier"), tmp / "nan.safetensors", "classifier", tensors=with_nan)),
        ["nan.safetensors: tensor", "holds NaN or infinite values"]),
    "VAE with NaN weights": (
        lambda p, out, tmp, other: evaluate(p, out, rewritten(ckpt(p, "vae"), tmp / "nan.safetensors", "vae",
                                                              tensors=with_nan), ckpt(p, "samples_ddim")),
        ["nan.safetensors: tensor", "holds NaN or infinite values"]),
    "classifier whose features overflow": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), ckpt(p, "samples_ddim"), classifier=rewritten(
            ckpt(p, "classifier"), tmp / "huge.safetensors", "classifier",
            tensors=lambda t: {k: v * 1e30 if v.is_floating_point() else v for k, v in t.items()})),
        ["the classifier's features are not finite"]),
    # metadata
    "UNet whose scale factor was edited to 0": (
        lambda p, out, tmp, other: sample(p, out, "--unet", edited(
            ckpt(p, "unet"), tmp / "e.safetensors", "unet",
            info=dict(load_checkpoint(ckpt(p, "unet"), "unet").info, scale_factor=0))),
        ["e.safetensors: tensors or metadata do not match the fingerprint"]),
    "UNet recording a scale factor of 0": (
        lambda p, out, tmp, other: sample(p, out, "--unet", bad_unet(p, tmp, scale_factor=0)),
        ["bad_unet.safetensors: scale factor 0, expected a finite number > 0"]),
    "UNet recording an absurd scale factor": (
        lambda p, out, tmp, other: sample(p, out, "--unet", bad_unet(p, tmp, scale_factor=1e12)),
        ["bad_unet.safetensors: scale factor 1e+12, outside 0.001..1000", "standard deviation would be 1e-12"]),
    "UNet recording 3 label frequencies": (
        lambda p, out, tmp, other: sample(p, out, "--unet", bad_unet(p, tmp, label_frequencies=[0.3, 0.3, 0.4])),
        ["bad_unet.safetensors: label frequencies [0.3, 0.3, 0.4], expected 10 numbers"]),
    "UNet recording all-zero label frequencies": (
        lambda p, out, tmp, other: sample(p, out, "--unet", bad_unet(p, tmp, label_frequencies=[0] * 10)),
        ["bad_unet.safetensors: label frequencies", "not all zero"]),
    "UNet without a scale factor": (
        lambda p, out, tmp, other: sample(p, out, "--unet", rewritten(
            ckpt(p, "unet"), tmp / "bad_unet.safetensors", "unet",
            info=lambda i: {k: v for k, v in i.items() if k != "scale_factor"})),
        ["bad_unet.safetensors: scale factor None"]),
    "UNet recording 0 timesteps": (
        lambda p, out, tmp, other: sample(p, out, "--unet", bad_unet(p, tmp, diffusion={"num_timesteps": 0})),
        ["bad_unet.safetensors: config does not fit DiffusionConfig (num_timesteps=0"]),
    "UNet config that is a list": (
        lambda p, out, tmp, other: sample(p, out, "--unet", edited(ckpt(p, "unet"), tmp / "e.safetensors", "unet",
                                                                  config=[8, 16])),
        ["e.safetensors: tensors or metadata do not match the fingerprint"]),
    "UNet config that is a list, fingerprinted": (
        lambda p, out, tmp, other: sample(p, out, "--unet", rewritten(ckpt(p, "unet"), tmp / "bad_unet.safetensors",
                                                                     "unet", config=lambda c: [8, 16])),
        ["bad_unet.safetensors: metadata 'config' is a list, expected a JSON object"]),
    "UNet width given as a string": (
        lambda p, out, tmp, other: sample(p, out, "--unet", rewritten(ckpt(p, "unet"), tmp / "bad_unet.safetensors",
                                                                     "unet", config=lambda c: dict(c, base_channels="8"))),
        ["bad_unet.safetensors: config field base_channels = '8' is not of type int"]),
    # the latent cache
    "latent cache without its scale factor": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--latents", bad_latents(
            p, tmp, info=lambda i: {k: v for k, v in i.items() if k != "scale_factor"})),
        ["bad_latents.safetensors: scale factor None", "rerun `make latents`"]),
    "latent cache with a scale factor of 0": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--latents", bad_latents(
            p, tmp, info=lambda i: dict(i, scale_factor=0.0))),
        ["bad_latents.safetensors: scale factor 0.0, expected a finite number > 0"]),
    "latent cache with a scale factor far from 1/its spread": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--latents", bad_latents(
            p, tmp, info=lambda i: dict(i, scale_factor=1e-9))),
        ["bad_latents.safetensors: scale factor 1e-09, outside 0.001..1000"]),
    "latent cache whose latents are not the VAE's 7x7": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--latents", bad_latents(p, tmp, tensors=upsampled)),
        ["bad_latents.safetensors: train latents are", "x14x14, the VAE makes C x 7 x 7"]),
    "latent cache with other channels than its VAE's": (
        lambda p, out, tmp, other: ("train_diffusion", [
            "--latents", bad_latents(p, tmp, tensors=doubled_channels), *SMOKE, "--fid-every", 1, "--fid-images", 8,
            "--data-dir", p["data"], "--classifier", ckpt(p, "classifier"), "--vae", ckpt(p, "vae"),
            "--out", out / "unet.safetensors"]),
        ["bad_latents.safetensors: latents are", "the VAE in", "vae.safetensors makes"]),
    "latent cache with labels shorter than its latents": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--latents", bad_latents(
            p, tmp, tensors=lambda t: dict(t, train_labels=t["train_labels"][:-1]))),
        ["bad_latents.safetensors: train labels are torch.int64 (63,), expected int64 [64]"]),
    "latent cache with a label 11": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--latents", bad_latents(
            p, tmp, tensors=lambda t: dict(t, train_labels=torch.where(torch.arange(64) == 5, 11, t["train_labels"])))),
        ["bad_latents.safetensors: train labels hold", "outside the digits 0-9"]),
    # samples given to evaluate
    "samples without images": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: {"labels": t["labels"]})),
        ["bad_samples.safetensors: no 'images' tensor"]),
    "1-D samples": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, images=t["images"].flatten()))),
        ["bad_samples.safetensors: images have shape (15680,), expected [N x 28 x 28]"]),
    "5-D samples": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, images=t["images"][:, None, None]))),
        ["bad_samples.safetensors: images have shape (20, 1, 1, 28, 28)"]),
    "32x32 samples": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, images=torch.zeros(20, 32, 32, dtype=torch.uint8)))),
        ["bad_samples.safetensors: images have shape (20, 32, 32)"]),
    "samples with labels of the wrong length": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, labels=t["labels"][:7]))),
        ["bad_samples.safetensors: labels are torch.int64 (7,), expected int64 [20]"]),
    "float samples in [0, 1]": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, images=t["images"] / 255.0))),
        ["bad_samples.safetensors: images are torch.float32, expected uint8 pixels 0-255"]),
    "int64 samples": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, images=t["images"].long()))),
        ["bad_samples.safetensors: images are torch.int64"]),
    "samples with labels outside 0-9": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, tensors=lambda t: dict(t, labels=t["labels"] + 5))),
        ["bad_samples.safetensors: labels hold 5..14, outside the digits 0-9"]),
    "samples recording an unknown sampler": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), bad_samples(
            p, tmp, info=lambda i: dict(i, sampler={"sampler": "euler"}))),
        ["bad_samples.safetensors: info records sampler=euler"]),
    "more images per row than the samples file holds": (
        lambda p, out, tmp, other: evaluate(p, out, ckpt(p, "vae"), ckpt(p, "samples_ddim"), num_images=17),
        ["samples_ddim.safetensors", "holds 16 images, the table needs 17"]),
    # options
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
    "DDIM eta above 1": (
        lambda p, out, tmp, other: sample(p, out, "--sampler", "ddim", "--eta", 1.5),
        ["--eta 1.5: must be in [0, 1]"]),
    "eta with a sampler that has none": (
        lambda p, out, tmp, other: sample(p, out, "--sampler", "ddpm", "--steps", 10, "--eta", 0.5),
        ["--eta 0.5: only ddim and dpm++2m have a noise scale η, not ddpm"]),
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
    "too few images for the nearest-neighbour metrics": (
        lambda p, out, tmp, other: ("evaluate", ["--data-dir", p["data"], "--num-images", 3, "--out-dir", out]),
        ["argument --num-images: must be at least 4 (precision and recall compare each image with its 3 nearest"]),
    "a FID during training of one image": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--fid-every", 1, "--fid-images", 1),
        ["argument --fid-images: must be at least 2 (a covariance needs two), got 1"]),
    "a step count beyond 64 bits": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--steps", 2**64),
        [f"argument --steps: must be below 2**63, got {2**64}"]),
    "an infinite EMA power": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--ema-power", "inf"),
        ["argument --ema-power: must be a finite number > 0, got inf"]),
    "more timesteps than a float32 tells apart": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--timesteps", 2**24 + 1),
        ["--timesteps 16777217: must be at most 2**24"]),
    "a toy run of one sample": (
        lambda p, out, tmp, other: ("toy", ["--num-samples", 1, "--out-dir", out]),
        ["argument --num-samples: must be at least 2 (the Gaussian baseline needs a covariance), got 1"]),
    "images per row beyond the machine's memory": (
        lambda p, out, tmp, other: ("evaluate", ["--data-dir", p["data"], "--num-images", 10**11, "--out-dir", out]),
        ["argument --num-images: 100000000000 would hold", "GiB of memory"]),
    "10**12 samples, which no disk holds": (
        lambda p, out, tmp, other: sample(p, out, "--num-samples", 10**12),
        ["s.safetensors: 1000000000000 images and labels would take", "GiB free"]),
    "negative seed": (
        lambda p, out, tmp, other: sample(p, out, "--seed", -1),
        ["argument --seed: must be in [0, 2**32), got -1"]),
    "negative seed of the toy script": (
        lambda p, out, tmp, other: ("toy", ["--seed", -1, "--out-dir", out]),
        ["argument --seed: must be in [0, 2**32), got -1"]),
    "autoguidance without a guide": (
        lambda p, out, tmp, other: sample(p, out, "--digit", "none", "--autoguidance", 1.5),
        ["--autoguidance 1.5: needs a guide, a weaker UNet (--guide)"]),
    "autoguidance below 1": (
        lambda p, out, tmp, other: sample(p, out, "--guide", ckpt(p, "unet"), "--autoguidance", 0.5),
        ["--autoguidance 0.5: must be a finite number >= 1"]),
    "a guide trained on other latents": (
        lambda p, out, tmp, other: sample(p, out, "--guide", bad_unet(p, tmp, scale_factor=2.0), "--autoguidance", 2),
        ["bad_unet.safetensors: cannot guide the UNet in", "its scale_factor differ"]),
    "an output that is the guide": (
        lambda p, out, tmp, other: ("sample", [*p["models"], *CPU, "--num-samples", 2, "--guide",
                                               copied(ckpt(p, "unet"), tmp / "g.safetensors"),
                                               "--out", tmp / "g.safetensors"]),
        ["g.safetensors: is --guide"]),
    "negative guidance": (
        lambda p, out, tmp, other: sample(p, out, "--digit", 3, "--guidance", -0.5),
        ["--guidance -0.5: must be a finite number >= 0"]),
    "infinite guidance": (
        lambda p, out, tmp, other: sample(p, out, "--digit", 3, "--guidance", "inf"),
        ["--guidance inf: must be a finite number >= 0"]),
    "guidance interval upside down": (
        lambda p, out, tmp, other: sample(p, out, "--digit", 3, "--guidance-interval", 2, -1),
        ["--guidance-interval [2.0, -1.0]: must be two finite numbers, low < high"]),
    "digit out of range": (
        lambda p, out, tmp, other: sample(p, out, "--digit", 11),
        ["--digit 11: must be a digit 0-9 or one of all, any, none"]),
    "unknown preset": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--preset", "huge"),
        ["--preset huge: choose one of auto, cpu, gpu, smoke"]),
    "batch larger than the training set": (
        lambda p, out, tmp, other: ("train_classifier", ["--data-dir", p["data"], *SMOKE, "--batch-size", 100,
                                                         "--out", out / "c.safetensors"]),
        ["--batch-size 100: larger than the 64 training examples"]),
    "--device cuda without a GPU": (
        lambda p, out, tmp, other: ("sample", [*p["models"], "--device", "cuda", "--out", out / "s.safetensors"]),
        ["--device cuda: no CUDA GPU is available"]),
    # outputs
    "output folder that cannot be written": (
        lambda p, out, tmp, other: sample(p, tmp / "a_file"),
        ["a_file: cannot write output folder"]),
    "--tensorboard naming a file": (
        lambda p, out, tmp, other: train_diffusion(p, out, "--tensorboard", tmp / "a_file"),
        ["a_file: cannot write output folder"]),
    "--out naming a directory": (
        lambda p, out, tmp, other: ("encode_latents", ["--data-dir", p["data"], "--vae", ckpt(p, "vae"),
                                                       "--out", tmp]),
        ["scratch: is a directory; name a file to write"]),
    "samples whose picture would replace a directory": (
        lambda p, out, tmp, other: ("sample", [*p["models"], *CPU, "--out", tmp / "a_dir.safetensors"]),
        ["a_dir.png: is a directory; name a file to write"]),
}


def upsampled(tensors: dict) -> dict:
    """Latents of twice the height and width (14x14)."""
    return {k: v.repeat_interleave(2, 2).repeat_interleave(2, 3) if v.is_floating_point() else v
            for k, v in tensors.items()}


def doubled_channels(tensors: dict) -> dict:
    return {k: torch.cat([v, v], 1) if v.is_floating_point() else v for k, v in tensors.items()}


def truncated_copy(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def scratch_folder(tmp_path: Path) -> Path:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "a_file").write_text("a file where an output folder should be")
    (scratch / "a_dir.png").mkdir()
    return scratch


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_writes_nothing(case, pipeline, other_vae, tmp_path):
    if case == "--device cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    build, fragments = CASES[case]
    out, scratch = tmp_path / "out", scratch_folder(tmp_path)
    script, args = build(pipeline, out, scratch, other_vae)
    before = files_in(scratch)
    result = run_inline(script, *args)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2
    assert files_in(out) == [] and files_in(scratch) == before


# ---- one damaged file of each kind, refused by every stage that reads it

def stage_command(stage: str, p: dict, out: Path, files: dict) -> list:
    data, classifier, vae, unet, latents = (files[k] for k in ("data", "classifier", "vae", "unet", "latents"))
    models = ["--classifier", classifier, "--vae", vae, "--unet", unet]
    return {
        "prepare_data": ["--data-dir", data, "--out", out / "data.json"],
        "train_classifier": ["--data-dir", data, *SMOKE, "--out", out / "c.safetensors"],
        "train_vae": ["--data-dir", data, *SMOKE, "--out", out / "v.safetensors", "--grid", out / "v.png"],
        "encode_latents": ["--data-dir", data, "--vae", vae, "--out", out / "l.safetensors"],
        "train_diffusion": ["--latents", latents, *SMOKE, "--fid-every", 1, "--fid-images", 8, "--data-dir", data,
                            "--classifier", classifier, "--vae", vae, "--out", out / "u.safetensors"],
        "sample": ["--unet", unet, "--vae", vae, *CPU, "--num-samples", 2, "--out", out / "s.safetensors"],
        "evaluate": ["--data-dir", data, "--classifier", classifier, "--vae", vae, "--num-images", 16,
                     "--device", "cpu", "--out-dir", out, "--samples", files["samples"]],
        "bench": ["--data-dir", data, *SMOKE, *models, "--latents", latents, "--out-dir", out,
                  "--work-dir", out / "work"],
        "samplers": ["--data-dir", data, *CPU, *models, "--num-images", 8, "--seeds", 0, "--nfe", 2,
                     "--out-dir", out],
        "training_length": ["--data-dir", data, *SMOKE, *models, "--latents", latents, "--steps", 2,
                            "--num-images", 8, "--out-dir", out, "--work-dir", out / "work"],
    }[stage]


def good_files(p: dict) -> dict:
    return {"data": p["data"], "samples": ckpt(p, "samples_digits"),
            **{name: ckpt(p, name) for name in ("classifier", "vae", "unet", "latents")}}


# kind: (the damaged file, what the one line says, the stages that read that kind)
DAMAGED = {
    "data": (lambda p, tmp: damaged_data(p, tmp / "bad_data", "empty test split"),
             "bad_data/t10k-images-idx3-ubyte.gz: holds no images",
             ["prepare_data", "train_classifier", "train_vae", "encode_latents", "train_diffusion", "evaluate",
              "bench", "samplers", "training_length"]),
    "latents": (lambda p, tmp: bad_latents(p, tmp, tensors=lambda t: dict(t, test_labels=t["test_labels"] + 10)),
                "bad_latents.safetensors: test labels hold", ["train_diffusion", "bench", "training_length"]),
    "classifier": (lambda p, tmp: rewritten(ckpt(p, "classifier"), tmp / "bad_classifier.safetensors", "classifier",
                                            tensors=with_nan),
                   "bad_classifier.safetensors: tensor",
                   ["train_diffusion", "evaluate", "bench", "samplers", "training_length"]),
    "vae": (lambda p, tmp: rewritten(ckpt(p, "vae"), tmp / "bad_vae.safetensors", "vae", tensors=with_nan),
            "bad_vae.safetensors: tensor",
            ["encode_latents", "train_diffusion", "sample", "evaluate", "bench", "samplers", "training_length"]),
    "unet": (lambda p, tmp: bad_unet(p, tmp, label_frequencies=[1.0]),
             "bad_unet.safetensors: label frequencies", ["sample", "bench", "samplers", "training_length"]),
    "samples": (lambda p, tmp: bad_samples(p, tmp, tensors=lambda t: dict(t, images=t["images"].float())),
                "bad_samples.safetensors: images are torch.float32", ["evaluate"]),
}


@pytest.mark.parametrize("kind, stage", [(kind, stage) for kind, (_, _, stages) in DAMAGED.items() for stage in stages])
def test_a_damaged_file_of_each_kind_is_refused_by_every_stage_that_reads_it(kind, stage, pipeline, tmp_path):
    make, fragment, _ = DAMAGED[kind]
    files = dict(good_files(pipeline), **{kind: make(pipeline, tmp_path)})
    out = tmp_path / "out"
    result = run_inline(stage, *stage_command(stage, pipeline, out, files))
    assert_one_line_error(result, fragment)
    assert result.returncode == 2 and files_in(out) == []


@pytest.mark.parametrize("stage", ["train_classifier", "train_vae", "train_diffusion"])
def test_a_damaged_training_snapshot_is_refused_naming_it(stage, pipeline, tmp_path):
    out = tmp_path / "out"
    command = stage_command(stage, pipeline, out, good_files(pipeline))
    output = Path(command[command.index("--out") + 1])
    snapshot = output.with_name(f"{output.stem}.state.safetensors")
    out.mkdir()
    snapshot.write_bytes(b"not a snapshot")
    result = run_inline(stage, *command)
    assert_one_line_error(result, f"{snapshot}: not a readable safetensors file")
    assert result.returncode == 2 and files_in(out) == [snapshot]


@pytest.fixture(scope="module")
def finished_unet_run(pipeline, tmp_path_factory) -> Path:
    """The output folder of a finished smoke UNet run: its checkpoint and its final snapshot."""
    out = tmp_path_factory.mktemp("unet_run")
    script, args = train_diffusion(pipeline, out)
    assert run_inline(script, *args).returncode == 0
    return out


def without(info: dict, field: str) -> dict:
    return {k: v for k, v in info.items() if k != field}


# what is damaged: (info -> info, tensors -> tensors), what the one line says
SNAPSHOT_DAMAGE = {
    "step as a string": ((lambda i: dict(i, step="3"), None), "field step = '3', expected a count of steps"),
    "no batch position": ((lambda i: without(i, "sampler_pos"), None), "field sampler_pos = None, expected a position"),
    "a batch position past the epoch": ((lambda i: dict(i, sampler_pos=10**6), None), "field sampler_pos = 1000000"),
    "no EMA update count": ((lambda i: without(i, "ema_updates"), None), "field ema_updates = None"),
    "a learning rate as a string": (
        (lambda i: dict(i, param_groups=[dict(g, lr="0.001") for g in i["param_groups"]]), None),
        "field param_groups[0].lr = '0.001', expected a number"),
    "parameter groups that are a number": ((lambda i: dict(i, param_groups=3), None), "field param_groups = 3"),
    "a random-number state of floats": ((None, lambda t: dict(t, **{"rng/torch": t["rng/torch"].float()})),
                                        "tensor rng/torch is torch.float32"),
    "no order of the training examples": ((None, lambda t: without(t, "sampler/perm")),
                                          "tensor sampler/perm is None"),
}


@pytest.mark.parametrize("damage", SNAPSHOT_DAMAGE)
def test_a_snapshot_with_a_missing_or_mistyped_field_is_one_line_naming_the_field(damage, pipeline,
                                                                                 finished_unet_run, tmp_path):
    (info_change, tensor_change), fragment = SNAPSHOT_DAMAGE[damage]
    out = tmp_path / "out"
    shutil.copytree(finished_unet_run, out)
    snapshot = out / "unet.state.safetensors"
    rewritten(snapshot, snapshot, "training_state", tensors=tensor_change, info=info_change)
    before = {path: path.read_bytes() for path in files_in(out)}
    script, args = train_diffusion(pipeline, out)
    result = run_inline(script, *args)
    assert_one_line_error(result, f"{snapshot}: {fragment}", "delete it to start afresh")
    assert result.returncode == 2
    assert {path: path.read_bytes() for path in files_in(out)} == before


# ---- data that is legal but almost surely wrong


@pytest.mark.parametrize("oddity, fragment", [
    ("blank training images", "train-images-idx3-ubyte.gz: every image is blank (every pixel is 0)"),
    ("splits swapped", "the training split holds 32 images, fewer than the 64 of the test split (files swapped?)"),
])
def test_data_that_is_legal_but_odd_is_one_warning_line(oddity, fragment, pipeline, tmp_path):
    data = copied_data(pipeline, tmp_path / "data")
    if oddity == "blank training images":
        write_idx(data / "train-images-idx3-ubyte.gz", np.zeros((64, 28, 28), dtype=np.uint8))
    else:
        for kind in ("images-idx3", "labels-idx1"):
            train, test = data / f"train-{kind}-ubyte.gz", data / f"t10k-{kind}-ubyte.gz"
            train.rename(tmp_path / "swap")
            test.rename(train)
            (tmp_path / "swap").rename(test)
    result = run_inline("prepare_data", "--data-dir", data, "--out", tmp_path / "data.json")
    assert result.returncode == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and fragment in lines[0], result.stderr


def test_the_api_refuses_more_images_than_memory_holds_before_sampling(pipeline):
    pipe = LatentDiffusion.from_pretrained(pipeline["ckpt"], device="cpu")
    too_many = physical_memory() // 784 + 1  # the pixels alone overflow the memory
    with pytest.raises(ConfigError, match="GiB of memory"):
        pipe.sample(too_many, SamplerConfig(), pipe.prompt())


# ---- writes that fail


WRITERS = ((Path, "write_bytes"), (Path, "write_text"), (PIL.Image.Image, "save"))  # bytes, text, PNG


def fill_the_disk(monkeypatch, writers=WRITERS) -> None:
    """The ways the stages write a file (by default all of them) fail as on a full disk."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for owner, name in writers:
        monkeypatch.setattr(owner, name, full)


@pytest.mark.parametrize("stage", ["sample", "train_diffusion", "encode_latents", "evaluate"])
def test_a_full_disk_is_one_line_and_leaves_the_previous_output_alone(stage, pipeline, tmp_path, monkeypatch):
    p, out = pipeline, tmp_path / "out"
    command, previous = {
        "sample": (sample(p, out)[1], out / "s.safetensors"),
        "train_diffusion": (train_diffusion(p, out)[1], out / "unet.safetensors"),
        "encode_latents": (["--data-dir", p["data"], "--vae", ckpt(p, "vae"), "--out", out / "l.safetensors"],
                           out / "l.safetensors"),
        "evaluate": (evaluate(p, out, ckpt(p, "vae"), ckpt(p, "samples_ddim"))[1], out / "fid.json"),
    }[stage]
    out.mkdir()
    previous.write_bytes(b"the previous good output")
    fill_the_disk(monkeypatch)
    result = run_inline(stage, *command)
    assert_one_line_error(result, "no space left on device writing", str(out))
    assert result.returncode == 2
    assert files_in(out) == [previous] and previous.read_bytes() == b"the previous good output"


def test_a_disk_that_fills_during_training_leaves_no_log_when_there_is_nothing_to_resume(pipeline, tmp_path,
                                                                                        monkeypatch):
    out = tmp_path / "out"
    fill_the_disk(monkeypatch, [(Path, "write_bytes")])  # the log is written; the first snapshot is not
    result = run_inline("train_diffusion", *train_diffusion(pipeline, out)[1])
    assert_one_line_error(result, f"no space left on device writing {out / 'unet.state.safetensors'}")
    assert files_in(out) == []


def test_evaluate_writes_no_grid_or_report_when_one_output_cannot_be_written(pipeline, tmp_path):
    out = tmp_path / "out"
    (out / "grid_vae.png").mkdir(parents=True)  # a row's grid would replace a directory
    result = run_inline("evaluate", *evaluate(pipeline, out, ckpt(pipeline, "vae"), ckpt(pipeline, "samples_ddim"))[1])
    assert_one_line_error(result, "grid_vae.png: is a directory")
    assert files_in(out) == []


def test_outputs_get_the_mode_the_umask_gives_like_any_new_file(pipeline, tmp_path):
    old = os.umask(0o027)
    try:
        result = run_inline("sample", *sample(pipeline, tmp_path)[1])
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    for path in (tmp_path / "s.safetensors", tmp_path / "s.png"):
        assert path.stat().st_mode & 0o777 == 0o640


def test_an_idx_header_is_checked_before_the_body_is_decompressed(tmp_path):
    """A small gzip whose body expands far beyond what its header states is refused after reading
    the header's worth, not after decompressing it all."""
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write((0x803).to_bytes(4, "big") + (1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        for _ in range(50):
            f.write(bytes(1 << 20))  # 50 MB of zeros, about 50 KB compressed
    tracemalloc.start()
    try:
        with pytest.raises(LdmError, match="too long"):
            read_idx(path, IMAGES_MAGIC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak


def test_a_guidance_far_above_any_in_use_is_warned_about_in_one_line(pipeline, tmp_path):
    result = run_inline("sample", *sample(pipeline, tmp_path, "--digit", 3, "--guidance", 1000)[1])
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: guidance 1000 is far above the usual 1-10 (the samples will be saturated); "
                        "a mistake?"], result.stderr


@pytest.mark.parametrize("environment, fragment", [
    ({"RANK": "0", "WORLD_SIZE": "2"}, "RANK and WORLD_SIZE set without torchrun's LOCAL_RANK, LOCAL_WORLD_SIZE, "
                                       "MASTER_ADDR, MASTER_PORT"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE set without torchrun's RANK"),
    ({"RANK": "one", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
      "MASTER_PORT": "29500"}, "RANK='one': must be a whole number"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
      "MASTER_PORT": "29500"}, "RANK=2 is not below WORLD_SIZE=2"),
])
def test_torchrun_variables_left_in_the_shell_are_one_line(environment, fragment, pipeline, tmp_path, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = run_inline(*sample(pipeline, tmp_path / "out"))
    assert_one_line_error(result, fragment)
    assert result.returncode == 2 and files_in(tmp_path / "out") == []


def test_a_second_run_into_the_same_output_is_refused_while_the_first_runs(pipeline, tmp_path):
    """The lock of a live run (this test's process stands in for it) refuses the second run; once
    its owner is gone the lock is stale and the run takes it over, and releases it at the end."""
    out = tmp_path / "c.safetensors"
    command = ("train_classifier", ["--data-dir", pipeline["data"], *SMOKE, "--steps", 2, "--out", out])
    lock = lock_path(out)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    result = run_inline(command[0], *command[1])
    assert_one_line_error(result, f"{out}: another run is writing it (process {os.getpid()}, lock {lock})")
    assert files_in(tmp_path) == [lock] and not out.exists()
    dead = subprocess.Popen(["true"])  # a process that has ended: its pid is free
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    result = run_inline(command[0], *command[1])
    assert result.returncode == 0, result.stderr
    assert out.is_file() and not lock.exists()


def test_a_killed_run_not_yet_reaped_holds_no_lock(pipeline, tmp_path):
    """A run killed by SIGKILL whose parent has not waited for it yet is a zombie: it still
    answers signal 0, but its lock is stale and the next run takes it over."""
    out = tmp_path / "c.safetensors"
    killed = subprocess.Popen(["sleep", "60"])
    killed.kill()
    deadline = time.time() + 10
    while Path(f"/proc/{killed.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(killed.pid, 0)  # still answers: a naive liveness check would call it running
    lock_path(out).write_text(json.dumps({"host": socket.gethostname(), "pid": killed.pid}))
    result = run_inline("train_classifier", "--data-dir", pipeline["data"], *SMOKE, "--steps", 2, "--out", out)
    killed.wait()
    assert result.returncode == 0, result.stderr
    assert out.is_file() and not lock_path(out).exists()
