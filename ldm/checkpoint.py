"""safetensors files that describe themselves: what kind of artefact, its config, how it was made.

Metadata (all strings, as safetensors requires):
  kind         "classifier", "vae", "latents", "unet", "samples"
  config       JSON of the model's dataclass config (architecture only) or {}
  info         JSON of everything else: script inputs, seed, metrics, fingerprints of inputs
  fingerprint  SHA-256 prefix of the tensors, so later stages can name exactly what they used
  ldm_version, torch_version
The same tensors and metadata give the same bytes in every run (`_sorted_header`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from . import __version__
from .utils import ConfigError, LdmError, atomic_path


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash over names, dtypes, shapes and bytes, independent of dict order."""
    digest = hashlib.sha256()
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
                    config: dict | None = None, info: dict | None = None) -> str:
    """Write atomically; return the tensors' fingerprint."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fp = fingerprint(tensors)
    metadata = {"kind": kind, "config": json.dumps(config or {}), "info": json.dumps(info or {}),
                "fingerprint": fp, "ldm_version": __version__, "torch_version": torch.__version__, "format": "pt"}
    with atomic_path(path) as tmp:
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


def load_checkpoint(path: str | os.PathLike, kind: str) -> Checkpoint:
    """Read and verify a checkpoint of the expected kind; any problem is one LdmError naming the file."""
    path = Path(path)
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
    if fingerprint(tensors) != metadata.get("fingerprint"):
        raise LdmError(f"{path}: tensors do not match the fingerprint in the metadata (corrupt or edited file)")
    try:
        config, info = json.loads(metadata["config"]), json.loads(metadata["info"])
    except (KeyError, json.JSONDecodeError) as e:
        raise LdmError(f"{path}: unreadable config/info metadata ({e})") from e
    return Checkpoint(path, found, tensors, config, info, metadata["fingerprint"])


def check_made_with_vae(ckpt: Checkpoint, vae: Checkpoint, remedy: str) -> None:
    """Refuse a file made from one VAE's latents (a UNet, samples) beside another VAE."""
    found = ckpt.info.get("vae_fingerprint")
    if found != vae.fingerprint:
        raise LdmError(f"{ckpt.path}: made with VAE {found}, not with the VAE in {vae.path} "
                       f"({vae.fingerprint}); {remedy}")


def save_model(path: str | os.PathLike, model: torch.nn.Module, info: dict | None = None,
               extra_tensors: dict[str, torch.Tensor] | None = None) -> str:
    """Save a model (kind and config from its class) plus optional extra tensors, whose names
    contain a '/' (e.g. "raw/conv.weight") so they never collide with parameter names."""
    tensors = dict(model.state_dict())
    assert all("/" in k for k in extra_tensors or {}), "extra tensor names need a '/'"
    tensors.update(extra_tensors or {})
    return save_checkpoint(path, tensors, model.kind, dataclasses.asdict(model.config), info)


def build_config(config_class, config: dict, path: Path):
    """Rebuild a dataclass config from the JSON in `path`'s metadata (lists back to tuples)."""
    try:
        return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except (TypeError, ConfigError) as e:
        raise LdmError(f"{path}: config does not fit {config_class.__name__} ({e})") from e


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
