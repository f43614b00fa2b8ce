"""Training snapshots: everything a killed run needs to continue exactly where it stopped.

A snapshot is one safetensors file beside the stage's output (unet.safetensors ->
unet.state.safetensors), written atomically every `every` steps and at the end. Its tensors are
the model, the EMA model, Adam's moments, the global torch RNG state(s) and the batch sampler;
its JSON metadata holds the step, the optimizer's hyper-parameters and a signature of the run
(settings, seed, inputs). A rerun with the same signature resumes from it, on the CPU bit for
bit; a different signature starts afresh. No pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .data import BatchSampler
from .errors import LdmError


def snapshot_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.state.safetensors")


def run_signature(stage: str, seed: int, data: str, **configs) -> dict:
    """What makes two training runs the same run, and a snapshot of one resumable by the other:
    the stage, the seed, a fingerprint of the training data and every config given (a dataclass,
    or a plain JSON value)."""
    return {"stage": stage, "seed": seed, "data": data,
            **{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in configs.items()}}


class Snapshot:
    """Periodic save and one-time restore of a training run's full state."""

    kind = "training_state"

    def __init__(self, path: str | os.PathLike, every: int, signature: dict):
        # compared with the stored copy, so normalise it the way JSON will (tuples become lists)
        self.signature = json.loads(json.dumps(signature))
        self.path, self.every = Path(path), every  # every: steps between saves (0: only at the end)

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema,
             sampler: BatchSampler | None, logged: dict) -> None:
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema/{k}": v for k, v in ema.model.state_dict().items()})
        optim = optimizer.state_dict()
        for index, state in optim["state"].items():
            tensors.update({f"optim/{index}/{k}": v for k, v in state.items()})
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
        info = {"step": step, "signature": self.signature, "param_groups": optim["param_groups"], "logged": logged,
                "ema_updates": None if ema is None else ema.num_updates}
        if sampler is not None:
            sampler_state = sampler.state_dict()
            tensors["sampler/generator"], tensors["sampler/perm"] = sampler_state["generator"], sampler_state["perm"]
            info["sampler_pos"] = sampler_state["pos"]
        save_checkpoint(self.path, tensors, self.kind, info=info)  # now, on its own: not one of the stage's outputs

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema,
                sampler: BatchSampler | None) -> tuple[int, dict]:
        """Load the snapshot if there is one from this very run; return (steps done, last logged metrics)."""
        if not self.path.is_file():
            return 0, {}
        ckpt = load_checkpoint(self.path, self.kind)
        if ckpt.info.get("signature") != self.signature:
            print(f"{self.path}: snapshot of a run with other settings or inputs; starting afresh")
            return 0, {}
        t = ckpt.tensors
        device = next(model.parameters()).device
        try:
            model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model/")}, strict=True)
            if ema is not None:
                ema.model.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema/")}, strict=True)
                ema.num_updates = ckpt.info["ema_updates"]
            state: dict[int, dict] = {}
            for name, tensor in t.items():
                if name.startswith("optim/"):
                    _, index, key = name.split("/")
                    state.setdefault(int(index), {})[key] = tensor if key == "step" else tensor.to(device)
            optimizer.load_state_dict({"state": state, "param_groups": ckpt.info["param_groups"]})
        except (RuntimeError, KeyError, ValueError) as e:
            raise LdmError(f"{self.path}: snapshot does not fit this run ({e}); delete it to start afresh") from e
        torch.set_rng_state(t["rng/torch"])
        if "rng/cuda" in t and torch.cuda.is_available():
            torch.cuda.set_rng_state(t["rng/cuda"])
        if sampler is not None:
            sampler.load_state_dict({"generator": t["sampler/generator"], "perm": t["sampler/perm"],
                                          "pos": ckpt.info["sampler_pos"]})
        print(f"{self.path}: resuming after step {ckpt.info['step']}")
        return ckpt.info["step"], ckpt.info.get("logged", {})
