"""safetensors files that describe themselves: what kind of artefact, its config, how it was made.

Metadata (all strings, as safetensors requires):
  kind         "classifier", "vae", "latents", "unet", "samples"
  config       JSON of the model's dataclass config (architecture only) or {}
  info         JSON of everything else: script inputs, seed, metrics, fingerprints of inputs
  fingerprint  SHA-256 prefix of the tensors and of kind, config and info, so that later stages
               can name exactly what they used and an edited file (weights or metadata) is refused
  ldm_version, torch_version
The same tensors and metadata give the same bytes in every run (`_sorted_header`). Reading one
(`load_checkpoint`) checks all of that and that every float tensor is finite; each file kind adds
its own checks where it is read (`load_model` and its config, `latents.load_latent_cache`,
`samples.load_samples`, `pipeline.LatentDiffusion.load`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import ConfigError, LdmError
from .outputs import Outputs, atomic_path
from .version import __version__


def fingerprint(tensors: dict[str, torch.Tensor], metadata: str = "") -> str:
    """Content hash over names, dtypes, shapes and bytes, independent of dict order, and over
    `metadata` (a checkpoint's kind, config and info)."""
    digest = hashlib.sha256(metadata.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


@dataclass
class Checkpoint:
    path: Path
    kind: str
    tensors: dict[str, torch.Tensor]
    config: dict
    info: dict
    fingerprint: str


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], kind: str,
                    config: dict | None = None, info: dict | None = None, outputs: Outputs | None = None) -> str:
    """Write atomically (with `outputs`, as one of that group); return the fingerprint (of the
    tensors, kind, config and info)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"kind": kind, "config": json.dumps(config or {}), "info": json.dumps(info or {})}
    fp = fingerprint(tensors, _trusted_metadata(metadata))
    metadata.update(fingerprint=fp, ldm_version=__version__, torch_version=torch.__version__, format="pt")
    with atomic_path(path, outputs) as tmp:
        tmp.write_bytes(_sorted_header(save(tensors, metadata=metadata)))
    return fp


def _sorted_header(blob: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted. The library writes them in the
    order of a Rust HashMap, which changes from one process to the next; sorted, the same tensors
    and metadata always give the same bytes. The data section and its offsets are unchanged."""
    length = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + length]), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    header = header.encode() + b" " * (-len(header.encode()) % 8)  # the format pads the header to 8 bytes
    return len(header).to_bytes(8, "little") + header + blob[8 + length:]


def _trusted_metadata(metadata: dict[str, str]) -> str:
    """What the fingerprint covers besides the tensors: everything later stages read."""
    return "\n".join(f"{key}={metadata.get(key)}" for key in ("kind", "config", "info"))


def load_checkpoint(path: str | os.PathLike, kind: str) -> Checkpoint:
    """Read and verify a checkpoint of the expected kind: its kind, the fingerprint of its tensors
    and metadata, config and info JSON objects, finite float tensors. Any problem is one LdmError
    naming the file."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise LdmError(f"{path}: not a regular file (a directory?)")
    if not path.is_file():
        raise LdmError(f"{path}: file not found (run the stage that makes it first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises several types for truncated or foreign files
        raise LdmError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    found = metadata.get("kind")
    if found is None:
        raise LdmError(f"{path}: safetensors file without ldm metadata (no 'kind'); not made by ldm")
    if found != kind:
        raise LdmError(f"{path}: is a '{found}' checkpoint, expected a '{kind}' checkpoint")
    if fingerprint(tensors, _trusted_metadata(metadata)) != metadata.get("fingerprint"):
        raise LdmError(f"{path}: tensors or metadata do not match the fingerprint (corrupt or edited file)")
    try:
        config, info = json.loads(metadata["config"]), json.loads(metadata["info"])
    except (KeyError, json.JSONDecodeError) as e:
        raise LdmError(f"{path}: unreadable config/info metadata ({e})") from e
    for name, value in (("config", config), ("info", info)):
        if not isinstance(value, dict):
            raise LdmError(f"{path}: metadata '{name}' is a {type(value).__name__}, expected a JSON object")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise LdmError(f"{path}: tensor '{name}' holds NaN or infinite values")
    return Checkpoint(path, found, tensors, config, info, metadata["fingerprint"])


def check_made_with_vae(path: str | os.PathLike, found: str | None, vae: Checkpoint, remedy: str) -> None:
    """Refuse a file made from one VAE's latents (a latent cache, a UNet, samples), which records
    that VAE's fingerprint `found`, beside another VAE."""
    if found != vae.fingerprint:
        raise LdmError(f"{path}: made with VAE {found}, not with the VAE in {vae.path} ({vae.fingerprint}); {remedy}")


def save_model(path: str | os.PathLike, model: torch.nn.Module, info: dict | None = None,
               extra_tensors: dict[str, torch.Tensor] | None = None, outputs: Outputs | None = None) -> str:
    """Save a model (kind and config from its class) plus optional extra tensors, whose names
    contain a '/' (e.g. "raw/conv.weight") so they never collide with parameter names."""
    tensors = dict(model.state_dict())
    assert all("/" in k for k in extra_tensors or {}), "extra tensor names need a '/'"
    tensors.update(extra_tensors or {})
    return save_checkpoint(path, tensors, model.kind, dataclasses.asdict(model.config), info, outputs)


def build_config(config_class, config: dict, path: Path):
    """Rebuild a dataclass config from the JSON in `path`'s metadata (lists back to tuples); each
    value must have its field's type, and the config's own checks (`__post_init__`) must pass."""
    if not isinstance(config, dict):
        raise LdmError(f"{path}: {config_class.__name__} is a {type(config).__name__}, expected a JSON object")
    hints = typing.get_type_hints(config_class)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    for name, value in values.items():
        if name in hints and not _has_type(value, hints[name]):
            raise LdmError(f"{path}: config field {name} = {value!r} is not of type {_type_name(hints[name])}")
    try:
        return config_class(**values)
    except (TypeError, ConfigError) as e:
        raise LdmError(f"{path}: config does not fit {config_class.__name__} ({e})") from e


def _has_type(value, annotation) -> bool:
    """isinstance for the field types configs use: int, float (an int too), str, bool, None,
    their unions, and tuples of them."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", str(annotation))


def load_model(path: str | os.PathLike, model_class, device: torch.device | str = "cpu",
               prefix: str = "") -> tuple[torch.nn.Module, Checkpoint]:
    """Rebuild `model_class` from the config stored in `path` and load its weights strictly.

    prefix selects one set of weights when a file holds several: "" takes the names without a
    '/', "raw/" the raw weights stored beside the EMA ones.
    """
    ckpt = load_checkpoint(path, model_class.kind)
    model = model_class(build_config(model_class.config_class, ckpt.config, ckpt.path))
    state = {k[len(prefix):]: v for k, v in ckpt.tensors.items()
             if k.startswith(prefix) and "/" not in k[len(prefix):]}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()  # a header, then one line per mismatched tensor
        raise LdmError(f"{ckpt.path}: config does not match its tensors ({lines[-1].strip()})") from e
    return model.to(device).eval(), ckpt
