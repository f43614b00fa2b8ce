"""Trains the classifier, the VAE and the UNet for a few dozen steps through the library, once
per launch: under torchrun (N ranks, Gloo) or as one plain process. tests/test_distributed.py
compares the two. Usage: distributed_worker.py DATA_DIR LATENTS OUT_DIR

Rank 0 writes the classifier and VAE checkpoints as the stages do; every rank writes its own
UNet weights (raw and EMA) to OUT_DIR/unet_rank<r>.safetensors, to compare ranks with each other.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ldm import distributed
from ldm.data import load_mnist
from ldm.diffusion import DiffusionConfig
from ldm.latents import load_latent_cache
from ldm.presets import PRESETS
from ldm.runtime import RunContext, precision_policy
from ldm.stages import train_classifier, train_unet, train_vae
from ldm.train import TrainSettings

SETTINGS = TrainSettings(steps=30, batch_size=16, lr=2e-3, warmup_steps=5)


def main(data_dir: str, latents: str, out: str) -> None:
    device, out = torch.device("cpu"), Path(out)
    if distributed.launched():
        distributed.init("cpu")
    smoke = PRESETS["smoke"]
    train, test = load_mnist(data_dir, "train"), load_mnist(data_dir, "test")
    run = RunContext(seed=0, device=device, progress=False)
    with precision_policy("fp32"):  # the comparison's tolerance is fp32 rounding's, on a CPU with native bf16 too
        train_classifier(train, test, SETTINGS, run).save(out / "classifier.safetensors")
        train_vae(train[0], test[0], smoke.vae_model, SETTINGS, run).save(out / "vae.safetensors")
        unet = train_unet(load_latent_cache(latents), smoke.unet_model, DiffusionConfig(), SETTINGS, run)
        tensors = {**{f"raw/{k}": v for k, v in unet.raw_model.state_dict().items()}, **unet.model.state_dict()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"unet_rank{distributed.world().rank}.safetensors"))
    distributed.shutdown(finished=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
