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


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rng_state_problem(tensors: dict[str, torch.Tensor], name: str) -> str | None:
    state = tensors.get(name)
    if state is None:
        return f"tensor {name} is missing"
    if state.dtype != torch.uint8 or state.ndim != 1:
        return f"tensor {name} is {state.dtype} {tuple(state.shape)}, expected a uint8 random-number state"
    return None


def _json_kind(value) -> str:
    """int and float alike are numbers; tuples are the lists JSON makes of them."""
    if value is None or isinstance(value, bool):
        return repr(value) if value is None else "bool"
    return {int: "number", float: "number", tuple: "list"}.get(type(value), type(value).__name__)


def _param_groups_problem(groups, expected: list[dict]) -> str | None:
    if not (isinstance(groups, list) and len(groups) == len(expected) and all(isinstance(g, dict) for g in groups)):
        return f"field param_groups = {groups!r}, expected {len(expected)} parameter group(s) of the optimizer"
    for index, (group, like) in enumerate(zip(groups, expected)):
        for key, value in like.items():  # a key the snapshot lacks takes the optimizer's default
            if key in group and _json_kind(group[key]) != _json_kind(value):
                return (f"field param_groups[{index}].{key} = {group.get(key)!r}, "
                        f"expected a {_json_kind(value)} like {value!r}")
    return None


def snapshot_problem(tensors: dict[str, torch.Tensor], info: dict, param_groups: list[dict], ema: bool,
                     sampler_size: int | None) -> str | None:
    """What is wrong with a snapshot's fields for a run whose optimizer has `param_groups`, with
    (or without) an EMA model and a batch sampler over `sampler_size` examples, or None. The model
    and optimizer tensors are checked by loading them into the run's own modules."""
    if not _is_count(info.get("step")):
        return f"field step = {info.get('step')!r}, expected a count of steps >= 0"
    if not isinstance(info.get("logged", {}), dict):
        return f"field logged = {info['logged']!r}, expected a JSON object"
    problem = _param_groups_problem(info.get("param_groups"), param_groups)
    if problem:
        return problem
    if ema and not _is_count(info.get("ema_updates")):
        return f"field ema_updates = {info.get('ema_updates')!r}, expected a count >= 0"
    problem = _rng_state_problem(tensors, "rng/torch")
    if problem or sampler_size is None:
        return problem
    problem = _rng_state_problem(tensors, "sampler/generator")
    if problem:
        return problem
    perm, position = tensors.get("sampler/perm"), info.get("sampler_pos")
    if perm is None or perm.dtype != torch.int64 or perm.shape != (sampler_size,):
        return (f"tensor sampler/perm is {None if perm is None else (perm.dtype, tuple(perm.shape))}, "
                f"expected int64 [{sampler_size}] (the order of the training examples)")
    if not (_is_count(position) and position <= sampler_size):
        return f"field sampler_pos = {position!r}, expected a position 0..{sampler_size} in the epoch"
    return None


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
        problem = snapshot_problem(t, ckpt.info, optimizer.state_dict()["param_groups"], ema is not None,
                                   None if sampler is None else sampler.n)
        if problem:
            raise LdmError(f"{self.path}: {problem}; delete it to start afresh")
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
            torch.set_rng_state(t["rng/torch"])
            if "rng/cuda" in t and torch.cuda.is_available():
                torch.cuda.set_rng_state(t["rng/cuda"])
            if sampler is not None:
                sampler.load_state_dict({"generator": t["sampler/generator"], "perm": t["sampler/perm"],
                                         "pos": ckpt.info["sampler_pos"]})
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise LdmError(f"{self.path}: snapshot does not fit this run ({e}); "
                           "delete it to start afresh") from e
        print(f"{self.path}: resuming after step {ckpt.info['step']}")
        return ckpt.info["step"], ckpt.info.get("logged", {})
