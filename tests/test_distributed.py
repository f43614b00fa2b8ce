"""Several processes under torchrun (Gloo on the CPU, one thread each) against one process: the
same training trajectory, byte-identical samples and FID rows, resumption after SIGKILL, and
one-line errors. The stage runs reuse the smoke pipeline (tests/conftest.py)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ldm import distributed
from ldm.checkpoint import load_checkpoint
from ldm.errors import ConfigError
from ldm.pipeline import batch_generator
from stage_scripts import CPU, ROOT, SMOKE, run_script

pytestmark = pytest.mark.slow  # every test launches processes with torchrun

ENV = dict(os.environ, OMP_NUM_THREADS="1")  # the thread count torchrun would set, stated to keep it quiet


def torchrun(*args, nproc: int = 2, check: bool = True, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *map(str, args)]
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=ENV, **popen)
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-3) -> None:
    """Every tensor within relative error ‖a − b‖ / ‖b‖ ≤ rtol. The bound sits between two scales:
    rounding (float32 sums in another order differ by ~1e-7 a step, and Adam's normalisation
    grows that over 30 steps to ~1e-5: 1.13e-5 is the largest measured, on an AVX2 CPU), and a
    sharding bug, which changes the gradients themselves: one wrong example of a batch of 16 moves
    a gradient by ~1/16, and the weights after 30 steps by far more than 1e-3."""
    assert a.keys() == b.keys()
    for name in a:
        error = (a[name] - b[name]).norm() / b[name].norm().clamp(min=1e-12)
        assert error.item() <= rtol, (name, error.item())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_two_processes_train_every_stage_like_one(pipeline, tmp_path):
    data, latents = pipeline["data"], pipeline["ckpt"] / "latents.safetensors"
    worker = ROOT / "tests" / "distributed_worker.py"
    subprocess.run([sys.executable, worker, data, latents, tmp_path / "one"], cwd=ROOT, env=ENV, check=True)
    two = torchrun(worker, data, latents, tmp_path / "two")
    assert two.stdout == "" and two.stderr == ""  # no progress, no chatter from any rank
    rank0, rank1 = (load_file(tmp_path / "two" / f"unet_rank{r}.safetensors") for r in (0, 1))
    assert_close(rank1, rank0, rtol=0)  # every rank took the same steps
    assert_close(rank0, load_file(tmp_path / "one" / "unet_rank0.safetensors"))
    for stage in ("classifier", "vae"):
        assert_close(load_checkpoint(tmp_path / "two" / f"{stage}.safetensors", stage).tensors,
                     load_checkpoint(tmp_path / "one" / f"{stage}.safetensors", stage).tensors)


def test_two_processes_sample_and_score_byte_identically(pipeline, tmp_path):
    ckpt, reports = pipeline["ckpt"], pipeline["reports"]
    # 20 images in batches of 8: rank 0 samples batches 0 and 2, rank 1 batch 1
    out, one = tmp_path / "digits.safetensors", tmp_path / "one.safetensors"
    args = [*pipeline["models"], *CPU, "--digit", "all", "--num-samples", 20, "--batch-size", 8, "--strip"]
    torchrun("-m", "scripts.sample", *args, "--no-progress", "--out", out)
    run_script("sample", *args, "--out", one)
    for suffix in (".safetensors", ".png", "_process.png"):
        assert md5(out.with_name(out.stem + suffix)) == md5(one.with_name(one.stem + suffix))

    samples = [ckpt / f"samples_{name}.safetensors" for name in ("ddpm", "ddim", "digits")]
    torchrun("-m", "scripts.evaluate", "--data-dir", pipeline["data"], "--classifier", ckpt / "classifier.safetensors",
             "--vae", ckpt / "vae.safetensors", "--num-images", 16, "--device", "cpu", "--no-progress",
             "--out-dir", tmp_path / "reports", "--samples", *samples)
    rows = [json.loads((folder / "fid.json").read_text())["rows"] for folder in (reports, tmp_path / "reports")]
    assert [{**row, "grid": None} for row in rows[0]] == [{**row, "grid": None} for row in rows[1]]


def test_a_killed_two_process_run_resumes_on_any_number_of_processes(pipeline, tmp_path):
    args = ["-m", "scripts.train_diffusion", "--latents", pipeline["ckpt"] / "latents.safetensors", *SMOKE,
            "--steps", 150, "--save-every", 20, "--no-progress", "--precision", "fp32"]  # compared at fp32 rounding
    out, state = tmp_path / "killed.safetensors", tmp_path / "killed.state.safetensors"
    job = torchrun(*args, "--out", out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not state.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    for pid in [*ranks_of(job), job.pid]:  # every process of the job
        os.kill(pid, signal.SIGKILL)
    job.wait()
    assert not out.exists()
    steps_done = load_checkpoint(state, "training_state").info["step"]
    assert 0 < steps_done < 150
    shutil.copy(state, tmp_path / "again.state.safetensors")

    resumed = torchrun(*args, "--out", out)
    assert f"resuming after step {steps_done}" in resumed.stdout
    run_script("train_diffusion", *args[2:], "--out", tmp_path / "again.safetensors")  # the same state, 1 process
    run_script("train_diffusion", *args[2:], "--out", tmp_path / "straight.safetensors")
    straight = load_checkpoint(tmp_path / "straight.safetensors", "unet").tensors
    assert_close(load_checkpoint(out, "unet").tensors, straight)
    assert_close(load_checkpoint(tmp_path / "again.safetensors", "unet").tensors, straight)


def ranks_of(job: subprocess.Popen) -> list[int]:
    """The worker processes torchrun started (its children), in the order it started them."""
    return sorted(int(pid) for pid in Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split())


def our_error_lines(stderr: str) -> list[str]:
    """The lines the ranks printed (torchrun adds its own failure summary after them)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_batch_that_does_not_split_evenly_is_one_line(pipeline, tmp_path):
    result = torchrun("-m", "scripts.train_diffusion", "--latents", pipeline["ckpt"] / "latents.safetensors", *SMOKE,
                      "--batch-size", 15, "--out", tmp_path / "u.safetensors", check=False)
    assert result.returncode != 0
    assert our_error_lines(result.stderr) == [
        "error: rank 0 of 2: --batch-size 15: the global batch must divide evenly among the 2 processes"]


