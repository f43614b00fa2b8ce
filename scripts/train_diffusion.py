"""Stage 4: train the UNet by DDPM (v-prediction by default) on scaled VAE latents from the cache.

Each batch draws a fresh z = μ + σ·ε from the cached posteriors. With a class-conditional
preset, the digit labels are dropped to "no label" at the --label-dropout rate, so the same
model samples unconditionally and with classifier-free guidance. The checkpoint holds the EMA
weights (used for sampling) and the raw weights under "raw/".

    python -m scripts.train_diffusion
    python -m scripts.train_diffusion --preset smoke --out /tmp/u.safetensors   # seconds
"""

from __future__ import annotations

import dataclasses

from ldm.cli import (StageParser, add_compile_arg, add_device_args, add_preset_arg, add_training_args, positive_float,
                     positive_int, probability, run)
from ldm.diffusion import PREDICTIONS
from ldm.latent_training import save_unet, train_unet
from ldm.latents import load_latent_cache
from ldm.presets import get_preset
from ldm.schedule import BETA_SCHEDULES
from ldm.snapshot import snapshot_path
from ldm.utils import check_writable, resolve_device, set_seed


def main() -> None:
    parser = StageParser(__doc__)
    parser.add_argument("--latents", default="checkpoints/latents.safetensors", help="latent cache")
    add_preset_arg(parser)
    # Diffusion (unset: the preset's value)
    parser.add_argument("--schedule", help=f"beta schedule: {', '.join(BETA_SCHEDULES)}")
    parser.add_argument("--timesteps", type=positive_int, help="T, the length of the chain")
    parser.add_argument("--prediction", help=f"what the UNet predicts: {', '.join(PREDICTIONS)}")
    parser.add_argument("--min-snr-gamma", type=positive_float, help="min-SNR-γ loss weighting (e.g. 5)")
    parser.add_argument("--label-dropout", type=probability, help="fraction of labels dropped for guidance")
    add_training_args(parser, out="checkpoints/unet.safetensors", unit="latents")
    parser.add_argument("--ema-power", type=positive_float,
                        help="warm-up power of the weight EMA used for sampling (unset: the preset's)")
    add_device_args(parser)
    add_compile_arg(parser)
    args = parser.parse_args()

    check_writable(args.out)
    device = resolve_device(args.device)
    preset = get_preset(args.preset, device)
    overrides = {"schedule": args.schedule, "num_timesteps": args.timesteps, "prediction": args.prediction,
                 "min_snr_gamma": args.min_snr_gamma, "label_dropout": args.label_dropout}
    objective = dataclasses.replace(preset.objective, **{k: v for k, v in overrides.items() if v is not None})
    objective.validate()
    changes = {"steps": args.steps, "batch_size": args.batch_size, "ema_power": args.ema_power}
    settings = dataclasses.replace(preset.diffusion, **{k: v for k, v in changes.items() if v is not None})
    set_seed(args.seed)
    cache = load_latent_cache(args.latents, device)
    ema_model, raw_model, info = train_unet(cache, preset.unet_model, objective, settings, seed=args.seed,
                                            device=device, progress=not args.no_progress,
                                            snapshot_to=snapshot_path(args.out), save_every=args.save_every,
                                            compile=args.compile)
    print(f"diffusion: {settings.steps} steps in {info['train_seconds']:.0f}s "
          f"({info['latents_per_second']:.0f} latents/s), final loss {info['final_loss']['loss']:.4f}")
    save_unet(args.out, ema_model, raw_model, dict(info, preset=preset.name, latents=str(args.latents)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run(main)
