"""Stage 4: train the UNet by diffusion (v-prediction on the cosine schedule by default) on scaled
VAE latents from the cache.

Each batch draws a fresh z = μ + σ·ε from the cached posteriors. With a class-conditional
preset, the digit labels are dropped to "no label" at the --label-dropout rate, so the same
model samples unconditionally and with classifier-free guidance. The checkpoint holds the EMA
weights (used for sampling) and the raw weights under "raw/".

    python -m scripts.train_diffusion
    python -m scripts.train_diffusion --preset smoke --out /tmp/u.safetensors   # seconds
"""

from __future__ import annotations

from ldm.cli import (StageParser, add_compile_arg, add_preset_arg, add_runtime_args, add_training_args, positive_float,
                     positive_int, prepare, run, with_overrides)
from ldm.diffusion import PREDICTIONS
from ldm.latents import load_latent_cache
from ldm.schedule import BETA_SCHEDULES
from ldm.snapshot import snapshot_path
from ldm.stages import save_unet, train_unet


def parser() -> StageParser:
    parser = StageParser(__doc__)
    parser.add_argument("--latents", default="checkpoints/latents.safetensors", help="latent cache")
    add_preset_arg(parser)
    group = parser.add_argument_group("diffusion (unset: the preset's value)")
    group.add_argument("--schedule", help=f"beta schedule: {', '.join(BETA_SCHEDULES)}")
    group.add_argument("--timesteps", dest="num_timesteps", type=positive_int, help="T, the length of the chain")
    group.add_argument("--prediction", help=f"what the UNet predicts: {', '.join(PREDICTIONS)}")
    group.add_argument("--min-snr-gamma", type=float, help="min-SNR-γ loss weighting (e.g. 5)")
    group.add_argument("--label-dropout", type=float, help="fraction of labels dropped for guidance, in [0, 1]")
    add_training_args(parser, out="checkpoints/unet.safetensors", unit="latents")
    parser.add_argument("--ema-power", type=positive_float,
                        help="warm-up power of the weight EMA used for sampling (unset: the preset's)")
    add_runtime_args(parser)
    add_compile_arg(parser)
    return parser


def main(args) -> None:
    device, preset = prepare(args, args.out)
    diffusion_config = with_overrides(preset.diffusion, args, "schedule", "num_timesteps", "prediction",
                                      "min_snr_gamma", "label_dropout")
    settings = with_overrides(preset.unet, args, "steps", "batch_size", "ema_power")
    cache = load_latent_cache(args.latents, device)
    ema_model, raw_model, info = train_unet(cache, preset.unet_model, diffusion_config, settings, seed=args.seed,
                                            device=device, progress=not args.no_progress,
                                            snapshot_to=snapshot_path(args.out), save_every=args.save_every,
                                            compile=args.compile)
    print(f"diffusion: {settings.steps} steps in {info['train_seconds']:.0f}s "
          f"({info['latents_per_second']:.0f} latents/s), final loss {info['final_loss']['loss']:.4f}")
    save_unet(args.out, ema_model, raw_model, dict(info, preset=preset.name, latents=str(args.latents)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run(parser(), main)