def test_a_loss_that_diverges_on_one_rank_stops_every_rank():
    result = torchrun(ROOT / "tests" / "nan_worker.py", "--device", "cpu", check=False)
    assert result.returncode != 0
    # rank 0's own loss turns NaN a step later, through the averaged gradients; it names rank 1's step
    assert our_error_lines(result.stderr) == [
        "error: rank 0 of 2: train: the loss became non-finite at step 3; stopped, and nothing after the last good "
        "snapshot was saved (try a lower learning rate)"]


def test_a_rank_that_dies_ends_the_job(pipeline, tmp_path):
    job = torchrun("-m", "scripts.train_diffusion", "--latents", pipeline["ckpt"] / "latents.safetensors", *SMOKE,
                   "--steps", 100_000, "--save-every", 0, "--no-progress", "--out", tmp_path / "u.safetensors",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(ranks_of(job)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # both in the training loop
    os.kill(ranks_of(job)[-1], signal.SIGKILL)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode != 0
    assert our_error_lines(stderr) == []  # the survivor's failed collective is not reported as a cause
    assert "SIGKILL" in stderr and "local_rank: 1" in stderr  # torchrun's summary names the dead rank
    assert not (tmp_path / "u.safetensors").exists()


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    try:
        with pytest.raises(ConfigError, match="2 processes on this machine but 1 visible GPU") as error:
            distributed.init("cuda")
        assert error.value.field == "device"
        assert distributed.world().rank == 1  # known, for the error line
    finally:
        distributed.shutdown()
    assert distributed.world() == distributed.SINGLE


def test_single_process_helpers_are_the_identity():
    assert not distributed.launched() and distributed.is_main()
    assert distributed.shard(12) == slice(0, 12)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model
    assert distributed.map_batches(5, 2, lambda i, batch: (i, batch), desc="test") == [
        (0, slice(0, 2)), (1, slice(2, 4)), (2, slice(4, 5))]


def test_every_sampling_batch_draws_its_own_noise():
    # a CPU generator keeps the low 32 bits of its seed: packing (seed, batch) into one integer
    # would give every batch the same noise
    draws = [torch.randn(8, generator=batch_generator(seed, index)) for seed in (0, 1) for index in (0, 1, 2**20)]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])
    assert torch.equal(torch.randn(8, generator=batch_generator(3, 1)), torch.randn(8, generator=batch_generator(3, 1)))
