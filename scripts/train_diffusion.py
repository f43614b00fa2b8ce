"""Stage 4: train the UNet by DDPM (ε-prediction) on scaled VAE latents from the cache.

Each batch draws a fresh z = μ + σ·ε from the cached posteriors. With a class-conditional
preset, the digit labels are dropped to "no label" at the --label-dropout rate, so the same
model samples unconditionally and with classifier-free guidance. The checkpoint holds the EMA
weights (used for sampling) and the raw weights under "raw/".

    python -m scripts.train_diffusion
    python -m scripts.train_diffusion --preset smoke --out /tmp/u.safetensors   # seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from ldm.checkpoint import save_model
from ldm.cli import add_device_args, add_preset_arg, positive_int, probability, run
from ldm.data import BatchSampler
from ldm.diffusion import training_losses
from ldm.guidance import drop_labels
from ldm.latents import load_latent_cache
from ldm.presets import get_preset
from ldm.schedule import BETA_SCHEDULES, NoiseSchedule
from ldm.train import EMA, run_training
from ldm.unet import UNet
from ldm.utils import LdmError, check_writable, resolve_device, set_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", default="checkpoints/latents.safetensors", help="latent cache")
    add_preset_arg(parser)
    # Diffusion
    parser.add_argument("--schedule", help=f"beta schedule: {', '.join(BETA_SCHEDULES)} (unset: the preset's)")
    parser.add_argument("--timesteps", type=positive_int, default=1000, help="T, the length of the chain")
    # Optimization (unset: the preset's value)
    parser.add_argument("--steps", type=positive_int, help="optimizer steps")
    parser.add_argument("--batch-size", type=positive_int, help="latents per step")
    parser.add_argument("--label-dropout", type=probability, help="fraction of labels dropped (unset: the preset's)")
    parser.add_argument("--out", default="checkpoints/unet.safetensors", help="checkpoint written here")
    add_device_args(parser)
    args = parser.parse_args()

    check_writable(args.out)
    device = resolve_device(args.device)
    preset = get_preset(args.preset, device)
    settings = preset.diffusion
    steps, batch_size = args.steps or settings.steps, args.batch_size or settings.batch_size
    label_dropout = preset.label_dropout if args.label_dropout is None else args.label_dropout
    schedule_name = args.schedule or preset.schedule
    try:
        schedule = NoiseSchedule.from_name(schedule_name, args.timesteps)
    except ValueError as e:
        raise LdmError(f"--schedule/--timesteps: {e}") from e
    set_seed(args.seed)
    cache = load_latent_cache(args.latents, device)
    config = dataclasses.replace(preset.unet_model, in_channels=cache.latent_shape[0])
    unet = UNet(config).to(device)
    ema = EMA(unet)
    sampler = BatchSampler(len(cache.train_mean), batch_size, args.seed)
    quartile_edges = torch.tensor([0.25, 0.5, 0.75], device=device) * schedule.num_timesteps

    num_classes = config.num_classes

    def step_loss(step):
        index = sampler.next().to(device)
        x0 = cache.sample(index)
        labels = drop_labels(cache.train_labels[index], num_classes, label_dropout) if num_classes else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses, t = training_losses(lambda x, t: unet(x, t, labels), schedule, x0)
        losses = losses.float()
        # mean loss per quarter of the timestep range, to see where the model struggles
        quartile = torch.bucketize(t, quartile_edges, right=True)
        sums = torch.zeros(4, device=device).index_add_(0, quartile, losses.detach())
        counts = torch.bincount(quartile, minlength=4).clamp(min=1)
        return losses.mean(), {f"q{i}": v for i, v in enumerate(sums / counts)}

    start = time.time()
    logged = run_training(unet, step_loss, steps=steps, lr=settings.lr, warmup_steps=min(settings.warmup_steps, steps),
                          ema=ema, desc="diffusion", progress=not args.no_progress)
    seconds = time.time() - start
    print(f"diffusion: {steps} steps in {seconds:.0f}s ({steps * batch_size / seconds:.0f} latents/s), "
          f"final loss {logged['loss']:.4f}")
    info = {"diffusion": {"schedule": schedule_name, "num_timesteps": args.timesteps,
                          "scale_factor": cache.scale_factor, "prediction": "eps"},
            "vae_fingerprint": cache.vae_fingerprint, "label_dropout": label_dropout if num_classes else None,
            "steps": steps, "batch_size": batch_size, "lr": settings.lr,
            "seed": args.seed, "preset": preset.name, "ema_decay": ema.decay(), "final_loss": logged,
            "train_seconds": seconds, "device": str(device)}
    raw = {f"raw/{k}": v for k, v in unet.state_dict().items()}
    save_model(args.out, ema.model, info, extra_tensors=raw)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run(main)
