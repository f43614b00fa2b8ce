"""Stage 4: train the UNet by diffusion (v-prediction on the cosine schedule by default) on scaled
VAE latents from the cache.

Each batch draws a fresh z = μ + σ·ε from the cached posteriors. With a class-conditional
preset, the digit labels are dropped to "no label" at the --label-dropout rate, so the same
model samples unconditionally and with classifier-free guidance. The checkpoint holds the EMA
weights (used for sampling) and the raw weights under "raw/".

Its metrics log and curves go beside --out: the training loss (overall and per quarter of the
timestep range), the same on held-out test latents at fixed timesteps and noise, and every
--fid-every steps the FID of --fid-images samples of the EMA weights (default sampler), which
needs the classifier, the VAE and the MNIST test set.

With --guide-out it also writes the guide, the weaker UNet that autoguides sampling
(guidance.autoguided): the EMA weights after an eighth of the steps (the preset's guide_fraction).

    python -m scripts.train_diffusion --data-dir ../shared/data/mnist --guide-out checkpoints/guide.safetensors
    python -m scripts.train_diffusion --preset smoke --out /tmp/u.safetensors   # seconds (no FID)
"""

from __future__ import annotations

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_preset_arg, add_training_args,
                     add_unet_runtime_args, fid_images, non_negative_int, positive_float, positive_int, prepare,
                     run_context, with_overrides)
from ldm.data import load_mnist
from ldm.diffusion import PREDICTIONS
from ldm.latents import check_cache_fits_vae, load_latent_cache
from ldm.launch import run
from ldm.outputs import written_together
from ldm.run_lock import run_lock
from ldm.schedule import BETA_SCHEDULES
from ldm.scoring import TestSetFID
from ldm.stages import SampleQuality, train_unet
from ldm.training_files import TrainingFiles
from ldm.vae import VAE


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
    group = parser.add_argument_group("the UNet (unset: the preset's value)")
    group.add_argument("--base-channels", type=positive_int, help="channels of the first level")
    add_training_args(parser, out="checkpoints/unet.safetensors", unit="latents")
    parser.add_argument("--guide-out", help="also write the guide for autoguidance here: the EMA weights after the "
                                            "preset's share of the steps (an eighth)")
    parser.add_argument("--ema-power", type=positive_float,
                        help="warm-up power of the weight EMA used for sampling (unset: the preset's)")
    group = parser.add_argument_group("sample quality during training (unset: the preset's value)")
    group.add_argument("--fid-every", type=non_negative_int, help="steps between FIDs of samples (0: none)")
    group.add_argument("--fid-images", type=fid_images, help="samples per FID")
    add_data_arg(group)
    add_checkpoint_args(group, "classifier", "vae")
    add_unet_runtime_args(parser)
    return parser


def main(args) -> None:
    files = TrainingFiles.beside(args.out, args.log, args.curves)
    device, preset = prepare(args, *files.outputs, files.snapshot, *([args.guide_out] if args.guide_out else []))
    with run_lock(files.checkpoint):  # one run per output
        monitor = files.monitor(args.tensorboard)
        diffusion_config = with_overrides(preset.diffusion, args, "schedule", "num_timesteps", "prediction",
                                          "min_snr_gamma", "label_dropout")
        settings = with_overrides(preset.unet, args, "steps", "batch_size", "ema_power", "validate_every")
        unet_config = with_overrides(preset.unet_model, args, "base_channels")
        cache = load_latent_cache(args.latents, device)
        fid_every = preset.fid_every if args.fid_every is None else args.fid_every
        quality = (sample_quality(args, cache, fid_every, args.fid_images or preset.fid_images, device)
                   if fid_every else None)
        trained = train_unet(cache, unet_config, diffusion_config, settings, run_context(args, device),
                             snapshot_to=files.snapshot, save_every=args.save_every, monitor=monitor, quality=quality,
                             guide_to=args.guide_out, guide_step=max(1, int(settings.steps * preset.guide_fraction)))
        info = trained.info
        print(f"diffusion: {settings.steps} steps in {info['train_seconds']:.0f}s "
              f"({info['latents_per_second']:.0f} latents/s), final loss {info['final_loss']['loss']:.4f}")
        info.update(preset=preset.name, latents=str(args.latents))
        with written_together() as outputs:  # the checkpoint and its curves appear together
            trained.save(files.checkpoint, outputs)
            files.draw_curves("diffusion", outputs)
        print(f"wrote {args.out}")


def sample_quality(args, cache, every: int, num_images: int, device) -> SampleQuality:
    """The VAE that made the latents, the classifier and the test set, to score samples in training."""
    vae, vae_ckpt = load_model(args.vae, VAE, device)
    check_cache_fits_vae(args.latents, cache, vae, vae_ckpt, "rerun `make latents` or pass --fid-every 0")
    classifier, _ = load_model(args.classifier, Classifier, device)
    fid = TestSetFID(classifier, load_mnist(args.data_dir, "test")[0].to(device), device)
    return SampleQuality(vae, vae_ckpt, fid, every, num_images, args.seed)


if __name__ == "__main__":
    run(parser(), main)
