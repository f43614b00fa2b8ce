"""One stage on several processes, as torchrun launches them: the process group, and the few
collective operations the stages need.

    torchrun --standalone --nproc_per_node=2 -m scripts.train_diffusion ...

A script started by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT) joins the group in `init`: NCCL with one GPU per process
(LOCAL_RANK picks it) on CUDA, Gloo on the CPU, whose cores are divided among the processes of
each machine. A single-process run never calls `init`; every helper below is then the identity
or a no-op, and torch.distributed is not imported.

How the stages use it (see README, "Several processes"):
- training: every rank draws the global batch and its randomness (indices, noise, timesteps,
  dropped labels) from the same seeded generators, keeps its `shard`, and `wrap`s the model in
  DistributedDataParallel, which averages the gradients. The weights, the EMA, the optimizer and
  every RNG stay identical on all ranks, so N processes follow the 1-process trajectory and a
  snapshot written by rank 0 is the global state.
- sampling and feature extraction (`map_batches`): batch i goes to rank i mod N and the results
  come back in order on every rank.
- only rank 0 (`is_main`) writes files and shows progress bars.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from tqdm.auto import tqdm

from .errors import ConfigError
from .runtime import cpu_class, resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # index among the processes of this machine: picks the GPU
    local_size: int = 1


SINGLE = World()
_world = SINGLE


# what torchrun sets in every process it starts; the first four are integers
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def environment_problem() -> str | None:
    """Why the environment cannot start a run, or None: RANK or WORLD_SIZE left in a shell
    without the rest of torchrun's variables, or values torchrun would not set."""
    present = [name for name in ("RANK", "WORLD_SIZE") if name in os.environ]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        return (f"{' and '.join(present)} set without torchrun's {', '.join(missing)}: start several processes "
                f"with torchrun (make NPROC=N), or unset {' and '.join(present)} to run as one")
    for name in TORCHRUN_VARIABLES[:4]:
        if not os.environ[name].isdigit():
            return f"{name}={os.environ[name]!r}: must be a whole number (torchrun sets it)"
    if int(os.environ["RANK"]) >= int(os.environ["WORLD_SIZE"]):
        return f"RANK={os.environ['RANK']} is not below WORLD_SIZE={os.environ['WORLD_SIZE']}"
    return None


def launched() -> bool:
    """Was this process started by torchrun (or another launcher that sets its variables)?"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world() -> World:
    return _world


def describe_device(device: torch.device) -> str:
    """For reports: the GPU's name, or the CPU's architecture and thread count; and how many
    processes shared the work."""
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        name = f"cpu ({platform.processor() or platform.machine()}, {cpu_class()}, {torch.get_num_threads()} threads)"
    return name + (f", {_world.size} processes" if _world.size > 1 else "")


def is_main() -> bool:
    """Rank 0, the one process that writes files and prints progress."""
    return _world.rank == 0


def enter() -> World:
    """Take this process's place from torchrun's variables, before any check that may fail, so
    that an error names its rank; `init` then joins the group."""
    global _world
    env = {k: int(os.environ.get(k, default)) for k, default in
           (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1))}
    _world = World(env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"])
    return _world


def init(device_name: str) -> World:
    """Join the process group torchrun set up, for work on the device `device_name` names
    (auto|cpu|cuda)."""
    new = enter()
    device = resolve_device(device_name)
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if new.local_size > gpus:
            raise ConfigError("device", "cuda", f"{new.local_size} processes on this machine but {gpus} visible "
                                                f"GPU(s); start at most {gpus} (NPROC, --nproc_per_node)")
        torch.cuda.set_device(new.local_rank)
    else:  # Gloo on the CPU: each local process gets its share of the cores
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // new.local_size))
    import torch.distributed as dist
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=new.rank, world_size=new.size)
    return new


def shutdown(finished: bool = False) -> None:
    """Leave the group. After a run that `finished`, wait for every rank first: a rank that
    tears Gloo down while a peer is still talking to it can abort at exit."""
    global _world
    if _world is not SINGLE:
        import torch.distributed as dist
        if dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()
        _world = SINGLE


def check_divisible(field: str, batch_size: int) -> None:
    """A global batch must split into equal shards, so that the mean of the shards' mean losses
    (what DDP's gradient averaging computes) is the global batch's mean loss."""
    if batch_size % _world.size:
        raise ConfigError(field, batch_size, f"the global batch must divide evenly among the {_world.size} processes")


def shard(n: int) -> slice:
    """This rank's contiguous share of a global batch of n examples."""
    size = n // _world.size
    return slice(_world.rank * size, (_world.rank + 1) * size)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module to run training steps through: DistributedDataParallel around `model` (which
    keeps its weights) when there are several processes."""
    if _world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    on_gpu = next(model.parameters()).device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_gpu else None)


def mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor every rank holds (SUM then divide: Gloo has no AVG)."""
    return _all_reduce(values, "SUM") / _world.size


def minimum(value: torch.Tensor) -> torch.Tensor:
    return _all_reduce(value, "MIN")


def maximum(value: torch.Tensor) -> torch.Tensor:
    return _all_reduce(value, "MAX")


def _all_reduce(value: torch.Tensor, op: str) -> torch.Tensor:
    if _world.size == 1:
        return value
    import torch.distributed as dist
    value = value.clone()
    dist.all_reduce(value, op=getattr(dist.ReduceOp, op))
    return value


def map_batches(count: int, batch_size: int, compute: Callable[[int, slice], T], *, desc: str,
                progress: bool = False) -> list[T]:
    """compute(i, items of batch i) for the batches of `count` items, in batch order, on every
    rank. On several processes rank r computes batches r, r + N, ... and the results are gathered."""
    num_batches = -(-count // batch_size)
    mine_indices = range(_world.rank, num_batches, _world.size)
    mine = {i: compute(i, slice(i * batch_size, min((i + 1) * batch_size, count)))
            for i in tqdm(mine_indices, desc=desc, leave=False, disable=not progress)}
    if _world.size == 1:
        return [mine[i] for i in range(num_batches)]
    import torch.distributed as dist
    parts: list[dict[int, T]] = [{} for _ in range(_world.size)]
    dist.all_gather_object(parts, {i: _cpu(v) for i, v in mine.items()})
    merged = {i: v for part in parts for i, v in part.items()}
    return [merged[i] for i in range(num_batches)]


def _cpu(value):
    return value.cpu() if isinstance(value, torch.Tensor) else value
