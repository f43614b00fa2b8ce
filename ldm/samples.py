"""Samples files: the images one sampling run made (scripts/sample.py), the digits they were
prompted with, and how they were made; scripts/evaluate.py scores them. Written and read here,
and checked on reading like every file that travels between stages.

Tensors: images uint8 [N x 28 x 28]; labels int64 [N] when prompted. Info: sampler (a
SamplerConfig's fields), digit, guidance (None without labels), guidance_interval, autoguidance,
conditional, vae_fingerprint and the run's other settings.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .data import IMAGE_SIZE, labels_problem
from .errors import ConfigError, LdmError
from .outputs import Outputs
from .prompt import Prompt
from .sampling import SamplerConfig

KIND = "samples"


@dataclass
class Samples:
    images: torch.Tensor  # uint8 [N x 28 x 28]
    labels: torch.Tensor | None  # int64 [N], the prompted digits; None for the "no label" branch
    info: dict  # how they were made
    name: str  # how reports name them: row_name


def row_name(sampler: SamplerConfig, prompt: Prompt, conditional: bool) -> str:
    """A row of samples named by how they were made: "DPM++2M-10, random digits"."""
    name = prompt.name(conditional)
    return sampler.label + (f", {name}" if name else "")


def samples_info(sampler: SamplerConfig, prompt: Prompt, conditional: bool, **settings) -> dict:
    """The info of a samples file: how the images were made, and the run's other `settings`."""
    return {"sampler": dataclasses.asdict(sampler), "digit": prompt.digit, "guidance": prompt.guidance,
            "guidance_interval": prompt.guidance_interval, "autoguidance": prompt.autoguidance,
            "conditional": conditional, **settings}


def save_samples(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor | None, info: dict,
                 outputs: Outputs | None = None) -> str:
    tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
    return save_checkpoint(path, tensors, KIND, info=info, outputs=outputs)


def load_samples(path: str | os.PathLike) -> Samples:
    """Read a samples file and check it (see `samples_problem`); any problem is one LdmError naming it."""
    ckpt = load_checkpoint(path, KIND)
    problem = samples_problem(ckpt.tensors, ckpt.info)
    if problem:
        raise LdmError(f"{path}: {problem}; rerun `make sample`")
    info = ckpt.info
    return Samples(ckpt.tensors["images"], ckpt.tensors.get("labels"), info,
                   row_name(SamplerConfig(**info["sampler"]), recorded_prompt(info), info["conditional"]))


def recorded_prompt(info: dict) -> Prompt:
    """The Prompt a samples file's info records. An unusual scale was warned about when the
    samples were made, so reading them again stays quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # older files: guidance on every step, no autoguidance
        return Prompt(info["digit"], info["guidance"], info.get("guidance_interval"), info.get("autoguidance"))


def samples_problem(tensors: dict[str, torch.Tensor], info: dict) -> str | None:
    """What is wrong with a samples file's tensors and info, or None."""
    unexpected = sorted(set(tensors) - {"images", "labels"})
    if unexpected:
        return f"unexpected tensors {', '.join(unexpected)}"
    images, labels = tensors.get("images"), tensors.get("labels")
    if images is None:
        return "no 'images' tensor"
    if images.dtype != torch.uint8:
        return f"images are {images.dtype}, expected uint8 pixels 0-255"
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        return f"images have shape {tuple(images.shape)}, expected [N x {IMAGE_SIZE} x {IMAGE_SIZE}]"
    if len(images) == 0:
        return "holds no images"
    problem = None if labels is None else labels_problem(labels, len(images))
    if problem:
        return problem
    try:
        SamplerConfig(**info["sampler"])
        if (info["guidance"] is None) != (labels is None):
            return "info's guidance and the labels disagree (both or neither are expected)"
        prompt = recorded_prompt(info)
    except (KeyError, TypeError) as e:
        return f"info lacks or mistypes how the samples were made ({type(e).__name__}: {e})"
    except ConfigError as e:
        return f"info records {e}"
    if (prompt.digit == "none") != (labels is None):
        return f"info records the prompt {prompt.digit!r}, which does not match the labels"
    if not isinstance(info.get("conditional"), bool) or not isinstance(info.get("vae_fingerprint"), str):
        return "info lacks whether the UNet was conditional, or the VAE's fingerprint"
    return None
